"""COLMAP reconstructions plus depth (MVS, or brought from elsewhere) as posed RGB-D Scenes.

The input is a COLMAP folder DIR::

    DIR/images/<name>                               the images named in the model (or images_N/, downscaled)
    DIR/sparse/ or DIR/sparse/0/                    cameras + images (+ points3D), .bin or .txt
    DIR/stereo/depth_maps/<name>.geometric.bin      MVS depth (else <name>.photometric.bin)

or, instead of the MVS maps, one ``DEPTH_DIR/<name with .npy for its suffix>`` per image
(``<stem>.npy`` for flat names): (H, W) float at the images' size, from VGGT, a monocular
model or any other source. ``colmap image_undistorter`` writes this layout; DL3DV's COLMAP
cache (``colmap/sparse/0``, ``colmap/images_N``, OPENCV cameras) is read as it is, with
``undistort=True`` for its distortion. Sparse tracks from ``points3D``: ``tracks/colmap_sparse.py``.
File formats: ``tracks/colmap_io.py``, ``tracks/colmap_points.py``.

Conventions handled here:

* **Pixel origin.** COLMAP's image coordinates put (0, 0) at the top-left *corner* of the
  image, so the top-left pixel's centre is (0.5, 0.5) (``src/colmap/sensor/models.h``;
  ``doc/database.rst``, "Keypoints and Descriptors"). gasp puts (0, 0) at that pixel's
  centre (``tracks/types.py``), so ``cx_ours = cx - 0.5`` and ``cy_ours = cy - 0.5``, and
  keypoints move the same way; focal lengths are unchanged. If the image files are not the
  camera's WIDTH x HEIGHT (an ``images_4`` folder next to the full-size model), K and the
  keypoints are scaled first, which is exact in the corner convention:
  ``cx_ours = cx * W_img / WIDTH - 0.5``.
* **Poses.** An image's (qvec, tvec) maps world to camera, with OpenCV camera axes; it is
  ``cam_from_world`` as is.
* **Distortion.** Pinhole-like models are used as they are. OPENCV, RADIAL, SIMPLE_RADIAL
  (OpenCV's distortion, ``tracks/distortion.py``) moving pixels by 0.1 px or more need
  ``undistort=True``: frames (bilinear) and depth (nearest) are resampled onto a pinhole camera
  with the same K. MVS depth maps come from undistorted workspaces, so they need pinhole cameras.
* **Depth units.** Depth is camera z in the units of the model's translations (COLMAP's
  scale is arbitrary unless the model was scaled or geo-registered). When the model has
  ``points3D``, the depth is checked against the poses at the sparse points
  (``tracks/depth_align.py``): ``align_depth="check"`` (default) refuses depth in other units,
  ``"scene"`` / ``"frame"`` rescale it to the poses (one scale, or one per frame), ``"none"``
  skips the check. Without ``points3D`` the multi-view consistency check runs instead. The
  reprojection of the sparse points onto their keypoints is checked too. What was done is
  recorded in the scene's metadata (``depth_alignment``).
* **Order.** Frames are ordered by the number their names end in when every name has a
  distinct one (``frame_00017.jpg`` -> frame_index 17), else by name with frame_index
  0..T-1 (``tracks.dl3dv.frame_numbers``).

Shapes: T frames, H x W pixels, M observations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tracks import depth_align as da
from tracks.colmap_io import (OPENCV_LIKE, ColmapCamera, ColmapImage, cam_from_world, read_colmap_array, read_model,
                              require_pinhole)
from tracks.colmap_points import Observations, Points3D, observations, read_points3d
from tracks.distortion import max_distortion_px, undistort_frames
from tracks.dl3dv import DISTORTION_TOL_PX, frame_numbers, image_size, scale_intrinsics
from tracks.scene_folder import SceneError, check_scene_cameras, read_depth, read_rgb, stack_frames
from tracks.types import Scene

log = logging.getLogger(__name__)

DEFAULT_DEPTH_DIR = "stereo/depth_maps"
DEPTH_KINDS = ("geometric", "photometric")      # MVS maps, in order of preference


def find_model_dir(root: Path, sparse: str | Path | None) -> Path:
    """root/sparse given; else root/sparse (image_undistorter) or root/sparse/0 (mapper)."""
    if sparse is not None:
        d = root / sparse
        if not d.is_dir():
            raise SceneError(f"{d}: sparse model folder not found")
        return d
    for d in (root / "sparse", root / "sparse" / "0"):
        if any((d / f"{n}.{e}").is_file() for n in ("cameras", "images") for e in ("bin", "txt")):
            return d
    raise SceneError(f"{root}: no COLMAP model in sparse/ or sparse/0/ (pass --sparse to name the folder)")


def order_images(images: list[ColmapImage], where: Path) -> tuple[list[ColmapImage], np.ndarray]:
    """Images in frame order and their (T,) int64 frame_index (see the module docstring)."""
    by_name = sorted(images, key=lambda im: im.name)
    names = [im.name for im in by_name]
    dup = next((a for a, b in zip(names, names[1:]) if a == b), None)
    if dup is not None:
        raise SceneError(f"{where}: image name {dup!r} is listed twice")
    numbers = frame_numbers([str(PurePosixPath(n).with_suffix("")) for n in names])
    order = np.argsort(numbers, kind="stable")
    return [by_name[i] for i in order], numbers[order]


def intrinsics(camera: ColmapCamera, image_hw: tuple[int, int], image_path: Path, cameras_file: Path) -> np.ndarray:
    """(3, 3) K in gasp's convention for an image of image_hw = (H, W) pixels."""
    H, W = image_hw
    w, h = camera.width, camera.height
    if (W, H) != (w, h) and (w <= 0 or h <= 0 or abs(W * h / w - H) > 1.0):
        raise SceneError(f"{image_path}: image is {W}x{H} (W x H) but camera {camera.camera_id} in "
                         f"{cameras_file} is {w}x{h}, another aspect ratio; K cannot be scaled to it")
    fx, fy, cx, cy = camera.focal_principal()
    return scale_intrinsics(fx, fy, cx, cy, w, h, width=W, height=H)


