"""OpenCV lens distortion (k1, k2, p1, p2, k3), and resampling frames and depth onto a pinhole camera.

Used by the DL3DV (``transforms.json``, OPENCV) and COLMAP (OPENCV, RADIAL, SIMPLE_RADIAL, ...)
readers. The model acts on normalised coordinates (x, y) = ((u - cx) / fx, (v - cy) / fy)::

    r2 = x^2 + y^2,  radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

(COLMAP's ``OpenCVCameraModel::Distortion``, OpenCV's ``projectPoints``). Normalised
coordinates do not depend on the pixel origin as long as the keypoints and K use the same
one, so gasp's pixel-centre convention can be used throughout.

Shapes: T frames, H x W pixels, N points.
"""
from __future__ import annotations

import numpy as np


def distort_normalized(xy: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Forward OPENCV model on normalised coordinates: (..., 2) -> (..., 2)."""
    k1, k2, p1, p2, k3 = coeffs
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy_d: np.ndarray, coeffs: np.ndarray, iters: int = 50) -> np.ndarray:
    """Invert :func:`distort_normalized` by fixed-point iteration: (..., 2) -> (..., 2)."""
    xy = np.array(xy_d, dtype=np.float64)
    for _ in range(iters):
        err = distort_normalized(xy, coeffs) - xy_d   # (..., 2)
        xy = xy - err
    return xy


def _to_normalized(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (xy - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])


def _to_pixels(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    return xy * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]


def undistort_points(xy_pix: np.ndarray, K: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of the distorted image -> pixels (N, 2) of the undistorted image (same K)."""
    return _to_pixels(undistort_normalized(_to_normalized(np.asarray(xy_pix, float), K), coeffs), K)


def distort_points(xy_pix: np.ndarray, K: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of the undistorted image -> pixels (N, 2) of the distorted image (same K)."""
    return _to_pixels(distort_normalized(_to_normalized(np.asarray(xy_pix, float), K), coeffs), K)


def source_pixel_map(K: np.ndarray, coeffs: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 2) where each undistorted output pixel (x, y) comes from in the distorted image."""
    yy, xx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                         indexing="ij")
    return distort_points(np.stack([xx, yy], axis=-1), K, coeffs)


def max_distortion_px(K: np.ndarray, coeffs: np.ndarray, height: int, width: int) -> float:
    """Largest pixel shift the distortion model causes over the image."""
    src = source_pixel_map(K, coeffs, height, width)                            # (H, W, 2)
    yy, xx = np.mgrid[0:height, 0:width]
    return float(np.max(np.hypot(src[..., 0] - xx, src[..., 1] - yy)))


# ----------------------------------------------------------------------------- resampling

def _inside(src: np.ndarray, height: int, width: int) -> np.ndarray:
    x, y = src[..., 0], src[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def remap_bilinear(image: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) uint8 at src (H', W', 2) bilinearly; 0 outside -> (H', W', C) uint8."""
    H, W = image.shape[:2]
    x = np.clip(src[..., 0], 0, W - 1)
    y = np.clip(src[..., 1], 0, H - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), W - 2) if W > 1 else np.zeros(x.shape, np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2) if H > 1 else np.zeros(y.shape, np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]                            # (H', W', 1)
    img = image.astype(np.float64)
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    out = top * (1 - wy) + bottom * wy
    out[~_inside(src, H, W)] = 0.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def remap_nearest(depth: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Sample (H, W) depth at src (H', W', 2) at the nearest pixel; NaN outside -> (H', W') float32."""
    H, W = depth.shape
    xi = np.clip(np.floor(src[..., 0] + 0.5), 0, W - 1).astype(np.int64)
    yi = np.clip(np.floor(src[..., 1] + 0.5), 0, H - 1).astype(np.int64)
    out = depth[yi, xi].astype(np.float32)
    out[~_inside(src, H, W)] = np.nan
    return out


def distinct_intrinsics(K: np.ndarray) -> list[int]:
    """Indices of frames with distinct intrinsics (usually just [0])."""
    _, first = np.unique(K.reshape(len(K), -1), axis=0, return_index=True)
    return sorted(first.tolist())


def undistort_frames(frames: np.ndarray, depth: np.ndarray | None, K: np.ndarray,
                     coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample (T, H, W, 3) frames (bilinear) and (T, H, W) depth (nearest; z is unchanged by
    undistortion) onto a pinhole camera with the same K; outside the source: RGB 0, depth NaN.

    coeffs: (5,) shared by every frame, or (T, 5) per frame.
    """
    T, H, W = frames.shape[:3]
    co = np.broadcast_to(np.asarray(coeffs, dtype=np.float64), (T, 5))
    cams = np.concatenate([K.reshape(T, -1), co], 1)                                  # (T, 14) one row per camera
    _, first, which = np.unique(cams, axis=0, return_index=True, return_inverse=True)
    maps = [source_pixel_map(K[t], co[t], H, W) for t in first]                      # (H, W, 2) each
    which = np.asarray(which).reshape(-1)
    out_rgb = np.stack([remap_bilinear(frames[f], maps[which[f]]) for f in range(T)])
    out_depth = None if depth is None else np.stack([remap_nearest(depth[f], maps[which[f]]) for f in range(T)])
    return out_rgb, out_depth
