"""Typed data contract between the track layer and everything that reads it.

Shape vocabulary (used across ``tracks/``):
    T  frames of a scene (the whole source video)
    F  frames of one sequence (a subset of a scene's frames)
    N  query points of a sequence (g*g for a g x g grid)
    H, W  image height and width in pixels

Conventions:
    * Pixels: (x, y) with (0, 0) the *centre* of the top-left pixel, x right, y down.
    * Cameras: OpenCV. ``cam_from_world`` maps world points to camera coordinates
      (x right, y down, z forward). ``K`` is the 3x3 pinhole intrinsic matrix in the
      same pixel convention (a point on the optical axis lands at (cx, cy)).
    * Depth: metres along the camera z axis. NaN, 0 or negative means "unknown".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Scene:
    """A posed RGB-D video: every frame stored once."""

    name: str
    frames: np.ndarray          # (T, H, W, 3) uint8 RGB
    depth: np.ndarray           # (T, H, W) float32 metres; NaN/0/neg = unknown
    K: np.ndarray               # (T, 3, 3) float64 intrinsics
    cam_from_world: np.ndarray  # (T, 4, 4) float64 OpenCV world->camera
    frame_index: np.ndarray     # (T,) int64 source-video frame numbers
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


@dataclass
class TrackSequence:
    """One sequence: F frames of one scene with ground-truth point tracks.

    ``tracks[f, i]`` is where query point ``i`` (placed in frame ``query_frame``)
    lands in frame ``f``; ``visible[f, i]`` says whether it is seen there and
    ``track_depth[f, i]`` is its depth in frame f's camera.
    """

    frames: np.ndarray          # (F, H, W, 3) uint8 RGB
    depth: np.ndarray           # (F, H, W) float32 metres; NaN/0/neg = unknown
    K: np.ndarray               # (F, 3, 3) float64
    cam_from_world: np.ndarray  # (F, 4, 4) float64 OpenCV world->camera
    frame_index: np.ndarray     # (F,) int64 source-video frame numbers
    tracks: np.ndarray          # (F, N, 2) float32 pixel x, y in frame f
    visible: np.ndarray         # (F, N) bool
    track_depth: np.ndarray     # (F, N) float32 metres in frame f's camera (NaN if unknown)
    query_frame: int = 0        # index within the sequence where queries were placed
    scene: str = ""             # scene name
    key: str = ""               # sequence key inside its shard ("<shard>/<name>")
    grid: int = 0               # g of the g x g query grid (0 if not a grid)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def dt(self) -> np.ndarray:
        """(F,) int64 temporal distance |frame_index[f] - frame_index[query_frame]|."""
        fi = np.asarray(self.frame_index, dtype=np.int64)
        return np.abs(fi - fi[self.query_frame])
