"""Robustness by viewpoint: PCK binned by the camera rotation between the query frame and frame k.

The paper's Y(Δt) mixes time with motion: 24 frames are a small turn in one scene and half an orbit in
another. probe3d bins correspondence recall by the relative camera rotation between the two views; with
the tracks' cameras the probe does the same, per layer:

    Δθ(q, k) = arccos((tr(R_k R_q^T) - 1) / 2)      degrees, R = the rotation of cam_from_world

binned by ``edges`` (default 0, 15, 30, 60, 180: [0, 15), [15, 30), [30, 60), [60, 180]);
PCK(bin) pools every valid prediction of every sequence in that bin (as Δt's bins do), and
Y(Δθ) = PCK(bin) / PCK(first bin).

The geodesic angle is the same whichever way the poses are written (inverting both leaves it
unchanged), so it cannot tell a converter's swapped convention. The bins are therefore only taken
from cameras that reproject the sequence's own tracks: a point at its track depth in the query
frame, moved into frame k by the two poses and projected with K_k, must land on its track there
(``reprojection_error``; median over visible points, at most ``MAX_REPROJECTION_PX``). A sequence
whose cameras fail that, or that has none (TAP-Vid, sparse tracks without poses, no track depth),
is not binned, and results.json says which and why; it is never put in the 0° bin.

Shapes: F frames, F' = F - 1 frames other than the query frame, N points, L layers, B bins.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_EDGES = (0.0, 15.0, 30.0, 60.0, 180.0)
MAX_REPROJECTION_PX = 2.0


def relative_angles(cam_from_world: np.ndarray, query: int) -> np.ndarray:
    """(F,) degrees: the rotation angle between frame ``query``'s camera and each frame's; cam_from_world (F, 4, 4)."""
    R = np.asarray(cam_from_world, dtype=np.float64)[:, :3, :3]                 # (F, 3, 3)
    rel = np.einsum("fij,kj->fik", R, R[query])                                # R_f R_q^T
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    vee = np.stack([rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0], rel[:, 1, 0] - rel[:, 0, 1]], 1) / 2
    return np.degrees(np.arctan2(np.linalg.norm(vee, axis=1), cos))            # = arccos(cos), stable near 0 and 180


def reprojection_error(tracks: np.ndarray, visible: np.ndarray, track_depth: np.ndarray, K: np.ndarray,
                       cam_from_world: np.ndarray, query: int) -> float:
    """Median pixel distance between each track and its query-frame point carried by the poses; NaN if none.

    tracks (F, N, 2) pixel x, y; visible (F, N); track_depth (F, N) depth in each frame's camera;
    K (F, 3, 3); cam_from_world (F, 4, 4) OpenCV world -> camera. Pixel centres at integer + 0.5
    are not assumed: x = K [X/Z, Y/Z, 1] with the tracks' own pixel convention on both sides.
    """
    T = np.asarray(cam_from_world, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    z = np.asarray(track_depth, dtype=np.float64)[query]                        # (N,)
    ok_q = np.asarray(visible, bool)[query] & np.isfinite(z) & (z > 0)
    if not ok_q.any():
        return float("nan")
    xy1 = np.concatenate([tracks[query].astype(np.float64), np.ones((tracks.shape[1], 1))], 1)   # (N, 3)
    cam_q = (np.linalg.inv(K[query]) @ xy1.T).T * z[:, None]                    # (N, 3) in the query camera
    world = (np.linalg.inv(T[query]) @ np.concatenate([cam_q, np.ones((len(z), 1))], 1).T).T[:, :3]
    errs = []
    for f in range(T.shape[0]):
        if f == query:
            continue
        cam = (T[f, :3, :3] @ world.T).T + T[f, :3, 3]                          # (N, 3)
        ok = ok_q & np.asarray(visible, bool)[f] & (cam[:, 2] > 0)
        if not ok.any():
            continue
        proj = (K[f] @ cam[ok].T).T
        errs.append(np.linalg.norm(proj[:, :2] / proj[:, 2:] - tracks[f, ok], axis=1))
    return float(np.median(np.concatenate(errs))) if errs else float("nan")


def sequence_angles(seq, fids: np.ndarray, query_grid: int) -> tuple[np.ndarray | None, str]:
    """(F',) Δθ of the record's other frames (its query grid's frame against each), or None and why not."""
    if seq.cam_from_world is None or seq.K is None:
        return None, "no cameras"
    if seq.track_depth is None:
        return None, "no track depth to check the cameras against"
    f = np.asarray(fids)
    err = reprojection_error(seq.tracks[f], seq.visible[f], seq.track_depth[f], seq.K[f], seq.cam_from_world[f],
                             query_grid)
    if not np.isfinite(err):
        return None, "no point visible at a known depth in two frames, so the cameras cannot be checked"
    if err > MAX_REPROJECTION_PX:
        return None, (f"the cameras do not reproject the tracks (median {err:.1f} px > {MAX_REPROJECTION_PX:g}): "
                      "a wrong pose convention (world-from-camera given as camera-from-world?) or wrong intrinsics")
    ang = relative_angles(seq.cam_from_world[f], query_grid)
    return np.delete(ang, query_grid).astype(np.float32), ""


def bin_index(angles: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each angle: [e0, e1), ..., [e_{B-1}, e_B] (the last closed); -1 outside."""
    e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(e, angles, side="right") - 1
    idx = np.where(np.isclose(angles, e[-1]), len(e) - 2, idx)                # the last bin is closed
    return np.where((angles < e[0]) | (angles > e[-1]) | ~np.isfinite(angles), -1, idx)


def bin_counts(correct: np.ndarray, valid: np.ndarray, angles: np.ndarray, edges: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(L, B) correct and (B,) valid prediction counts per bin; correct (L, F', N), valid (F', N), angles (F',)."""
    b = bin_index(np.asarray(angles, dtype=np.float64), edges)                 # (F',)
    nb = len(edges) - 1
    hits = np.zeros((correct.shape[0], nb))
    total = np.zeros(nb)
    v = np.asarray(valid, bool)
    for j in range(nb):
        rows = b == j
        total[j] = v[rows].sum()
        hits[:, j] = (np.asarray(correct, bool)[:, rows] & v[rows]).sum((1, 2))
    return hits, total


def summarize(records: Sequence[dict[str, Any]], edges: Sequence[float]) -> dict[str, Any]:
    """results.json's ``viewpoint`` block from records {"correct", "valid", "angles" or None, "why", "key"}."""
    binned = [r for r in records if r["angles"] is not None]
    out: dict[str, Any] = {"bins_deg": [float(e) for e in edges],
                           "angle": "geodesic angle of R_k R_q^T (cam_from_world rotations), degrees",
                           "num_sequences": len({r["key"] for r in binned})}
    skipped: dict[str, list[str]] = {}
    for r in records:
        if r["angles"] is None:
            skipped.setdefault(r["why"], []).append(r["key"])
    if skipped:
        out["not_binned"] = {why: sorted(set(keys)) for why, keys in skipped.items()}
    if not binned:
        out["reason"] = "no sequence has cameras that reproject its tracks; " + "; ".join(
            f"{len(set(k))} sequence(s): {why}" for why, k in skipped.items())
        return out
    hits = sum(bin_counts(r["correct"], r["valid"], r["angles"], edges)[0] for r in binned)
    total = sum(bin_counts(r["correct"], r["valid"], r["angles"], edges)[1] for r in binned)
    pck = np.where(total > 0, hits / np.maximum(total, 1), np.nan)             # (L, B)
    base = pck[:, :1]
    y = np.where(np.isfinite(base) & (base > 0), pck / np.where(base > 0, base, 1.0), np.nan)
    none = lambda a: [[None if not np.isfinite(v) else float(v) for v in row] for row in a]  # noqa: E731
    out.update(pck=none(pck), y=none(y), count=[int(t) for t in total])
    return out
