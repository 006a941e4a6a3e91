"""Sparse point tracks from a COLMAP model: each 3D point's keypoints in the frames that observe it.

A COLMAP model already holds real correspondences: ``points3D`` lists, for every 3D point, the
images and keypoints that observe it (``tracks/colmap_points.py``). No depth is needed. This
works on a mapper's output, an undistorted workspace, DL3DV's COLMAP cache as downloaded
(``colmap/sparse/0`` with ``colmap/images_N``, OPENCV cameras) and VGGT's ``demo_colmap.py
--use_ba`` export (``sparse/``).

* **Positions** are the keypoints themselves, scaled to the image files' size and moved to
  gasp's pixel-centre convention (``tracks/colmap.py``). With distortion the frames are kept as
  downloaded and so are the keypoints, which are observed on those very pixels; the scene then
  stores no cameras, since a pinhole K would not describe them. ``undistort=True`` resamples the
  frames onto the pinhole camera of the same K and undistorts the keypoints alike, and keeps
  the cameras.
* **States.** A frame that observes the point is *visible* there; a frame that does not list it
  is *unknown*, never occluded: not being matched is no evidence of occlusion.
* **Depth.** ``track_depth`` is the pose's camera z of the 3D point, in the model's units, where
  the point is observed; the scene has no depth maps, so the trainer's L_depth skips it.
* **Query points (our choice).** A sequence's query frame is its first frame. Over a g x g grid
  of cells of that frame, each cell contributes one query: among the keypoints in it whose 3D
  point is observed in the query frame and at least one other frame of the sequence, the one
  observed in the most of the sequence's frames (ties: lower COLMAP reprojection error, then
  lower point id). Cells without such a keypoint stay empty, so N <= g^2. This keeps the
  paper's spatial coverage (an 8 x 8 or 24 x 24 grid) while every query is a real observation,
  and prefers the longest, most reliable tracks.

Shapes: T scene frames, F sequence frames, N queries, M observations, P points.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tracks.colmap import check_distortion, model_observations, read_colmap_model
from tracks.distortion import undistort_frames, undistort_points
from tracks.scene_folder import SceneError, read_rgb, stack_frames
from tracks.types import Scene

log = logging.getLogger(__name__)


@dataclass
class SparseScene:
    """A scene without depth and the observations its sequences draw their tracks from."""

    scene: Scene
    point: np.ndarray         # (M,) int64 index into P of each observation
    frame: np.ndarray         # (M,) int64 scene frame of each observation
    xy: np.ndarray            # (M, 2) float64 keypoint, gasp pixels of the stored frames
    z: np.ndarray             # (M,) float64 the point's camera z in that frame (the model's units)
    point_ids: np.ndarray     # (P,) int64 COLMAP point3D_id
    error: np.ndarray         # (P,) float64 COLMAP reprojection error


def load_colmap_sparse(colmap_dir, sparse=None, images="images", undistort: bool = False,
                       name: str | None = None) -> SparseScene:
    """Frames and sparse observations of a COLMAP model (module docstring); SceneError on bad input."""
    model = read_colmap_model(colmap_dir, sparse, images)
    points, obs, points_path = model_observations(model)
    # one observation per (point, frame): a track listing an image twice keeps its first keypoint
    _, first = np.unique(obs.point * len(model.images) + obs.frame, return_index=True)
    first.sort()
    point, frame, xy = obs.point[first], obs.frame[first], obs.xy[first]
    frames_per_point = np.bincount(point, minlength=len(points.ids))
    if not (frames_per_point >= 2).any():
        raise SceneError(f"{points_path}: no 3D point is observed in two frames (every track lists one image), so "
                         f"there is no correspondence to take; VGGT's demo_colmap.py writes such a model without "
                         f"--use_ba: rerun it with --use_ba, or convert its predictions.npz with "
                         f"scripts/convert_vggt.py")
    resample = check_distortion(model, undistort, "keeping the cameras") if undistort else False
    distorted = model.distortion_px() >= 0.1 and not resample
    frames = stack_frames([read_rgb(p) for p in model.paths], model.paths)           # (T, H, W, 3)
    if resample:
        frames, _ = undistort_frames(frames, None, model.K, model.coeffs)
        for t in np.unique(frame):
            sel = frame == t
            xy[sel] = undistort_points(xy[sel], model.K[t], model.coeffs[t])
    X = points.xyz[point]
    R, tr = model.cam_from_world[frame, :3, :3], model.cam_from_world[frame, :3, 3]
    z = np.einsum("mij,mj->mi", R, X)[:, 2] + tr[:, 2]
    meta = {"source": "colmap-sparse", **model.metadata(), "images_dir": str(images), "undistorted": resample,
            "points": int(len(points.ids)), "observations": int(len(point)),
            "points_in_two_or_more_frames": int((frames_per_point >= 2).sum())}
    if distorted:
        meta["cameras_omitted"] = ("the cameras are distorted and the frames kept as downloaded, so no pinhole K "
                                   "describes them; convert with --undistort to keep the cameras")
    log.info("COLMAP sparse model %s: %d frames, %d points (%d in >= 2 frames), %d observations%s", model.model_dir,
             len(model.images), len(points.ids), meta["points_in_two_or_more_frames"], len(point),
             ", undistorted" if resample else (", distorted frames kept" if distorted else ""))
    scene = Scene(name=name or model.root.resolve().name, frames=frames, depth=None,
                  K=None if distorted else model.K, cam_from_world=None if distorted else model.cam_from_world,
                  frame_index=model.frame_index, metadata=meta)
    return SparseScene(scene=scene, point=point, frame=frame, xy=xy, z=z, point_ids=points.ids, error=points.error)


@dataclass
class SparseTracks:
    tracks: np.ndarray        # (F, N, 2) float32 pixel x, y (NaN where not observed)
    visible: np.ndarray       # (F, N) bool: observed
    occluded: np.ndarray      # (F, N) bool: never (unobserved is unknown)
    track_depth: np.ndarray   # (F, N) float32 camera z where observed, NaN elsewhere
    point_ids: np.ndarray     # (N,) int64 COLMAP point3D_id of each query


def select_queries(sp: SparseScene, frame_ids: np.ndarray, grid: int) -> SparseTracks:
    """The tracks of one sequence over scene frames ``frame_ids`` (query frame first), queries as the module says."""
    ids = np.asarray(frame_ids, dtype=np.int64)
    F = len(ids)                                                                     # frame 0: the query frame
    H, W = sp.scene.image_size
    pos = np.full(sp.scene.num_frames, -1, dtype=np.int64)
    pos[ids] = np.arange(F)
    in_seq = pos[sp.frame] >= 0
    point, f, xy, z = sp.point[in_seq], pos[sp.frame[in_seq]], sp.xy[in_seq], sp.z[in_seq]
    n_frames = np.bincount(point, minlength=len(sp.point_ids))                       # (P,) frames of the sequence
    at_q = np.flatnonzero(f == 0)
    cand = at_q[n_frames[point[at_q]] >= 2]                                          # observations in the query frame
    cx = np.clip(np.floor((xy[cand, 0] + 0.5) * grid / W), 0, grid - 1).astype(np.int64)
    cy = np.clip(np.floor((xy[cand, 1] + 0.5) * grid / H), 0, grid - 1).astype(np.int64)
    cell = cy * grid + cx
    p = point[cand]
    order = np.lexsort((sp.point_ids[p], sp.error[p], -n_frames[p], cell))           # by cell, then preference
    keep = order[np.r_[True, cell[order][1:] != cell[order][:-1]]] if len(order) else order
    chosen = p[keep]                                                                 # (N,) in cell order
    N = len(chosen)
    col = np.full(len(sp.point_ids), -1, dtype=np.int64)
    col[chosen] = np.arange(N)
    sel = col[point] >= 0
    tracks = np.full((F, N, 2), np.nan, dtype=np.float32)
    depth = np.full((F, N), np.nan, dtype=np.float32)
    visible = np.zeros((F, N), dtype=bool)
    tracks[f[sel], col[point[sel]]] = xy[sel]
    depth[f[sel], col[point[sel]]] = z[sel]
    visible[f[sel], col[point[sel]]] = True
    return SparseTracks(tracks=tracks, visible=visible, occluded=np.zeros((F, N), dtype=bool), track_depth=depth,
                        point_ids=sp.point_ids[chosen])