@dataclass
class ColmapModel:
    """A model's registered images in frame order, with cameras at the size of the image files."""

    root: Path
    model_dir: Path
    form: str                          # "binary" or "text"
    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]          # (T,) in frame order
    frame_index: np.ndarray            # (T,) int64
    paths: list[Path]                  # (T,) image files
    image_hw: tuple[int, int]          # (H, W) of every image file
    K: np.ndarray                      # (T, 3, 3) gasp convention, at image_hw
    cam_from_world: np.ndarray         # (T, 4, 4)
    coeffs: np.ndarray | None          # (T, 5) OpenCV distortion; None if a camera has no such form
    pixel_scale: np.ndarray            # (T, 2) image size / camera size (x, y)

    @property
    def names(self) -> list[str]:
        return [im.name for im in self.images]

    @property
    def files(self) -> tuple[Path, Path]:
        ext = "bin" if self.form == "binary" else "txt"
        return self.model_dir / f"cameras.{ext}", self.model_dir / f"images.{ext}"

    def camera(self, t: int) -> ColmapCamera:
        return self.cameras[self.images[t].camera_id]

    def distortion_px(self) -> float:
        """Largest pixel shift the cameras' distortion causes over the images (inf if not OpenCV-like)."""
        if self.coeffs is None:
            return float("inf")
        H, W = self.image_hw
        _, first = np.unique(np.concatenate([self.K.reshape(len(self.K), -1), self.coeffs], 1), axis=0,
                             return_index=True)
        return max(max_distortion_px(self.K[t], self.coeffs[t], H, W) for t in first)

    def to_image_pixels(self, frame: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """COLMAP keypoints (M, 2) of frames (M,) -> gasp pixel coordinates of the image files."""
        return xy * self.pixel_scale[frame] - 0.5

    def metadata(self) -> dict:
        return {"model": str(self.model_dir.relative_to(self.root)) if self.model_dir.is_relative_to(self.root)
                else str(self.model_dir), "model_format": self.form, "image_names": self.names,
                "camera_models": sorted({c.model for c in self.cameras.values()})}


def read_colmap_model(colmap_dir: str | Path, sparse: str | Path | None = None,
                      images: str | Path = "images") -> ColmapModel:
    """Read and check a model and its image folder; nothing but image headers is read from the images."""
    root = Path(colmap_dir)
    if not root.is_dir():
        raise SceneError(f"{root}: COLMAP folder not found")
    model_dir = find_model_dir(root, sparse)
    cameras, records, form = read_model(model_dir)
    ext = "bin" if form == "binary" else "txt"
    cameras_file, images_file = model_dir / f"cameras.{ext}", model_dir / f"images.{ext}"
    if not records:
        raise SceneError(f"{images_file}: the model has no registered images")
    images_dir = root / images
    if not images_dir.is_dir():
        raise SceneError(f"{images_dir}: image folder not found")
    ordered, frame_index = order_images(list(records.values()), images_file)
    paths = [images_dir / im.name for im in ordered]
    for p, im in zip(paths, ordered):
        if not p.is_file():
            raise SceneError(f"{p}: image file not found ({images_file.name} lists {im.name!r}; is {images_dir} "
                             f"the folder the model was built from?)")
        if im.camera_id not in cameras:
            raise SceneError(f"{images_file}: image {im.name!r} uses camera {im.camera_id}, "
                             f"which {cameras_file} does not list")
    sizes = [image_size(p) for p in paths]
    K, scale = [], []
    for im, p, hw in zip(ordered, paths, sizes):
        cam = cameras[im.camera_id]
        K.append(intrinsics(cam, hw, p, cameras_file))
        scale.append((hw[1] / cam.width, hw[0] / cam.height))
    K = np.stack(K)                                                              # (T, 3, 3)
    T_cw = np.stack([cam_from_world(im) for im in ordered])                      # (T, 4, 4)
    names = [im.name for im in ordered]
    check_scene_cameras(K, T_cw, images_file, names)
    co = [cameras[im.camera_id].opencv_coeffs() for im in ordered]
    return ColmapModel(root=root, model_dir=model_dir, form=form, cameras=cameras, images=ordered,
                       frame_index=frame_index, paths=paths, image_hw=sizes[0], K=K, cam_from_world=T_cw,
                       coeffs=None if any(c is None for c in co) else np.stack(co), pixel_scale=np.array(scale))


def model_observations(model: ColmapModel) -> tuple[Points3D, Observations, Path]:
    """The model's points3D and every observation, keypoints in gasp's convention at the images' size."""
    points, path = read_points3d(model.model_dir, model.form)
    frame_of_image = {im.image_id: t for t, im in enumerate(model.images)}
    records = {im.image_id: im for im in model.images}
    obs = observations(points, records, frame_of_image, path)
    obs.xy = model.to_image_pixels(obs.frame, obs.xy)
    return points, obs, path


def check_distortion(model: ColmapModel, undistort: bool, what: str) -> bool:
    """Whether frames must be undistorted; SceneError if they must and cannot or may not be."""
    shift = model.distortion_px()
    if shift < DISTORTION_TOL_PX:
        return False
    cameras_file = model.files[0]
    if model.coeffs is None:
        bad = sorted({c.model for c in model.cameras.values() if c.model not in OPENCV_LIKE})
        raise SceneError(f"{cameras_file}: camera model(s) {bad} have no OpenCV form gasp can undistort; {what} "
                         f"needs {', '.join(OPENCV_LIKE)} cameras (or run `colmap image_undistorter` first)")
    if not undistort:
        raise SceneError(f"{cameras_file}: the cameras' distortion moves pixels by up to {shift:.2f} px at "
                         f"{model.image_hw[1]}x{model.image_hw[0]}; {what} needs a pinhole camera: pass --undistort "
                         f"(undistort=True) to resample the frames onto one")
    return True


def read_mvs_depth(depth_dir: Path, name: str, image_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(H, W) float32 COLMAP depth of one image and which kind it was (geometric, photometric)."""
    for kind in DEPTH_KINDS:
        path = depth_dir / f"{name}.{kind}.bin"
        if not path.is_file():
            continue
        depth = read_colmap_array(path)
        if depth.ndim != 2:
            raise SceneError(f"{path}: has {depth.shape[2]} channels; a depth map has 1 (is it a normal map?)")
        if depth.shape != tuple(image_hw):
            raise SceneError(f"{path}: depth map is {depth.shape[0]}x{depth.shape[1]} but its image is "
                             f"{image_hw[0]}x{image_hw[1]} (H x W); they must match (patch_match_stereo "
                             f"shrinks depth maps to --PatchMatchStereo.max_image_size)")
        return depth, kind
    raise SceneError(f"{depth_dir / (name + '.geometric.bin')}: depth map not found "
                     f"(nor {name}.photometric.bin; every image needs one)")


def align_to_poses(model: ColmapModel, depth: np.ndarray, mode: str, where: str, frames: np.ndarray | None = None,
                   tol: float = da.DEFAULT_TOL, reproj_tol: float = da.DEFAULT_REPROJ_PX) -> tuple[np.ndarray, dict]:
    """Depth checked against (and, for "scene" / "frame", rescaled to) the poses; returns it and the record.

    depth (T, H, W) pixel-aligned with the image files as they are (before any undistortion);
    frames (T, H, W, 3) for the multi-view check when the model has no points3D.
    """
    if mode == "none":
        log.warning("%s: depth is not checked against the poses (--align-depth none)", where)
        return depth, {"mode": "none"}
    try:
        points, obs, points_path = model_observations(model)
    except SceneError as e:
        if mode != "check":
            raise SceneError(f"{e}; --align-depth {mode} fits the depth to them") from None
        log.warning("%s; checking depth against the poses by multi-view consistency instead", e)
        c = da.consistency_scale(depth, model.K, model.cam_from_world, frames)
        if not c["decided"]:
            log.warning("%s: the multi-view check cannot tell whether depth and poses agree in units "
                        "(best scale %.3g); make sure the depth is in the poses' units", where, c["best_scale"])
        try:
            da.check_consistency(c, where)
        except da.DepthPoseError as err:
            raise SceneError(str(err)) from None
        return depth, {"mode": "consistency", **c}
    X = points.xyz[obs.point]                                                   # (M, 3)
    R, t = model.cam_from_world[obs.frame, :3, :3], model.cam_from_world[obs.frame, :3, 3]
    z = np.einsum("mij,mj->mi", R, X)[:, 2] + t[:, 2]                            # (M,) pose camera z
    try:
        err = da.reprojection_errors(X, obs.frame, obs.xy, model.K, model.cam_from_world, model.coeffs)
        reproj = da.check_reprojection(err, obs.frame, str(points_path), model.names, reproj_tol)
        samples = da.sparse_samples(depth, obs.frame, obs.xy, z)
        al = da.fit_scale(samples, len(model.images), mode)
        da.check_alignment(al, where, model.names, tol)
    except da.DepthPoseError as e:
        raise SceneError(str(e)) from None
    return depth * al.scale[:, None, None].astype(np.float32), {**al.metadata(), "reprojection": reproj}


def load_colmap_scene(colmap_dir: str | Path, sparse: str | Path | None = None, images: str | Path = "images",
                      depth: str | Path = DEFAULT_DEPTH_DIR, depth_npy: str | Path | None = None,
                      name: str | None = None, undistort: bool = False, align_depth: str = "check",
                      depth_tol: float = da.DEFAULT_TOL) -> Scene:
    """Load a COLMAP reconstruction with depth as a pinhole OpenCV Scene (module docstring).

    Args:
        colmap_dir: the COLMAP folder DIR.
        sparse: model folder relative to DIR (default: sparse/, else sparse/0/).
        images: image folder relative to DIR.
        depth: folder of COLMAP MVS depth maps relative to DIR (ignored with depth_npy).
        depth_npy: folder of per-image ``.npy`` depth instead of the MVS maps.
        name: scene name (default: DIR's folder name).
        undistort: resample frames and depth of distorted cameras onto a pinhole camera.
        align_depth: "check", "scene", "frame" or "none" (module docstring).
        depth_tol: relative depth disagreement with the poses that is refused.
    """
    if align_depth not in da.ALIGN_MODES:
        raise SceneError(f"align_depth must be one of {da.ALIGN_MODES}, got {align_depth!r}")
    model = read_colmap_model(colmap_dir, sparse, images)
    root = model.root
    if depth_npy is None:
        require_pinhole(model.cameras, model.files[0])
    resample = check_distortion(model, undistort, "depth-based tracks")
    depth_dir = root / depth if depth_npy is None else Path(depth_npy)
    if not depth_dir.is_dir():
        raise SceneError(f"{depth_dir}: depth folder not found")

    frames = stack_frames([read_rgb(p) for p in model.paths], model.paths)              # (T, H, W, 3)
    hw = frames.shape[1:3]
    names = model.names
    if depth_npy is None:
        maps, kinds = zip(*(read_mvs_depth(depth_dir, n, hw) for n in names))
    else:
        maps = [read_depth(depth_dir / PurePosixPath(n).with_suffix(".npy"), hw) for n in names]
        kinds = ["npy"] * len(names)
    depth_maps = np.stack(maps)                                                          # (T, H, W)
    depth_maps, alignment = align_to_poses(model, depth_maps, align_depth, str(depth_dir), frames, depth_tol)
    if resample:
        frames, depth_maps = undistort_frames(frames, depth_maps, model.K, model.coeffs)
    used = {k: kinds.count(k) for k in sorted(set(kinds))}
    log.info("loaded COLMAP scene %s: %d frames of %dx%d, %s model %s, depth %s (%s)%s", root, len(names), hw[1],
             hw[0], model.form, model.model_dir.name, used, alignment["mode"], ", undistorted" if resample else "")
    return Scene(
        name=name or root.resolve().name,
        frames=frames,
        depth=depth_maps,
        K=model.K,
        cam_from_world=model.cam_from_world,
        frame_index=model.frame_index,
        metadata={"source": "colmap", **model.metadata(), "images_dir": str(images), "depth": used,
                  "depth_units": "the poses' (COLMAP model) units", "depth_alignment": alignment,
                  "undistorted": resample},
    )
