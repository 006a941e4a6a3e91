"""A COLMAP sparse model with keypoints and 3D points, written from COLMAP's documented format (doc/format.rst,
src/colmap/scene/reconstruction_io_{binary,text}.cc) with struct and plain text; no gasp reader code is used.

World: P points on the plane z = 5 (x in [-1.6, 1.6], y in [-1.1, 1.1]); four cameras near the
origin looking along +z. The full-size camera is WIDTH x HEIGHT = 80 x 60 in COLMAP's convention
(the top-left pixel's centre at (0.5, 0.5)); keypoints are the points projected through the
camera model, distortion included, and each camera lists only some of the points that land
inside it (the rest are unobserved: unknown, not occluded). Images are written downscaled by
``factor`` (images_2: 40 x 30), as DL3DV ships them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 80, 60
PLANE_Z = 5.0
MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}
OPENCV = [60.0, 62.0, 40.3, 29.6, -0.08, 0.01, 0.002, -0.001]      # fx fy cx cy k1 k2 p1 p2
PINHOLE = [60.0, 62.0, 40.3, 29.6]


def rot(axis, deg):
    n = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    nx = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return np.eye(3) * np.cos(a) + np.sin(a) * nx + (1 - np.cos(a)) * np.outer(n, n)


def quat(R):
    """Hamilton (w, x, y, z) of a rotation matrix (trace > 0 here)."""
    w = np.sqrt(1 + np.trace(R)) / 2
    return np.array([w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)])


# name -> (image_id, rotation world->camera, camera centre); ids deliberately not in name order
CAMERA_POSES = {
    "frame_0003.png": (5, np.eye(3), np.array([0.0, 0.0, 0.0])),
    "frame_0007.png": (2, rot((0, 1, 0), 4.0), np.array([0.35, 0.05, 0.1])),
    "frame_0012.png": (9, rot((1, 0.3, 0), -3.0), np.array([0.7, -0.1, 0.3])),
    "frame_0020.png": (1, rot((0.2, 1, 0.1), 7.0), np.array([1.0, 0.1, -0.2])),
}


def distort(xn, params, model):
    x, y = xn[..., 0], xn[..., 1]
    k1, k2, p1, p2 = (params[4:8] if model == "OPENCV" else [0, 0, 0, 0])
    r2 = x * x + y * y
    radial = k1 * r2 + k2 * r2 * r2
    return np.stack([x + x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                     y + y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)], -1)


@dataclass
class Fixture:
    root: Path
    xyz: np.ndarray                      # (P, 3)
    observed: np.ndarray                 # (T, P) bool, frames in name order
    keypoints: np.ndarray                # (T, P, 2) COLMAP pixels at full size (NaN where not observed)
    names: list[str]
    model: str
    params: list[float]
    factor: int

    def camera_z(self) -> np.ndarray:
        """(T, P) each point's camera z."""
        return np.stack([((self.xyz - C) @ R.T)[:, 2] for _, R, C in CAMERA_POSES.values()])

    def pinhole_pixels(self) -> np.ndarray:
        """(T, P, 2) undistorted projections in gasp's convention at the images' size."""
        fx, fy, cx, cy = self.params[:4]
        out = []
        for _, R, C in CAMERA_POSES.values():
            pc = (self.xyz - C) @ R.T
            out.append(np.stack([fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy], -1) / self.factor - 0.5)
        return np.stack(out)


