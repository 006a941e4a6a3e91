"""TAP-Vid (DAVIS, RGB-Stacking, Kinetics) pickles as scenes with supplied point tracks.

Layout, as google-deepmind/tapnet documents and reads it (``tapnet/tapvid/README.md``,
``tapvid/evaluation_datasets.py``, ``tapvid/generate_tapvid.py``):

* **DAVIS** (``tapvid_davis.pkl``): a dict, video name -> ``{'video': (T, H, W, 3) uint8,
  'points': (N, T, 2) float32, 'occluded': (N, T) bool}``.
* **RGB-Stacking** (``tapvid_rgb_stacking.pkl``): the same dicts in a list (no names).
* **Kinetics** (``NNNN_of_0010.pkl`` shards written by ``generate_tapvid.py``): a list of the
  same dicts whose ``'video'`` holds one JPEG file's bytes per frame (25 fps, at most 250
  frames) and whose ``'points'`` are float64.

Conventions handled here:

* **Coordinates.** ``points`` are (x, y) divided by the frame width and height. tapnet's
  readers multiply them by (W, H) into "raster coordinates", in which (0, 0) is the
  upper-left *corner* of the upper-left pixel (``tapnet/utils/model_utils.py``, ``interp``;
  its ``soft_argmax_heatmap`` puts cell centres at +0.5). gasp puts (0, 0) at that pixel's
  centre, so ``x = u * W - 0.5`` and ``y = v * H - 0.5``.
* **States.** ``occluded`` marks hidden and out-of-frame points alike; TAP-Vid has no
  "not annotated" state, so every frame is known: visible = not occluded.
* **Frames.** A video longer than ``max_frames`` (the model's frame budget) keeps
  ``max_frames`` frames evenly spaced over it (``subsample_frames``); the scene stores only
  those, and ``frame_index`` holds their numbers in the source video, so Δt stays in source
  frames and the scene metadata lists exactly which frames were used.
* **Queries** (``sample_queries_first`` / ``sample_queries_strided`` in tapnet), on the kept
  frames: ``first``, one query per track at its first visible kept frame; ``strided``, a query
  for every track visible at every ``query_stride``-th kept frame (5, as in tapnet), so a
  track can appear several times with different query frames. tapnet scores ``first``
  queries on later frames only; every earlier frame is occluded by construction, so
  "visible and not the query frame" selects the same frames in both modes.

Every problem raises :class:`TapVidError` naming the file and, where there is one, the video.
Shapes: T source frames, F kept frames, N tracks, Q queries, H x W pixels.
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from tracks.safe_pickle import UnsafePickleError, load_restricted
from tracks.types import Scene

log = logging.getLogger(__name__)

DATASETS = ("davis", "rgb_stacking", "kinetics")
QUERY_MODES = ("first", "strided")
DEFAULT_QUERY_STRIDE = 5
KINETICS_FPS = 25.0


class TapVidError(ValueError):
    """A TAP-Vid file that cannot be converted; the message names the file and video."""


@dataclass
class TapVidVideo:
    name: str
    frames: np.ndarray      # (T, H, W, 3) uint8 RGB
    points: np.ndarray      # (N, T, 2) float64 x, y divided by W, H (tapnet's raster convention)
    occluded: np.ndarray    # (N, T) bool
    dataset: str = ""       # davis, rgb_stacking or kinetics
    file: str = ""          # the pickle it came from


@dataclass
class TapVidTracks:
    """One video's kept frames and queries, ready for ``TrackWriter.add_tracks``."""

    scene: Scene
    tracks: np.ndarray        # (F, Q, 2) float32 pixel x, y (gasp's pixel-centre convention)
    visible: np.ndarray       # (F, Q) bool
    occluded: np.ndarray      # (F, Q) bool
    query_frames: np.ndarray  # (Q,) int64 index into the F kept frames
    track_ids: np.ndarray     # (Q,) int64 the TAP-Vid track each query follows
    metadata: dict[str, Any]


# ----------------------------------------------------------------------------- reading

def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises several unrelated types for bad data
        raise TapVidError(f"{where}: cannot decode a JPEG frame ({type(e).__name__}: {e})") from None


