"""The GPU check (issue 11, sec. 3): the probe and a GASP step at Qwen2.5-VL-7B's shape, random weights.

    spec = CheckSpec.qwen25_vl_7b(train_cfg)          # or CheckSpec.tiny(train_cfg): the same code on CPU
    result = run_check(spec, "gpu_check.json")

Sections, in this order; each is written to the JSON as soon as it is done (atomically), so a
run cut short keeps what it has, and an error in one is recorded and the next still runs:
  qk_eager  captured Q/K reproduce eager attention, on a model of the same widths with 2 LLM
            layers (`bench.gpu.qk_check`; the tolerance and why are in the JSON);
  probe     per attention implementation (sdpa; flash_attention_2 where `flash_attn` imports)
            and frame count: plain forward against `Probe.evaluate` (`bench.gpu.sections`);
  train     one LoRA LM step against one GASP geometric step at the training config's LoRA rank
            with activation checkpointing, then the geometric step at data.max_frames.
The full-size model is built once, straight onto the device (`bench.gpu.shapes`), used by the
probe section, then wrapped with LoRA for the training section. Frames are S x S px with
16 x 16 tokens per frame at S = 448 (28 px tokens after the 2 x 2 merge).
"""
from __future__ import annotations

import gc
import logging
import math
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.gpu import shapes
from bench.gpu.measure import Meter
from bench.gpu.qk_check import qk_vs_eager
from bench.gpu.sections import probe_vs_forward, train_steps
from gasp.runinfo import run_info, write_json_atomic
from gasp.train.config import TrainConfig, to_dict

logger = logging.getLogger(__name__)

SECTIONS = ("qk_eager", "probe", "train")          # keys of the JSON, in run order
# --tiny: the 7B training config with a LoRA rank for the tiny model's width and half the frames
TINY_TRAIN_OVERRIDES = ("lora.r=16", "lora.alpha=32", "data.min_frames=4", "data.max_frames=8", "data.num_frames_lm=4")


@dataclass
class CheckSpec:
    """What one check runs: the model shape, the device, the frame counts and the training config."""

    name: str
    sizes: dict[str, Any]
    train: TrainConfig
    device: str = "cuda"
    dtype: torch.dtype = torch.bfloat16
    frame_counts: tuple[int, ...] = (8, 16, 24)
    frame_size: int = 448
    qk_frames: int = 8
    reps: int = 3
    attn_implementations: tuple[str, ...] = ("sdpa", "flash_attention_2")
    notes: list[str] = field(default_factory=list)

    @classmethod
    def qwen25_vl_7b(cls, train: TrainConfig, **kw) -> CheckSpec:
        return cls(name="qwen2.5-vl-7b shape, random weights", sizes=shapes.QWEN25_VL_7B, train=train, **kw)

    @classmethod
    def tiny(cls, train: TrainConfig, **kw) -> CheckSpec:
        kw = {"device": "cpu", "frame_counts": (4, 8), "qk_frames": 4, **kw}
        return cls(name="tiny-qwen2.5-vl shape on CPU (smoke run, not a GPU number)", sizes=shapes.TINY,
                   train=train, **kw)


def flash_attn_status() -> str | None:
    """None if flash_attention_2 can run here, else why not."""
    try:
        import flash_attn  # noqa: F401
    except Exception as e:                  # ImportError, or a binary built for another torch/CUDA
        return f"flash_attn does not import ({type(e).__name__}: {e})"
    from transformers.utils import is_flash_attn_2_available

    return None if is_flash_attn_2_available() else "transformers says flash_attention_2 is not available"


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": p.name, "total_memory_mb": p.total_memory / 2 ** 20,
                "capability": list(torch.cuda.get_device_capability(device)), "cuda": torch.version.cuda}
    import platform

    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def _versions() -> dict[str, str]:
    import accelerate
    import peft

    return {**run_info(), "peft": peft.__version__, "accelerate": accelerate.__version__}


