"""Benchmark a PseudoGD training step against a LoRA LM step, side by side: time and peak memory.

The model is the tiny Qwen2.5-VL made wider (text hidden 256, 8 layers, 8 heads, 2 KV heads) with a vision
tower sized so that its share of the work per visual token is about Qwen2.5-VL-7B's: 4 blocks of width 96
(SwiGLU 256), whose weights times 4 patches a token are ~0.45 of the LLM's weights a token (7B: 630M x 4 +
45M merger against 6.5G, ~0.39). One batch of F frames at S x S px (default 8 at 448: 16 x 16 tokens a frame,
2048 visual tokens) and a 20-token answer, built once in a child process and read by every step.

    lm    the LoRA LM step: LoRA r 16 on the LLM (the recipe's default), the vision tower frozen; one
          optimizer step over one instruction micro-batch (forward with labels, backward, clip, AdamW).
    pgd   PseudoGD's step as the recipe runs configs/pseudogd_tiny.yaml: the same LLM LoRA plus a vision
          LoRA (r 4, alpha 8 on qkv and proj), the projector trained, the depth and structure heads at the
          paper's widths (d -> 1024 -> 1, d -> 2048 -> 256); one optimizer step over the same instruction
          micro-batch (now back-propagating into the vision tower) plus one geometric micro-batch of the same
          frames (the vision tower alone, eq. 3 + eq. 4).
    pgd_s as pgd with the heads' inner widths scaled by this model's width / 7B's (384 / 5120): the paper's
          heads are ~0.25 % of a 7B step's weights a token but ~38 % of this tiny model's, so pgd overstates
          their cost at scale; pgd_s shows the step without that distortion.
    joint, joint_s  the paper's one-forward step: one instruction micro-batch that also carries the depth and
          structure targets, so one forward gives the LM loss and the encoder features eq. 3 and eq. 4 read
          (GaspModel's joint path); the same sample count as lm. joint_s with the scaled heads.

Each variant runs in fresh processes, alternating over --rounds: a timing process (default malloc; median of
--reps steps after one warm-up) and a memory process (MALLOC_MMAP_THRESHOLD_=65536, MALLOC_TRIM_THRESHOLD_=0,
so peak RSS follows live tensors; warm-up + 1 step). OMP_NUM_THREADS=1. Ratios are to lm from the same run.

    python bench/bench_pseudogd.py [--frames 8] [--size 448] [--rounds 3] [--reps 3] [--out bench_pgd.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "tiny-qwen2.5-vl"
WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
        "num_key_value_heads": 2, "vision_depth": 4, "vision_hidden_size": 96, "vision_intermediate_size": 256,
        "vision_num_heads": 4, "vision_fullatt_block_indexes": [3]}
PROMPT = "describe the video."
ANSWER = "the camera moves left and the red box is near the blue object ."
VARIANTS = ("lm", "pgd", "pgd_s", "joint", "joint_s")
SCALE = 384 / 5120                       # this model's pre-projector width / Qwen2.5-VL-7B's


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_batch_file(path: Path, frames: int, size: int) -> dict:
    import numpy as np
    import torch

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny

    model, tok = build_tiny(MODEL, seed=0, **WIDE)
    adapter = get_adapter(model)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    inputs, layout = adapter.prepare_inputs(video, processor_or_tokenizer=tok, prompt=PROMPT, answer=ANSWER)
    nf, p = layout.num_grids, layout.grid[0] * layout.grid[1]
    codes = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(nf, p, 256)).astype(np.float32)), dim=-1)
    torch.save({"inputs": dict(inputs), "positions": layout.flat_positions, "grids": [nf, p],
                "tok_depth": torch.from_numpy(rng.uniform(1, 10, (nf, p)).astype(np.float32)), "structure": codes}, path)
    vis = sum(x.numel() for n, x in model.named_parameters() if "visual.blocks" in n)
    merger = sum(x.numel() for n, x in model.named_parameters() if "visual.merger" in n)
    llm = sum(x.numel() for n, x in model.named_parameters() if "language_model.layers" in n)
    return {"seq_len": int(inputs["input_ids"].shape[1]), "visual_tokens": int(layout.flat_positions.numel()),
            "vision_to_llm_weights_per_token": round((4 * vis + merger) / llm, 3)}


def _run(variant: str, batch_path: str, reps: int, out_dir: str) -> dict:
    import torch

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny
    from gasp.objectives.base import ObjectiveConfig
    from gasp.train import recipe
    from gasp.train.config import TrainConfig
    from gasp.train.gasp_model import (GaspModel, build_lora_model, build_objective_heads, make_objectives,
                                       param_groups)
    from gasp.train.geo_batch import GeoTargets

    torch.set_num_threads(1)
    cfg = TrainConfig()
    cfg.model.mixed_precision = "no"
    cfg.run.out = out_dir
    cfg.optim.warmup_steps = 0
    if variant == "lm":
        cfg.loss.corr = cfg.loss.depth = False                     # no objective: LM batches only
    else:
        hidden = (None, None) if variant in ("pgd", "joint") else (round(1024 * SCALE), round(2048 * SCALE))
        cfg.objectives = [ObjectiveConfig(name="pgd_depth", head_hidden=hidden[0]),
                          ObjectiveConfig(name="pgd_structure", head_hidden=hidden[1])]
        cfg.lora.vision_r, cfg.lora.vision_alpha, cfg.model.train_projector = 4, 8, True
        cfg.optim.grad_accum, cfg.data.lm_ratio = (2, 0.5) if variant.startswith("pgd") else (1, 1.0)
    torch.manual_seed(0)
    model, _tok = build_tiny(MODEL, seed=0, **WIDE)
    adapter = get_adapter(model)
    peft_model = build_lora_model(model, adapter, cfg)
    objectives = make_objectives(cfg)
    gm = GaspModel(peft_model, None, adapter, cfg, objectives, build_objective_heads(peft_model, adapter, cfg, objectives))
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(gm, o.lr, o.head_lr_mult, o.weight_decay), lr=o.lr)
    scheduler = recipe.cosine_with_warmup(optimizer, 0, o.max_steps)
    gm.train()
    acc = recipe.make_accelerator(cfg)
    prepared, optimizer = acc.prepare(gm, optimizer)
    run = recipe.Run(cfg, Path(out_dir), acc, prepared, peft_model, None, None, adapter, optimizer, scheduler,
                     geo=object() if objectives else None, lm=object(), eval_path=None)
    saved = torch.load(batch_path, weights_only=True)
    inputs = dict(saved["inputs"])
    labels = inputs.pop("labels")
    nf, p = saved["grids"]
    targets = GeoTargets(anchor_tok=torch.zeros(1, dtype=torch.long), gt_tok=torch.zeros(nf, 1, dtype=torch.long),
                         valid=torch.zeros(nf, 1, dtype=torch.bool), gt_depth=torch.full((nf, 1), float("nan")),
                         tok_depth=saved["tok_depth"], query_frame=0)
    batches = {"lm": {"kind": "lm", "inputs": {**inputs, "labels": labels}},
               "geo": {"kind": "geo", "inputs": inputs, "targets": targets, "positions": saved["positions"],
                       "grids": (nf, p), "structure": saved["structure"]}}
    if variant.startswith("joint"):                             # the instruction batch carries the targets too
        batches["lm"] = {**batches["geo"], "kind": "lm", "inputs": {**inputs, "labels": labels}}
    recipe.make_batch = lambda run_, kind, index: batches[kind]
    n_train = sum(x.numel() for x in gm.parameters() if x.requires_grad)
    import gc

    gc.collect()
    rss_before = _rss_now_mb()
    times, recs = [], []
    for i in range(reps + 1):                                   # step 0 is the warm-up
        t = time.perf_counter()
        recs.append(recipe.train_step(run, i))
        if i:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "median_s": statistics.median(times), "times_s": times, "peak_rss_mb": peak,
            "step_extra_mb": peak - rss_before, "trainable_params": n_train, "last_metrics": recs[-1]}


ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _child(args: list[str], fixed_malloc: bool) -> dict:
    env = {**ENV, **(MALLOC_ENV if fixed_malloc else {}), **({"HOME": os.environ["HOME"]} if "HOME" in os.environ else {})}
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        raise RuntimeError(f"child {args} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)   # lm first: the ratios' base
    ap.add_argument("--out", type=Path)
    ap.add_argument("--_step", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_batch", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._step:
        print(json.dumps(_run(a._step[0], a._step[1], a.reps, a._step[2])))
        return 0
    if a._batch:
        print(json.dumps(make_batch_file(Path(a._batch[0]), int(a._batch[1]), int(a._batch[2]))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch.pt"
        info = _child(["--_batch", str(batch), str(a.frames), str(a.size)], False)   # the parent never imports torch
        print(f"batch: {info}", file=sys.stderr)
        for rnd in range(a.rounds):
            for v in a.variants:
                for mode, fixed, reps in (("time", False, a.reps), ("mem", True, 1)):
                    r = _child(["--reps", str(reps), "--_step", v, str(batch), str(Path(tmp) / v)], fixed)
                    rows.append({**r, "mode": mode, "round": rnd})
                t, m = rows[-2], rows[-1]
                print(f"  round {rnd} {v}: {t['median_s'] * 1e3:.0f} ms, peak {m['peak_rss_mb']:.0f} MB", file=sys.stderr)

    def med(v, key, mode):
        return statistics.median(r[key] for r in rows if r["variant"] == v and r["mode"] == mode)

    names = {"lm": "LoRA LM step", "pgd": "PseudoGD step (paper's head widths)",
             "pgd_s": "PseudoGD step (head widths scaled to this model)",
             "joint": "PseudoGD one-forward step (paper's head widths)",
             "joint_s": "PseudoGD one-forward step (scaled heads)"}
    print(f"tiny-qwen2.5-vl wide, vision/LLM weights per visual token {info['vision_to_llm_weights_per_token']}; "
          f"{a.frames} frames at {a.size}x{a.size} ({info['visual_tokens']} visual tokens, sequence {info['seq_len']}); "
          f"fp32 CPU, 1 thread; {a.rounds} rounds x {a.reps} timed steps")
    print()
    print("| variant | median step (ms) | x LM | peak RSS (MB) | x LM | step extra RSS (MB) | trainable params |")
    print("|---|---|---|---|---|---|---|")
    base_t, base_m = med("lm", "median_s", "time"), med("lm", "peak_rss_mb", "mem")
    summary = {}
    for v in a.variants:
        t, m = med(v, "median_s", "time"), med(v, "peak_rss_mb", "mem")
        extra = med(v, "step_extra_mb", "mem")
        n = rows[[r["variant"] for r in rows].index(v)]["trainable_params"]
        summary[v] = {"median_ms": t * 1e3, "time_ratio": t / base_t, "peak_rss_mb": m, "mem_ratio": m / base_m,
                      "step_extra_mb": extra, "trainable_params": n}
        print(f"| {names[v]} | {t * 1e3:.0f} | {t / base_t:.2f} | {m:.0f} | {m / base_m:.2f} | {extra:.0f} | {n:,} |")
    if a.out:
        a.out.write_text(json.dumps({"config": vars(a) | {"out": str(a.out)}, "batch": info, "summary": summary,
                                     "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