def _frames(video: Any, where: str) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array or from a sequence of JPEG bytes (Kinetics)."""
    if isinstance(video, np.ndarray) and video.dtype == np.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise TapVidError(f"{where}: 'video' must be (T, H, W, 3) uint8, got shape {video.shape}")
        return video
    items = list(video) if isinstance(video, (list, tuple, np.ndarray)) else None
    if not items or not all(isinstance(b, (bytes, np.bytes_)) for b in items):
        kind = type(video).__name__ + (f" {video.dtype} {video.shape}" if isinstance(video, np.ndarray) else "")
        raise TapVidError(f"{where}: 'video' must be a (T, H, W, 3) uint8 array or a list of JPEG bytes, got {kind}")
    frames = [_decode_jpeg(b, f"{where} frame {t}") for t, b in enumerate(items)]
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise TapVidError(f"{where}: JPEG frames differ in size: {sorted(sizes)}")
    return np.stack(frames)


def _video(entry: Any, name: str, where: str, dataset: str, file: Path) -> TapVidVideo:
    if not isinstance(entry, dict):
        raise TapVidError(f"{where}: expected a dict with 'video', 'points' and 'occluded', got {type(entry).__name__}")
    missing = [k for k in ("video", "points", "occluded") if k not in entry]
    if missing:
        raise TapVidError(f"{where}: missing key(s) {missing}; a TAP-Vid video has 'video', 'points', 'occluded'")
    frames = _frames(entry["video"], where)
    points = np.asarray(entry["points"])
    occluded = np.asarray(entry["occluded"])
    T = frames.shape[0]
    if points.ndim != 3 or points.shape[2] != 2 or not np.issubdtype(points.dtype, np.floating):
        raise TapVidError(f"{where}: 'points' must be (N, T, 2) float (x, y), got {points.shape} {points.dtype}")
    if points.shape[1] != T:
        raise TapVidError(f"{where}: 'points' cover {points.shape[1]} frames but 'video' has {T}; "
                          f"points are (N, T, 2) with N tracks first")
    if occluded.shape != points.shape[:2] or occluded.dtype != bool:
        raise TapVidError(f"{where}: 'occluded' must be (N, T) = {points.shape[:2]} bool, got "
                          f"{occluded.shape} {occluded.dtype}")
    seen = points[~occluded]
    if seen.size and (not np.isfinite(seen).all() or seen.min() < -0.5 or seen.max() > 1.5):
        raise TapVidError(f"{where}: visible 'points' range over [{np.nanmin(seen):.3g}, {np.nanmax(seen):.3g}], "
                          f"not normalised (x / W, y / H in [0, 1]); are they pixels?")
    return TapVidVideo(name=name, frames=frames, points=points.astype(np.float64), occluded=occluded,
                       dataset=dataset, file=str(file))


def _scene_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "video"


def detect_dataset(data: Any) -> str:
    """"davis" for a dict of named videos, "kinetics" for a list whose videos are JPEG bytes, else "rgb_stacking"."""
    if isinstance(data, dict):
        return "davis"
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    video = first.get("video")
    return "rgb_stacking" if isinstance(video, np.ndarray) and video.dtype == np.uint8 else "kinetics"


def pickle_files(path: Path) -> list[Path]:
    """``path`` itself, or a folder's ``*.pkl`` (Kinetics' ``NNNN_of_0010.pkl`` shards) in name order."""
    if path.is_dir():
        files = sorted(path.glob("*.pkl"))
        if not files:
            raise TapVidError(f"{path}: folder holds no *.pkl files (TAP-Vid Kinetics shards are NNNN_of_0010.pkl)")
        return files
    if not path.is_file():
        raise TapVidError(f"{path}: file not found (download tapvid_davis.zip / tapvid_rgb_stacking.zip from "
                          f"tapnet's README, or generate the Kinetics pickles with its generate_tapvid.py)")
    return [path]


def iter_videos(path: str | Path, dataset: str = "auto", max_videos: int | None = None) -> Iterator[TapVidVideo]:
    """Every video of a TAP-Vid pickle (or folder of Kinetics shards), read with the restricted unpickler."""
    count = 0
    for file in pickle_files(Path(path)):
        try:
            data = load_restricted(file)
        except UnsafePickleError as e:
            raise TapVidError(str(e)) from None
        if not isinstance(data, (dict, list)) or not data:
            raise TapVidError(f"{file}: expected a dict (DAVIS) or a list (RGB-Stacking, Kinetics) of videos, "
                              f"got {type(data).__name__}{' (empty)' if isinstance(data, (dict, list)) else ''}")
        kind = detect_dataset(data) if dataset == "auto" else dataset
        if kind not in DATASETS:
            raise TapVidError(f"dataset must be one of {DATASETS} or 'auto', got {dataset!r}")
        items = list(data.items()) if isinstance(data, dict) else [(f"{kind}_{file.stem}_{i:04d}"
                                                                   if kind == "kinetics" else f"{kind}_{i:04d}", v)
                                                                  for i, v in enumerate(data)]
        for name, entry in items:
            if max_videos is not None and count >= max_videos:
                return
            yield _video(entry, _scene_name(str(name)), f"{file} video {name!r}", kind, file)
            count += 1


# ----------------------------------------------------------------------------- frames and queries

def subsample_frames(num_frames: int, max_frames: int) -> np.ndarray:
    """(F,) int64 source frame numbers: all of them, or ``max_frames`` evenly spaced from first to last."""
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    if num_frames <= max_frames:
        return np.arange(num_frames, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64))


def sample_queries(occluded: np.ndarray, mode: str,
                   stride: int = DEFAULT_QUERY_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """(track ids (Q,), query frames (Q,)) from occlusion flags (N, F) of the kept frames.

    ``first``: each track with a visible kept frame, queried at the first one.
    ``strided``: for f = 0, stride, 2 * stride, ..., every track visible at f, queried there
    (grouped by query frame, tracks in order within a group, as tapnet concatenates them).
    """
    visible = ~occluded
    if mode == "first":
        tracks = np.flatnonzero(visible.any(1))
        return tracks.astype(np.int64), visible[tracks].argmax(1).astype(np.int64)
    if mode == "strided":
        if stride < 1:
            raise ValueError(f"query stride must be >= 1, got {stride}")
        pairs = [(n, f) for f in range(0, occluded.shape[1], stride) for n in np.flatnonzero(visible[:, f])]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]
    raise ValueError(f"query mode must be one of {QUERY_MODES}, got {mode!r}")


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) -> (T, h, w, 3) uint8, bilinear (tapnet's readers resize to 256 x 256)."""
    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def video_tracks(video: TapVidVideo, max_frames: int, mode: str = "first", stride: int = DEFAULT_QUERY_STRIDE,
                 resize: tuple[int, int] | None = None) -> TapVidTracks:
    """The kept frames of ``video`` as a Scene and its queries' tracks in gasp's conventions."""
    T = video.frames.shape[0]
    ids = subsample_frames(T, max_frames)                                        # (F,)
    frames = video.frames[ids]
    if resize is not None and tuple(resize) != frames.shape[1:3]:
        frames = resize_frames(frames, resize)
    H, W = frames.shape[1:3]
    occ = video.occluded[:, ids]                                                 # (N, F)
    track_ids, query_frames = sample_queries(occ, mode, stride)
    # normalised (x / W, y / H) with the corner at 0 -> pixel-centre coordinates of the stored frames
    xy = video.points[track_ids][:, ids] * np.array([W, H]) - 0.5                # (Q, F, 2)
    occluded = occ[track_ids].T                                                  # (F, Q)
    visible = ~occluded
    tracks = np.where(np.isfinite(xy), xy, np.nan).transpose(1, 0, 2).astype(np.float32)
    meta = {"source": "tapvid", "dataset": video.dataset, "video": video.name, "file": video.file,
            "num_source_frames": int(T), "source_frames": ids.tolist(),
            "source_size_hw": list(video.frames.shape[1:3]), "size_hw": [int(H), int(W)],
            "num_tracks": int(video.points.shape[0])}
    if video.dataset == "kinetics":
        meta["fps"] = KINETICS_FPS
    scene = Scene(name=video.name, frames=np.ascontiguousarray(frames), depth=None, K=None, cam_from_world=None,
                  frame_index=ids, metadata=meta)
    seq_meta = {"query_mode": mode, **({"query_stride": int(stride)} if mode == "strided" else {}),
                "coordinates": "tapvid normalised (x/W, y/H, corner origin) -> x*W - 0.5"}
    return TapVidTracks(scene=scene, tracks=tracks, visible=visible, occluded=occluded,
                        query_frames=query_frames, track_ids=track_ids, metadata=seq_meta)
