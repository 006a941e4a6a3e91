"""Per-sample cost of a geometric micro-batch, measured in any checkout of gasp (issue 19's 2x point).

    python bench/bench_sample.py --code PATH --tracks long.h5 --frames 24 24 --samples 10

Imports `gasp` from the checkout at --code (default: this one), so that the same command
times the code before a change (a `git worktree` of the old commit) and after it, one process
each, on the same stored scenes. A sample is what `bench_pipeline.py` times: a scene read, a
24 x 24 track build and preprocessing to a 448 x 784 Qwen2.5-VL input, with --frames MIN MAX
frames, in the training process (no workers). One warm-up sample is left out. If --tracks does
not exist, two 60-frame 960 x 540 synthetic scenes are rendered there first (this checkout's
renderer). Prints one JSON line: the checkout's git SHA (and whether it has uncommitted
changes), ms per sample and the frame counts.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parents[1]


def _git(code: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", type=Path, default=HERE, help="checkout whose gasp is timed")
    p.add_argument("--tracks", type=Path, required=True, help="track file; rendered here if missing")
    p.add_argument("--frames", type=int, nargs=2, default=[24, 24], metavar=("MIN", "MAX"))
    p.add_argument("--samples", type=int, default=10)
    a = p.parse_args(argv)
    if not (a.code / "gasp" / "__init__.py").is_file():
        p.error(f"--code {a.code}: no gasp/ package there; give a checkout of this repository")
    if not a.tracks.exists():
        sys.path.insert(0, str(HERE))
        from bench.bench_pipeline import render_long_scenes

        print(f"rendering 2 scenes of 60 frames at 960x540 into {a.tracks} ...", file=sys.stderr, flush=True)
        render_long_scenes(a.tracks, 2, 60)
        sys.path.remove(str(HERE))
        for name in [m for m in sys.modules if m.split(".")[0] in ("gasp", "tracks", "bench")]:
            del sys.modules[name]  # import the timed checkout's own modules below
    sys.path.insert(0, str(a.code.resolve()))
    from gasp.adapters import get_adapter
    from gasp.models import build_tiny
    from gasp.train.geo_stream import GeoStream
    from gasp.train.loader import BatchMaker, MicroBatches, TimedBatches

    model, processor = build_tiny("tiny-qwen2.5-vl")
    cfg = SimpleNamespace(frames_mode=None, fps=2.0, size=(448, 784), prompt="describe the video.")
    geo = GeoStream(a.tracks, grid=24, min_frames=a.frames[0], max_frames=a.frames[1], radius=48, seed=0)
    make = BatchMaker(cfg, get_adapter(model), processor, geo, None)
    batches = TimedBatches(MicroBatches(make, 0, a.samples + 1, 0, 1, 0.0, False, True), 0)
    next(batches)  # warm-up: first-call allocations and lazy imports
    t0 = time.perf_counter()
    frames = [next(batches)["grids"][0] for _ in range(a.samples)]
    dt = time.perf_counter() - t0
    print(json.dumps({"sha": _git(a.code, "rev-parse", "--short", "HEAD"),
                      "dirty": bool(_git(a.code, "status", "--porcelain", "--untracked-files=no")),
                      "samples": a.samples, "ms_per_sample": round(1e3 * dt / a.samples),
                      "mean_frames": round(sum(frames) / len(frames), 1), "frames": frames}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
