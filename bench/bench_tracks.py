"""Benchmark the track layer: ground truth from geometry and the synthetic renderer.

    python bench/bench_tracks.py [--reps 7]

Prints medians: build_tracks for a 24x24 grid over 24 frames of 540x960 depth maps
(target: well under a second), render_scene for 8 frames at 448x448 (target: well
under a second), and one training sample of the geometric stream from a long stored scene
(--scene-frames, PNG frames): reading only the sampled frames (what GeoStream does) against
reading the whole scene first (what it did before), measured alternately in one process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

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
    p.add_argument("--scene-frames", type=int, default=120, help="frames of the stored scene for the stream rows")
    a = p.parse_args(argv)
    F, H, W = 24, 540, 960
    rng = np.random.default_rng(0)
    depth = (2 + rng.random((F, H, W))).astype(np.float32)
    K = np.stack([np.array([[500.0, 0, (W - 1) / 2], [0, 500.0, (H - 1) / 2], [0, 0, 1]])] * F)
    T = np.stack([np.eye(4)] * F)
    T[:, 0, 3] = -0.01 * np.arange(F)
    t_tracks = _median_time(lambda i: build_tracks(depth, K, T, grid=24), a.reps)
    t_render = _median_time(lambda i: render_scene(i, SyntheticSceneConfig(num_frames=8)), a.reps)
    t_sampled, t_whole = _stream_times(a.scene_frames, a.reps)
    print("| operation | median |")
    print("|---|---|")
    print(f"| build_tracks, 24x24 grid, 24 frames of 540x960 | {t_tracks * 1e3:.1f} ms |")
    print(f"| render_scene, 8 frames at 448x448 | {t_render * 1e3:.0f} ms |")
    print(f"| GeoStream sample (8-24 frames) from a {a.scene_frames}-frame 448x448 scene: sampled frames only "
          f"| {t_sampled * 1e3:.0f} ms |")
    print(f"| same sample, whole scene read first (the old path) | {t_whole * 1e3:.0f} ms |")
    print(f"\nwhole / sampled = {t_whole / t_sampled:.1f}")
    return 0


def _stream_times(num_frames: int, reps: int) -> tuple[float, float]:
    """Median seconds per GeoStream sample: the stream as it is, and with a whole-scene read first."""
    import tempfile

    from gasp.train.geo_stream import GeoStream
    from tracks.io import TrackWriter
    from tracks.sampling import sample_train_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.h5"
        scene = render_scene(0, SyntheticSceneConfig(num_frames=num_frames))
        with TrackWriter(path) as w:                       # PNG frames, as the writers store them by default
            w.add_scene(scene)
        stream = GeoStream(path, grid=24, min_frames=8, max_frames=24, radius=48, seed=0)

        def whole(i: int) -> None:                         # the old path: read every frame, then index
            s = stream.reader.scene(scene.name)
            ids = sample_train_frames(s.num_frames, np.random.default_rng([0, i]), 8, 24, 48)
            build_tracks(s.depth[ids], s.K[ids], s.cam_from_world[ids], query_frame=0, grid=24)

        sampled, old = [], []
        for i in range(reps):                              # alternate, so both see the same machine load
            sampled.append(_median_time(lambda _: stream[i], 1))
            old.append(_median_time(whole, 1))
        return statistics.median(sampled), statistics.median(old)


if __name__ == "__main__":
    sys.exit(main())
