"""Depth from elsewhere (VGGT, a monocular model, MVS) brought to the poses' units, and checked against them.

Tracks from geometry compare a point's projected camera z with the depth map of the frame it
lands in, so depth must be in the units of the poses' translations. COLMAP's (and DL3DV's) are
arbitrary; metric or per-frame-normalised depth fed in as it is gives wrong tracks. Two kinds
of evidence catch that:

* **Sparse points** (a COLMAP model's ``points3D``). Each observation of point X in frame t
  has the pose's camera depth z = (R_t X + t_t)_z at its keypoint, where the depth map reads
  d (nearest pixel). ``fit_scale`` finds s with s * d ~ z as the median of z / d, robust to
  outliers: one for the scene (``"scene"``) or one per frame (``"frame"``; frames with fewer
  than ``MIN_POINTS`` observations take the scene's). ``"check"`` keeps s = 1. The residual is
  each frame's median of |s d - z| / z. ``check_alignment`` refuses a scene ratio outside
  [1 / (1 + tol), 1 + tol] when no alignment was asked for, and any frame whose residual
  exceeds ``tol``, naming the frame and the measured error.
* **Reprojection**: the sparse points projected with each frame's camera (and distortion)
  must land on their keypoints (``check_reprojection``); a wrong image folder, resolution or
  camera gives errors of many pixels.
* **Multi-view consistency** (no sparse points, e.g. DL3DV's ``transforms.json``):
  ``consistency_scale`` scales the depth by s over a geometric grid and measures, on pairs
  of frames, which fraction of grid points one frame's depth carries into the other's onto a
  pixel of the same colour, at its own depth within 5 %. Depth in the poses' units agrees
  best near s = 1; metric depth for COLMAP poses agrees best elsewhere. Where the camera
  barely translates, or the images are untextured, every scale agrees alike and the check
  says it cannot decide (a warning, not a refusal).

Shapes: T frames, H x W depth pixels, M observations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracks.distortion import distort_normalized
from tracks.geometry import build_track_states, sample_nearest, valid_depth

log = logging.getLogger(__name__)

ALIGN_MODES = ("check", "scene", "frame", "none")
DEFAULT_TOL = 0.10            # relative depth error (and unit ratio) tolerated
DEFAULT_REPROJ_PX = 2.0       # median reprojection error tolerated per frame, in the images' pixels
MIN_POINTS = 10               # observations a frame needs for its own scale or check


class DepthPoseError(ValueError):
    """Depth and poses that do not agree; the message names the frame, the error and the fix."""


@dataclass
class Samples:
    frame: np.ndarray          # (M,) int64
    depth: np.ndarray          # (M,) float64 the depth map at the keypoint
    z: np.ndarray              # (M,) float64 the pose's camera z of the point


def sparse_samples(depth: np.ndarray, frame: np.ndarray, xy: np.ndarray, z: np.ndarray) -> Samples:
    """Depth at each observation's keypoint (nearest pixel) beside its pose depth; unusable ones dropped.

    depth (T, H, W); frame (M,); xy (M, 2) pixel (x, y) in gasp's convention at the depth's size; z (M,).
    """
    T = depth.shape[0]
    per = [np.flatnonzero(frame == t) for t in range(T)]
    d = np.full(len(frame), np.nan)
    for t, sel in enumerate(per):
        if len(sel):
            d[sel] = sample_nearest(depth[t:t + 1], xy[sel][None])[0][0]
    ok = valid_depth(d) & np.isfinite(z) & (z > 0)
    return Samples(frame=frame[ok], depth=d[ok], z=z[ok])


@dataclass
class Alignment:
    mode: str
    scale: np.ndarray          # (T,) the factor depth was multiplied by
    ratio: float               # median z / d over the scene, before scaling
    residual: np.ndarray       # (T,) median |s d - z| / z per frame, NaN with fewer than MIN_POINTS
    counts: np.ndarray         # (T,) observations per frame

    def metadata(self) -> dict[str, Any]:
        res = self.residual[np.isfinite(self.residual)]
        return {"mode": self.mode, "ratio_pose_over_depth": self.ratio,
                "scale": float(self.scale[0]) if self.mode in ("check", "scene") else self.scale.round(6).tolist(),
                "median_residual": float(np.median(res)) if res.size else None,
                "worst_residual": float(res.max()) if res.size else None,
                "observations": int(self.counts.sum()), "frames_checked": int(res.size)}


def fit_scale(samples: Samples, num_frames: int, mode: str) -> Alignment:
    """The scale(s) putting depth in the poses' units (module docstring), and the residual after it."""
    if mode not in ALIGN_MODES[:3]:
        raise ValueError(f"alignment mode must be one of {ALIGN_MODES[:3]}, got {mode!r}")
    if len(samples.z) == 0:
        raise DepthPoseError("no sparse point lands on a pixel with valid depth: depth and poses cannot be compared")
    ratio = samples.z / samples.depth
    scene = float(np.median(ratio))
    counts = np.bincount(samples.frame, minlength=num_frames)
    scale = np.ones(num_frames) if mode == "check" else np.full(num_frames, scene)
    if mode == "frame":
        for t in range(num_frames):
            if counts[t] >= MIN_POINTS:
                scale[t] = np.median(ratio[samples.frame == t])
    err = np.abs(scale[samples.frame] * samples.depth - samples.z) / samples.z
    residual = np.array([np.median(err[samples.frame == t]) if counts[t] >= MIN_POINTS else np.nan
                         for t in range(num_frames)])
    return Alignment(mode=mode, scale=scale, ratio=scene, residual=residual, counts=counts)


