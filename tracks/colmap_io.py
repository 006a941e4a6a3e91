"""Readers for COLMAP's own files: sparse models (binary and text) and MVS depth maps.

Only what ground-truth tracks need is read: cameras (intrinsics) and images (name,
camera, pose); ``points3D`` and the 2D keypoints stored with each image are skipped.
The layouts below were checked against COLMAP's documentation (``doc/format.rst``,
"Output Format") and its reader/writer source (``src/colmap/scene/reconstruction_io_*.cc``,
``src/colmap/mvs/mat.{h,cc}``). All binary data is little endian.

* ``cameras.bin``: uint64 count, then per camera uint32 camera_id, int32 model_id,
  uint64 width, uint64 height, float64 params[n(model)].
  ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` per line, ``#`` comments.
* ``images.bin``: uint64 count, then per image uint32 image_id, float64 qw qx qy qz,
  float64 tx ty tz, uint32 camera_id, the name as bytes ending in NUL, uint64 n, and
  n x (float64 x, float64 y, uint64 point3D_id).
  ``images.txt``: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``
  then the keypoint line, which is present but empty for an image without keypoints.
* Pose: (qvec, tvec) is the rigid transform *world -> camera*, the quaternion in the
  Hamilton convention (as in Eigen), scalar first. Camera axes are x right, y down,
  z forward, i.e. OpenCV, so ``cam_from_world = [[R(q), t], [0, 1]]`` is used as is.
* Depth and normal maps (``stereo/depth_maps/<image name>.geometric.bin``): the ASCII
  header ``width&height&channels&`` and then float32 data; element (row, col, channel)
  sits at ``channel * W * H + row * W + col`` (``Mat::Get`` in mat.h), i.e. each channel
  is stored row by row, x fastest. COLMAP's ``read_write_dense.py`` reads the same bytes
  as a column-major (W, H, C) array and transposes it. Depth 0 means unknown.

Camera models: only ``SIMPLE_PINHOLE`` (f, cx, cy) and ``PINHOLE`` (fx, fy, cx, cy),
which is what ``colmap image_undistorter`` writes. Any other model in the file is
refused with a message that says to undistort first (a binary file cannot be read
past a camera whose parameter count is not known, so this holds for unused cameras
too). Principal points stay in COLMAP's pixel convention here; see tracks/colmap.py.

Every problem raises :class:`tracks.scene_folder.SceneError` naming the file.
Shapes: H x W pixels, C channels.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tracks.scene_folder import SceneError

PINHOLE_MODELS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4}     # name -> number of params
# COLMAP's model ids (src/colmap/sensor/models.h); only the pinhole ones are readable.
MODEL_NAMES = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE",
               "FULL_OPENCV", "FOV", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "THIN_PRISM_FISHEYE",
               "RAD_TAN_THIN_PRISM_FISHEYE", "SIMPLE_DIVISION", "DIVISION", "SIMPLE_FISHEYE", "FISHEYE",
               "EUCM", "EQUIRECTANGULAR")


@dataclass
class ColmapCamera:
    camera_id: int
    model: str                 # SIMPLE_PINHOLE or PINHOLE
    width: int
    height: int
    params: np.ndarray         # (3,) f, cx, cy or (4,) fx, fy, cx, cy; COLMAP pixel convention

    def focal_principal(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy (cx, cy with the top-left pixel *centre* at (0.5, 0.5))."""
        p = [float(v) for v in self.params]
        return (p[0], p[0], p[1], p[2]) if self.model == "SIMPLE_PINHOLE" else (p[0], p[1], p[2], p[3])


@dataclass
class ColmapImage:
    image_id: int
    name: str                  # path relative to the image folder
    camera_id: int
    qvec: np.ndarray           # (4,) w, x, y, z Hamilton; rotation world -> camera
    tvec: np.ndarray           # (3,) translation world -> camera


