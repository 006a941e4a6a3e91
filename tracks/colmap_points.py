"""COLMAP's ``points3D`` (binary and text), and the observations it links to the images' keypoints.

Layouts (``doc/format.rst``, ``src/colmap/scene/reconstruction_io_{binary,text}.cc``), little endian:

* ``points3D.bin``: uint64 count, then per point uint64 point3D_id, float64 x y z, uint8 r g b,
  float64 error (mean reprojection error, px), uint64 track length, and per track element
  uint32 image_id, uint32 point2D_idx.
* ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)`` per line.

A track element (image_id, point2D_idx) names keypoint ``point2D_idx`` of that image's keypoint
list in ``images``; its pixel position is there, in COLMAP's convention (the top-left pixel's
centre at (0.5, 0.5)). An image a point's track does not list is not evidence of occlusion:
the point was simply not matched there.

Shapes: P points, M track elements (observations) in all.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracks.colmap_io import ColmapImage, _data_lines
from tracks.scene_folder import SceneError


@dataclass
class Points3D:
    ids: np.ndarray            # (P,) int64 point3D_id
    xyz: np.ndarray            # (P, 3) float64 world position
    error: np.ndarray          # (P,) float64 mean reprojection error in px (COLMAP's)
    offsets: np.ndarray        # (P + 1,) int64: point p's track is elements offsets[p]:offsets[p + 1]
    image_ids: np.ndarray      # (M,) int64
    point2d_idx: np.ndarray    # (M,) int64 index into that image's keypoints

    @property
    def track_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def point_of_element(self) -> np.ndarray:
        """(M,) int64 index into P of each track element."""
        return np.repeat(np.arange(len(self.ids)), self.track_lengths)


def _empty() -> Points3D:
    z = np.zeros(0, np.int64)
    return Points3D(z, np.zeros((0, 3)), np.zeros(0), np.zeros(1, np.int64), z, z)


def read_points3d_binary(path: Path) -> Points3D:
    data = path.read_bytes()
    if len(data) < 8:
        raise SceneError(f"{path}: file is truncated (no point count)")
    (count,) = struct.unpack_from("<Q", data, 0)
    pos, head = 8, struct.Struct("<Q3d3BdQ")
    ids, xyz, err, lengths, elements = [], [], [], [], []
    for _ in range(count):
        if pos + head.size > len(data):
            raise SceneError(f"{path}: file is truncated (point {len(ids)} of {count})")
        pid, x, y, z, _r, _g, _b, e, n = head.unpack_from(data, pos)
        pos += head.size
        if pos + 8 * n > len(data):
            raise SceneError(f"{path}: file is truncated inside the track of point {pid}")
        elements.append(np.frombuffer(data, dtype="<u4", count=2 * n, offset=pos).reshape(n, 2))
        pos += 8 * n
        ids.append(pid), xyz.append((x, y, z)), err.append(e), lengths.append(n)
    if pos != len(data):
        raise SceneError(f"{path}: unexpected data after the {count} points the header announces")
    return _assemble(ids, xyz, err, lengths, elements)


def read_points3d_text(path: Path) -> Points3D:
    ids, xyz, err, lengths, elements = [], [], [], [], []
    for lineno, line in _data_lines(path):
        if not line or line.startswith("#"):
            continue
        f = line.split()
        try:
            track = np.array([int(v) for v in f[8:]], dtype=np.int64)
            if len(f) < 8 or len(track) % 2:
                raise ValueError(f"{len(f)} fields")
            ids.append(int(f[0])), xyz.append(tuple(float(v) for v in f[1:4])), err.append(float(f[7]))
        except ValueError as e:
            raise SceneError(f"{path}: line {lineno}: expected POINT3D_ID X Y Z R G B ERROR then (IMAGE_ID, "
                             f"POINT2D_IDX) pairs ({e})") from e
        lengths.append(len(track) // 2)
        elements.append(track.reshape(-1, 2))
    return _assemble(ids, xyz, err, lengths, elements)


def _assemble(ids, xyz, err, lengths, elements) -> Points3D:
    if not ids:
        return _empty()
    el = np.concatenate(elements).astype(np.int64) if elements else np.zeros((0, 2), np.int64)
    return Points3D(ids=np.asarray(ids, np.int64), xyz=np.asarray(xyz, np.float64), error=np.asarray(err, np.float64),
                    offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), image_ids=el[:, 0],
                    point2d_idx=el[:, 1])


def read_points3d(model_dir: Path, form: str) -> tuple[Points3D, Path]:
    """The model's points3D in the same form ("binary" / "text") as its cameras and images."""
    path = model_dir / ("points3D.bin" if form == "binary" else "points3D.txt")
    if not path.is_file():
        raise SceneError(f"{path}: file not found; sparse tracks and depth alignment need the model's 3D points "
                         f"(COLMAP writes points3D{path.suffix} beside cameras{path.suffix} and images{path.suffix}; "
                         f"DL3DV's colmap/sparse/0 has one)")
    return (read_points3d_binary(path) if form == "binary" else read_points3d_text(path)), path


@dataclass
class Observations:
    """Every track element resolved to a frame and a keypoint position."""

    point: np.ndarray          # (M,) int64 index into Points3D
    frame: np.ndarray          # (M,) int64 index into the scene's frames
    xy: np.ndarray             # (M, 2) float64 keypoint, COLMAP pixel convention, the model's image size


def observations(points: Points3D, images: dict[int, ColmapImage], frame_of_image: dict[int, int],
                 points_path: Path) -> Observations:
    """Join points3D's tracks with the images' keypoints; elements of images not in the scene are dropped.

    SceneError if an element names a keypoint that does not exist or that images lists for another point
    (files from different models).
    """
    point = points.point_of_element
    keep = np.array([i in frame_of_image for i in points.image_ids.tolist()], dtype=bool)
    point, img, idx = point[keep], points.image_ids[keep], points.point2d_idx[keep]
    xy = np.empty((len(point), 2))
    for image_id in np.unique(img):
        im = images[int(image_id)]
        sel = np.flatnonzero(img == image_id)
        k = idx[sel]
        if len(k) and k.max() >= len(im.xy):
            raise SceneError(f"{points_path}: a track names keypoint {int(k.max())} of image {int(image_id)} "
                             f"({im.name}), which has {len(im.xy)}; points3D and images come from different models")
        wrong = im.point3d_ids[k] != points.ids[point[sel]]
        if wrong.any():
            j = int(np.flatnonzero(wrong)[0])
            raise SceneError(f"{points_path}: point {int(points.ids[point[sel][j]])} lists keypoint {int(k[j])} of "
                             f"{im.name}, but images says that keypoint belongs to point {int(im.point3d_ids[k[j]])}; "
                             f"points3D and images come from different models")
        xy[sel] = im.xy[k]
    frame = np.array([frame_of_image[int(i)] for i in img], dtype=np.int64)
    return Observations(point=point, frame=frame, xy=xy)


__all__ = ["Observations", "Points3D", "observations", "read_points3d", "read_points3d_binary",
           "read_points3d_text"]
