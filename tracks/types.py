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
    * Depth: along the camera z axis, in the units of the poses' translations (COLMAP's
      arbitrary unit for COLMAP and DL3DV poses, VGGT's normalised unit for VGGT, metres
      only where the poses are metric). NaN, 0 or negative means "unknown".
    * Point states (format v2): in each frame a point is *visible*, *occluded* (known not
      to be seen: hidden, out of the image or behind the camera) or *unknown* (not
      observed, e.g. a frame a COLMAP point does not list, or a pixel without depth).
      ``visible`` and ``occluded`` are never both true; unknown is neither.

A scene or sequence may lack depth (``depth is None``) and cameras (``K`` and
``cam_from_world`` None): TAP-Vid videos have neither, a COLMAP sparse model has cameras
but no depth. Such sequences carry tracks supplied by their source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Scene:
    """A video, every frame stored once, with depth and cameras where the source has them."""

    name: str
    frames: np.ndarray                  # (T, H, W, 3) uint8 RGB
    depth: np.ndarray | None            # (T, H, W) float32 in the poses' units; NaN/0/neg = unknown
    K: np.ndarray | None                # (T, 3, 3) float64 intrinsics
    cam_from_world: np.ndarray | None   # (T, 4, 4) float64 OpenCV world->camera
    frame_index: np.ndarray             # (T,) int64 source-video frame numbers
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def has_depth(self) -> bool:
        return self.depth is not None

    @property
    def has_cameras(self) -> bool:
        return self.K is not None and self.cam_from_world is not None

    def without_points(self, frames: np.ndarray | None = None, key: str = "") -> "TrackSequence":
        """Frames ``frames`` (stored positions; default all) as a sequence with no points: their depth and cameras,
        for what reads those alone (per-token depth, point maps, structure targets)."""
        ids = np.arange(self.num_frames) if frames is None else np.asarray(frames, dtype=np.int64)

        def pick(x):
            return None if x is None else x[ids]

        f = len(ids)
        return TrackSequence(frames=self.frames[ids], depth=pick(self.depth), K=pick(self.K),
                             cam_from_world=pick(self.cam_from_world), frame_index=self.frame_index[ids],
                             tracks=np.zeros((f, 0, 2), np.float32), visible=np.zeros((f, 0), bool),
                             track_depth=None, scene=self.name, key=key or self.name)


@dataclass
class TrackSequence:
    """One sequence: F frames of one scene with point tracks.

    ``tracks[f, i]`` is where point ``i`` lands in frame ``f``; ``visible[f, i]`` and
    ``occluded[f, i]`` give its state there (unknown = neither) and ``track_depth[f, i]``
    its depth in frame f's camera. Point i was placed (queried) in frame
    ``query_frames[i]``; ``query_frame`` is that frame when all points share one (the
    default), and -1 when they do not (TAP-Vid's strided queries, for example).
    """

    frames: np.ndarray                  # (F, H, W, 3) uint8 RGB
    depth: np.ndarray | None            # (F, H, W) float32 in the poses' units; NaN/0/neg = unknown
    K: np.ndarray | None                # (F, 3, 3) float64
    cam_from_world: np.ndarray | None   # (F, 4, 4) float64 OpenCV world->camera
    frame_index: np.ndarray             # (F,) int64 source-video frame numbers
    tracks: np.ndarray                  # (F, N, 2) float32 pixel x, y in frame f
    visible: np.ndarray                 # (F, N) bool
    track_depth: np.ndarray | None      # (F, N) float32 in frame f's camera (NaN if unknown)
    query_frame: int = 0                # shared query frame (index within the sequence), -1 if per point
    scene: str = ""                     # scene name
    key: str = ""                       # sequence key inside its shard ("<shard>:<name>")
    grid: int = 0                       # g of the g x g query grid (0 if not a grid)
    occluded: np.ndarray | None = None  # (F, N) bool, known occluded; None: every non-visible state is known
    query_frames: np.ndarray | None = None  # (N,) int64 query frame of each point; None: all query_frame
    metadata: dict[str, Any] = field(default_factory=dict)  # the sequence's JSON extras (source, query mode)

    def __post_init__(self) -> None:
        f, n = self.tracks.shape[:2]
        if self.query_frames is None:
            self.query_frames = np.full(n, self.query_frame, dtype=np.int64)
        else:
            self.query_frames = np.asarray(self.query_frames, dtype=np.int64).reshape(n)
            shared = np.unique(self.query_frames)
            self.query_frame = int(shared[0]) if len(shared) == 1 else (-1 if n else self.query_frame)
        if n and not (0 <= self.query_frames.min() and self.query_frames.max() < f):
            raise ValueError(f"sequence {self.key or self.scene!r}: query frames {np.unique(self.query_frames)} "
                             f"outside its {f} frames")
        self.visible = np.asarray(self.visible, dtype=bool)
        if self.occluded is None:
            # format v1 / geometry: a point seen in its query frame is occluded wherever it is not
            # visible; one not seen there (no query depth) has no known state anywhere
            seen_at_query = self.visible[self.query_frames, np.arange(n)]          # (N,)
            self.occluded = ~self.visible & seen_at_query[None, :]
        self.occluded = np.asarray(self.occluded, dtype=bool) & ~self.visible

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
    def known(self) -> np.ndarray:
        """(F, N) bool: the point's state in frame f is observed (visible or occluded)."""
        return self.visible | self.occluded

    @property
    def dt(self) -> np.ndarray:
        """(F,) int64 |frame_index[f] - frame_index[query_frame]| (one shared query frame)."""
        if self.query_frame < 0:
            raise ValueError(f"sequence {self.key or self.scene!r}: its points have different query frames; "
                             f"use point_dt")
        fi = np.asarray(self.frame_index, dtype=np.int64)
        return np.abs(fi - fi[self.query_frame])

    @property
    def point_dt(self) -> np.ndarray:
        """(F, N) int64 |frame_index[f] - frame_index[query_frames[i]]|."""
        fi = np.asarray(self.frame_index, dtype=np.int64)
        return np.abs(fi[:, None] - fi[self.query_frames][None, :])

    def query_groups(self) -> list[tuple[int, np.ndarray]]:
        """[(query frame, (N_q,) indices of the points placed there)] in increasing frame order."""
        return [(int(q), np.flatnonzero(self.query_frames == q)) for q in np.unique(self.query_frames)]

    def subset(self, points: np.ndarray) -> "TrackSequence":
        """The same frames with only the points ``points`` (indices into N)."""
        p = np.asarray(points, dtype=np.int64)
        return TrackSequence(
            frames=self.frames, depth=self.depth, K=self.K, cam_from_world=self.cam_from_world,
            frame_index=self.frame_index, tracks=self.tracks[:, p], visible=self.visible[:, p],
            track_depth=None if self.track_depth is None else self.track_depth[:, p], scene=self.scene,
            key=self.key, grid=0, occluded=self.occluded[:, p], query_frames=self.query_frames[p],
            metadata=self.metadata)
