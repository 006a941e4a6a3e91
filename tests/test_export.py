"""gasp export (gasp_cli/export.py, gasp/models/export.py): a merged folder the stock transformers class loads
to the same logits and the same probe numbers as base + adapter; a card whose numbers are the results'."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gasp_cli.export import main as export

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "gasp-v3"
BASE, ARM = SHIPPED / "base", SHIPPED / "arm_D"          # arm D moves the probe most (peak PCK 0.35 vs 0.06)


def _frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)


def _logits(model, tok, adapter) -> torch.Tensor:
    inputs, _ = adapter.prepare_inputs(_frames(), processor_or_tokenizer=tok, prompt="where is the cube?")
    with torch.no_grad():
        return model(**inputs).logits[0].float()


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """The shipped arm probed as base + adapter (with the depth probe, for the card), and its export."""
    from probes.runner import ProbeConfig, run_probe

    tmp = tmp_path_factory.mktemp("export")
    res = run_probe(ProbeConfig(model=str(BASE), adapter=str(ARM), out=str(tmp / "probe"), max_sequences=6,
                                explore_sequences=0, depth=True))
    assert export([str(ARM), "--base", str(BASE), "--out", str(tmp / "exported"),
                   "--results", str(tmp / "probe" / "results.json")]) == 0
    return tmp, res


@pytest.mark.slow
def test_the_merged_folder_loads_with_the_stock_class_to_base_plus_adapter(probed):
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from gasp.models.loading import load_model

    tmp, _ = probed
    out = tmp / "exported"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                      "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    for name in ("tokenizer.json", "tokenizer_config.json"):              # the base's own files, byte for byte
        assert (out / name).read_bytes() == (BASE / name).read_bytes()
    ref_model, tok, adapter = load_model(str(BASE), adapter=str(ARM))
    want = _logits(ref_model, tok, adapter)
    base_only = _logits(load_model(str(BASE))[0], tok, adapter)
    for cls in (AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration):
        model = cls.from_pretrained(out, local_files_only=True).eval()
        assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and not hasattr(model, "peft_config")
        got = _logits(model, AutoTokenizer.from_pretrained(out, local_files_only=True), adapter)
        # fp32: W x + (alpha/r) B A x and (W + (alpha/r) B A) x differ by rounding only
        assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    assert (base_only - want).abs().max() > 100 * 1e-4           # the adapter matters at this tolerance


@pytest.mark.slow
def test_the_probe_of_the_export_equals_the_probe_of_base_plus_adapter(probed):
    from probes.runner import ProbeConfig, run_probe

    tmp, want = probed
    got = run_probe(ProbeConfig(model=str(tmp / "exported"), out=str(tmp / "probe_exported"), max_sequences=6,
                                explore_sequences=0))
    assert got["sequences"] == want["sequences"] and got["layers"] == want["layers"]
    np.testing.assert_allclose(got["pck_mean"], want["pck_mean"], atol=1e-9)
    np.testing.assert_allclose(np.array(got["rho"], float), np.array(want["rho"], float), atol=1e-4)


@pytest.mark.slow
def test_the_card_reads_its_numbers_from_the_results(probed):
    from probes.results import ProbeResults

    tmp, _ = probed
    card = (tmp / "exported" / "README.md").read_text()
    res = ProbeResults.load(tmp / "probe" / "results.json")
    head = card.split("---")[1]
    assert "library_name: transformers" in head and "pipeline_tag: image-text-to-text" in head and "- gasp" in head
    assert f"- {res.summary_line()}\n" in card and "uniform" in res.summary_line()
    assert f"- {res.depth_summary_line()}\n" in card and "pixels" in res.depth_summary_line()
    assert "| objectives | D: LM + corr + depth on Q/K (seed 0) |" in card            # from the manifest
    assert "git afead4dc53cf38acc3b1f6e8f6e78ed8aed96222" in card
    assert "AutoProcessor will not load this folder" in card                      # the base has no processor files


def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    lost = tmp_path / "lost"
    lost.mkdir()
    cfg = json.loads((ARM / "adapter_config.json").read_text())
    (lost / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "nobody/no-such-vlm"}))
    cases = [([str(empty)], "holds no LoRA adapter"),
             ([str(lost)], "base model 'nobody/no-such-vlm'"),
             ([str(ARM), "--base", str(tmp_path / "nowhere")], "pass --base"),
             ([str(ARM), "--base", str(BASE), "--results", str(tmp_path / "none.json")], "none.json not found")]
    for args, said in cases:
        assert export([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export([str(ARM), "--base", str(BASE), "--out", str(out)]) == 2
    assert "exists and is not empty; pass --force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_results_of_another_adapter_are_refused(tmp_path, capsys):
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"config": {"adapter": str(SHIPPED / "arm_C")}, "layers": [0], "pck_mean": [0.5]}))
    assert export([str(ARM), "--base", str(BASE), "--out", str(tmp_path / "out"), "--results", str(other)]) == 2
    assert "is a probe of the adapter" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_processor_files_the_base_has_are_carried(tmp_path):
    """Tokenizer, image processor and chat template travel byte for byte; weights and config do not."""
    from transformers import AutoImageProcessor

    from gasp.models.export import base_files, copy_base_files
    from gasp.models.tiny import save_tiny

    base = Path(save_tiny("tiny-qwen2.5-vl", tmp_path / "base"))
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=200704).save_pretrained(base)
    (base / "chat_template.jinja").write_text("{{ messages }}")
    names = [p.name for p in base_files(base)]
    assert "preprocessor_config.json" in names and "chat_template.jinja" in names and "tokenizer.json" in names
    assert not {"model.safetensors", "config.json", "generation_config.json"} & set(names)
    out = tmp_path / "out"
    out.mkdir()
    copy_base_files(base, out)
    for n in names:
        assert (out / n).read_bytes() == (base / n).read_bytes()
    assert AutoImageProcessor.from_pretrained(out, local_files_only=True).size["longest_edge"] == 200704


@pytest.mark.slow
def test_a_training_checkpoint_exports_merged_and_adapter_only(tmp_path):
    """A run's own checkpoint: the card has its objectives, data, config and the trainer's evaluation at that
    step; --adapter-only writes the peft files that peft loads; a run that trained the vision tower is refused."""
    import yaml
    from peft import PeftModel

    from gasp.models.tiny import build_tiny
    from gasp_cli.train import main as train
    from probes.results import ProbeResults

    run = tmp_path / "run"
    assert train([f"run.out={run}", "optim.max_steps=2", "run.eval_sequences=1", "data.synthetic_scenes=2",
                  "loss.lm=false", "data.num_workers=0"]) == 0
    for flags, lib in (([], "transformers"), (["--adapter-only"], "peft")):
        out = tmp_path / f"out{len(flags)}"
        assert export([str(run / "checkpoint-2"), "--out", str(out), *flags]) == 0
        card = (out / "README.md").read_text()
        assert f"library_name: {lib}" in card
        assert f"- {ProbeResults.load(run / 'results.json').summary_line()}\n" in card
        assert "InfoNCE correspondence (lambda 1.0) and soft-argmax depth (lambda 1.0) on correspondence heads" in card
        assert "geometry (tracks): `synthetic scenes made by gasp (renderer)`" in card
        assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])["optim"]["max_steps"] == 2
    adapter_files = sorted(p.name for p in (run / "checkpoint-2" / "adapter").iterdir())
    assert sorted(p.name for p in (tmp_path / "out1").iterdir()) == sorted({*adapter_files, "README.md"})
    model, _ = build_tiny("tiny-qwen2.5-vl")
    PeftModel.from_pretrained(model, str(tmp_path / "out1"))                # peft reads it on its own
    assert export([str(run / "checkpoint-2"), "--out", str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["freeze_vision"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert export([str(run / "checkpoint-2"), "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()


def test_the_saved_dtype_is_the_bases_unless_asked(tmp_path):
    from gasp_cli.export import _saved_dtype

    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16", "model_type": "qwen2_5_vl"}))
    assert _saved_dtype(str(tmp_path)) == "bfloat16"          # the released checkpoints record bf16
    assert _saved_dtype(str(BASE)) == "float32" and _saved_dtype(None) == "float32"
