"""Readers for COLMAP's own files: sparse models (binary and text) and MVS depth maps.

Cameras (intrinsics of any model), images (name, camera, pose and their 2D keypoints) and
MVS depth maps are read here; ``points3D`` in ``tracks/colmap_points.py``. The layouts below
were checked against COLMAP's documentation (``doc/format.rst``, "Output Format") and its
reader/writer source (``src/colmap/scene/reconstruction_io_*.cc``, ``src/colmap/mvs/mat.{h,cc}``).
COLMAP 3.12+ also writes ``rigs`` and ``frames`` files; single-camera captures do not need them,
since ``images`` still holds each image's cam_from_world. All binary data is little endian.

* ``cameras.bin``: uint64 count, then per camera uint32 camera_id, int32 model_id,
  uint64 width, uint64 height, float64 params[n(model)].
  ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` per line, ``#`` comments.
* ``images.bin``: uint64 count, then per image uint32 image_id, float64 qw qx qy qz,
  float64 tx ty tz, uint32 camera_id, the name as bytes ending in NUL, uint64 n, and
  n x (float64 x, float64 y, uint64 point3D_id), 2^64 - 1 (text: -1) for a keypoint without a point.
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

Camera models: every model COLMAP defines is read (``MODELS``: id and parameter count,
as pycolmap 4.2 lists them). Those whose distortion is OpenCV's (k1, k2, p1, p2, k3) or a
special case of it can be projected and undistorted (``ColmapCamera.opencv_coeffs``):
``SIMPLE_PINHOLE``, ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``, and
``FULL_OPENCV`` with k4 = k5 = k6 = 0. Principal points and keypoints stay in COLMAP's pixel
convention here (the top-left pixel's centre at (0.5, 0.5)); see tracks/colmap.py.

Every problem raises :class:`tracks.scene_folder.SceneError` naming the file.
Shapes: H x W pixels, C channels.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tracks.scene_folder import SceneError

# name -> (model id, number of params), src/colmap/sensor/models.h (ids are the binary format's)
MODELS = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5), "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5), "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12), "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
    "SIMPLE_DIVISION": (12, 4), "DIVISION": (13, 5), "SIMPLE_FISHEYE": (14, 3), "FISHEYE": (15, 4),
    "EUCM": (16, 6), "EQUIRECTANGULAR": (17, 2),
}
MODEL_NAMES = tuple(sorted(MODELS, key=lambda m: MODELS[m][0]))
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
OPENCV_LIKE = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
NO_POINT3D = -1                # a keypoint without a 3D point (2^64 - 1 in the binary file)


@dataclass
class ColmapCamera:
    camera_id: int
    model: str                 # one of MODELS
    width: int
    height: int
    params: np.ndarray         # (n,) in the model's order; COLMAP pixel convention

    def focal_principal(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy (cx, cy with the top-left pixel *centre* at (0.5, 0.5)); perspective models only."""
        p = [float(v) for v in self.params]
        if self.model.startswith("SIMPLE_") or self.model == "RADIAL" or self.model == "RADIAL_FISHEYE":
            return p[0], p[0], p[1], p[2]                   # f, cx, cy, ...
        return p[0], p[1], p[2], p[3]                       # fx, fy, cx, cy, ...

    def opencv_coeffs(self) -> np.ndarray | None:
        """(5,) OpenCV (k1, k2, p1, p2, k3) equal to this model's distortion; None if it has no such form."""
        p = np.asarray(self.params, dtype=np.float64)
        z = np.zeros(5)
        if self.model in PINHOLE_MODELS:
            return z
        if self.model == "SIMPLE_RADIAL":
            return np.array([p[3], 0, 0, 0, 0.0])
        if self.model == "RADIAL":
            return np.array([p[3], p[4], 0, 0, 0.0])
        if self.model == "OPENCV":
            return np.array([p[4], p[5], p[6], p[7], 0.0])
        if self.model == "FULL_OPENCV" and not np.any(p[9:12]):        # k4 = k5 = k6 = 0: no rational term
            return np.array([p[4], p[5], p[6], p[7], p[8]])
        return None