def _finite(obj, path: str, bad: list[str]):
    """`obj` with every NaN/inf float replaced by None (strict JSON), their paths appended to `bad`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(path)
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}", bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    return obj


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_check(spec: CheckSpec, out: str | Path) -> dict[str, Any]:
    """Run every section, writing `out` (JSON) after each; returns the final content."""
    device = torch.device(spec.device)
    meter = Meter(device)
    t0 = time.perf_counter()
    full_cfg, tok = shapes.build_config(spec.sizes)
    res: dict[str, Any] = {
        "check": "gasp GPU check (issue 11 sec. 3)", "spec": spec.name, "complete": False,
        "device": _device_info(device), **_versions(), "dtype": str(spec.dtype).removeprefix("torch."),
        "time_kind": meter.time_kind, "memory_kind": meter.peak_kind, "reps": spec.reps, "warmup": 1,
        "frame_size": spec.frame_size, "config_sizes": shapes.config_sizes(full_cfg),
        "train_config": to_dict(spec.train), "notes": list(spec.notes), "errors": {},
    }
    impls = {}
    for name in spec.attn_implementations:
        why = flash_attn_status() if name.startswith("flash") else None
        impls[name] = "run" if why is None else f"skipped: {why}"
    res["attn_implementations"] = impls

    def save():
        res["wall_s"] = time.perf_counter() - t0
        bad: list[str] = []
        clean = _finite({k: v for k, v in res.items() if k != "non_finite"}, "", bad)
        res["non_finite"] = clean["non_finite"] = bad      # paths of NaN/inf numbers, written as null
        write_json_atomic(out, clean)

    def record(key, e):
        logger.error("%s failed: %s: %s", key, type(e).__name__, e)
        res["errors"][key] = "".join(traceback.format_exception_only(type(e), e)).strip()
        res.setdefault("tracebacks", {})[key] = traceback.format_exc()[-4000:]

    def section(name, fn):
        logger.info("section %s ...", name)
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:               # recorded; the other sections still run
            record(name, e)
        res.setdefault("section_wall_s", {})[name] = time.perf_counter() - t
        save()
        _free(device)

    section("qk_eager", lambda: _qk_section(spec, device))
    logger.info("building the full-size model on %s (%s)", device, spec.name)
    t = time.perf_counter()
    try:
        model = shapes.build_model(full_cfg, device, spec.dtype, attn="sdpa")
    except Exception as e:
        record("build", e)
        save()
        return res
    res["build_s"] = time.perf_counter() - t
    res["num_params"] = sum(p.numel() for p in model.parameters())
    res["weights_mb"] = meter.current_mb()
    save()
    section("probe", lambda: _probe_section(model, tok, spec, impls, meter, record))
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        section("train", lambda: train_steps(model, tok, spec.train, spec.frame_size, spec.reps, meter,
                                             Path(tmp), record))
    del model
    _free(device)
    save()
    res["complete"] = not res["errors"] and not res["non_finite"]
    save()
    return res


def _qk_section(spec: CheckSpec, device: torch.device) -> dict[str, Any]:
    from gasp.adapters import get_adapter

    cfg, tok = shapes.build_config(spec.sizes, num_hidden_layers=2)
    model = shapes.build_model(cfg, device, spec.dtype, attn="sdpa")
    m = spec.train.model
    seq = shapes.synthetic_sequence(spec.qk_frames, spec.frame_size)
    inputs, _ = get_adapter(model).prepare_inputs(seq.frames, processor_or_tokenizer=tok, prompt=m.prompt, fps=m.fps,
                                                  frames_mode=m.frames_mode, size=tuple(m.size) if m.size else None)
    out = qk_vs_eager(model, {k: v.to(device) for k, v in inputs.items()})
    return {"frames": spec.qk_frames, "model": "same widths, 2 LLM layers", **out}


def _probe_section(model, tok, spec: CheckSpec, impls: dict[str, str], meter: Meter, record) -> dict[str, Any]:
    """{implementation: {frames: row}}; a failing (implementation, frame count) is recorded, the rest run."""
    out: dict[str, Any] = {}
    for name, status in impls.items():
        if status != "run":
            continue
        rows = out[name] = {}
        try:
            model.set_attn_implementation(name)
            for f in spec.frame_counts:
                logger.info("probe vs plain forward: %s, %d frames", name, f)
                try:
                    rows[str(f)] = r = probe_vs_forward(model, tok, spec.train, f, spec.frame_size, spec.reps, meter)
                except Exception as e:
                    record(f"probe/{name}/{f}", e)
                    _free(meter.device)
                    continue
                logger.info("  %d frames (%d tokens): forward %.3f s, probe %.3f s (x%.2f); peak %.0f / %.0f MB",
                            f, r["seq_len"], r["plain_forward_s"], r["probe_s"], r["ratio"],
                            r["peak_memory_plain_mb"], r["peak_memory_probe_mb"])
        except Exception as e:
            record(f"probe/{name}", e)
        finally:
            model.set_attn_implementation("sdpa")
    return out
