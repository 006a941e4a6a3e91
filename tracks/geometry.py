"""Ground-truth point tracks from posed depth (paper Sec. 5.2, docs/METHOD.md sec. 2).

Query points sit on a g x g grid of the query frame at cell centres. Each is
unprojected with the query frame's depth and intrinsics, moved to world space with
the query pose, and projected into every frame. A point is visible in frame f where
it lands inside the image, in front of the camera, and its depth agrees with frame
f's depth map (sampled at the nearest pixel to the projection) within a relative
tolerance. Points whose query depth is unknown stay in the output (N is always g*g)
and are invisible everywhere, their states unknown.

Shapes: F frames, N points, H x W pixels. Pixel (0, 0) is the centre of the
top-left pixel; cameras are OpenCV (see ``tracks/types.py``).
"""
from __future__ import annotations

import numpy as np

DEFAULT_REL_TOL = 0.05


class CameraError(ValueError):
    """A camera (intrinsics or pose) that cannot be used for projection."""


def grid_points(g: int, height: int, width: int) -> np.ndarray:
    """(g*g, 2) float32 pixel (x, y) at the centres of a g x g grid of cells, row-major."""
    if g < 1:
        raise ValueError(f"grid size must be >= 1, got {g}")
    xs = (np.arange(g) + 0.5) * (width / g) - 0.5   # cell centre in the (0,0)=pixel-centre convention
    ys = (np.arange(g) + 0.5) * (height / g) - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")       # (g, g)
    return np.stack([xx.ravel(), yy.ravel()], axis=-1).astype(np.float32)


