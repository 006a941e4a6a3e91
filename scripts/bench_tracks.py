"""Benchmark the track layer: ground truth from geometry and the synthetic renderer.

    python scripts/bench_tracks.py [--reps 7]

Prints medians: build_tracks for a 24x24 grid over 24 frames of 540x960 depth maps
(target: well under a second), and render_scene for 8 frames at 448x448 (target: well
under a second).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tracks.geometry import build_tracks  # noqa: E402
from tracks.synthetic import SyntheticSceneConfig, render_scene  # noqa: E402


def _median_time(fn, reps: int) -> float:
    times = []
    for i in range(reps):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    a = p.parse_args(argv)
    F, H, W = 24, 540, 960
    rng = np.random.default_rng(0)
    depth = (2 + rng.random((F, H, W))).astype(np.float32)
    K = np.stack([np.array([[500.0, 0, (W - 1) / 2], [0, 500.0, (H - 1) / 2], [0, 0, 1]])] * F)
    T = np.stack([np.eye(4)] * F)
    T[:, 0, 3] = -0.01 * np.arange(F)
    t_tracks = _median_time(lambda i: build_tracks(depth, K, T, grid=24), a.reps)
    t_render = _median_time(lambda i: render_scene(i, SyntheticSceneConfig(num_frames=8)), a.reps)
    print("| operation | median |")
    print("|---|---|")
    print(f"| build_tracks, 24x24 grid, 24 frames of 540x960 | {t_tracks * 1e3:.1f} ms |")
    print(f"| render_scene, 8 frames at 448x448 | {t_render * 1e3:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
