"""Reading gasp track files (HDF5, format v1 and v2). The layout is specified in FORMAT.md.

A track *dataset* is one shard file (``x.h5``) or a folder of shards (``dir/*.h5``).
Each shard holds whole scenes (every frame stored once) and the sequences that
reference them, so a sequence read touches only its own shard and its own frames.
Writing lives in ``tracks/writer.py`` (re-exported here).

Version 1 files read unchanged: a v1 sequence gets one query frame for every point,
``occluded`` = not visible for points seen in the query frame (their states are
unknown otherwise), and its scene always has depth and cameras.

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

from tracks.format import (FORMAT_KIND, FORMAT_VERSION, READABLE_VERSIONS, RGB_ENCODINGS,  # noqa: F401
                           SEQUENCE_DATASETS, TrackFormatError)
from tracks.kinds import conversion_hint
from tracks.types import Scene, TrackSequence
from tracks.writer import ShardedTrackWriter, TrackWriter  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading

def _shard_paths(path: str | os.PathLike | Iterable) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_dir():
            shards = sorted(p.glob("*.h5"))
            if not shards:
                raise TrackFormatError(conversion_hint(p) or f"{p}: folder holds no *.h5 track shards")
            return shards
        if not p.exists():
            raise FileNotFoundError(f"tracks file {p} does not exist; make one with `gasp convert synthetic --out "
                                    f"{p}` or another `gasp convert` (README: Point tracks)")
        return [p]
    return [q for item in path for q in _shard_paths(item)]


def _open_shard(path: Path) -> h5py.File:
    if (hint := conversion_hint(path)) is not None:       # a download or another format: name its converter
        raise TrackFormatError(hint)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TrackFormatError(f"{path}: cannot be opened as HDF5 (truncated or corrupt?): {e}") from None
    version = f.attrs.get("format_version")
    if version is None or f.attrs.get("kind") != FORMAT_KIND:
        f.close()
        raise TrackFormatError(f"{path}: not a gasp tracks file (no format_version/kind attributes)")
    if int(version) not in READABLE_VERSIONS:
        f.close()
        raise TrackFormatError(f"{path}: format_version {int(version)} is not supported by this reader "
                               f"(reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade gasp or re-export the file")
    if "index/sequences" not in f:
        f.close()
        raise TrackFormatError(f"{path}: missing /index/sequences (file was not closed by its writer?)")
    return f


def _decode_rgb(data: np.ndarray, encoding: str, where: str) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    except Exception as e:  # PIL raises several types for corrupt data
        raise TrackFormatError(f"{where}: cannot decode {encoding} frame: {e}") from None


def _frames_of(ds: h5py.Dataset, uniq: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``ds[uniq][inverse]``, reading each frame (one chunk) once with a plain read: h5py's fancy-index
    read of a frame list is several times slower (18 of 60 gzip depth frames of 960x540: 0.94 s against
    0.14 s). A repeated frame is copied, not read again."""
    out = np.empty((len(inverse), *ds.shape[1:]), dtype=ds.dtype)
    for j, i in enumerate(uniq.tolist()):
        at = np.flatnonzero(inverse == j)
        ds.read_direct(out, source_sel=np.s_[i], dest_sel=np.s_[int(at[0])])
        out[at[1:]] = out[at[0]]
    return out


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

    def sequence_has(self, i: int) -> dict[str, bool]:
        """{"track_depth": ...}: whether sequence ``i`` stores its points' depth (optional from format v2)."""
        k, name = self._locate(i)
        return {"track_depth": "track_depth" in self._file(k)[f"sequences/{name}"]}

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

    def scene_frame_index(self, name: str) -> np.ndarray:
        """(T,) int64 source-video frame numbers of scene ``name`` (without reading its frames)."""
        return np.asarray(self._scene_group(name)[1]["frame_index"][()], dtype=np.int64)

    def scene_metadata(self, name: str) -> dict:
        return json.loads(self._scene_group(name)[1].attrs["metadata"])

    def scene(self, name: str, frames: Sequence[int] | np.ndarray | None = None) -> Scene:
        """Scene ``name`` with all its frames, or only ``frames`` (stored positions, in that order; only
        those are read and decoded). ``depth``, ``K`` and ``cam_from_world`` are None where the file has none."""
        k, g = self._scene_group(name)
        n = int(g.attrs["num_frames"])
        ids = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= n:
            raise IndexError(f"frames {ids.tolist()} of scene {name!r}: it has {n} frames (0..{n - 1})")
        rgb, depth = self._read_frames(g, ids, f"{self.paths[k]}:scenes/{name}")
        K, T = self._cameras(g, ids)
        return Scene(name=name, frames=rgb, depth=depth, K=K, cam_from_world=T,
                     frame_index=g["frame_index"][()][ids], metadata=json.loads(g.attrs["metadata"]))

    def scene_has(self, name: str) -> dict[str, bool]:
        """{"depth": ..., "cameras": ...}: what scene ``name`` stores besides its frames."""
        g = self._scene_group(name)[1]
        return {"depth": "depth" in g, "cameras": "K" in g and "cam_from_world" in g}

    @staticmethod
    def _cameras(g: h5py.Group, ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        if "K" not in g or "cam_from_world" not in g:
            return None, None
        return g["K"][()][ids], g["cam_from_world"][()][ids]

    def _read_frames(self, g: h5py.Group, ids: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        uniq, inverse = np.unique(ids, return_inverse=True)
        enc = g.attrs["rgb_encoding"]
        try:
            depth = _frames_of(g["depth"], uniq, inverse) if "depth" in g else None
            if enc == "raw":
                frames = _frames_of(g["rgb"], uniq, inverse)
            else:
                data = g["rgb"][uniq]                          # encoded bytes (small), increasing indices
                decoded = [_decode_rgb(data[j], enc, f"{where} frame {uniq[j]}") for j in range(len(uniq))]
                frames = np.stack([decoded[j] for j in inverse])
        except (OSError, KeyError) as e:
            raise TrackFormatError(f"{where}: cannot read frames {ids.tolist()}: {e}") from None
        return frames, depth

    def version(self, k: int) -> int:
        """format_version of shard ``k``."""
        return int(self._file(k).attrs["format_version"])

    def __getitem__(self, i: int) -> TrackSequence:
        k, name = self._locate(i)
        f = self._file(k)
        version = self.version(k)
        where = f"{self.paths[k]}:sequences/{name}"
        if f"sequences/{name}" not in f:
            raise TrackFormatError(f"{where}: listed in /index/sequences but missing")
        g = f[f"sequences/{name}"]
        needed = SEQUENCE_DATASETS[version]
        missing = [d for d in needed if d not in g]
        if missing:
            raise TrackFormatError(f"{where}: missing dataset(s) {missing}; a format-{version} sequence needs "
                                   f"{list(needed)}")
        scene_name = str(g.attrs["scene"])
        if f"scenes/{scene_name}" not in f:
            raise TrackFormatError(f"{where}: references scene {scene_name!r}, which is not in the same shard")
        sg = f[f"scenes/{scene_name}"]
        ids = g["scene_frames"][()]
        frames, depth = self._read_frames(sg, ids, f"{self.paths[k]}:scenes/{scene_name}")
        K, T = self._cameras(sg, ids)
        try:
            visible = g["visible"][()].astype(bool)
            if version == 1:
                extra = {"query_frame": int(g.attrs.get("query_frame", 0)), "metadata": {"source": "geometry"}}
            else:
                extra = {"occluded": g["occluded"][()].astype(bool), "query_frames": g["query_frames"][()],
                         "metadata": {"source": str(g.attrs.get("source", "")),
                                      **json.loads(g.attrs.get("metadata", "{}"))}}
            return TrackSequence(
                frames=frames, depth=depth, K=K, cam_from_world=T, frame_index=g["frame_index"][()],
                tracks=g["tracks"][()], visible=visible,
                track_depth=g["track_depth"][()] if "track_depth" in g else None, scene=scene_name,
                key=f"{self.paths[k].stem}:{name}", grid=int(g.attrs.get("grid", 0)), **extra)
        except OSError as e:
            raise TrackFormatError(f"{where}: cannot read: {e}") from None
        except ValueError as e:                    # shapes that do not fit together
            raise TrackFormatError(f"{where}: {e}") from None
