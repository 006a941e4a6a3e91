"""VGGT's outputs (facebookresearch/vggt) as posed RGB-D Scenes at the source frames' own size.

Input: the ``predictions`` dict of a VGGT forward, or the ``predictions.npz`` its gradio demo
saves (``demo_gradio.py``: the model's outputs, batch removed, plus ``extrinsic`` and
``intrinsic`` from ``pose_encoding_to_extri_intri``), and the source images VGGT read (the demo
reads ``target_dir/images/*`` sorted by name). Used keys, S frames of VGGT's h x w::

    depth       (S, h, w, 1) or (S, h, w)   camera z, VGGT's normalised unit
    depth_conf  (S, h, w)                   confidence, >= 1 (higher is surer)
    extrinsic   (S, 3, 4)                   OpenCV camera-from-world; the world is the first camera
    intrinsic   (S, 3, 3)                   pinhole, cx = w / 2, cy = h / 2
    images      (S, 3, h, w) in [0, 1]      optional: the preprocessed frames, used to check the mapping

A leading batch axis of 1 is accepted.

Conventions handled here:

* **Pixels.** VGGT unprojects pixel (i, j) through (j + 0.5, i + 0.5) with cx = w / 2
  (``vggt/utils/geometry.py``, ``depth_to_cam_coords_points``): its K puts (0, 0) at the image
  *corner*. gasp's ``cx = cx_vggt' - 0.5`` after the mapping below.
* **Preprocessing undone** (``vggt/utils/load_fn.py``, ``load_and_preprocess_images``).
  ``crop`` (the default there and in the demo): the width becomes 518 and the height
  h' = round(H * 518 / W / 14) * 14 (PIL bicubic), then rows [top, top + 518) with
  top = (h' - 518) // 2 are kept if h' > 518. ``pad``: the longer side becomes 518, the other
  rounded to a multiple of 14, then the image is padded to 518 x 518 with white, left and top
  getting half of the padding (rounded down). Either way a VGGT corner coordinate (u, v) is
  the source's ((u + ox) * W / w', (v + oy) * H / h') with (ox, oy) = (0, top) for crop and
  (-left, -top) for pad; K maps the same way, and depth (camera z) is unchanged by it. Depth
  and confidence are resampled to the source pixels (nearest VGGT pixel); source pixels that
  VGGT cropped away, or that fall on its padding, get unknown depth.
* **Confidence.** Pixels with ``depth_conf`` below ``conf_threshold`` get unknown depth (NaN),
  so points landing there have an unknown state, not an occluded one.
* **Units.** Depth and extrinsics share VGGT's normalised unit (the first camera at the
  origin), so depth is in the poses' units by construction.

Every problem raises :class:`VGGTError` naming the file, the array and the fix.
Shapes: S frames, h x w VGGT pixels, H x W source pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from tracks.dl3dv import frame_numbers
from tracks.scene_folder import SceneError, list_frames, read_rgb, stack_frames
from tracks.types import Scene

log = logging.getLogger(__name__)

TARGET = 518                     # VGGT's input width (crop) or side (pad)
PATCH = 14
MODES = ("crop", "pad")
DEFAULT_CONF_THRESHOLD = 5.0     # demo_colmap.py's depth-confidence threshold (--conf_thres_value)
IMAGE_CHECK_TOL = 0.03           # mean |difference| (0..1) between VGGT's images and our re-preprocessing


class VGGTError(SceneError):
    """VGGT outputs that cannot be converted; the message names the array or file and the fix."""


@dataclass
class Preprocess:
    """How VGGT mapped one source frame: resized to (w', h'), then offset (ox, oy) in resized pixels."""

    mode: str
    resized: tuple[int, int]     # (w', h')
    offset: tuple[int, int]      # (ox, oy): VGGT u = u_resized - ox
    out: tuple[int, int]         # (w, h) of VGGT's maps


def preprocess_geometry(width: int, height: int, mode: str) -> Preprocess:
    """VGGT's resize and crop/pad of a width x height frame (module docstring)."""
    if mode == "crop":
        w2, h2 = TARGET, round(height * (TARGET / width) / PATCH) * PATCH
        top = (h2 - TARGET) // 2 if h2 > TARGET else 0
        return Preprocess(mode, (w2, h2), (0, top), (w2, min(h2, TARGET)))
    if mode == "pad":
        if width >= height:
            w2, h2 = TARGET, round(height * (TARGET / width) / PATCH) * PATCH
        else:
            w2, h2 = round(width * (TARGET / height) / PATCH) * PATCH, TARGET
        left, top = (TARGET - w2) // 2, (TARGET - h2) // 2
        return Preprocess(mode, (w2, h2), (-left, -top), (TARGET, TARGET))
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def vggt_image(frame: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(h, w, 3) float in [0, 1]: the frame as VGGT's loader prepares it (for the mapping check)."""
    img = np.asarray(Image.fromarray(frame).resize(pre.resized, Image.Resampling.BICUBIC), dtype=np.float64) / 255
    w, h = pre.out
    ox, oy = pre.offset
    out = np.ones((h, w, 3))                                                     # white padding
    ys, xs = np.arange(h) + oy, np.arange(w) + ox
    okr, okc = (ys >= 0) & (ys < pre.resized[1]), (xs >= 0) & (xs < pre.resized[0])
    out[np.ix_(okr, okc)] = img[np.ix_(ys[okr], xs[okc])]
    return out


def _array(pred: Mapping[str, Any], key: str, where: str, required: bool = True) -> np.ndarray | None:
    if key not in pred:
        if required:
            raise VGGTError(f"{where}: no '{key}' array (keys: {sorted(pred)}); VGGT's predictions need depth, "
                            f"depth_conf, extrinsic and intrinsic (demo_gradio.py adds extrinsic and intrinsic)")
        return None
    try:
        arr = np.asarray(pred[key])
    except ValueError as e:                                  # an object array in an npz opened without pickle
        raise VGGTError(f"{where}: '{key}' cannot be read without pickle ({e})") from None
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise VGGTError(f"{where}: '{key}' is {arr.dtype}, not a numeric array")
    return arr


def read_predictions(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of a predictions dict or .npz, batch axis removed and shapes checked; (arrays, where)."""
    where = str(source) if not isinstance(source, Mapping) else "predictions"
    if not isinstance(source, Mapping):
        path = Path(source)
        if not path.is_file():
            raise VGGTError(f"{path}: file not found (demo_gradio.py saves target_dir/predictions.npz)")
        try:
            source = dict(np.load(path, allow_pickle=False))
        except Exception as e:  # zipfile, ValueError, OSError for truncated or foreign files
            raise VGGTError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    pred = {k: _array(source, k, where) for k in ("depth", "depth_conf", "extrinsic", "intrinsic")}
    images = _array(source, "images", where, required=False)
    if images is not None:
        pred["images"] = images
    for k, nd in (("depth", (3, 4)), ("depth_conf", (3,)), ("extrinsic", (3,)), ("intrinsic", (3,)), ("images", (4,))):
        if k in pred and pred[k].ndim in [n + 1 for n in nd] and pred[k].shape[0] == 1:
            pred[k] = pred[k][0]                                            # batch of one
    d = pred["depth"]
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 3:
        raise VGGTError(f"{where}: 'depth' must be (S, h, w, 1) or (S, h, w), got {pred['depth'].shape}")
    pred["depth"] = d.astype(np.float32)
    S, h, w = d.shape
    want = {"depth_conf": (S, h, w), "extrinsic": (S, 3, 4), "intrinsic": (S, 3, 3)}
    if "images" in pred:
        want["images"] = (S, 3, h, w)
    for k, shape in want.items():
        if pred[k].shape != shape:
            raise VGGTError(f"{where}: '{k}' has shape {pred[k].shape} but depth {pred['depth'].shape} needs {shape}; "
                            f"the arrays must come from one VGGT run over the same S frames")
    return pred, where


def source_images(images_dir: str | Path) -> list[Path]:
    """The image files VGGT's demo reads from a folder, in its (sorted-name) order."""
    try:
        return list_frames(Path(images_dir))
    except SceneError as e:
        raise VGGTError(f"{e} (pass the folder of source frames VGGT was run on)") from None


def _matches(frames: np.ndarray, images: np.ndarray, mode: str) -> tuple[bool, float, int]:
    """Whether re-preprocessing the frames in ``mode`` reproduces VGGT's images: (ok, worst error, its frame)."""
    H, W = frames.shape[1:3]
    pre = preprocess_geometry(W, H, mode)
    if pre.out != (images.shape[3], images.shape[2]):
        return False, float("inf"), 0
    errs = [float(np.abs(vggt_image(f, pre) - img.transpose(1, 2, 0)).mean()) for f, img in zip(frames, images)]
    worst = int(np.argmax(errs))
    return errs[worst] < IMAGE_CHECK_TOL, errs[worst], worst


def choose_mode(frames: np.ndarray, pred: dict[str, np.ndarray], mode: str, where: str, paths: list[Path]) -> str:
    """The preprocessing mode: the one asked for, checked; else the one whose output fits (and matches ``images``)."""
    H, W = frames.shape[1:3]
    h, w = pred["depth"].shape[1:]
    fits = [m for m in MODES if preprocess_geometry(W, H, m).out == (w, h)]
    candidates = fits if mode == "auto" else [mode]
    if not candidates or (mode != "auto" and mode not in fits):
        raise VGGTError(f"{where}: VGGT's maps are {w}x{h} (w x h), which VGGT's "
                        f"{'preprocessing' if mode == 'auto' else mode + ' mode'} does not make of {W}x{H} source "
                        f"frames (crop gives {preprocess_geometry(W, H, 'crop').out}, pad "
                        f"{preprocess_geometry(W, H, 'pad').out}); are these the images VGGT read?")
    if "images" not in pred:
        if len(candidates) > 1:
            log.warning("%s: crop and pad both give %dx%d maps and the predictions hold no 'images' to tell them "
                        "apart; assuming crop (VGGT's default; pass --mode pad otherwise)", where, w, h)
        return candidates[0]
    results = {m: _matches(frames, pred["images"], m) for m in candidates}
    good = [m for m in candidates if results[m][0]]
    if not good:
        m = candidates[0]
        _, err, t = results[m]
        raise VGGTError(f"{where}: the source images do not match VGGT's preprocessed 'images' ({m} mode: mean "
                        f"difference {err:.3f} in frame {t}, {paths[t].name}); pass the folder and order of images "
                        f"VGGT was run on (the demo reads target_dir/images sorted by name)")
    return good[0]


def to_source(pred: dict[str, np.ndarray], frames: np.ndarray, mode: str,
              conf_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Depth (S, H, W) with unknown = NaN, K (S, 3, 3) and cam_from_world (S, 4, 4) at the source frames."""
    S, H, W = frames.shape[:3]
    h, w = pred["depth"].shape[1:]
    pre = preprocess_geometry(W, H, mode)
    (w2, h2), (ox, oy) = pre.resized, pre.offset
    sx, sy = w2 / W, h2 / H                                                      # source -> resized
    # the VGGT pixel holding each source pixel centre (corner coordinates j + 0.5, i + 0.5)
    u = (np.arange(W) + 0.5) * sx - ox
    v = (np.arange(H) + 0.5) * sy - oy
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    okc, okr = (col >= 0) & (col < w), (row >= 0) & (row < h)
    depth = np.full((S, H, W), np.nan, dtype=np.float32)
    conf = pred["depth_conf"][:, row.clip(0, h - 1)][:, :, col.clip(0, w - 1)]     # (S, H, W)
    d = pred["depth"][:, row.clip(0, h - 1)][:, :, col.clip(0, w - 1)]
    keep = okr[None, :, None] & okc[None, None, :] & (conf >= conf_threshold)
    depth[keep] = d[keep]
    K = np.array(pred["intrinsic"], dtype=np.float64)
    Ks = np.zeros_like(K)
    Ks[:, 0, 0], Ks[:, 1, 1] = K[:, 0, 0] / sx, K[:, 1, 1] / sy
    Ks[:, 0, 2] = (K[:, 0, 2] + ox) / sx - 0.5                                    # corner -> gasp's pixel centre
    Ks[:, 1, 2] = (K[:, 1, 2] + oy) / sy - 0.5
    Ks[:, 2, 2] = 1.0
    T = np.tile(np.eye(4), (S, 1, 1))
    T[:, :3, :4] = pred["extrinsic"]
    info = {"mode": mode, "vggt_size_wh": [int(w), int(h)], "resized_wh": [int(w2), int(h2)],
            "offset_xy": [int(ox), int(oy)], "conf_threshold": conf_threshold,
            "unknown_depth_fraction": float(np.isnan(depth).mean())}
    return depth, Ks, T, info


def load_vggt_scene(predictions: str | Path | Mapping[str, Any], images_dir: str | Path, mode: str = "auto",
                    conf_threshold: float = DEFAULT_CONF_THRESHOLD, name: str | None = None) -> Scene:
    """A Scene at the source frames' size from VGGT's predictions (module docstring)."""
    pred, where = read_predictions(predictions)
    paths = source_images(images_dir)
    S = pred["depth"].shape[0]
    if len(paths) != S:
        raise VGGTError(f"{where}: VGGT's arrays hold {S} frames but {images_dir} has {len(paths)} images; pass the "
                        f"folder VGGT was run on")
    frames = stack_frames([read_rgb(p) for p in paths], paths)                   # (S, H, W, 3)
    chosen = choose_mode(frames, pred, mode, where, paths)
    depth, K, T, info = to_source(pred, frames, chosen, conf_threshold)
    from tracks.geometry import CameraError, check_cameras

    try:
        check_cameras(K, T, where=where)
    except CameraError as e:
        raise VGGTError(str(e)) from None
    log.info("VGGT scene %s: %d frames of %dx%d (%s mode), %.0f%% of depth pixels unknown", where, S, frames.shape[2],
             frames.shape[1], chosen, 100 * info["unknown_depth_fraction"])
    return Scene(name=name or Path(images_dir).resolve().parent.name or "vggt", frames=frames, depth=depth, K=K,
                 cam_from_world=T, frame_index=frame_numbers([p.stem for p in paths]),
                 metadata={"source": "vggt", "predictions": where, "images_dir": str(images_dir),
                           "image_names": [p.name for p in paths], "preprocess": info,
                           "depth_units": "VGGT's normalised unit, shared with its extrinsics"})
