"""The geometric training stream: sequences sampled online from the scenes of a tracks file.

Paper Sec. 5.2: pick an anchor frame t_a, draw F - 1 more frames uniformly from
[t_a - R, t_a + R], F in [min_frames, max_frames] (`tracks.sampling.sample_train_frames`),
and build ground truth on a g x g grid of the anchor frame from depth and poses
(`tracks.geometry.build_tracks`), so the grid (coarse 8 or fine 24) is a training choice,
not a property of the file.

Every draw is a pure function of (seed, index): sample `index` uses scene
`perm_epoch[index % S]` (a fresh seeded permutation of the S scenes each epoch) and frames
from `default_rng([seed, index])`. A resumed run that continues at the same index sees
exactly the same data, with no sampler state to save. Only the sampled frames of a scene are
read and decoded, so a DL3DV scene of hundreds of frames costs what its F frames cost.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tracks.geometry import build_tracks
from tracks.io import TrackReader
from tracks.sampling import sample_train_frames
from tracks.types import TrackSequence

log = logging.getLogger(__name__)


class GeoStreamError(ValueError):
    """Tracks that cannot give the requested training sequences."""


class GeoStream:
    """Indexable stream of training TrackSequences (anchor frame first, query_frame 0)."""

    def __init__(self, path: str | Path, *, grid: int = 8, min_frames: int = 8, max_frames: int = 24,
                 radius: int = 48, seed: int = 0):
        self.reader = TrackReader(path)
        self.scenes = sorted(self.reader.scene_names)
        if not self.scenes:
            raise GeoStreamError(f"{path} holds no scenes")
        self.grid, self.min_frames, self.max_frames, self.radius, self.seed = grid, min_frames, max_frames, radius, seed
        self.num_frames = {s: self.reader.scene_num_frames(s) for s in self.scenes}
        short = {s: n for s, n in self.num_frames.items() if n < min_frames}
        if short:
            raise GeoStreamError(
                f"{path}: {len(short)} of {len(self.scenes)} scene(s) have fewer frames than "
                f"data.min_frames={min_frames} (e.g. {dict(list(short.items())[:3])}); lower data.min_frames "
                "or use longer scenes")

    def scene_for(self, index: int) -> str:
        n = len(self.scenes)
        perm = np.random.default_rng([self.seed, index // n, 7]).permutation(n)
        return self.scenes[int(perm[index % n])]

    def __getitem__(self, index: int) -> TrackSequence:
        name = self.scene_for(index)
        rng = np.random.default_rng([self.seed, index])
        ids = sample_train_frames(self.num_frames[name], rng, self.min_frames, self.max_frames, self.radius)
        scene = self.reader.scene(name, frames=ids)
        tracks, visible, track_depth = build_tracks(scene.depth, scene.K, scene.cam_from_world, query_frame=0,
                                                    grid=self.grid)
        return TrackSequence(frames=scene.frames, depth=scene.depth, K=scene.K, cam_from_world=scene.cam_from_world,
                             frame_index=scene.frame_index, tracks=tracks, visible=visible, track_depth=track_depth,
                             query_frame=0, scene=name, key=f"{name}@{index}", grid=self.grid)