def check_alignment(al: Alignment, where: str, names: list[str], tol: float = DEFAULT_TOL) -> None:
    """DepthPoseError when depth and poses disagree (module docstring); a warning between rel_tol and tol."""
    if al.mode == "check" and not 1 / (1 + tol) <= al.ratio <= 1 + tol:
        raise DepthPoseError(
            f"{where}: depth and poses disagree in units: the sparse points' camera z is {al.ratio:.4g} x the "
            f"depth at their keypoints (median over {int(al.counts.sum())} observations); depth must be in the "
            f"poses' units. Pass --align-depth scene (one scale) or --align-depth frame (one per frame) to rescale "
            f"it to the poses, or fix the depth's units")
    res = np.where(np.isfinite(al.residual), al.residual, -1.0)
    t = int(np.argmax(res))
    if res[t] > tol:
        raise DepthPoseError(
            f"{where}: depth disagrees with the poses in frame {t} ({names[t]}): median relative error "
            f"{res[t]:.1%} over {int(al.counts[t])} sparse points after '{al.mode}' alignment (tolerance "
            f"{tol:.0%}); is it the right depth map for this image, and in the poses' units? "
            f"(--align-depth frame allows one scale per frame; --depth-tol raises the tolerance)")
    if res[t] > 0.05:
        log.warning("%s: depth agrees with the poses only to %.1f%% (median) in frame %d (%s); visibility uses a "
                    "5%% depth tolerance", where, 100 * res[t], t, names[t])


def reprojection_errors(xyz: np.ndarray, frame: np.ndarray, xy: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray,
                        coeffs: np.ndarray | None = None) -> np.ndarray:
    """(M,) pixel distance between each point projected into its frame (with distortion) and its keypoint.

    xyz (M, 3) world points; frame (M,); xy (M, 2) keypoints in the same pixel convention as K (T, 3, 3);
    coeffs (T, 5) OpenCV distortion or None. Points behind the camera get inf.
    """
    R, t = cam_from_world[frame, :3, :3], cam_from_world[frame, :3, 3]                  # (M, 3, 3), (M, 3)
    cam = np.einsum("mij,mj->mi", R, xyz) + t
    with np.errstate(divide="ignore", invalid="ignore"):
        n = cam[:, :2] / cam[:, 2:3]
    if coeffs is not None:
        n = np.stack([distort_normalized(n[i:i + 1], coeffs[f])[0] for i, f in enumerate(frame)]) if len(n) else n
    Km = K[frame]
    pix = np.stack([Km[:, 0, 0] * n[:, 0] + Km[:, 0, 2], Km[:, 1, 1] * n[:, 1] + Km[:, 1, 2]], -1)
    err = np.hypot(*(pix - xy).T)
    return np.where(cam[:, 2] > 0, err, np.inf)


def check_reprojection(errors: np.ndarray, frame: np.ndarray, where: str, names: list[str],
                       tol_px: float = DEFAULT_REPROJ_PX) -> dict[str, Any]:
    """DepthPoseError naming the worst frame if its median reprojection error exceeds ``tol_px``."""
    T = len(names)
    med = np.array([np.median(errors[frame == t]) if (frame == t).sum() >= 1 else np.nan for t in range(T)])
    worst = int(np.nanargmax(np.where(np.isfinite(med), med, -1.0)))
    if med[worst] > tol_px:
        raise DepthPoseError(
            f"{where}: the sparse points do not reproject onto their keypoints in frame {worst} ({names[worst]}): "
            f"median error {med[worst]:.2f} px (tolerance {tol_px:g} px); are the images the ones the model was "
            f"built from, at the size its cameras.* assume (--images)?")
    ok = med[np.isfinite(med)]
    return {"median_px": float(np.median(ok)) if ok.size else None, "worst_px": float(ok.max()) if ok.size else None}


