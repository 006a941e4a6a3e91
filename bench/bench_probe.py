"""Benchmark the probe against a plain forward and against the eager-attention alternative.

Variants, on a tiny-but-wider Qwen2.5-VL (text hidden 256, 8 layers, 8 heads, 2 KV heads)
with F frames at 448x448 (16x16 tokens per frame, 2048 visual tokens at F=8):
    a  plain sdpa forward
    b  the probe: one sdpa forward with Q/K capture at every layer, and all metrics
       (PCK, confidence, Δt) computed layer by layer as each layer finishes
    c  the naive alternative: eager attention with output_attentions=True; the same
       point matches read from the returned maps afterwards (frame-k queries attending
       to frame-1 keys, the only direction the causal maps hold)
    d  b plus the depth probe (``--depth``) in the same forward: hidden states of the visual
       tokens at layer -1 and every layer (gasp/capture/hidden.py) reduced into the ridge's sums,
       and the pixel-patch reference; its own extra memory is the largest hidden state held
       (plus its float32 copy) and the per-layer sums (``--depth-variant``, default on)

Each variant runs in its own fresh process and the processes alternate a, b, c for
``--rounds`` rounds. Time: a process with the default allocator times ``--reps`` forwards
after a warm-up. Memory: a separate process runs one forward with
``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` so that its peak RSS (ru_maxrss)
tracks live memory rather than glibc's heap history. Variant b also reports the largest
captured Q/K (plus its float32 working copy) held at any one time, the probe's own extra
memory. Medians are reported; ratios come from one run. The parent never imports torch
(a forked child's ru_maxrss starts at the parent's RSS).

    python bench/bench_probe.py [--frames 8 16 24] [--rounds 3] [--reps 5] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

WIDE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
            num_key_value_heads=2)


def _setup(frames: int):
    import numpy as np
    import torch

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny
    from tracks.geometry import grid_points

    torch.manual_seed(0)
    model, tok = build_tiny("tiny-qwen2.5-vl", seed=0, **WIDE)
    adapter = get_adapter(model)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, 448, 448, 3), dtype=np.uint8)
    inputs, layout = adapter.prepare_inputs(video, processor_or_tokenizer=tok, prompt="describe the video.")
    pts = torch.from_numpy(grid_points(8, 448, 448))
    tracks = (pts[None] + torch.randn(frames, 64, 2) * 20).clamp(0, 447)       # (F, N, 2)
    visible = torch.ones(frames, 64, dtype=torch.bool)
    return model, adapter, inputs, layout, tracks, visible, video


def _run_variant(variant: str, frames: int, reps: int) -> dict:
    import torch

    from gasp.capture.qk import capture_qk
    from probes import metrics

    torch.set_num_threads(1)
    model, adapter, inputs, layout, tracks, visible, video = _setup(frames)
    if variant == "c":
        model.set_attn_implementation("eager")
    F, (h, w) = layout.num_grids, layout.grid
    fi = torch.arange(F)
    pos = layout.flat_positions

    held = [0]

    def probe_once():
        results = []

        def on_layer(layer, q, k):
            held[0] = max(held[0], (q.numel() + k.numel()) * (q.element_size() + 4))   # capture + fp32 copy
            results.append(metrics.evaluate_layer(q[0].float().unflatten(1, (F, h, w)),
                                                  k[0].float().unflatten(1, (F, h, w)), tracks, visible,
                                                  layout.token_size, fi))

        with capture_qk(model, adapter.decoder_layers(model), positions=pos, on_layer=on_layer):
            model(**inputs)
        return results

    def eager_once():
        out = model(**inputs, output_attentions=True)
        tok = metrics.pixels_to_tokens(tracks, layout.token_size)
        q_tok = tok[0].add(0.5).floor().long()
        q_idx = (q_tok[:, 1].clamp(0, h - 1) * w + q_tok[:, 0].clamp(0, w - 1))      # (N,)
        vis = pos.view(F, h * w)
        res = []
        for att in out.attentions:                                                  # (1, H, L, L)
            a = att[0].mean(0)                                                      # (L, L)
            block = a[vis[1:].reshape(-1)][:, vis[0][q_idx]].view(F - 1, h * w, -1)  # (F-1, P, N)
            best = block.argmax(1)                                                  # (F-1, N)
            pred = torch.stack([best // w, best % w], -1)
            conf = block.max(1).values
            res.append((metrics.within_delta(pred, tok[1:]), conf))
        return res

    held_h = [0]

    def depth_once():
        import numpy as np

        from gasp.capture.hidden import capture_hidden
        from probes.depth import DepthProbe, pixel_features

        layers = list(range(len(adapter.decoder_layers(model))))
        dp = DepthProbe([-1, *layers, "pixels"], folds=3)
        target = np.random.default_rng(1).uniform(1, 10, (F, h * w))              # (F, P) token depths

        def on_hidden(layer, x):
            held_h[0] = max(held_h[0], x.numel() * (x.element_size() + 4))
            dp.observe(layer, x[0].float().unflatten(0, (F, h * w)), target, 0)

        with capture_hidden(adapter.decoder_layers(model), layers=[-1, *layers], positions=pos, on_hidden=on_hidden):
            res = probe_once()
        dp.observe("pixels", pixel_features(video[layout.frame_ids.numpy()], (h, w), layout.token_size), target, 0)
        return res, dp

    step = {"a": lambda: model(**inputs), "b": probe_once, "c": eager_once, "d": depth_once}[variant]
    times = []
    with torch.inference_mode():
        step()                                                                      # warm-up
        for _ in range(reps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "frames": frames, "visual_tokens": int(pos.numel()),
            "median_s": statistics.median(times), "times_s": times, "peak_rss_mb": rss_mb,
            "held_qk_mb": held[0] / 2**20, "held_hidden_mb": held_h[0] / 2**20}


LIVE_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _child(variant: str, frames: int, reps: int, env: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--reps", str(reps), "--_child", variant, str(frames)],
                       capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 24])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--eager-frames", type=int, nargs="+", default=[8], help="frame counts that also run variant c")
    p.add_argument("--depth-variant", action=argparse.BooleanOptionalAction, default=True,
                   help="also run variant d, the probe with --depth (default on)")
    p.add_argument("--out", type=Path, help="write all measurements as JSON")
    p.add_argument("--_child", nargs=2, metavar=("VARIANT", "FRAMES"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        print(json.dumps(_run_variant(a._child[0], int(a._child[1]), a.reps)))
        return 0
    rows = []
    for _ in range(a.rounds):
        for frames in a.frames:
            for v in [*("a", "b"), *("c",) * (frames in a.eager_frames), *("d",) * a.depth_variant]:
                env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
                timed = _child(v, frames, a.reps, env)
                mem = _child(v, frames, 1, {**env, **LIVE_MALLOC})
                rows.append({**timed, "peak_rss_mb": mem["peak_rss_mb"], "held_qk_mb": mem["held_qk_mb"],
                             "held_hidden_mb": mem["held_hidden_mb"]})
                print(f"  {v} F={frames}: {rows[-1]['median_s'] * 1e3:.0f} ms, {rows[-1]['peak_rss_mb']:.0f} MB",
                      file=sys.stderr)

    def med(v, f, key):
        vals = [r[key] for r in rows if r["variant"] == v and r["frames"] == f]
        return statistics.median(vals) if vals else float("nan")

    print("| frames | visual tokens | variant | median time (ms) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for f in a.frames:
        toks = next(r["visual_tokens"] for r in rows if r["frames"] == f)
        for v in ("a", "b", "c", "d"):
            if (f in a.eager_frames or v != "c") and (a.depth_variant or v != "d"):
                print(f"| {f} | {toks} | {v} | {med(v, f, 'median_s') * 1e3:.0f} | {med(v, f, 'peak_rss_mb'):.0f} |")
    print()
    for f in a.frames:
        line = (f"F={f}: time b/a = {med('b', f, 'median_s') / med('a', f, 'median_s'):.3f}, "
                f"peak memory b/a = {med('b', f, 'peak_rss_mb') / med('a', f, 'peak_rss_mb'):.3f}, "
                f"probe extra memory b-a = {med('b', f, 'peak_rss_mb') - med('a', f, 'peak_rss_mb'):.0f} MB, "
                f"largest Q/K held by the probe = {med('b', f, 'held_qk_mb'):.1f} MB")
        if f in a.eager_frames:
            line += f", time c/b = {med('c', f, 'median_s') / med('b', f, 'median_s'):.2f}"
            line += f", peak memory c/b = {med('c', f, 'peak_rss_mb') / med('b', f, 'peak_rss_mb'):.2f}"
        if a.depth_variant:
            line += (f"; with --depth: time d/b = {med('d', f, 'median_s') / med('b', f, 'median_s'):.3f}, "
                     f"peak memory d/b = {med('d', f, 'peak_rss_mb') / med('b', f, 'peak_rss_mb'):.3f}, "
                     f"largest hidden state held = {med('d', f, 'held_hidden_mb'):.1f} MB")
        print(line)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
