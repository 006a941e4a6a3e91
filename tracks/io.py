"""Reading and writing gasp track files (HDF5). The layout is specified in FORMAT.md.

A track *dataset* is one shard file (``x.h5``) or a folder of shards (``dir/*.h5``).
Each shard holds whole scenes (every frame stored once) and the sequences that
reference them, so a sequence read touches only its own shard and its own frames.
Writers write to a temporary name and rename on success: a crash leaves no
half-written file behind.

Shapes: T scene frames, F sequence frames, N query points, H x W pixels.
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
from PIL import Image

from tracks.geometry import DEFAULT_REL_TOL, build_tracks, check_cameras
from tracks.types import Scene, TrackSequence

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FORMAT_KIND = "gasp-tracks"
RGB_ENCODINGS = ("png", "jpeg", "raw")
SEQUENCE_DATASETS = ("scene_frames", "frame_index", "tracks", "visible", "track_depth")


class TrackFormatError(ValueError):
    """A track file that cannot be read: wrong version, truncated, or missing data."""


# ----------------------------------------------------------------------------- writing

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
    if scene.depth.shape != scene.frames.shape[:3]:
        raise ValueError(f"{where}: depth shape {scene.depth.shape} does not match frames {scene.frames.shape[:3]}")
    if len(scene.frame_index) != T or len(scene.K) != T or len(scene.cam_from_world) != T:
        raise ValueError(f"{where}: K, cam_from_world and frame_index must each have {T} entries")
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
        """Store every frame of ``scene`` once."""
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
        g.create_dataset("depth", data=scene.depth.astype(np.float32), chunks=(1, H, W),
                         compression="gzip", compression_opts=1, shuffle=True)
        g.create_dataset("K", data=np.asarray(scene.K, dtype=np.float64))
        g.create_dataset("cam_from_world", data=np.asarray(scene.cam_from_world, dtype=np.float64))
        g.create_dataset("frame_index", data=np.asarray(scene.frame_index, dtype=np.int64))
        self._scenes[scene.name] = scene

    def add_sequence(self, scene_name: str, frame_ids: Sequence[int], grid: int,
                     query_frame: int = 0, rel_tol: float = DEFAULT_REL_TOL) -> str:
        """Add a sequence over ``frame_ids`` (indices into the scene's frames).

        Ground truth comes from :func:`tracks.geometry.build_tracks` on a g x g grid of
        the query frame. Returns the sequence name.
        """
        scene = self._scenes.get(scene_name)
        if scene is None:
            raise KeyError(f"scene {scene_name!r} has not been added to {self.path}; call add_scene first")
        ids = np.asarray(frame_ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) < 2 or ids.min() < 0 or ids.max() >= scene.num_frames:
            raise ValueError(f"scene {scene_name!r}: frame_ids must be >= 2 indices in [0, {scene.num_frames}), got {ids.tolist()}")
        tracks, visible, track_depth = build_tracks(
            scene.depth[ids], scene.K[ids], scene.cam_from_world[ids],
            query_frame=query_frame, grid=grid, rel_tol=rel_tol)
        name = f"{scene_name}__{len(self._names):06d}"
        g = self._file.create_group(f"sequences/{name}")
        g.attrs.update(scene=scene_name, query_frame=int(query_frame), grid=int(grid), rel_tol=float(rel_tol))
        g.create_dataset("scene_frames", data=ids)
        g.create_dataset("frame_index", data=np.asarray(scene.frame_index, dtype=np.int64)[ids])
        g.create_dataset("tracks", data=tracks)
        g.create_dataset("visible", data=visible)
        g.create_dataset("track_depth", data=track_depth)
        self._names.append(name)
        return name


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


# ----------------------------------------------------------------------------- reading

def _shard_paths(path: str | os.PathLike | Iterable) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_dir():
            shards = sorted(p.glob("*.h5"))
            if not shards:
                raise TrackFormatError(f"{p}: folder holds no *.h5 track shards")
            return shards
        if not p.exists():
            raise FileNotFoundError(f"tracks file {p} does not exist; make one with "
                                    f"`python scripts/make_synthetic.py --out {p}` or scripts/build_tracks.py")
        return [p]
    return [q for item in path for q in _shard_paths(item)]


def _open_shard(path: Path) -> h5py.File:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TrackFormatError(f"{path}: cannot be opened as HDF5 (truncated or corrupt?): {e}") from None
    version = f.attrs.get("format_version")
    if version is None or f.attrs.get("kind") != FORMAT_KIND:
        f.close()
        raise TrackFormatError(f"{path}: not a gasp tracks file (no format_version/kind attributes)")
    if int(version) != FORMAT_VERSION:
        f.close()
        raise TrackFormatError(f"{path}: format_version {int(version)} is not supported by this reader "
                               f"(supports {FORMAT_VERSION}); upgrade gasp or re-export the file")
    if "index/sequences" not in f:
        f.close()
        raise TrackFormatError(f"{path}: missing /index/sequences (file was not closed by its writer?)")
    return f


def _decode_rgb(data: np.ndarray, encoding: str, where: str) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    except Exception as e:  # PIL raises several types for corrupt data
        raise TrackFormatError(f"{where}: cannot decode {encoding} frame: {e}") from None


class TrackReader:
    """Random access to the sequences of a track dataset.

    ``reader[i]`` returns a :class:`TrackSequence`; only that sequence's frames are read.
    Shards are opened lazily and reopened after a fork (safe in DataLoader workers).
    """

    def __init__(self, path: str | os.PathLike | Iterable):
        self.paths = _shard_paths(path)
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._names: list[list[str]] = []
        for k, p in enumerate(self.paths):
            f = self._file(k)
            self._names.append([s.decode() if isinstance(s, bytes) else s for s in f["index/sequences"][()]])
        self._offsets = np.cumsum([0] + [len(n) for n in self._names])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"TrackReader({len(self.paths)} shard(s), {len(self)} sequences)"

    def _file(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:                      # forked: h5py handles are not fork-safe
            self._files, self._pid = {}, os.getpid()
        if k not in self._files:
            self._files[k] = _open_shard(self.paths[k])
        return self._files[k]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __enter__(self) -> "TrackReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _locate(self, i: int) -> tuple[int, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence index {i} out of range for {len(self)} sequences")
        i = i % len(self)
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return k, self._names[k][i - self._offsets[k]]

    @property
    def sequence_keys(self) -> list[str]:
        return [f"{p.stem}:{n}" for p, names in zip(self.paths, self._names) for n in names]

    @property
    def scene_names(self) -> list[str]:
        return [s for k in range(len(self.paths)) for s in self._file(k)["scenes"].keys()]

    def sequence_scene(self, i: int) -> str:
        k, name = self._locate(i)
        return str(self._file(k)[f"sequences/{name}"].attrs["scene"])

    def indices_for_scenes(self, scenes: Iterable[str]) -> list[int]:
        """Sequence indices whose scene is in ``scenes`` (for splits by scene)."""
        wanted = set(scenes)
        return [i for i in range(len(self)) if self.sequence_scene(i) in wanted]

    def _scene_group(self, name: str) -> tuple[int, h5py.Group]:
        for k in range(len(self.paths)):
            f = self._file(k)
            if f"scenes/{name}" in f:
                return k, f[f"scenes/{name}"]
        raise KeyError(f"scene {name!r} is not in {[str(p) for p in self.paths]}")

    def scene_num_frames(self, name: str) -> int:
        """T, the number of frames stored for scene ``name`` (without reading them)."""
        return int(self._scene_group(name)[1].attrs["num_frames"])

    def scene_metadata(self, name: str) -> dict:
        return json.loads(self._scene_group(name)[1].attrs["metadata"])

    def scene(self, name: str, frames: Sequence[int] | np.ndarray | None = None) -> Scene:
        """Scene ``name`` with all its frames, or only ``frames`` (stored positions, in that order; only
        those are read and decoded)."""
        k, g = self._scene_group(name)
        n = int(g.attrs["num_frames"])
        ids = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= n:
            raise IndexError(f"frames {ids.tolist()} of scene {name!r}: it has {n} frames (0..{n - 1})")
        rgb, depth = self._read_frames(g, ids, f"{self.paths[k]}:scenes/{name}")
        return Scene(name=name, frames=rgb, depth=depth, K=g["K"][()][ids], cam_from_world=g["cam_from_world"][()][ids],
                     frame_index=g["frame_index"][()][ids], metadata=json.loads(g.attrs["metadata"]))

    def _read_frames(self, g: h5py.Group, ids: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        uniq, inverse = np.unique(ids, return_inverse=True)   # h5py needs increasing indices
        enc = g.attrs["rgb_encoding"]
        try:
            depth = g["depth"][uniq][inverse]
            if enc == "raw":
                frames = g["rgb"][uniq][inverse]
            else:
                data = g["rgb"][uniq]
                frames = np.stack([_decode_rgb(data[j], enc, f"{where} frame {uniq[j]}") for j in inverse])
        except (OSError, KeyError) as e:
            raise TrackFormatError(f"{where}: cannot read frames {ids.tolist()}: {e}") from None
        return frames, depth

    def __getitem__(self, i: int) -> TrackSequence:
        k, name = self._locate(i)
        f = self._file(k)
        where = f"{self.paths[k]}:sequences/{name}"
        if f"sequences/{name}" not in f:
            raise TrackFormatError(f"{where}: listed in /index/sequences but missing")
        g = f[f"sequences/{name}"]
        missing = [d for d in SEQUENCE_DATASETS if d not in g]
        if missing:
            raise TrackFormatError(f"{where}: missing dataset(s) {missing}; a sequence needs {list(SEQUENCE_DATASETS)}")
        scene_name = str(g.attrs["scene"])
        if f"scenes/{scene_name}" not in f:
            raise TrackFormatError(f"{where}: references scene {scene_name!r}, which is not in the same shard")
        sg = f[f"scenes/{scene_name}"]
        ids = g["scene_frames"][()]
        frames, depth = self._read_frames(sg, ids, f"{self.paths[k]}:scenes/{scene_name}")
        try:
            return TrackSequence(
                frames=frames, depth=depth, K=sg["K"][()][ids], cam_from_world=sg["cam_from_world"][()][ids],
                frame_index=g["frame_index"][()], tracks=g["tracks"][()], visible=g["visible"][()].astype(bool),
                track_depth=g["track_depth"][()], query_frame=int(g.attrs.get("query_frame", 0)),
                scene=scene_name, key=f"{self.paths[k].stem}:{name}", grid=int(g.attrs.get("grid", 0)))
        except OSError as e:
            raise TrackFormatError(f"{where}: cannot read: {e}") from None
