"""Benchmark a GASP training step against a LoRA LM-only step, and the GASP losses alone.

Part 1, training steps on one batch of a tiny-but-wider Qwen2.5-VL (text hidden 256, 8 layers,
8 heads, 2 KV heads; random weights) with F frames at S x S px (default 8 frames at 448x448:
16x16 tokens per frame, 2048 visual tokens). Both variants use the recipe's defaults
(`gasp.train.config`: LoRA r=16 on the LLM projections, non-reentrant activation checkpointing,
AdamW, grad clipping, fp32 on CPU) and run `gasp.train.recipe.train_step` itself, through
accelerate, with `recipe.make_batch` replaced by one pre-built batch (no data loading or
preprocessing in the timed step):
    a  LM-only run: no heads; one step = forward with labels (the VLM's next-token loss on the
       answer tokens), backward, clip, AdamW step.
    b  GASP geometric step, exactly as the recipe does it (`GaspModel._geo`): heads on all
       layers (hidden 512, d_emb 128, SVD init), one forward with q_proj-input capture and
       logits_to_keep=1, L = lambda_c L_corr + lambda_d L_depth with anchor chunking
       (chunk_size 64). The recipe adds NO LM loss on a geometric step (a step is either an
       LM batch or a geometric batch, `lm_stream.batch_kind`); the inputs are the same
       tokens as in (a) without `labels`.
    c  (not a recipe path, for reference) b plus the LM loss on the same batch in the same
       forward (labels passed, full logits): L = L_LM + lambda_c L_corr + lambda_d L_depth.
Targets: a fine 24x24 anchor grid (N=576) by default, tracks = grid + noise, all visible,
random positive depth.

Part 2, the loss alone: `gasp_losses` forward+backward (both losses) on random unit
embeddings (L=8, F frames, 16x16 tokens, E=128, N=576 fine-grid anchors), without anchor
chunking and with chunk_size 64 (checkpointed chunks, the recipe's default).

Each (variant, size) runs in its own fresh process: peak RSS = ru_maxrss of that process
(the parent never imports torch: a child's ru_maxrss starts at its parent's RSS at fork),
"step extra" = peak RSS minus the process's current RSS just before the first (warm-up) step
(model built, batch loaded). Processes alternate over ``--rounds`` rounds; each times
``--reps`` steps after one warm-up step. Medians over reps, then medians over rounds; the
ratios come from one run. OMP_NUM_THREADS=1, torch.set_num_threads(1).

Time and memory come from separate processes. glibc's dynamic mmap threshold keeps freed
blocks of up to 32 MB in the heap, so with the default allocator the RSS high-water mark
reflects allocator history more than live tensors; with a fixed threshold
(MALLOC_MMAP_THRESHOLD_=65536, MALLOC_TRIM_THRESHOLD_=0) every large block goes back to the
OS on free and peak RSS tracks live memory, but every large allocation then costs page
faults, which slows a step by ~50 %. So each (variant, size) runs one timing process
(default allocator, --reps timed steps) and one memory process (fixed threshold; warm-up +
1 step for a training step, one call for the loss); times come from the former, peak RSS and "extra" from the latter (the timing
process's peak RSS is kept as "peak RSS, default malloc").

    python bench/bench_train.py [--frames 8] [--size 448] [--rounds 3] [--reps 2]
                                  [--loss-frames 8 16 24] [--out bench_train.json]
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

WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
        "num_key_value_heads": 2}
MODEL = "tiny-qwen2.5-vl"
PROMPT = "describe the video."
ANSWER = ("the camera moves left and the red box is near the blue object in the first frame and "
          "far in the next frame .")
STEP_VARIANTS = ("a", "b", "c")
LOSS_VARIANTS = ("unchunked", "chunk64")


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- part 1: one batch, built once in the parent ----------------------------------------
def make_batch_file(path: Path, frames: int, size: int, grid: int) -> dict:
    import numpy as np
    import torch

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny
    from gasp.train.geo_batch import geo_targets
    from tracks.geometry import grid_points
    from tracks.types import TrackSequence

    model, tok = build_tiny(MODEL, seed=0, **WIDE)
    adapter = get_adapter(model)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    inputs, layout = adapter.prepare_inputs(video, processor_or_tokenizer=tok, prompt=PROMPT, answer=ANSWER)
    n = grid * grid
    pts = grid_points(grid, size, size)
    tracks = np.clip(pts[None] + rng.normal(0, size / 40, (frames, n, 2)), 0, size - 1).astype(np.float32)
    tracks[0] = pts
    seq = TrackSequence(frames=video, depth=rng.uniform(1, 10, (frames, size, size)).astype(np.float32),
                        K=np.tile(np.eye(3), (frames, 1, 1)), cam_from_world=np.tile(np.eye(4), (frames, 1, 1)),
                        frame_index=np.arange(frames, dtype=np.int64), tracks=tracks,
                        visible=np.ones((frames, n), dtype=bool),
                        track_depth=rng.uniform(1, 10, (frames, n)).astype(np.float32), query_frame=0,
                        scene="bench", key="bench/0", grid=grid)
    from dataclasses import asdict

    # tensors and plain containers only, so that the step processes read it with weights_only=True
    batch = {"inputs": dict(inputs), "targets": asdict(geo_targets(seq, layout)), "positions": layout.flat_positions,
             "grids": [layout.num_grids, layout.grid[0] * layout.grid[1]]}
    torch.save(batch, path)
    return {"seq_len": int(inputs["input_ids"].shape[1]), "visual_tokens": int(layout.flat_positions.numel()),
            "token_grid": list(layout.grid), "num_grids": layout.num_grids, "anchors": n,
            "labelled_tokens": int((inputs["labels"] != -100).sum())}


def _run_step_variant(variant: str, batch_path: str, reps: int, out_dir: str) -> dict:
    import torch

    from gasp.adapters import get_adapter
    from gasp.losses import gasp_losses
    from gasp.models.tiny import build_tiny
    from gasp.train import recipe
    from gasp.capture.q_inputs import capture_q_inputs
    from gasp.train.config import TrainConfig
    from gasp.train.gasp_model import GaspModel, build_heads, build_lora_model, param_groups

    torch.set_num_threads(1)
    cfg = TrainConfig()                              # the recipe's defaults
    cfg.model.mixed_precision = "no"
    cfg.run.out = out_dir
    cfg.optim.warmup_steps = 0
    torch.manual_seed(cfg.run.seed)
    model, _tok = build_tiny(MODEL, seed=cfg.run.seed, **WIDE)
    adapter = get_adapter(model)
    peft_model = build_lora_model(model, adapter, cfg)
    heads = None
    if variant in ("b", "c"):
        heads = build_heads(peft_model, adapter, cfg)

    class GeoPlusLM(GaspModel):
        """Variant c only: the geometric losses plus the LM loss of the same forward."""

        def _geo(self, inputs, batch, dev):
            lc, tg = self.loss_cfg, batch["targets"].to(dev)
            nf, p = batch["grids"]
            with capture_q_inputs(self.model, self.decoder_layers, layers=self.heads.layers,
                                  positions=batch["positions"].to(dev), require_grad=True) as rec:
                out = self.model(**inputs, labels=batch["labels"].to(dev))
            emb = self.heads({i: x[0].unflatten(0, (nf, p)) for i, x in rec.states.items()})
            res = gasp_losses(emb, tg.anchor_tok, tg.gt_tok, tg.valid, tg.gt_depth, tg.tok_depth,
                              query_frame=tg.query_frame, tau=lc.tau, chunk_size=lc.chunk_size)
            loss = out.loss + lc.lambda_corr * res["l_corr"] + lc.lambda_depth * res["l_depth"]
            return {"loss": loss, "l_lm": out.loss.detach(), "l_corr": res["l_corr"].detach(),
                    "l_depth": res["l_depth"].detach()}

    gm = (GeoPlusLM if variant == "c" else GaspModel)(peft_model, heads, adapter, cfg)
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(gm, o.lr, o.head_lr_mult, o.weight_decay), lr=o.lr)
    from gasp.train.recipe import cosine_with_warmup
    scheduler = cosine_with_warmup(optimizer, o.warmup_steps, o.max_steps)
    gm.train()
    acc = recipe.make_accelerator(cfg)
    prepared, optimizer = acc.prepare(gm, optimizer)
    run = recipe.Run(cfg, Path(out_dir), acc, prepared, peft_model, heads, None, adapter, optimizer, scheduler,
                     geo=object() if variant != "a" else None, lm=object() if variant == "a" else None,
                     eval_path=None)

    from gasp.train.geo_batch import GeoTargets

    saved = torch.load(batch_path, weights_only=True)
    saved["targets"] = GeoTargets(**saved["targets"])
    inputs = dict(saved["inputs"])
    labels = inputs.pop("labels")
    if variant == "a":
        batch = {"kind": "lm", "inputs": {**inputs, "labels": labels}}
    else:
        batch = {"kind": "geo", "inputs": inputs, "targets": saved["targets"], "positions": saved["positions"],
                 "grids": tuple(saved["grids"])}
        if variant == "c":
            batch["labels"] = labels
    recipe.make_batch = lambda run_, kind, index: batch      # the one pre-built batch, every step
    n_train = sum(p.numel() for p in gm.parameters() if p.requires_grad)

    import gc
    gc.collect()
    rss_before = _rss_now_mb()
    times, recs = [], []
    for i in range(reps + 1):                        # step 0 is the warm-up
        t = time.perf_counter()
        rec = recipe.train_step(run, i)
        dt = time.perf_counter() - t
        if i:
            times.append(dt)
        recs.append(rec)
    peak = _peak_mb()
    return {"part": "step", "variant": variant, "median_s": statistics.median(times), "times_s": times,
            "peak_rss_mb": peak, "rss_before_mb": rss_before, "step_extra_mb": peak - rss_before,
            "trainable_params": n_train, "last_metrics": recs[-1]}


# ---- part 2: the loss alone -------------------------------------------------------------
def _run_loss_variant(variant: str, frames: int, reps: int, grid: int, tok: int, layers: int, d_emb: int) -> dict:
    import torch
    import torch.nn.functional as F_

    from gasp.losses import gasp_losses

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    p, n = tok * tok, grid * grid
    base = F_.normalize(torch.randn(layers, frames, p, d_emb, generator=g), dim=-1)
    anchor_tok = torch.randint(0, p, (n,), generator=g)
    gt_tok = torch.randint(0, p, (frames, n), generator=g)
    valid = torch.rand(frames, n, generator=g) < 0.9
    gt_depth = torch.rand(frames, n, generator=g) * 9 + 1
    tok_depth = torch.rand(frames, p, generator=g) * 9 + 1
    chunk = None if variant == "unchunked" else 64

    def once():
        emb = base.clone().requires_grad_(True)
        res = gasp_losses(emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth, query_frame=0, chunk_size=chunk)
        (res["l_corr"] + res["l_depth"]).backward()
        return emb.grad

    import gc
    gc.collect()
    rss_before = _rss_now_mb()
    once()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    peak = _peak_mb()
    return {"part": "loss", "variant": variant, "frames": frames, "anchors": n, "tokens": frames * p,
            "median_s": statistics.median(times) if times else None, "times_s": times, "peak_rss_mb": peak,
            "rss_before_mb": rss_before, "loss_extra_mb": peak - rss_before}


# ---- driver -----------------------------------------------------------------------------
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


# glibc's dynamic mmap threshold otherwise keeps freed blocks of up to 32 MB in the heap, so the
# RSS high-water mark reflects allocator history rather than live tensors; a fixed threshold
# returns every block >= 64 KiB to the OS on free.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _child(args: list[str], fixed_malloc: bool = True) -> dict:
    env = {**ENV, **(MALLOC_ENV if fixed_malloc else {})}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        raise RuntimeError(f"child {args} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=448, help="frame side in px (448: 16x16 tokens per frame)")
    p.add_argument("--grid", type=int, default=24, help="anchor grid g x g of the training step's targets")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=2, help="timed steps per process, after one warm-up")
    p.add_argument("--variants", nargs="+", default=list(STEP_VARIANTS), choices=STEP_VARIANTS)
    p.add_argument("--loss-frames", type=int, nargs="*", default=[8, 16, 24])
    p.add_argument("--loss-reps", type=int, default=3)
    p.add_argument("--out", type=Path, help="write all measurements as JSON")
    p.add_argument("--_step", nargs=3, metavar=("VARIANT", "BATCH", "OUTDIR"), help=argparse.SUPPRESS)
    p.add_argument("--_batch", nargs=4, metavar=("PATH", "FRAMES", "SIZE", "GRID"), help=argparse.SUPPRESS)
    p.add_argument("--_loss", nargs=2, metavar=("VARIANT", "FRAMES"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._step:
        print(json.dumps(_run_step_variant(a._step[0], a._step[1], a.reps, a._step[2])))
        return 0
    if a._batch:
        print(json.dumps(make_batch_file(Path(a._batch[0]), *map(int, a._batch[1:]))))
        return 0
    loss_shape = {"grid": 24, "tok": 16, "layers": WIDE["num_hidden_layers"], "d_emb": 128}
    if a._loss:
        print(json.dumps(_run_loss_variant(a._loss[0], int(a._loss[1]), a.reps, **loss_shape)))
        return 0

    t0 = time.perf_counter()
    rows = []

    def run_both(part, v, args, reps, mem_reps, extra):
        """One timing process (default malloc) and one memory process (fixed mmap threshold)."""
        for mode, fixed, n in (("time", False, reps), ("mem", True, mem_reps)):
            r = _child(["--reps", str(n), *args], fixed)
            r.update(mode=mode, **extra)
            rows.append(r)
        t, m = rows[-2], rows[-1]
        key = "step_extra_mb" if part == "step" else "loss_extra_mb"
        print(f"  {part} {v} {extra}: {t['median_s'] * 1e3:.0f} ms, peak {m['peak_rss_mb']:.0f} MB, "
              f"extra {m[key]:.0f} MB", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        batch_path = Path(tmp) / "batch.pt"
        # In a child too: Linux carries the RSS high-water mark of the forking process into
        # the exec'd child's ru_maxrss, so this parent must stay small (it never imports torch).
        info = _child(["--_batch", str(batch_path), str(a.frames), str(a.size), str(a.grid)], False)
        print(f"batch: {info}", file=sys.stderr)
        for rnd in range(a.rounds):
            for v in a.variants:
                run_both("step", v, ["--_step", v, str(batch_path), str(Path(tmp) / f"run_{v}")], a.reps, 1,
                         {"round": rnd})
            for f in a.loss_frames:
                for v in LOSS_VARIANTS:
                    run_both("loss", v, ["--_loss", v, str(f)], a.loss_reps, 0, {"round": rnd, "frames": f})

    def med(part, v, key, frames=None):
        mode = "time" if key == "median_s" or key.endswith("_default_malloc") else "mem"
        key = key.removesuffix("_default_malloc")
        vals = [r[key] for r in rows if r["part"] == part and r["variant"] == v and r["mode"] == mode
                and (frames is None or r.get("frames") == frames)]
        return statistics.median(vals) if vals else float("nan")

    names = {"a": "LoRA LM-only step", "b": "GASP geometric step (recipe)", "c": "GASP step + LM loss (ref.)"}
    print(f"Training step: tiny-qwen2.5-vl wide (hidden 256, 8 layers, 8 heads, 2 KV heads), {a.frames} frames "
          f"at {a.size}x{a.size} ({info['visual_tokens']} visual tokens, sequence {info['seq_len']}), "
          f"{info['anchors']} anchors, heads on all 8 layers; fp32 CPU, 1 thread; "
          f"{a.rounds} rounds x {a.reps} timed steps (+1 warm-up) per variant")
    print()
    print("| variant | median step (ms) | peak RSS (MB) | step extra RSS (MB) | peak RSS, default malloc (MB) "
          "| trainable params |")
    print("|---|---|---|---|---|---|")
    for v in a.variants:
        ntr = next(r["trainable_params"] for r in rows if r["part"] == "step" and r["variant"] == v)
        print(f"| {v}: {names[v]} | {med('step', v, 'median_s') * 1e3:.0f} | {med('step', v, 'peak_rss_mb'):.0f} "
              f"| {med('step', v, 'step_extra_mb'):.0f} | {med('step', v, 'peak_rss_mb_default_malloc'):.0f} "
              f"| {ntr:,} |")
    print()
    ratios = {}
    for v in [x for x in a.variants if x != "a"]:
        if "a" not in a.variants:
            break
        rt = med("step", v, "median_s") / med("step", "a", "median_s")
        rm = med("step", v, "peak_rss_mb") / med("step", "a", "peak_rss_mb")
        rx = med("step", v, "step_extra_mb") / med("step", "a", "step_extra_mb")
        ratios[v] = {"time": rt, "peak_rss": rm, "step_extra_rss": rx}
        print(f"{v}/a: step time {rt:.3f} (target <= 1.3: {'met' if rt <= 1.3 else 'NOT met'}), "
              f"peak RSS {rm:.3f} (target <= 1.3: {'met' if rm <= 1.3 else 'NOT met'}), "
              f"step extra RSS {rx:.3f}")
    if a.loss_frames:
        print()
        print(f"Loss alone: gasp_losses forward+backward (both losses), L={loss_shape['layers']}, "
              f"E={loss_shape['d_emb']}, N={loss_shape['grid'] ** 2} anchors (24x24 grid), 16x16 tokens per frame, "
              f"fp32 CPU, 1 thread; {a.rounds} rounds x {a.loss_reps} timed calls (+1 warm-up)")
        print()
        print("| frames | tokens M | chunking | median time (ms) | peak RSS (MB) | loss extra RSS (MB) |")
        print("|---|---|---|---|---|---|")
        for f in a.loss_frames:
            for v in LOSS_VARIANTS:
                print(f"| {f} | {f * 256} | {'none' if v == 'unchunked' else '64 anchors, checkpointed'} "
                      f"| {med('loss', v, 'median_s', f) * 1e3:.0f} | {med('loss', v, 'peak_rss_mb', f):.0f} "
                      f"| {med('loss', v, 'loss_extra_mb', f):.0f} |")
    wall = time.perf_counter() - t0
    print()
    print(f"(total bench wall time {wall:.0f} s)")
    if a.out:
        a.out.write_text(json.dumps({"batch": info, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(a).items() if not k.startswith("_")},
                                     "ratios": ratios, "rows": rows}, indent=1))
    return 0

if __name__ == "__main__":
    sys.exit(main())
