"""COLMAP reconstructions (undistorted model, images, depth) as posed RGB-D Scenes.

Issue 11 sec. 4. The input is a COLMAP workspace as ``colmap image_undistorter`` writes it::

    DIR/images/<name>                               the undistorted images named in the model
    DIR/sparse/ or DIR/sparse/0/                    cameras + images, .bin or .txt
    DIR/stereo/depth_maps/<name>.geometric.bin      MVS depth (else <name>.photometric.bin)

or, instead of the MVS maps, one ``DEPTH_DIR/<name with .npy for its suffix>`` per image
(``<stem>.npy`` for flat names): (H, W) float. File formats: ``tracks/colmap_io.py``.

Conventions handled here:

* **Pixel origin.** COLMAP's image coordinates put (0, 0) at the top-left *corner* of the
  image, so the top-left pixel's centre is (0.5, 0.5) (``src/colmap/sensor/models.h``;
  ``doc/database.rst``, "Keypoints and Descriptors"). gasp puts (0, 0) at that pixel's
  centre (``tracks/types.py``), so ``cx_ours = cx - 0.5`` and ``cy_ours = cy - 0.5``; focal
  lengths are unchanged. If the image files are not the camera's WIDTH x HEIGHT (an
  ``images_2`` folder next to the full-size model), K is scaled first, which is exact
  in the corner convention: ``cx_ours = cx * W_img / WIDTH - 0.5``.
* **Poses.** An image's (qvec, tvec) maps world to camera, with OpenCV camera axes; it is
  ``cam_from_world`` as is.
* **Depth.** Camera z, in the units of the model's translations: COLMAP's scale is
  arbitrary unless the model was scaled or geo-registered, and ``.npy`` depth must use
  the same units as the poses, because visibility compares it with projected z.
  0 or negative means unknown.
* **Order.** Frames are ordered by the number their names end in when every name has a
  distinct one (``frame_00017.jpg`` -> frame_index 17), else by name with frame_index
  0..T-1 (``tracks.dl3dv.frame_numbers``).

Shapes: T frames, H x W pixels.
"""
from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import numpy as np

from tracks.colmap_io import ColmapCamera, ColmapImage, cam_from_world, read_colmap_array, read_model
from tracks.dl3dv import frame_numbers, image_size, scale_intrinsics
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


def load_colmap_scene(colmap_dir: str | Path, sparse: str | Path | None = None, images: str | Path = "images",
                      depth: str | Path = DEFAULT_DEPTH_DIR, depth_npy: str | Path | None = None,
                      name: str | None = None) -> Scene:
    """Load an undistorted COLMAP reconstruction with depth as a pinhole OpenCV Scene.

    Args:
        colmap_dir: the COLMAP workspace DIR.
        sparse: model folder relative to DIR (default: sparse/, else sparse/0/).
        images: image folder relative to DIR.
        depth: folder of COLMAP MVS depth maps relative to DIR (ignored with depth_npy).
        depth_npy: folder of per-image ``.npy`` depth instead of the MVS maps.
        name: scene name (default: DIR's folder name).
    """
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
    depth_dir = root / depth if depth_npy is None else Path(depth_npy)
    for d, what in ((images_dir, "image"), (depth_dir, "depth")):
        if not d.is_dir():
            raise SceneError(f"{d}: {what} folder not found")

    ordered, frame_index = order_images(list(records.values()), images_file)
    names = [im.name for im in ordered]
    paths = [images_dir / n for n in names]
    for p, n in zip(paths, names):        # cameras are checked before any pixel is read
        if not p.is_file():
            raise SceneError(f"{p}: image file not found ({images_file.name} lists {n!r}; is {images_dir} "
                             f"the folder the model was built from?)")
    K = []
    for im, p in zip(ordered, paths):
        if im.camera_id not in cameras:
            raise SceneError(f"{images_file}: image {im.name!r} uses camera {im.camera_id}, "
                             f"which {cameras_file} does not list")
        K.append(intrinsics(cameras[im.camera_id], image_size(p), p, cameras_file))
    K = np.stack(K)                                                              # (T, 3, 3)
    T_cw = np.stack([cam_from_world(im) for im in ordered])                      # (T, 4, 4)
    check_scene_cameras(K, T_cw, images_file, names)

    frames = stack_frames([read_rgb(p) for p in paths], paths)                   # (T, H, W, 3)
    hw = frames.shape[1:3]
    if depth_npy is None:
        maps, kinds = zip(*(read_mvs_depth(depth_dir, n, hw) for n in names))
    else:
        maps = [read_depth(depth_dir / PurePosixPath(n).with_suffix(".npy"), hw) for n in names]
        kinds = ["npy"] * len(names)
    depth_maps = np.stack(maps)                                                  # (T, H, W)
    used = {k: kinds.count(k) for k in sorted(set(kinds))}
    log.info("loaded COLMAP scene %s: %d frames of %dx%d, %s model %s, depth %s",
             root, len(names), hw[1], hw[0], form, model_dir.name, used)
    return Scene(
        name=name or root.resolve().name,
        frames=frames,
        depth=depth_maps,
        K=K,
        cam_from_world=T_cw,
        frame_index=frame_index,
        metadata={"source": "colmap", "model": str(model_dir.relative_to(root)) if model_dir.is_relative_to(root)
                  else str(model_dir), "model_format": form, "images_dir": str(images), "depth": used,
                  "image_names": names},
    )