def make_model(root: Path, model="OPENCV", params=OPENCV, num_points=60, factor=2, keep=0.75, seed=0,
               single_observation=False, images_name=None) -> Fixture:
    rng = np.random.default_rng(seed)
    xyz = np.stack([rng.uniform(-1.6, 1.6, num_points), rng.uniform(-1.1, 1.1, num_points),
                    np.full(num_points, PLANE_Z)], -1)
    fx, fy, cx, cy = params[:4]
    T = len(CAMERA_POSES)
    kps = np.full((T, num_points, 2), np.nan)
    observed = np.zeros((T, num_points), bool)
    for t, (name, (_, R, C)) in enumerate(CAMERA_POSES.items()):
        pc = (xyz - C) @ R.T
        d = distort(pc[:, :2] / pc[:, 2:3], params, model)
        uv = np.stack([fx * d[:, 0] + cx, fy * d[:, 1] + cy], -1)
        inside = (uv[:, 0] > 1) & (uv[:, 0] < WIDTH - 1) & (uv[:, 1] > 1) & (uv[:, 1] < HEIGHT - 1)
        observed[t] = inside & (rng.random(num_points) < keep)
        kps[t, observed[t]] = uv[observed[t]]
    if single_observation:                                 # each point listed by one image only
        first = observed.argmax(0)
        observed = np.zeros_like(observed)
        observed[first, np.arange(num_points)] = True
    write(root, xyz, observed, kps, model, params, rng)
    img_dir = root / (images_name or (f"images_{factor}" if factor != 1 else "images"))
    img_dir.mkdir(parents=True, exist_ok=True)
    for name in CAMERA_POSES:
        img = rng.integers(0, 255, (HEIGHT // factor, WIDTH // factor, 3), dtype=np.uint8)
        Image.fromarray(img).save(img_dir / name)
    return Fixture(root=root, xyz=xyz, observed=observed, keypoints=kps, names=list(CAMERA_POSES), model=model,
                   params=list(params), factor=factor)


def write(root, xyz, observed, kps, model, params, rng, form="both"):
    """cameras, images (keypoints: observations shuffled among unmatched ones) and points3D, .bin and .txt."""
    T, P = observed.shape
    entries, tracks = {}, {p: [] for p in range(P)}
    for t, (name, (image_id, R, C)) in enumerate(CAMERA_POSES.items()):
        obs = [(float(kps[t, p, 0]), float(kps[t, p, 1]), int(p) + 100) for p in np.flatnonzero(observed[t])]
        junk = [(float(rng.uniform(0, WIDTH)), float(rng.uniform(0, HEIGHT)), -1) for _ in range(5)]
        pts = obs + junk
        order = rng.permutation(len(pts))
        pts = [pts[i] for i in order]
        for idx, (_, _, pid) in enumerate(pts):
            if pid >= 0:
                tracks[pid - 100].append((image_id, idx))
        entries[name] = (image_id, quat(R), -R @ C, pts)
    for sub in ("bin", "txt"):
        d = root / "sparse" / "0" / sub
        d.mkdir(parents=True, exist_ok=True)
    b = root / "sparse" / "0" / "bin"
    t_ = root / "sparse" / "0" / "txt"
    (b / "cameras.bin").write_bytes(struct.pack("<Q", 1) + struct.pack("<IiQQ", 1, MODEL_IDS[model], WIDTH, HEIGHT)
                                    + struct.pack(f"<{len(params)}d", *params))
    (t_ / "cameras.txt").write_text(f"# Camera list\n1 {model} {WIDTH} {HEIGHT} " + " ".join(map(repr, params)) + "\n")
    data, lines = struct.pack("<Q", len(entries)), ["# Image list"]
    for name, (image_id, q, tv, pts) in entries.items():
        data += struct.pack("<I7dI", image_id, *q, *tv, 1) + name.encode() + b"\0" + struct.pack("<Q", len(pts))
        data += b"".join(struct.pack("<ddQ", x, y, pid if pid >= 0 else 2**64 - 1) for x, y, pid in pts)
        lines.append(" ".join([str(image_id), *map(repr, map(float, q)), *map(repr, map(float, tv)), "1", name]))
        lines.append(" ".join(f"{x!r} {y!r} {pid}" for x, y, pid in pts))
    (b / "images.bin").write_bytes(data)
    (t_ / "images.txt").write_text("\n".join(lines) + "\n")
    data, lines = struct.pack("<Q", P), ["# 3D point list"]
    for p in range(P):
        els = tracks[p]
        data += struct.pack("<Q3d3BdQ", p + 100, *xyz[p], 128, 128, 128, 0.1 + 0.01 * p, len(els))
        data += b"".join(struct.pack("<II", i, j) for i, j in els)
        lines.append(" ".join([str(p + 100), *map(repr, map(float, xyz[p])), "128 128 128", repr(0.1 + 0.01 * p),
                               *[f"{i} {j}" for i, j in els]]))
    (b / "points3D.bin").write_bytes(data)
    (t_ / "points3D.txt").write_text("\n".join(lines) + "\n")
