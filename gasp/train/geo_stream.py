"""The geometric training stream: sequences drawn from a tracks file, online from scenes or as stored.

Paper Sec. 5.2 (``"scenes"``, used when every scene has depth and cameras): pick an anchor frame
t_a, draw F - 1 more frames uniformly from [t_a - R, t_a + R], F in [min_frames, max_frames]
(`tracks.sampling.sample_train_frames`), and build ground truth on a g x g grid of the anchor
frame from depth and poses (`tracks.geometry.build_tracks`), so the grid (coarse 8 or fine 24)
is a training choice, not a property of the file.

Tracks supplied by their source (``"sequences"``: TAP-Vid, COLMAP sparse points, any scene
without depth or cameras) cannot be rebuilt, so the stream draws the file's stored sequences
as they are, with their own frames, query points and states; ``data.grid`` and the frame
sampler do not apply. ``mode="auto"`` picks "scenes" when it can, else "sequences".

Every draw is a pure function of (seed, index): sample `index` uses item `perm_epoch[index % S]`
(a fresh seeded permutation of the S scenes, or stored sequences, each epoch) and, for scenes,
frames from `default_rng([seed, index])`. A resumed run that continues at the same index sees
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

MODES = ("auto", "scenes", "sequences")


class GeoStreamError(ValueError):
    """Tracks that cannot give the requested training sequences."""


class GeoStream:
    """Indexable stream of training TrackSequences (module docstring)."""

    def __init__(self, path: str | Path, *, grid: int = 8, min_frames: int = 8, max_frames: int = 24,
                 radius: int = 48, seed: int = 0, mode: str = "auto"):
        if mode not in MODES:
            raise GeoStreamError(f"data.source must be one of {MODES}, got {mode!r}")
        self.reader = TrackReader(path)
        self.scenes = sorted(self.reader.scene_names)
        if not self.scenes:
            raise GeoStreamError(f"{path} holds no scenes")
        self.grid, self.min_frames, self.max_frames, self.radius, self.seed = grid, min_frames, max_frames, radius, seed
        has = {s: self.reader.scene_has(s) for s in self.scenes}
        lacking = [s for s, h in has.items() if not (h["depth"] and h["cameras"])]
        # items (scenes, or stored sequences) L_depth has nothing to work with: no depth maps or no track depth
        self.depthless = sum(not h["depth"] for h in has.values())
        self.num_items = len(self.scenes)
        if mode == "scenes" and lacking:
            raise GeoStreamError(f"{path}: {len(lacking)} of {len(self.scenes)} scene(s) have no depth or cameras "
                                 f"(e.g. {lacking[0]!r}), so tracks cannot be built from geometry; use "
                                 f"data.source=sequences (or auto) to train on the file's stored sequences")
        self.mode = "sequences" if mode == "sequences" or (mode == "auto" and lacking) else "scenes"
        if self.mode == "sequences":
            if len(self.reader) == 0:
                raise GeoStreamError(f"{path} holds no stored sequences to train on")
            log.info("data.tracks %s: %s; training on its %d stored sequence(s) as supplied (data.grid and the "
                     "frame sampler do not apply)", path,
                     f"{len(lacking)} of {len(self.scenes)} scene(s) lack depth or cameras" if lacking else
                     "data.source=sequences", len(self.reader))
            self.depthless = sum(not self._stored_has_depth(i) for i in range(len(self.reader)))
            self.num_items = len(self.reader)
            return
        self.num_frames = {s: self.reader.scene_num_frames(s) for s in self.scenes}
        short = {s: n for s, n in self.num_frames.items() if n < min_frames}
        if short:
            raise GeoStreamError(
                f"{path}: {len(short)} of {len(self.scenes)} scene(s) have fewer frames than "
                f"data.min_frames={min_frames} (e.g. {dict(list(short.items())[:3])}); lower data.min_frames "
                "or use longer scenes")

    def _stored_has_depth(self, i: int) -> bool:
        """L_depth needs both the depth maps (its candidates) and the points' depth (its targets)."""
        scene_depth = self.reader.scene_has(self.reader.sequence_scene(i))["depth"]
        return scene_depth and self.reader.sequence_has(i)["track_depth"]

    def _item_for(self, index: int, n: int) -> int:
        perm = np.random.default_rng([self.seed, index // n, 7]).permutation(n)
        return int(perm[index % n])

    def scene_for(self, index: int) -> str:
        if self.mode == "sequences":
            return self.reader.sequence_scene(self._item_for(index, len(self.reader)))
        return self.scenes[self._item_for(index, len(self.scenes))]

    def __getitem__(self, index: int) -> TrackSequence:
        if self.mode == "sequences":
            return self.reader[self._item_for(index, len(self.reader))]
        name = self.scene_for(index)
        rng = np.random.default_rng([self.seed, index])
        ids = sample_train_frames(self.num_frames[name], rng, self.min_frames, self.max_frames, self.radius)
        scene = self.reader.scene(name, frames=ids)
        tracks, visible, track_depth = build_tracks(scene.depth, scene.K, scene.cam_from_world, query_frame=0,
                                                    grid=self.grid)
        return TrackSequence(frames=scene.frames, depth=scene.depth, K=scene.K, cam_from_world=scene.cam_from_world,
                             frame_index=scene.frame_index, tracks=tracks, visible=visible, track_depth=track_depth,
                             query_frame=0, scene=name, key=f"{name}@{index}", grid=self.grid)
