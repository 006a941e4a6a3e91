"""Writing gasp track files (HDF5, format v2; layout in ``tracks/FORMAT.md``).

A shard holds whole scenes (every frame stored once) and the sequences that reference
them. A sequence's tracks are either built from the scene's depth and poses
(:meth:`TrackWriter.add_sequence`, a g x g grid of the query frame) or supplied by the
source (:meth:`TrackWriter.add_tracks`: TAP-Vid annotations, COLMAP keypoints). Writers
write to a temporary name and rename on success: a crash leaves no half-written file.

Shapes: T scene frames, F sequence frames, N query points, H x W pixels.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
from PIL import Image

from tracks.format import FORMAT_KIND, FORMAT_VERSION, RGB_ENCODINGS, check_states
from tracks.geometry import DEFAULT_REL_TOL, build_track_states, check_cameras
from tracks.types import Scene


def _encode_rgb(frame: np.ndarray, encoding: str) -> np.ndarray:
    buf = io.BytesIO()
    if encoding == "png":
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _validate_scene(scene: Scene) -> None:
    T = scene.num_frames
    where = f"scene {scene.name!r}"
    if scene.frames.ndim != 4 or scene.frames.shape[-1] != 3 or scene.frames.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be (T, H, W, 3) uint8, got {scene.frames.shape} {scene.frames.dtype}")
    if scene.depth is not None and scene.depth.shape != scene.frames.shape[:3]:
        raise ValueError(f"{where}: depth shape {scene.depth.shape} does not match frames {scene.frames.shape[:3]}")
    if (scene.K is None) != (scene.cam_from_world is None):
        raise ValueError(f"{where}: give both K and cam_from_world, or neither")
    if len(scene.frame_index) != T:
        raise ValueError(f"{where}: frame_index must have {T} entries, got {len(scene.frame_index)}")
    if scene.has_cameras:
        if len(scene.K) != T or len(scene.cam_from_world) != T:
            raise ValueError(f"{where}: K and cam_from_world must each have {T} entries")
        check_cameras(scene.K, scene.cam_from_world, where=where)


class TrackWriter:
    """Write one shard. Use as a context manager; the file appears only on success.

    >>> with TrackWriter("s.h5") as w:
    ...     w.add_scene(scene)
    ...     w.add_sequence(scene.name, frame_ids=np.arange(8), grid=8)
    """

    def __init__(self, path: str | os.PathLike, rgb_encoding: str = "png"):
        if rgb_encoding not in RGB_ENCODINGS:
            raise ValueError(f"rgb_encoding must be one of {RGB_ENCODINGS}, got {rgb_encoding!r}")
        self.path = Path(path)
        self.rgb_encoding = rgb_encoding
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._file: h5py.File | None = None
        self._scenes: dict[str, Scene] = {}
        self._names: list[str] = []

    def __enter__(self) -> "TrackWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._file.attrs["kind"] = FORMAT_KIND
        self._file.create_group("scenes")
        self._file.create_group("sequences")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                names = np.array(self._names, dtype=object)
                self._file.create_dataset("index/sequences", data=names, dtype=h5py.string_dtype())
            self._file.close()
        finally:
            if exc_type is None:
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)

    @property
    def num_sequences(self) -> int:
        return len(self._names)

    def add_scene(self, scene: Scene) -> None:
        """Store every frame of ``scene`` once (its depth and cameras where it has them)."""
        _validate_scene(scene)
        if scene.name in self._scenes:
            raise ValueError(f"scene {scene.name!r} was already added to {self.path}")
        T, H, W, _ = scene.frames.shape
        g = self._file.create_group(f"scenes/{scene.name}")
        g.attrs.update(num_frames=T, height=H, width=W, rgb_encoding=self.rgb_encoding,
                       metadata=json.dumps(scene.metadata))
        if self.rgb_encoding == "raw":
            g.create_dataset("rgb", data=scene.frames, chunks=(1, H, W, 3))
        else:
            rgb = g.create_dataset("rgb", (T,), dtype=h5py.vlen_dtype(np.uint8))
            for t in range(T):
                rgb[t] = _encode_rgb(scene.frames[t], self.rgb_encoding)
        if scene.depth is not None:
            g.create_dataset("depth", data=scene.depth.astype(np.float32), chunks=(1, H, W),
                             compression="gzip", compression_opts=1, shuffle=True)
        if scene.has_cameras:
            g.create_dataset("K", data=np.asarray(scene.K, dtype=np.float64))
            g.create_dataset("cam_from_world", data=np.asarray(scene.cam_from_world, dtype=np.float64))
        g.create_dataset("frame_index", data=np.asarray(scene.frame_index, dtype=np.int64))
        self._scenes[scene.name] = scene

    def _frame_ids(self, scene_name: str, frame_ids: Sequence[int]) -> tuple[Scene, np.ndarray]:
        scene = self._scenes.get(scene_name)
        if scene is None:
            raise KeyError(f"scene {scene_name!r} has not been added to {self.path}; call add_scene first")
        ids = np.asarray(frame_ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) < 2 or ids.min() < 0 or ids.max() >= scene.num_frames:
            raise ValueError(f"scene {scene_name!r}: frame_ids must be >= 2 indices in [0, {scene.num_frames}), "
                             f"got {ids.tolist()}")
        return scene, ids

    def _write_sequence(self, scene: Scene, ids: np.ndarray, tracks: np.ndarray, visible: np.ndarray,
                        occluded: np.ndarray, query_frames: np.ndarray, track_depth: np.ndarray | None,
                        attrs: dict[str, Any], metadata: dict[str, Any]) -> str:
        name = f"{scene.name}__{len(self._names):06d}"
        g = self._file.create_group(f"sequences/{name}")
        shared = np.unique(query_frames)
        g.attrs.update(scene=scene.name, query_frame=int(shared[0]) if len(shared) == 1 else -1,
                       metadata=json.dumps(metadata), **attrs)
        g.create_dataset("scene_frames", data=ids)
        g.create_dataset("frame_index", data=np.asarray(scene.frame_index, dtype=np.int64)[ids])
        g.create_dataset("tracks", data=np.asarray(tracks, dtype=np.float32))
        g.create_dataset("visible", data=visible)
        g.create_dataset("occluded", data=occluded)
        g.create_dataset("query_frames", data=np.asarray(query_frames, dtype=np.int64))
        if track_depth is not None:
            g.create_dataset("track_depth", data=np.asarray(track_depth, dtype=np.float32))
        self._names.append(name)
        return name

    def add_sequence(self, scene_name: str, frame_ids: Sequence[int], grid: int,
                     query_frame: int = 0, rel_tol: float = DEFAULT_REL_TOL) -> str:
        """Add a sequence over ``frame_ids`` (indices into the scene's frames) with tracks from geometry.

        Ground truth comes from :func:`tracks.geometry.build_track_states` on a g x g grid of
        the query frame; the scene needs depth and cameras. Returns the sequence name.
        """
        scene, ids = self._frame_ids(scene_name, frame_ids)
        if not (scene.has_depth and scene.has_cameras):
            lacks = " and ".join(w for w, has in (("depth", scene.has_depth), ("cameras", scene.has_cameras))
                                 if not has)
            raise ValueError(f"scene {scene_name!r} has no {lacks}: tracks cannot be built from geometry; "
                             f"give them with add_tracks")
        tracks, visible, occluded, track_depth = build_track_states(
            scene.depth[ids], scene.K[ids], scene.cam_from_world[ids], query_frame=query_frame, grid=grid,
            rel_tol=rel_tol)
        qf = np.full(tracks.shape[1], query_frame, dtype=np.int64)
        return self._write_sequence(scene, ids, tracks, visible, occluded, qf, track_depth,
                                    {"grid": int(grid), "rel_tol": float(rel_tol), "source": "geometry"},
                                    {"query_mode": "grid"})

    def add_tracks(self, scene_name: str, frame_ids: Sequence[int], tracks: np.ndarray, visible: np.ndarray,
                   occluded: np.ndarray, query_frames: np.ndarray | int, track_depth: np.ndarray | None = None,
                   metadata: dict[str, Any] | None = None) -> str:
        """Add a sequence over ``frame_ids`` whose tracks the source supplies.

        tracks (F, N, 2) pixel x, y in the scene's frames; visible, occluded (F, N) bool
        (neither = unknown); query_frames (N,) (or one int for all) indices into frame_ids,
        each point visible there; track_depth (F, N) in the poses' units, or None.
        ``metadata`` (JSON) records how the tracks were made, e.g. ``{"query_mode": "first"}``.
        """
        scene, ids = self._frame_ids(scene_name, frame_ids)
        tracks = np.asarray(tracks, dtype=np.float32)
        qf = np.asarray(query_frames, dtype=np.int64)
        qf = np.full(tracks.shape[1] if tracks.ndim == 3 else 0, int(qf), np.int64) if qf.ndim == 0 else qf
        visible, occluded = np.asarray(visible), np.asarray(occluded)
        where = f"scene {scene_name!r}, supplied tracks"
        check_states(where, tracks, visible, occluded, qf, track_depth)
        if tracks.shape[0] != len(ids):
            raise ValueError(f"{where}: tracks have {tracks.shape[0]} frames but frame_ids {len(ids)}")
        return self._write_sequence(scene, ids, tracks, visible, occluded, qf, track_depth,
                                    {"grid": 0, "source": "supplied"}, dict(metadata or {}))


class ShardedTrackWriter:
    """Write a folder of shards, starting a new shard after ``sequences_per_shard``.

    Scenes are never split across shards: a shard is closed only between scenes.
    """

    def __init__(self, folder: str | os.PathLike, sequences_per_shard: int = 10_000, rgb_encoding: str = "png"):
        self.folder = Path(folder)
        self.sequences_per_shard = sequences_per_shard
        self.rgb_encoding = rgb_encoding
        self._writer: TrackWriter | None = None
        self._count = 0

    def __enter__(self) -> "ShardedTrackWriter":
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)

    def _current(self) -> TrackWriter:
        if self._writer is not None and self._writer.num_sequences >= self.sequences_per_shard:
            self._writer.__exit__(None, None, None)
            self._writer = None
        if self._writer is None:
            self._writer = TrackWriter(self.folder / f"shard-{self._count:05d}.h5", self.rgb_encoding).__enter__()
            self._count += 1
        return self._writer

    def add_scene(self, scene: Scene) -> None:
        self._current().add_scene(scene)

    def add_sequence(self, scene_name: str, frame_ids, grid: int, query_frame: int = 0,
                     rel_tol: float = DEFAULT_REL_TOL) -> str:
        assert self._writer is not None, "add_scene must come before add_sequence"
        return self._writer.add_sequence(scene_name, frame_ids, grid, query_frame, rel_tol)

    def add_tracks(self, scene_name: str, frame_ids, tracks, visible, occluded, query_frames, track_depth=None,
                   metadata=None) -> str:
        assert self._writer is not None, "add_scene must come before add_tracks"
        return self._writer.add_tracks(scene_name, frame_ids, tracks, visible, occluded, query_frames, track_depth,
                                       metadata)