def consistency_scale(depth: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray, frames: np.ndarray | None = None,
                      pairs: int = 8, grid: int = 32, rel_tol: float = 0.05,
                      colour_tol: float = 24.0) -> dict[str, Any]:
    """How well depth scaled by s carries points between frames, for s over 1/64 .. 64 (module docstring).

    A grid point of frame a, moved into frame b with the scaled depth, agrees when it lands inside
    b at b's (scaled) depth within ``rel_tol`` and, with ``frames`` (T, H, W, 3) given, on a pixel
    whose colour differs from its own by less than ``colour_tol`` (mean over RGB, 0..255): over a
    fronto-parallel surface every scale passes the depth test, the colour test does not.
    Returns {"best_scale", "agreement_at_1", "agreement_best", "decided"}; ``decided`` needs the best
    scale to carry at least 20 % of the points and 10 points more than any scale 4x away from it,
    which agree about as well as a pure rotation would (little translation, untextured or noisy
    depth: undecided).
    """
    T = depth.shape[0]
    if T < 2:
        return {"best_scale": 1.0, "agreement_at_1": None, "agreement_best": None, "decided": False}
    gap = max(1, T // 8)
    starts = np.unique(np.linspace(0, T - 1 - gap, min(pairs, T - gap)).round().astype(int))
    scales = np.unique(np.concatenate([2.0 ** np.arange(-6, 6.01, 0.125), [1.0]]))
    agree = np.zeros(len(scales))
    for a in starts:
        ids = [a, a + gap]
        for i, s in enumerate(scales):
            xy, vis, _, _ = build_track_states(depth[ids] * s, K[ids], cam_from_world[ids], grid=grid, rel_tol=rel_tol)
            ok = vis[1] & vis[0]
            if frames is not None and ok.any():
                c0 = _colours(frames[ids[0]], xy[0])
                c1 = _colours(frames[ids[1]], xy[1])
                ok &= np.abs(c0 - c1).mean(-1) < colour_tol
            known = vis[0].sum()
            agree[i] += ok.sum() / known if known else 0.0
    agree /= len(starts)
    best = int(np.argmax(agree))
    at_one = float(agree[np.flatnonzero(scales == 1.0)[0]])
    # far from the right scale, points move as if only the camera rotated: a plateau, high for small baselines
    far = (scales >= 4 * scales[best]) | (scales <= scales[best] / 4)
    decided = bool(agree[best] >= 0.2 and agree[best] - agree[far].max(initial=0.0) >= 0.1)
    return {"best_scale": float(scales[best]), "agreement_at_1": at_one, "agreement_best": float(agree[best]),
            "decided": decided}


def _colours(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 3) float colour at the nearest pixel of each (N, 2) position (clamped to the image)."""
    H, W = image.shape[:2]
    xi = np.clip(np.floor(np.nan_to_num(xy[:, 0]) + 0.5), 0, W - 1).astype(np.int64)
    yi = np.clip(np.floor(np.nan_to_num(xy[:, 1]) + 0.5), 0, H - 1).astype(np.int64)
    return image[yi, xi].astype(np.float64)


def check_consistency(c: dict[str, Any], where: str, tol: float = 0.25) -> None:
    """DepthPoseError when the multi-view check is decided on a scale outside [1 / (1 + tol), 1 + tol]
    that carries clearly more points (10 points and 10 % more) than the depth as given."""
    clearly = c["agreement_best"] is not None and c["agreement_best"] >= max(c["agreement_at_1"] + 0.1,
                                                                              1.1 * c["agreement_at_1"])
    if c["decided"] and clearly and not 1 / (1 + tol) <= c["best_scale"] <= 1 + tol:
        raise DepthPoseError(
            f"{where}: depth and poses disagree in units: frames agree best when the depth is scaled by "
            f"{c['best_scale']:.3g} ({c['agreement_best']:.0%} of points carried between frames, against "
            f"{c['agreement_at_1']:.0%} as given); depth must be in the poses' units (DL3DV's are COLMAP's, not "
            f"metres). Pass --depth-scale {c['best_scale']:.3g} after checking it, or fix the depth")