def check_cameras(K: np.ndarray, cam_from_world: np.ndarray, where: str = "cameras") -> None:
    """Raise CameraError naming the first frame with a non-finite or singular camera.

    K: (F, 3, 3); cam_from_world: (F, 4, 4).
    """
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(cam_from_world, dtype=np.float64)
    if K.ndim != 3 or K.shape[1:] != (3, 3):
        raise CameraError(f"{where}: K must have shape (F, 3, 3), got {K.shape}")
    if T.ndim != 3 or T.shape[1:] != (4, 4) or T.shape[0] != K.shape[0]:
        raise CameraError(f"{where}: cam_from_world must have shape ({K.shape[0]}, 4, 4), got {T.shape}")
    for f in range(K.shape[0]):
        if not (np.isfinite(K[f]).all() and np.isfinite(T[f]).all()):
            raise CameraError(f"{where}: frame {f} has a non-finite K or cam_from_world")
        if abs(K[f, 0, 0] * K[f, 1, 1]) < 1e-12 or abs(np.linalg.det(K[f])) < 1e-12:
            raise CameraError(f"{where}: frame {f} has a singular intrinsic matrix K={K[f].tolist()}")
        if not np.allclose(T[f, 3], [0, 0, 0, 1], atol=1e-6):
            raise CameraError(f"{where}: frame {f} cam_from_world last row is {T[f, 3].tolist()}, expected [0, 0, 0, 1]")
        R = T[f, :3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise CameraError(f"{where}: frame {f} cam_from_world rotation is not a proper rotation "
                              f"(det={np.linalg.det(R):.4f}); is it singular, scaled or mirrored?")


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Boolean mask of usable depth: finite and strictly positive."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def sample_nearest(maps: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample per-frame maps at the nearest pixel.

    maps: (F, H, W); xy: (F, N, 2) pixel coordinates (NaN allowed).
    Returns values (F, N) (NaN outside the image) and inside (F, N) bool, where inside
    means -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5.
    """
    F, H, W = maps.shape
    x, y = xy[..., 0], xy[..., 1]
    with np.errstate(invalid="ignore"):
        inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
    xi = np.clip(np.floor(np.nan_to_num(x, nan=0.0) + 0.5), 0, W - 1).astype(np.int64)
    yi = np.clip(np.floor(np.nan_to_num(y, nan=0.0) + 0.5), 0, H - 1).astype(np.int64)
    vals = maps[np.arange(F)[:, None], yi, xi].astype(np.float64)
    vals[~inside] = np.nan
    return vals, inside


def unproject(xy: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) with depth (N,) under intrinsics K (3, 3) -> camera points (N, 3)."""
    ones = np.ones((xy.shape[0], 1))
    rays = np.concatenate([xy.astype(np.float64), ones], axis=1) @ np.linalg.inv(K).T  # (N, 3), z = 1
    return rays * depth[:, None]


def project(points_world: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) into F cameras -> pixels (F, N, 2) and camera depth z (F, N).

    Pixels are NaN where z <= 0 (behind the camera).
    """
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]          # (F, 3, 3), (F, 3)
    cam = np.einsum("fij,nj->fni", R, points_world) + t[:, None, :]      # (F, N, 3)
    z = cam[..., 2]
    pix = np.einsum("fij,fnj->fni", K, cam)                               # (F, N, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = pix[..., :2] / pix[..., 2:3]
    xy[~(z > 0)] = np.nan
    return xy, z


def build_tracks(
    depth: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    query_frame: int = 0,
    grid: int | None = 24,
    points: np.ndarray | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth tracks of query points from posed depth maps: (tracks, visible, track_depth).

    :func:`build_track_states` without the occlusion states (format v1's three arrays).
    """
    tracks, visible, _, track_depth = build_track_states(depth, K, cam_from_world, query_frame, grid, points,
                                                         rel_tol)
    return tracks, visible, track_depth


def build_track_states(
    depth: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    query_frame: int = 0,
    grid: int | None = 24,
    points: np.ndarray | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth tracks of query points from posed depth maps, with each point's state per frame.

    Args:
        depth: (F, H, W) depth of every frame, in the poses' units (NaN/0/neg = unknown).
        K: (F, 3, 3) intrinsics; cam_from_world: (F, 4, 4) OpenCV poses.
        query_frame: index of the frame the queries are placed in.
        grid: g for a g x g cell-centre grid (ignored when ``points`` is given).
        points: optional (N, 2) pixel (x, y) query points in the query frame.
        rel_tol: visibility tolerance |z - depth_map| <= rel_tol * depth_map.

    Returns:
        tracks (F, N, 2) float32 pixel x, y (NaN where the point cannot be projected:
        unknown query depth or behind the camera); the query frame always holds the
        query points themselves.
        visible (F, N) bool.
        occluded (F, N) bool: the point has a query depth and is known not to be seen in
        frame f (outside the image, behind the camera, or in front of which the depth map
        shows a nearer surface). Where it lands inside the image on a pixel without valid
        depth its state is unknown (neither visible nor occluded), as is every state of a
        point without query depth.
        track_depth (F, N) float32 camera-z depth of the point in each frame (NaN if unknown).
    """
    depth = np.asarray(depth)
    K = np.asarray(K, dtype=np.float64)
    cam_from_world = np.asarray(cam_from_world, dtype=np.float64)
    F, H, W = depth.shape
    if not 0 <= query_frame < F:
        raise ValueError(f"query_frame {query_frame} is outside the {F} frames")
    check_cameras(K, cam_from_world)
    q_xy = grid_points(grid, H, W) if points is None else np.asarray(points, dtype=np.float32)

    q_depth, q_inside = sample_nearest(depth[query_frame:query_frame + 1], q_xy[None])
    q_depth, q_inside = q_depth[0], q_inside[0]                                       # (N,)
    q_valid = q_inside & valid_depth(q_depth)

    cam_q = unproject(q_xy, np.where(q_valid, q_depth, 1.0), K[query_frame])          # (N, 3)
    world_from_cam_q = np.linalg.inv(cam_from_world[query_frame])
    world = cam_q @ world_from_cam_q[:3, :3].T + world_from_cam_q[:3, 3]               # (N, 3)
    xy, z = project(world, K, cam_from_world)                                          # (F, N, 2), (F, N)

    xy[:, ~q_valid] = np.nan
    z[:, ~q_valid] = np.nan
    xy[query_frame] = q_xy                                                             # exact, no round trip

    d_map, inside = sample_nearest(depth, xy)                                          # (F, N)
    known_map = valid_depth(d_map)
    with np.errstate(invalid="ignore"):
        agree = known_map & (np.abs(z - d_map) <= rel_tol * d_map)
        in_front = z > 0
    visible = inside & agree & q_valid[None, :] & in_front
    undecided = inside & in_front & ~known_map                   # lands on a pixel whose depth is unknown
    occluded = q_valid[None, :] & ~visible & ~undecided
    visible[query_frame] = q_valid
    occluded[query_frame] = False
    return xy.astype(np.float32), visible, occluded, z.astype(np.float32)
