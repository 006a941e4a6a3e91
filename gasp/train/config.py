"""Trainer configuration: dataclass defaults, then a YAML file, then dotted `key=value` overrides.

    cfg = load_config("configs/tiny_synthetic.yaml", ["loss.lambda_corr=0.5", "optim.max_steps=20"])
    save_config(cfg, "OUT/config.yaml")

Every key is checked: an unknown key is an error that lists the valid keys of its section,
and a value of the wrong type is an error naming the key and the expected type. Override
values are parsed with `yaml.safe_load`, so `x=1e-4` is a float, `x=null` is None and
`x=[0,1]` a list. An int is accepted where a float is expected; nothing else is coerced.
A run folder's config.yaml loads as a config file (its `_run` record block is skipped).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gasp.config import RUN_BLOCK, ConfigError, apply_mapping, load_typed  # noqa: F401  (ConfigError re-exported)
from gasp.inputs import ModelInput, check_input
from gasp.objectives.base import ObjectiveConfig


@dataclass
class ModelConfig(ModelInput):
    """The model and, from ``ModelInput``, how frames reach it (frames_mode, size, fps, prompt)."""

    name: str = "tiny-qwen2.5-vl"
    dtype: str = "fp32"                  # weights; compute runs under bf16 autocast when `mixed_precision` says so
    mixed_precision: str = "auto"        # "auto" (bf16 where supported, i.e. on an accelerator), "bf16", "no"
    grad_ckpt: bool = True
    freeze_vision: bool = True
    train_projector: bool = False        # train the projector in full (peft modules_to_save: saved with the adapter)
    pointmap: str | None = None          # HiSpatial's point-map input (gasp.pointmap): gt, reldepth, noisy, none; None: off


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    vision_r: int = 0                   # > 0: a LoRA of this rank on the vision blocks' attention (PseudoGD: 4)
    vision_alpha: int = 8


@dataclass
class HeadsConfig:
    layers: str | list[int] = "all"
    hidden: int = 512
    d_emb: int = 128
    init: str = "svd"
    checkpoint: bool = True             # recompute each head's activations in backward (less peak memory)


@dataclass
class LossConfig:
    lm: bool = True
    corr: bool = True
    depth: bool = True
    lambda_corr: float = 1.0
    lambda_depth: float = 1.0
    tau: float = 0.07
    chunk_size: int | None = 64
    on: str = "heads"                   # "heads": eq. 5-8 on the heads' embeddings; "qk": on each layer's
                                        # post-RoPE Q (anchor) vs K (candidates), no heads;
                                        # "qk_heads": a head pair on post-RoPE Q and K (`gasp.qk_heads`)


@dataclass
class DataConfig:
    tracks: str | None = None           # training tracks (.h5 or folder); None: synthetic, made in the cache
    source: str = "auto"                # scenes (tracks built from depth + poses), sequences (stored), auto
    tracks_eval: str | None = None      # held-out evaluation tracks; None: synthetic
    grid: int = 8                       # query grid g x g (8 coarse, 24 fine)
    min_frames: int = 8
    max_frames: int = 24
    radius: int = 48
    instruct: str | None = None         # LLaVA-Video-178K JSON/JSONL; None: synthetic (tiny default)
    video_root: str | None = None
    num_frames_lm: int = 8
    lm_ratio: float = 0.5               # fraction of steps that are LM (instruction) batches
    metric_qa: bool = False             # the synthetic instruction data adds questions with metric answers (HiSpatial)
    vst_qa: bool = False                # ... and VST's appearance order and 3D boxes (gasp/data/vst_qa.py)
    cache: str | None = None            # where synthetic data is made (default OUT/data)
    num_workers: int = 2                # DataLoader workers preparing micro-batches (0: in the training process)
    prefetch: int = 2                   # micro-batches each worker prepares ahead
    synthetic_scenes: int = 8
    synthetic_size: int = 112
    synthetic_frames: int = 32


@dataclass
class OptimConfig:
    lr: float = 1e-4
    head_lr_mult: float = 4.0
    vision_lr_mult: float = 1.0         # the vision LoRA's (or unfrozen tower's) lr / lr
    projector_lr_mult: float = 1.0      # the projector's lr / lr (model.train_projector)
    weight_decay: float = 0.0
    warmup_steps: int = 10
    warmup_ratio: float | None = None   # set: warm-up over this fraction of max_steps (rounded up), not warmup_steps
    max_steps: int = 100
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class RunConfig:
    out: str = "runs/gasp"
    seed: int = 0
    log_every: int = 1
    eval_every: int = 0                 # 0: only the final evaluation
    save_every: int = 0                 # 0: only the final checkpoint
    eval_sequences: int = 4
    fsdp: bool = False                  # shard with torch FSDP2 (gasp/train/fsdp.py); saving gathers full weights


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # What the geometric batches train (gasp.objectives). Empty: the one loss.on names (heads, qk or qk_heads),
    # when loss.corr or loss.depth is on, as before this list existed.
    objectives: list[ObjectiveConfig] = field(default_factory=list)


def objective_specs(cfg: TrainConfig) -> list[ObjectiveConfig]:
    """The objectives a run trains: ``cfg.objectives``, or the one ``loss.on`` names (module docstring)."""
    if cfg.objectives:
        return list(cfg.objectives)
    return [ObjectiveConfig(name=cfg.loss.on)] if (cfg.loss.corr or cfg.loss.depth) else []


def warmup_steps(o: OptimConfig) -> int:
    return o.warmup_steps if o.warmup_ratio is None else math.ceil(o.warmup_ratio * o.max_steps)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults, then the YAML file at `path` (if any), then `overrides` ("a.b=value")."""
    return load_typed(TrainConfig, path, overrides, validate)


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    d, o = cfg.data, cfg.optim
    if not 2 <= d.min_frames <= d.max_frames:
        raise ConfigError(f"need 2 <= data.min_frames <= data.max_frames, got {d.min_frames}, {d.max_frames}")
    if not 0.0 <= d.lm_ratio <= 1.0:
        raise ConfigError(f"data.lm_ratio must be in [0, 1], got {d.lm_ratio}")
    for key, value in (("optim.max_steps", o.max_steps), ("optim.grad_accum", o.grad_accum),
                       ("data.prefetch", d.prefetch)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if d.source not in ("auto", "scenes", "sequences"):
        raise ConfigError(f"data.source must be auto, scenes or sequences, got {d.source!r}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if cfg.model.mixed_precision not in ("auto", "bf16", "no"):
        raise ConfigError(f"model.mixed_precision must be auto, bf16 or no, got {cfg.model.mixed_precision!r}")
    if cfg.loss.on not in ("heads", "qk", "qk_heads"):
        raise ConfigError(f"loss.on must be heads, qk or qk_heads, got {cfg.loss.on!r}")
    specs = objective_specs(cfg)
    if not (cfg.loss.lm or specs):
        raise ConfigError("every loss term is off (loss.lm, and no objective: loss.corr, loss.depth, objectives); "
                          "nothing to train")
    _check_objectives(cfg, specs)
    if o.warmup_ratio is not None and not 0.0 <= o.warmup_ratio < 1.0:
        raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
    if cfg.lora.vision_r < 0:
        raise ConfigError(f"lora.vision_r must be >= 0 (0: no vision LoRA), got {cfg.lora.vision_r}")
    if cfg.lora.vision_r and not cfg.model.freeze_vision:
        raise ConfigError("lora.vision_r > 0 with model.freeze_vision=false: the tower is either trained in full "
                          "or through a LoRA; choose one")
    if cfg.model.pointmap is not None:
        from gasp.pointmap import SOURCES

        if cfg.model.pointmap not in SOURCES:
            raise ConfigError(f"model.pointmap must be one of {', '.join(SOURCES)} (or null: no point-map input), "
                              f"got {cfg.model.pointmap!r}")
        if not cfg.model.freeze_vision:
            raise ConfigError("model.pointmap: HiSpatial keeps the vision tower frozen; set model.freeze_vision=true")
    if cfg.heads.init not in ("svd", "random"):
        raise ConfigError(f"heads.init must be svd or random, got {cfg.heads.init!r}")
    if isinstance(cfg.heads.layers, str) and cfg.heads.layers != "all":
        raise ConfigError(f"heads.layers must be 'all' or a list of layer indices, got {cfg.heads.layers!r}")
    if (bad := check_input(cfg.model, "model.")) is not None:
        raise ConfigError(bad)


def _check_objectives(cfg: TrainConfig, specs: list[ObjectiveConfig]) -> None:
    """Names registered and distinct, sites and heads each objective has, weights >= 0."""
    from gasp import objectives

    seen: set[str] = set()
    slots = []
    for i, spec in enumerate(specs):
        where = f"objectives[{i}]"
        try:
            obj = objectives.get(spec.name)(spec, cfg)
            obj.check_spec()
        except objectives.ObjectiveError as e:
            raise ConfigError(f"{where}: {e}") from None
        if spec.name in seen:
            raise ConfigError(f"{where}: objective {spec.name} is listed twice")
        seen.add(spec.name)
        if spec.weight < 0:
            raise ConfigError(f"{where}: weight must be >= 0, got {spec.weight}")
        if spec.teacher is not None and "structure" not in obj.needs:
            raise ConfigError(f"{where}: {spec.name} takes no teacher (only pgd_structure does)")
        if spec.head_hidden is not None and (obj.slot == "heads" or obj.head_kind != "mlp" or spec.head_hidden < 1):
            raise ConfigError(f"{where}: head_hidden sets the width of a PseudoGD objective's MLP head (>= 1); "
                              f"{spec.name} with head {obj.head_kind} has none (GASP's heads: heads.hidden)")
        if obj.slot == "heads":
            slots.append(spec.name)
    if len(slots) > 1:
        raise ConfigError(f"objectives {slots} both keep their heads in the checkpoint's heads/ folder; list one")


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path, extra: dict | None = None) -> None:
    """Write the resolved config (plus `extra`, e.g. version and git SHA, under `_run`) atomically."""
    from gasp.runinfo import write_text_atomic

    data = to_dict(cfg)
    if extra:
        data[RUN_BLOCK] = {k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in extra.items()}
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def config_from_dict(data: dict) -> TrainConfig:
    """Inverse of `to_dict` (ignores a `_run` block), e.g. to reload a run's config.yaml."""
    cfg = TrainConfig()
    apply_mapping(cfg, {k: v for k, v in data.items() if k != RUN_BLOCK}, "config")
    validate(cfg)
    return cfg