def rotation_from_qvec(qvec: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of the Hamilton quaternion (w, x, y, z), normalised first."""
    q = np.asarray(qvec, dtype=np.float64)
    n = np.linalg.norm(q)
    w, x, y, z = q / n if n > 0 else np.full(4, np.nan)      # NaN: check_cameras names the frame
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def cam_from_world(image: ColmapImage) -> np.ndarray:
    """(4, 4) OpenCV world -> camera transform of one image."""
    T = np.eye(4)
    T[:3, :3] = rotation_from_qvec(image.qvec)
    T[:3, 3] = np.asarray(image.tvec, dtype=np.float64)
    return T


def _check_model(path: Path, camera_id: int, model: str, num_params: int | None = None) -> None:
    if model not in MODEL_NAMES:
        raise SceneError(f"{path}: camera {camera_id} has unknown camera model {model!r}")
    if model not in PINHOLE_MODELS:
        raise SceneError(
            f"{path}: camera {camera_id} uses the {model} model, which is not an undistorted pinhole; "
            f"only {' and '.join(PINHOLE_MODELS)} cameras can be read. Run `colmap image_undistorter "
            f"--image_path IMAGES --input_path SPARSE --output_path OUT` first and convert OUT")
    if num_params is not None and num_params != PINHOLE_MODELS[model]:
        raise SceneError(f"{path}: camera {camera_id} ({model}) has {num_params} parameters, "
                         f"expected {PINHOLE_MODELS[model]}")


def _add(table: dict, key: int, value, path: Path, what: str) -> None:
    if key in table:
        raise SceneError(f"{path}: {what} {key} is listed twice")
    table[key] = value


# ----------------------------------------------------------------------------- binary

def _unpack(f: BinaryIO, fmt: str, path: Path) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise SceneError(f"{path}: file is truncated (wanted {size} more bytes at offset {f.tell()})")
    return struct.unpack(fmt, data)


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    cameras: dict[int, ColmapCamera] = {}
    with open(path, "rb") as f:
        (count,) = _unpack(f, "<Q", path)
        for _ in range(count):
            camera_id, model_id, width, height = _unpack(f, "<IiQQ", path)
            model = MODEL_NAMES[model_id] if 0 <= model_id < len(MODEL_NAMES) else f"<model id {model_id}>"
            _check_model(path, camera_id, model)
            params = np.array(_unpack(f, f"<{PINHOLE_MODELS[model]}d", path))
            _add(cameras, camera_id, ColmapCamera(camera_id, model, width, height, params), path, "camera")
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    images: dict[int, ColmapImage] = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        (count,) = _unpack(f, "<Q", path)
        for _ in range(count):
            image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = _unpack(f, "<I7dI", path)
            name = bytearray()
            while (c := f.read(1)) != b"\0":
                if not c:
                    raise SceneError(f"{path}: file is truncated inside the name of image {image_id}")
                name += c
            (num_points,) = _unpack(f, "<Q", path)
            if f.seek(24 * num_points, 1) > size:             # keypoints: x, y, point3D_id
                raise SceneError(f"{path}: file is truncated inside the keypoints of image {image_id}")
            image = ColmapImage(image_id, name.decode("utf-8"), camera_id,
                                np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]))
            _add(images, image_id, image, path, "image")
        if f.read(1):
            raise SceneError(f"{path}: unexpected data after the {count} images the header announces")
    return images


# ----------------------------------------------------------------------------- text

def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every line, comments and blank lines included."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise SceneError(f"{path}: not a text file ({e})") from e
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cameras: dict[int, ColmapCamera] = {}
    for lineno, line in _data_lines(path):
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            camera_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            params = np.array([float(v) for v in fields[4:]])
        except (IndexError, ValueError) as e:
            raise SceneError(f"{path}: line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS... ({e})") from e
        _check_model(path, camera_id, model, len(params))
        _add(cameras, camera_id, ColmapCamera(camera_id, model, width, height, params), path, "camera")
    return cameras


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    images: dict[int, ColmapImage] = {}
    lines = _data_lines(path)
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            image_id, camera_id, name = int(fields[0]), int(fields[8]), fields[9]
            values = np.array([float(v) for v in fields[1:8]])
        except (IndexError, ValueError) as e:
            raise SceneError(f"{path}: line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME "
                             f"({e})") from e
        i += 1                                                # the keypoint line (may be empty)
        _add(images, image_id, ColmapImage(image_id, name, camera_id, values[:4], values[4:]), path, "image")
    return images


# ----------------------------------------------------------------------------- model and depth

def read_model(sparse_dir: Path) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], str]:
    """Cameras and images of a model folder -> (cameras, images, "binary" | "text").

    The binary form is preferred when both are present, as COLMAP itself does.
    """
    for kind, ext, read_cams, read_imgs in (("binary", ".bin", read_cameras_binary, read_images_binary),
                                            ("text", ".txt", read_cameras_text, read_images_text)):
        cams, imgs = sparse_dir / f"cameras{ext}", sparse_dir / f"images{ext}"
        if cams.is_file() and imgs.is_file():
            return read_cams(cams), read_imgs(imgs), kind
    for ext in (".bin", ".txt"):
        present = [n for n in ("cameras", "images") if (sparse_dir / f"{n}{ext}").is_file()]
        if len(present) == 1:
            missing = "images" if present[0] == "cameras" else "cameras"
            raise SceneError(f"{sparse_dir / (missing + ext)}: file not found (the model folder has "
                             f"{present[0]}{ext}; a COLMAP model needs both cameras{ext} and images{ext})")
    raise SceneError(f"{sparse_dir}: no COLMAP model here (need cameras.bin and images.bin, "
                     f"or cameras.txt and images.txt)")


def read_colmap_array(path: Path) -> np.ndarray:
    """A COLMAP depth/normal map file -> (H, W) float32 for one channel, else (H, W, C)."""
    raw = path.read_bytes()
    parts = raw.split(b"&", 3)
    try:
        if len(parts) != 4:
            raise ValueError("fewer than three '&'")
        width, height, channels = (int(p.decode("ascii").strip()) for p in parts[:3])
    except (ValueError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: not a COLMAP depth map (header 'width&height&channels&' unreadable: {e})") from e
    if min(width, height, channels) < 1:
        raise SceneError(f"{path}: header gives size {width}&{height}&{channels}; all must be >= 1")
    expected = 4 * width * height * channels
    if len(parts[3]) != expected:
        raise SceneError(f"{path}: header says {width}x{height}x{channels} (W x H x C) = {expected} bytes "
                         f"of float32 but the file holds {len(parts[3])}")
    data = np.frombuffer(parts[3], dtype="<f4").astype(np.float32)
    arr = data.reshape(channels, height, width)               # (C, H, W): x fastest, then y, then channel
    return arr[0] if channels == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))
