"""DL3DV scenes (NeRFStudio ``transforms.json`` + ``images_{factor}``) as posed RGB-D Scenes.

docs/METHOD.md sec. 2 "DL3DV". DL3DV ships no depth: the user brings one
``depth_dir/<frame stem>.npy`` per frame (float, pixel-aligned with the ``images_{factor}``
file of the same stem) **in the poses' units**. DL3DV's poses keep COLMAP's arbitrary scale,
so metric depth (or VGGT's, or a monocular model's) must be rescaled first: ``depth_scale``
multiplies it, and the multi-view consistency check (``tracks/depth_align.py``) refuses depth
whose units visibly disagree with the poses. With DL3DV's COLMAP cache at hand,
``tracks/colmap.py`` can fit the scale to its sparse points instead.

Conventions handled here:

* **Intrinsics.** ``fl_x, fl_y, cx, cy`` are given for the full-resolution ``w x h``
  image. NeRFStudio generates the ray of pixel (i, j) at (j + 0.5, i + 0.5)
  (``Cameras.get_image_coords(pixel_offset=0.5)``) and DL3DV's poses come from COLMAP,
  whose top-left pixel centre is (0.5, 0.5); so ``cx, cy`` are measured from the image's
  top-left *corner*. Downscaling is exact in that convention (multiply by
  ``W_img / w``, ``H_img / h``); our convention puts (0, 0) at the top-left pixel *centre*,
  so ``cx_ours = cx * W_img / w - 0.5`` (same for y).
* **Poses.** ``transform_matrix`` is camera-to-world with OpenGL camera axes (x right,
  y up, z backward). Negating the camera y and z axes gives OpenCV camera-to-world;
  its inverse is ``cam_from_world``.
* **Distortion.** ``camera_model`` OPENCV with ``k1, k2, p1, p2`` (and ``k3`` if given),
  on normalised coordinates (x, y) = ((u - cx) / fx, (v - cy) / fy)::

      r2 = x^2 + y^2,  radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
      x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
      y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

  If the largest pixel shift the model causes over the image is below
  ``DISTORTION_TOL_PX``, the camera is treated as a pinhole. Otherwise the loader either
  refuses (default) or, with ``undistort=True``, resamples every frame (bilinear) and
  depth map (nearest; z is unchanged by undistortion) onto a pinhole camera with the
  same K, by sending each output pixel through the forward model. Output pixels whose
  source falls outside the image get RGB 0 and unknown (NaN) depth.

Shapes: T frames, H x W pixels of the ``images_{factor}`` files.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tracks.depth_align import DepthPoseError, check_consistency, consistency_scale
from tracks.distortion import (distinct_intrinsics, distort_normalized, distort_points,  # noqa: F401 (re-exported)
                               max_distortion_px, remap_nearest, undistort_frames, undistort_points)
from tracks.scene_folder import SceneError, check_scene_cameras, read_depth, read_rgb, stack_frames
from tracks.types import Scene

log = logging.getLogger(__name__)

DISTORTION_TOL_PX = 0.1
SUPPORTED_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # negates camera y and z axes


# ----------------------------------------------------------------------------- cameras

def scale_intrinsics(fl_x: float, fl_y: float, cx: float, cy: float, w: float, h: float,
                     width: int, height: int) -> np.ndarray:
    """(3, 3) K for a width x height image from full-resolution corner-convention intrinsics."""
    sx, sy = width / w, height / h
    return np.array([[fl_x * sx, 0.0, cx * sx - 0.5],
                     [0.0, fl_y * sy, cy * sy - 0.5],
                     [0.0, 0.0, 1.0]])


def opengl_c2w_to_cam_from_world(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world (3x4 accepted) -> (4, 4) OpenCV world-to-camera."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    with np.errstate(invalid="ignore"):     # non-finite input is reported by check_cameras
        c2w_cv = c2w @ OPENGL_TO_OPENCV
    R, t = c2w_cv[:3, :3], c2w_cv[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T                     # rigid inverse; check_cameras rejects non-rigid input
    out[:3, 3] = -R.T @ t
    return out


def distortion_coeffs(meta: dict[str, Any]) -> np.ndarray:
    """(5,) OPENCV coefficients (k1, k2, p1, p2, k3); missing ones are 0."""
    return np.array([float(meta.get(k, 0.0) or 0.0) for k in ("k1", "k2", "p1", "p2", "k3")])


# ----------------------------------------------------------------------------- files

def find_transforms(scene_dir: Path) -> Path:
    """scene_dir/transforms.json, or scene_dir/nerfstudio/transforms.json (benchmark layout)."""
    for p in (scene_dir / "transforms.json", scene_dir / "nerfstudio" / "transforms.json"):
        if p.is_file():
            return p
    raise SceneError(f"{scene_dir}: no transforms.json (looked in the folder and in nerfstudio/)")


def find_images_dir(root: Path, factor: int | None) -> Path:
    """root/images_{factor}; with factor None, the single images_N folder present."""
    if factor is not None:
        d = root / (f"images_{factor}" if factor != 1 else "images")
        if not d.is_dir():
            raise SceneError(f"{d}: image folder for --factor {factor} not found")
        return d
    found = sorted(p for p in root.glob("images_*") if p.is_dir() and re.fullmatch(r"images_\d+", p.name))
    if len(found) != 1:
        names = [p.name for p in found] or ["none"]
        raise SceneError(f"{root}: cannot auto-detect the image folder; images_N folders present: "
                         f"{', '.join(names)}. Pass the factor explicitly.")
    return found[0]


def read_transforms(path: Path) -> dict[str, Any]:
    """Parse transforms.json; SceneError on malformed JSON or missing keys."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise SceneError(f"{path}: expected an object with a non-empty 'frames' list")
    model = meta.get("camera_model", "OPENCV")
    if model not in SUPPORTED_MODELS:
        raise SceneError(f"{path}: camera_model {model!r} is not supported (only {', '.join(SUPPORTED_MODELS)})")
    for i, fr in enumerate(meta["frames"]):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise SceneError(f"{path}: frames[{i}] needs 'file_path' and 'transform_matrix'")
    return meta