@dataclass
class ColmapImage:
    image_id: int
    name: str                  # path relative to the image folder
    camera_id: int
    qvec: np.ndarray           # (4,) w, x, y, z Hamilton; rotation world -> camera
    tvec: np.ndarray           # (3,) translation world -> camera
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))            # (M, 2) keypoints, COLMAP pixels
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) -1 where none


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
    if model not in MODELS:
        raise SceneError(f"{path}: camera {camera_id} has unknown camera model {model!r} "
                         f"(COLMAP's are {', '.join(MODEL_NAMES)})")
    if num_params is not None and num_params != MODELS[model][1]:
        raise SceneError(f"{path}: camera {camera_id} ({model}) has {num_params} parameters, "
                         f"expected {MODELS[model][1]}")


def require_pinhole(cameras: dict[int, ColmapCamera], path: Path) -> None:
    """SceneError unless every camera is SIMPLE_PINHOLE or PINHOLE (an undistorted workspace)."""
    for cam in cameras.values():
        if cam.model not in PINHOLE_MODELS:
            raise SceneError(
                f"{path}: camera {cam.camera_id} uses the {cam.model} model, which is not an undistorted pinhole; "
                f"MVS depth needs {' or '.join(PINHOLE_MODELS)} cameras. Run `colmap image_undistorter --image_path "
                f"IMAGES --input_path SPARSE --output_path OUT` first and convert OUT (or, for depth you bring "
                f"yourself, pass --depth-npy with --undistort)")


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
            if not 0 <= model_id < len(MODEL_NAMES):
                # the parameter count depends on the model, so the file cannot be read past this camera
                raise SceneError(f"{path}: camera {camera_id} has unknown camera model id {model_id} "
                                 f"(COLMAP's are 0..{len(MODEL_NAMES) - 1})")
            model = MODEL_NAMES[model_id]
            params = np.array(_unpack(f, f"<{MODELS[model][1]}d", path))
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
            if f.tell() + 24 * num_points > size:                # keypoints: x, y, point3D_id
                raise SceneError(f"{path}: file is truncated inside the keypoints of image {image_id}")
            raw = np.frombuffer(f.read(24 * num_points), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<u8")])
            ids = raw["id"].astype(np.int64)                          # 2^64 - 1 wraps to -1: no 3D point
            image = ColmapImage(image_id, name.decode("utf-8"), camera_id, np.array([qw, qx, qy, qz]),
                                np.array([tx, ty, tz]), xy=np.stack([raw["x"], raw["y"]], -1),
                                point3d_ids=np.where(ids < 0, NO_POINT3D, ids))
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


def _keypoints(line: str, path: Path, lineno: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) x, y and (M,) point3D ids of an images.txt keypoint line ('X Y POINT3D_ID' repeated)."""
    fields = line.split()
    if len(fields) % 3:
        raise SceneError(f"{path}: line {lineno}: keypoints come as X Y POINT3D_ID triples, got {len(fields)} values")
    try:
        vals = np.array([float(v) for v in fields]).reshape(-1, 3)
    except ValueError as e:
        raise SceneError(f"{path}: line {lineno}: keypoint values are not numbers ({e})") from e
    return vals[:, :2], np.where(vals[:, 2] < 0, NO_POINT3D, vals[:, 2]).astype(np.int64)


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
        kp_lineno, kp_line = lines[i] if i < len(lines) else (lineno + 1, "")
        i += 1                                                # the keypoint line (may be empty)
        xy, ids = _keypoints(kp_line, path, kp_lineno)
        _add(images, image_id, ColmapImage(image_id, name, camera_id, values[:4], values[4:], xy=xy, point3d_ids=ids),
             path, "image")
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
