"""Benchmark the trainer's input pipeline (issue 11): samples per second by worker count, and data wait.

    python bench/bench_pipeline.py [--samples 24] [--workers 0 2 4]

Part 1: geometric micro-batches (scene read, 24 x 24 track build, preprocessing to a 448 x 784
model input) from stored 960 x 540 scenes, 8-24 frames per sample, through
`gasp.train.loader` with 0, 2 and 4 DataLoader workers, in one process one after the other.
Throughput counts from the iterator's creation (worker start-up included) to the last sample.
Part 2: the tiny default training run (configs/tiny_synthetic.yaml) with data.num_workers 0
and 2: the time the loop waited for data, as a fraction of the loop's time, overall and without
the first micro-batch (worker start-up).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render_long_scenes(path: Path, scenes: int, frames: int) -> None:
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    make_synthetic_file(path, scenes, seed=3, grid=8, split="train",
                        config=SyntheticSceneConfig(height=540, width=960, num_frames=frames))


def samples_per_second(tracks: Path, workers: int, n: int, frames: tuple[int, int] = (8, 24), warmup: int = 0) -> dict:
    """Time n geometric samples of `frames` = (min, max) frames each. Counted from the iterator's creation
    (worker start-up included), or with ``warmup`` > 0 from after that many untimed samples. Imports gasp
    when called, so a process with another checkout first on PYTHONPATH times that one (bench/bench_sample.py)."""
    from types import SimpleNamespace

    from gasp.adapters import get_adapter
    from gasp.models import build_tiny
    from gasp.train.geo_stream import GeoStream
    from gasp.train.loader import BatchMaker, MicroBatches, TimedBatches

    model, processor = build_tiny("tiny-qwen2.5-vl")
    model_cfg = SimpleNamespace(frames_mode=None, fps=2.0, size=(448, 784), prompt="describe the video.")
    geo = GeoStream(tracks, grid=24, min_frames=frames[0], max_frames=frames[1], radius=48, seed=0)
    make = BatchMaker(model_cfg, get_adapter(model), processor, geo, None)
    t0 = time.perf_counter()
    batches = TimedBatches(MicroBatches(make, 0, warmup + n, 0, 1, 0.0, False, True), workers)
    for _ in range(warmup):             # first-call allocations and lazy imports
        next(batches)
    if warmup:
        t0 = time.perf_counter()
    counts = [next(batches)["grids"][0] for _ in range(n)]
    total = time.perf_counter() - t0
    return {"workers": workers, "samples": n, "seconds": round(total, 2), "samples_per_s": round(n / total, 2),
            "ms_per_sample": round(1e3 * total / n), "mean_frames": round(sum(counts) / n, 1)}


def data_wait(workers: int, out: Path) -> dict:
    from gasp.train.config import load_config
    from gasp.train.recipe import train
    from probes.train_eval import evaluate

    cfg = load_config(ROOT / "configs" / "tiny_synthetic.yaml",
                      [f"run.out={out}", f"data.num_workers={workers}", "run.eval_every=0", "run.eval_sequences=0",
                       f"data.cache={out.parent / 'data'}"])
    s = train(cfg, evaluator=evaluate)["data"]
    steady = (s["wait_s"] - s["first_wait_s"]) / (s["loop_s"] - s["first_wait_s"])
    return {**s, "wait_fraction": round(s["wait_s"] / s["loop_s"], 4), "steady_wait_fraction": round(steady, 4),
            "ms_per_step": round(1e3 * s["loop_s"] / cfg.optim.max_steps, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--scene-frames", type=int, default=60)
    a = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from gasp.runinfo import run_info

    res: dict = {"run": run_info(), "args": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"rendering 2 scenes of {a.scene_frames} frames at 960x540 ...", flush=True)
        render_long_scenes(tmp / "long.h5", 2, a.scene_frames)
        res["throughput"] = []
        for w in a.workers:
            r = samples_per_second(tmp / "long.h5", w, a.samples)
            print(json.dumps(r), flush=True)
            res["throughput"].append(r)
        res["data_wait"] = []
        for w in (0, 2):
            print(f"tiny default training, data.num_workers={w} ...", flush=True)
            r = data_wait(w, tmp / f"train_w{w}")
            print(json.dumps(r), flush=True)
            res["data_wait"].append(r)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
