"""The two timed sections of the GPU check: the probe against a plain forward, and two training steps.

Shape vocabulary: F frames of S x S px, h x w tokens per frame, N = g*g anchors.

probe_vs_forward  a plain forward against `probes.runner.Probe.evaluate` (one forward with Q/K
                  capture at every layer and the metrics per layer). Both get the same inputs,
                  prepared once and already on the device, so the CPU preprocessing they share
                  is not timed.
train_steps       one LoRA LM step against one GASP geometric step, as the recipe runs them
                  (`GaspModel.forward(batch)`, backward, grad clipping, AdamW step, under the
                  recipe's accelerate autocast; one micro-batch, i.e. grad_accum 1), with the
                  training config's LoRA rank, heads and activation checkpointing, on the same
                  F = data.num_frames_lm random frames; then the geometric step at data.max_frames.
                  One GaspModel and one optimizer serve both kinds, as in the trainer.
Times are medians after a warm-up (`bench.gpu.measure.timed`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.gpu import shapes
from bench.gpu.measure import Meter, timed
from gasp.adapters import get_adapter
from gasp.train.config import TrainConfig
from probes.runner import Probe, ProbeConfig

logger = logging.getLogger(__name__)

ANSWER = ("the camera moves left and the red box is near the blue object in the first frame and "
          "far in the next frame .")


def _to(inputs: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


class _PreparedProbe(Probe):
    """`Probe` whose `prepare` returns inputs prepared once (already on the device): not timed."""

    def __init__(self, *args, prepared, **kw):
        super().__init__(*args, **kw)
        self._prepared = prepared

    def prepare(self, seq):
        return self._prepared


def probe_vs_forward(model, tok, cfg: TrainConfig, frames: int, size: int, reps: int, meter: Meter) -> dict[str, Any]:
    """Plain forward vs `Probe.evaluate` on one random F-frame sequence of S x S px: time and peak memory."""
    adapter = get_adapter(model)
    m = cfg.model
    seq = shapes.synthetic_sequence(frames, size)
    model_size = tuple(m.size) if m.size else None
    inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=tok, prompt=m.prompt, fps=m.fps,
                                            frames_mode=m.frames_mode, size=model_size)
    inputs = _to(inputs, meter.device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    pcfg = ProbeConfig(model=shapes.MODEL_FAMILY, dtype=dtype, fps=m.fps, frames_mode=m.frames_mode, prompt=m.prompt,
                       size=model_size)
    probe = _PreparedProbe(pcfg, model, tok, adapter, meter.device, prepared=(inputs, layout))

    def plain():
        with torch.inference_mode():
            model(**inputs)

    a = timed(plain, meter, reps)
    b = timed(lambda: probe.evaluate([seq]), meter, reps)
    return {"frames": frames, "visual_tokens": int(layout.flat_positions.numel()), "token_grid": list(layout.grid),
            "seq_len": int(inputs["input_ids"].shape[1]), "layers_probed": len(probe.layers),
            "plain_forward_s": a["median_s"], "probe_s": b["median_s"], "ratio": b["median_s"] / a["median_s"],
            "peak_memory_plain_mb": a["peak_mb"], "peak_memory_probe_mb": b["peak_mb"],
            "peak_memory_ratio": b["peak_mb"] / a["peak_mb"], "memory_before_mb": a["before_mb"],
            "peak_reserved_plain_mb": a["peak_reserved_mb"], "peak_reserved_probe_mb": b["peak_reserved_mb"],
            "plain_times_s": a["times_s"], "probe_times_s": b["times_s"]}


def _batches(adapter, tok, cfg: TrainConfig, frames: int, size: int) -> tuple[dict, dict]:
    """(LM batch, geometric batch) on the same F random frames, built as `recipe.make_batch` builds them."""
    from gasp.train.geo_batch import geo_targets

    m = cfg.model
    kw = {"frames_mode": m.frames_mode, "fps": m.fps, "size": tuple(m.size) if m.size else None}
    seq = shapes.synthetic_sequence(frames, size, grid=cfg.data.grid)
    lm_inputs, _ = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=tok, prompt=m.prompt, answer=ANSWER, **kw)
    inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=tok, prompt=m.prompt, **kw)
    geo = {"kind": "geo", "inputs": inputs, "targets": geo_targets(seq, layout), "positions": layout.flat_positions,
           "grids": (layout.num_grids, layout.grid[0] * layout.grid[1])}
    return {"kind": "lm", "inputs": lm_inputs}, geo


def train_steps(model, tok, cfg: TrainConfig, size: int, reps: int, meter: Meter, out_dir: Path,
                record: Callable[[str, Exception], None] | None = None) -> dict[str, Any]:
    """LoRA LM step vs GASP geometric step (module docstring) on S x S frames. Wraps `model` with LoRA in place.

    An error in the extra step at data.max_frames goes to `record` (if given) and leaves the rest.
    """
    from gasp.train import recipe
    from gasp.train.gasp_model import GaspModel, build_heads, build_lora_model, param_groups

    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(out_dir)))
    adapter = get_adapter(model)
    t = time.perf_counter()
    peft_model = build_lora_model(model, adapter, cfg)
    logger.info("building the %s heads on layers %s (init %s)", cfg.loss.on, cfg.heads.layers, cfg.heads.init)
    heads = build_heads(peft_model, adapter, cfg)                                       # as recipe.setup
    gm = GaspModel(peft_model, heads, adapter, cfg).train()
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(gm, o.lr, o.head_lr_mult, o.weight_decay), lr=o.lr)
    acc = recipe.make_accelerator(cfg)
    params = [p for p in gm.parameters() if p.requires_grad]
    setup_s = time.perf_counter() - t
    losses: dict[str, float] = {}

    def step(batch):
        with acc.autocast():
            res = gm(batch)
            acc.backward(res["loss"])
        acc.clip_grad_norm_(params, o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses[batch["kind"]] = float(res["loss"].detach())

    lm, geo = _batches(adapter, tok, cfg, cfg.data.num_frames_lm, size)
    lm, geo = ({**b, "inputs": _to(b["inputs"], meter.device)} for b in (lm, geo))
    logger.info("warm-up: one LM step and one geometric step (optimizer state is allocated here)")
    step(lm)
    step(geo)
    rows = {}
    for name, batch in (("lm", lm), ("geo", geo)):
        r = timed(lambda: step(batch), meter, reps, warmup=0)
        rows[name] = {"s": r["median_s"], "times_s": r["times_s"], "peak_memory_mb": r["peak_mb"],
                      "peak_reserved_mb": r["peak_reserved_mb"], "memory_before_mb": r["before_mb"],
                      "frames": cfg.data.num_frames_lm, "seq_len": int(batch["inputs"]["input_ids"].shape[1]),
                      "loss": losses[name]}
        logger.info("train step %s: %.3f s, peak %.0f MB", name, r["median_s"], r["peak_mb"])
    n_lora = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    out = {"lora_r": cfg.lora.r, "lora_alpha": cfg.lora.alpha, "activation_checkpointing": cfg.model.grad_ckpt,
           "mixed_precision": acc.mixed_precision, "loss_on": cfg.loss.on, "anchors": cfg.data.grid ** 2,
           "trainable_params": {"lora": n_lora, "heads": sum(p.numel() for p in heads.parameters()) if heads else 0},
           "setup_s": setup_s, "lm": rows["lm"], "geo": rows["geo"],
           "ratio_time": rows["geo"]["s"] / rows["lm"]["s"],
           "ratio_peak_memory": rows["geo"]["peak_memory_mb"] / rows["lm"]["peak_memory_mb"]}
    big = cfg.data.max_frames
    if big != cfg.data.num_frames_lm:
        logger.info("geometric step at data.max_frames = %d", big)
        try:
            _, geo_big = _batches(adapter, tok, cfg, big, size)
            geo_big = {**geo_big, "inputs": _to(geo_big["inputs"], meter.device)}
            r = timed(lambda: step(geo_big), meter, reps, warmup=1)
        except Exception as e:
            if record is None:
                raise
            record("train/geo_max_frames", e)
        else:
            out["geo_max_frames"] = {"s": r["median_s"], "times_s": r["times_s"], "peak_memory_mb": r["peak_mb"],
                                     "peak_reserved_mb": r["peak_reserved_mb"], "frames": big,
                                     "seq_len": int(geo_big["inputs"]["input_ids"].shape[1]), "loss": losses["geo"]}
            logger.info("train step geo at %d frames: %.3f s, peak %.0f MB", big, r["median_s"], r["peak_mb"])
    return out
