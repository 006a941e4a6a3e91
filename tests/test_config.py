"""Trainer config: defaults -> YAML -> dotted overrides, with unknown keys and wrong types rejected."""
from pathlib import Path

import pytest
import yaml

from gasp.train.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    save_config,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 2.0e-4\n  max_steps: 7\nloss:\n  depth: false\n")
    cfg = load_config(f, ["optim.max_steps=9", "heads.layers=[0, 2]", "data.tracks=null", "loss.lambda_corr=2"])
    assert cfg.optim.lr == 2e-4                     # from the file
    assert cfg.optim.max_steps == 9                 # override beats file
    assert cfg.loss.depth is False
    assert cfg.heads.layers == [0, 2]
    assert cfg.loss.lambda_corr == 2.0 and isinstance(cfg.loss.lambda_corr, float)  # int accepted for float
    assert cfg.optim.head_lr_mult == TrainConfig().optim.head_lr_mult  # untouched default


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rate'.*optim\.lr"):
        load_config(None, ["optim.learning_rate=1e-4"])
    f = tmp_path / "c.yaml"
    f.write_text("lossy:\n  corr: true\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'lossy'.*loss"):
        load_config(f)


def test_wrong_type_names_key_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"loss\.lambda_corr must be float, got str 'abc'"):
        load_config(None, ["loss.lambda_corr=abc"])
    f = tmp_path / "c.yaml"
    f.write_text("loss:\n  lambda_depth: '0.5'\n")       # a quoted number is a string: rejected
    with pytest.raises(ConfigError, match=r"loss\.lambda_depth must be float"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"optim\.max_steps must be int, got bool"):
        load_config(None, ["optim.max_steps=true"])
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["loss=3"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="min_frames"):
        load_config(None, ["data.min_frames=9", "data.max_frames=8"])
    with pytest.raises(ConfigError, match="every loss term is off"):
        load_config(None, ["loss.lm=false", "loss.corr=false", "loss.depth=false"])


def test_save_roundtrip(tmp_path):
    cfg = load_config(None, ["lora.r=4", "model.size=[56, 84]"])
    save_config(cfg, tmp_path / "config.yaml", extra={"git_sha": "abc", "torch": "2.13"})
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["_run"]["git_sha"] == "abc"
    assert to_dict(config_from_dict(data)) == to_dict(cfg)


@pytest.mark.parametrize("name", ["tiny_synthetic", "qwen2.5-vl-7b", "llava-next-video-7b"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.optim.head_lr_mult == 4.0


def test_script_reports_config_errors(capsys):
    from gasp_cli import train as train_gasp

    assert train_gasp.main(["loss.lambda_corr=abc"]) == 2
    assert "loss.lambda_corr must be float" in capsys.readouterr().err
    assert train_gasp.main(["nope.x=1"]) == 2
    assert "unknown config key 'nope.x'" in capsys.readouterr().err


def test_run_folder_config_reloads(tmp_path):
    cfg = load_config(None, ["optim.max_steps=3"])
    save_config(cfg, tmp_path / "config.yaml", extra={"git_sha": "abc"})
    assert to_dict(load_config(tmp_path / "config.yaml")) == to_dict(cfg)    # the `_run` block is skipped


def test_probe_and_trainer_share_one_input_dataclass(tmp_path):
    """frames_mode, size, fps and prompt are one dataclass (gasp.inputs.ModelInput) for the probe and the trainer:
    the same defaults, the same YAML types and checks, and the trainer's evaluator probes with its settings."""
    import dataclasses

    from gasp.config import load_typed
    from gasp.inputs import INPUT_KEYS, ModelInput
    from gasp.train.config import ModelConfig
    from probes.config import ProbeConfig
    from probes.train_eval import probe_config

    assert issubclass(ProbeConfig, ModelInput) and issubclass(ModelConfig, ModelInput)
    assert INPUT_KEYS == ("frames_mode", "size", "fps", "prompt")
    assert ProbeConfig().input_settings() == ModelConfig().input_settings() == dataclasses.asdict(ModelInput())
    train = load_config(None, ["model.size=[56,84]", "model.fps=4", "model.frames_mode=image", "model.prompt=hi"])
    probe = load_typed(ProbeConfig, None, ["size=[56,84]", "fps=4", "frames_mode=image", "prompt=hi"])
    assert train.model.input_settings() == probe.input_settings() == {
        "frames_mode": "image", "size": (56, 84), "fps": 4.0, "prompt": "hi"}
    pcfg = probe_config(train, tmp_path / "eval.h5", tmp_path)
    assert pcfg.input_settings() == train.model.input_settings() and pcfg.model == train.model.name
    with pytest.raises(ConfigError, match=r"model\.size must be \[H, W\] in pixels, got \[0, 56\]"):
        load_config(None, ["model.size=[0,56]"])
    with pytest.raises(ConfigError, match=r"model\.fps must be > 0"):
        load_config(None, ["model.fps=0"])
    from gasp_cli.probe import check_probe_config
    with pytest.raises(ConfigError, match=r"^size must be \[H, W\] in pixels, got \[0, 56\]"):
        check_probe_config(load_typed(ProbeConfig, None, ["size=[0,56]"]))


def test_probe_flags_are_checked_like_the_config(capsys):
    from gasp_cli.probe import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--size", "0", "448"])
    assert e.value.code == 2 and "size must be [H, W] in pixels, got [0, 448]" in capsys.readouterr().err


@pytest.mark.parametrize("name,kind", [("single", "NO"), ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"),
                                       ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED")])
def test_launch_configs_have_the_shape_accelerate_reads(name, kind):
    """The README's launch table: the configs nobody can run here are at least read by accelerate as what they
    say; the DeepSpeed ones leave accumulation and clipping to gasp (gasp/train/zero.py refuses other values)."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert str(cfg.distributed_type).split(".")[-1] == kind
    ds = cfg.deepspeed_config or {}
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds
    if name == "deepspeed_zero3":
        assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] is True and ds["zero3_init_flag"] is True


def test_a_list_of_sections_loads_each_as_its_own_typed_section(tmp_path):
    """A list-of-dataclasses field (e.g. a trainer's list of objectives with weights) takes YAML mappings,
    each checked like any section: defaults, known keys, types; saved and reloaded unchanged."""
    import dataclasses

    from gasp.config import load_typed

    @dataclasses.dataclass
    class Objective:
        name: str = "depth"
        weight: float = 1.0

    @dataclasses.dataclass
    class Cfg:
        objectives: list[Objective] = dataclasses.field(default_factory=list)

    f = tmp_path / "c.yaml"
    f.write_text("objectives:\n  - {name: depth, weight: 2}\n  - {name: structure}\n")
    cfg = load_typed(Cfg, f)
    assert cfg.objectives == [Objective("depth", 2.0), Objective("structure", 1.0)]
    assert isinstance(cfg.objectives[0].weight, float)
    again = load_typed(Cfg, None, [f"objectives={dataclasses.asdict(cfg)['objectives']}"])
    assert again == cfg
    with pytest.raises(ConfigError, match=r"objectives\[1\]: unknown config key 'wieght'"):
        load_typed(Cfg, None, ["objectives=[{name: a}, {wieght: 1}]"])
    with pytest.raises(ConfigError, match=r"weight must be float"):
        load_typed(Cfg, None, ["objectives=[{weight: heavy}]"])
    with pytest.raises(ConfigError, match="objectives must be"):
        load_typed(Cfg, None, ["objectives=[1, 2]"])