def frame_intrinsics(meta: dict, frame: dict, path: Path) -> dict[str, float]:
    """fl_x, fl_y, cx, cy, w, h for one frame (per-frame keys override the global ones)."""
    out = {}
    for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        v = frame.get(k, meta.get(k))
        if v is None:
            raise SceneError(f"{path}: intrinsic '{k}' missing for {frame['file_path']}")
        try:
            out[k] = float(v)
        except (TypeError, ValueError) as e:
            raise SceneError(f"{path}: intrinsic '{k}' is not a number ({v!r})") from e
    if out["w"] <= 0 or out["h"] <= 0:
        raise SceneError(f"{path}: image size w={out['w']}, h={out['h']} must be positive")
    return out


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header; SceneError if it is missing or unreadable."""
    if not path.is_file():
        raise SceneError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise SceneError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def frame_numbers(stems: list[str]) -> np.ndarray:
    """(T,) source frame numbers from names like frame_00017 -> 17; falls back to 0..T-1."""
    nums = [re.search(r"(\d+)$", s) for s in stems]
    if all(nums):
        idx = np.array([int(m.group(1)) for m in nums], dtype=np.int64)
        if len(np.unique(idx)) == len(idx):
            return idx
    log.warning("frame names do not all end in distinct numbers; using their order as frame_index")
    return np.arange(len(stems), dtype=np.int64)


# ----------------------------------------------------------------------------- public API

def load_dl3dv_scene(scene_dir: str | Path, depth_dir: str | Path, images_factor: int | None = 4,
                     undistort: bool = False, name: str | None = None, depth_scale: float = 1.0,
                     check_units: bool = True) -> Scene:
    """Load one DL3DV scene with user-supplied depth as a pinhole OpenCV Scene.

    Args:
        scene_dir: folder holding transforms.json (or nerfstudio/transforms.json) and images_N/.
        depth_dir: folder of ``<frame stem>.npy`` depth maps at the images_N resolution, in the
            poses' units after multiplying by ``depth_scale``.
        images_factor: N of the images_N folder to use; None auto-detects a single one.
        undistort: resample frames and depth to remove OPENCV distortion instead of refusing.
        name: scene name (default: the scene folder's name).
        depth_scale: factor applied to every depth map.
        check_units: refuse depth whose units the multi-view consistency check finds disagree with the poses.
    """
    scene_dir, depth_dir = Path(scene_dir), Path(depth_dir)
    if not scene_dir.is_dir():
        raise SceneError(f"{scene_dir}: scene folder not found")
    if not depth_dir.is_dir():
        raise SceneError(f"{depth_dir}: depth folder not found")
    tpath = find_transforms(scene_dir)
    meta = read_transforms(tpath)
    images_dir = find_images_dir(tpath.parent, images_factor)
    entries = sorted(meta["frames"], key=lambda fr: Path(fr["file_path"]).name)
    paths = [images_dir / Path(fr["file_path"]).name for fr in entries]

    H, W = image_size(paths[0])        # cameras and distortion are checked before any pixel is read
    K = np.stack([scale_intrinsics(**frame_intrinsics(meta, fr, tpath), width=W, height=H)
                  for fr in entries])                                           # (T, 3, 3)
    cam_from_world = np.stack([_pose(fr, tpath) for fr in entries])             # (T, 4, 4)
    check_scene_cameras(K, cam_from_world, tpath, [p.name for p in paths])
    coeffs = distortion_coeffs(meta)
    shift = max(max_distortion_px(K[t], coeffs, H, W) for t in distinct_intrinsics(K))
    if shift >= DISTORTION_TOL_PX and not undistort:
        raise SceneError(
            f"{tpath}: OPENCV distortion (k1, k2, p1, p2, k3 = {coeffs.tolist()}) moves pixels by up "
            f"to {shift:.2f} px at {W}x{H}; pass --undistort (undistort=True) to resample the "
            f"frames and depth onto a pinhole camera")

    frames = stack_frames([read_rgb(p) for p in paths], paths)                  # (T, H, W, 3)
    depth = np.stack([read_depth(depth_dir / f"{p.stem}.npy", (H, W)) for p in paths])  # (T, H, W)
    depth = depth * np.float32(depth_scale)
    undistorted = shift >= DISTORTION_TOL_PX
    if undistorted:
        frames, depth = undistort_frames(frames, depth, K, coeffs)
    units = {"mode": "unchecked", "depth_scale": depth_scale}
    if check_units:
        units = {"mode": "consistency", "depth_scale": depth_scale,
                 **consistency_scale(depth, K, cam_from_world, frames)}
        try:
            check_consistency(units, str(depth_dir))
        except DepthPoseError as e:
            raise SceneError(str(e)) from None
        if not units["decided"]:
            log.warning("%s: the multi-view check cannot tell whether depth and poses agree in units (best scale "
                        "%.3g); make sure the depth is in the poses' (COLMAP's) units", depth_dir, units["best_scale"])
    T = len(paths)
    log.info("loaded DL3DV scene %s: %d frames of %dx%d from %s (undistorted: %s)",
             scene_dir, T, W, H, images_dir.name, undistorted)
    return Scene(
        name=name or scene_dir.resolve().name,
        frames=frames,
        depth=depth,
        K=K,
        cam_from_world=cam_from_world,
        frame_index=frame_numbers([p.stem for p in paths]),
        metadata={"source": "dl3dv", "images_dir": images_dir.name, "undistorted": undistorted,
                  "distortion_k1_k2_p1_p2_k3": coeffs.tolist(), "max_distortion_px": shift,
                  "depth_units": "the poses' (COLMAP's) units", "depth_alignment": units},
    )


def _pose(frame: dict, path: Path) -> np.ndarray:
    try:
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SceneError(f"{path}: transform_matrix of {frame['file_path']} is not numeric ({e})") from e
    if c2w.shape not in ((4, 4), (3, 4)):
        raise SceneError(f"{path}: transform_matrix of {frame['file_path']} has shape {c2w.shape}, "
                         f"expected (4, 4)")
    return opengl_c2w_to_cam_from_world(c2w)
