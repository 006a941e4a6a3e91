"""TAP-Vid's position metrics on the probe's matches, and the sub-token refinement they need.

Pure functions on tensors; ``probes.metrics.evaluate_layer`` calls them per layer.

Shapes: F' frames other than the query frame, N points, h x w tokens, P = h * w, L layers,
K thresholds, S videos.

**Sub-token refinement (our choice).** The probe's match is a token, 14-28 px wide, so a
pixel threshold below one token would only count exact token hits. The refined position
is a soft-argmax around the argmax token: the head-mean attention probabilities
softmax(q . k / sqrt(D)) over frame k's tokens (the distribution whose maximum is eq. 13's
confidence), restricted to the (2r + 1) x (2r + 1) tokens around the argmax (r = 1; fewer
at the border), renormalised, and used to average those tokens' centres. It adds no
parameter: the temperature is the model's own. tapnet's ``soft_argmax_heatmap`` averages
cells near the argmax the same way, on its own heatmap. With ``refine="none"`` the
position is the argmax token's centre.

**δ^x (TAP-Vid, tapnet's ``compute_tapvid_metrics``).** Positions are scaled to a 256 x 256
frame (x by 256 / W, y by 256 / H); a prediction is within x px when its squared distance
to the ground truth is strictly below x^2, for x in {1, 2, 4, 8, 16}. Over the points
visible in the ground truth and in their query frame, other than the query frame itself
(the probe's ``valid``), each video's fraction is computed, and each threshold, and their
mean δ_avg, is averaged over videos. **DiffTrack's zero-shot convention**: every point is
predicted visible.

**Average Jaccard and occlusion accuracy (tapnet's definitions).** Evaluation points are the frames
other than the query frame of points visible in their query frame, where the ground truth knows the
state (visible or occluded). OA is the fraction of them whose predicted visibility is the ground
truth's. For threshold x, Jaccard = TP / (GT visible + FP), with TP = predicted visible, visible and
within x px, FP = predicted visible and (occluded or not within x px); AJ is the mean over the five
thresholds. Each is computed per video, then averaged over videos. Two visibility rules:
``all_visible`` (DiffTrack's zero-shot convention, so its AJ sits beside DiffTrack's δ) and
``confidence`` (the model's own attention: occluded where eq. 13's max-softmax is below a per-layer
threshold chosen, for occlusion accuracy, on probe-train scenes; ``occlusion_blocks``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

THRESHOLDS = (1, 2, 4, 8, 16)
EVAL_SIZE = (256, 256)          # (H, W) tapnet scales positions to before thresholding
REFINE_MODES = ("softargmax", "none")
REFINE_RADIUS = 1


def refine_positions(probs: torch.Tensor, pred_rc: torch.Tensor, grid: tuple[int, int],
                     radius: int = REFINE_RADIUS) -> torch.Tensor:
    """Soft-argmax token positions (F', N, 2) float64 (x = col, y = row) around each argmax.

    probs (F', N, P) attention probabilities over frame k's tokens (any non-negative weights);
    pred_rc (F', N, 2) long argmax row, col. Window tokens outside the grid are left out; a
    window whose weights sum to 0 returns the argmax token itself.
    """
    h, w = grid
    d = torch.arange(-radius, radius + 1, device=pred_rc.device)
    dr, dc = torch.meshgrid(d, d, indexing="ij")
    rows = pred_rc[..., 0, None] + dr.reshape(-1)                      # (F', N, W2)
    cols = pred_rc[..., 1, None] + dc.reshape(-1)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1))
    wgt = probs.double().gather(-1, flat) * inside                    # (F', N, W2)
    total = wgt.sum(-1, keepdim=True)
    ok = total > 0
    wgt = torch.where(ok, wgt / torch.where(ok, total, 1.0), 0.0)
    x = (wgt * cols).sum(-1)
    y = (wgt * rows).sum(-1)
    fallback = pred_rc.flip(-1).double()                               # (col, row)
    out = torch.stack([x, y], -1)
    return torch.where(ok, out, fallback)


def within_bits(pred_px: torch.Tensor, gt_px: torch.Tensor, image_size: tuple[int, int],
                thresholds: Sequence[float] = THRESHOLDS, eval_size: tuple[int, int] = EVAL_SIZE) -> torch.Tensor:
    """(...) uint8: bit k set where the prediction is within thresholds[k] px at ``eval_size`` (strict <).

    pred_px, gt_px (..., 2) pixel x, y in the tracks' frames of ``image_size`` (H, W).
    Non-finite ground truth sets no bit.
    """
    H, W = image_size
    scale = torch.tensor([eval_size[1] / W, eval_size[0] / H], dtype=torch.float64, device=pred_px.device)
    d2 = (((pred_px.double() - gt_px.double().to(pred_px.device)) * scale) ** 2).sum(-1)
    d2 = torch.nan_to_num(d2, nan=float("inf"))
    bits = torch.zeros(d2.shape, dtype=torch.uint8, device=d2.device)
    for k, t in enumerate(thresholds):
        bits |= (d2 < float(t) ** 2).to(torch.uint8) << k
    return bits


def video_fractions(within: np.ndarray, valid: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """(L, K) fraction of valid predictions within each threshold for one video; NaN if none is valid.

    within (L, F', Q) uint8 bits (``within_bits``); valid (F', Q) bool.
    """
    n = int(valid.sum())
    out = np.full((within.shape[0], len(thresholds)), np.nan)
    if n == 0:
        return out
    for k in range(len(thresholds)):
        hit = ((within >> k) & 1).astype(bool) & valid[None]
        out[:, k] = hit.sum((1, 2)) / n
    return out


def summarize_videos(per_video: Sequence[np.ndarray], thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Per-layer δ^x and δ_avg, each averaged over videos that have a valid prediction.

    per_video: one (L, K) ``video_fractions`` array per video. Returns
    {"delta_<x>": (L,) list, "delta_avg": (L,) list, "num_videos": int, "per_video_delta_avg": (S, L)}.
    """
    arr = np.stack(per_video)                                          # (S, L, K)
    ok = np.isfinite(arr[:, 0, 0])
    res: dict = {"thresholds_px": list(thresholds), "eval_size_hw": list(EVAL_SIZE), "num_videos": int(ok.sum())}
    if not ok.any():
        return res
    good = arr[ok]
    for k, t in enumerate(thresholds):
        res[f"delta_{t:g}"] = good[:, :, k].mean(0).tolist()
    avg = good.mean(2)                                                 # (S, L) per-video δ_avg
    res["delta_avg"] = avg.mean(0).tolist()
    res["per_video_delta_avg"] = avg.tolist()
    return res


def video_occlusion(within: np.ndarray, visible: np.ndarray, occluded: np.ndarray, pred_visible: np.ndarray,
                    thresholds: Sequence[float] = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(L, K) Jaccard per threshold and (L,) occlusion accuracy of one video; NaN where it has no evaluation point.

    within (L, F', Q) uint8 δ bits (set only where visible); visible (F', Q) ground truth visible there and in
    the query frame (the probe's ``valid``); occluded (F', Q) ground truth occluded there, visible in the query
    frame; pred_visible (L, F', Q) bool.
    """
    ev = visible | occluded                                            # (F', Q) evaluation points
    L = within.shape[0]
    jac, oa = np.full((L, len(thresholds)), np.nan), np.full(L, np.nan)
    n = int(ev.sum())
    if n == 0:
        return jac, oa
    pv = pred_visible & ev[None]
    oa[:] = ((pv == visible[None]) & ev[None]).sum((1, 2)) / n
    gt_pos = int(visible.sum())
    for k in range(len(thresholds)):
        hit = ((within >> k) & 1).astype(bool) & visible[None]
        tp = (hit & pv).sum((1, 2))
        fp = (pv & ~hit).sum((1, 2))                                   # predicted visible: occluded, or too far
        jac[:, k] = np.where(gt_pos + fp > 0, tp / np.maximum(gt_pos + fp, 1), np.nan)
    return jac, oa


def summarize_occlusion(per_video: Sequence[tuple[np.ndarray, np.ndarray]],
                        thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """AJ, per-threshold Jaccard and OA per layer, each averaged over the videos that have evaluation points."""
    jac = np.stack([j for j, _ in per_video])                          # (S, L, K)
    oa = np.stack([o for _, o in per_video])                           # (S, L)
    ok = np.isfinite(oa[:, 0])
    res: dict = {"num_videos": int(ok.sum())}
    if not ok.any():
        return res
    aj = np.nanmean(jac[ok], 2)                                        # (S, L) per-video AJ
    res.update(aj=aj.mean(0).tolist(), oa=oa[ok].mean(0).tolist(),
               **{f"jaccard_{t:g}": jac[ok][:, :, k].mean(0).tolist() for k, t in enumerate(thresholds)})
    return res


def choose_thresholds(conf: Sequence[np.ndarray], visible: Sequence[np.ndarray], occluded: Sequence[np.ndarray],
                      candidates: int = 101) -> np.ndarray:
    """(L,) the max-softmax threshold per layer with the highest mean per-video occlusion accuracy on these videos.

    conf[s] (L, F', Q); visible[s], occluded[s] (F', Q). Candidates: the pooled quantiles of the evaluation
    points' confidence (0, 1, ..., 100 %), and -inf (every point visible). Ties go to the lowest threshold.
    """
    L = conf[0].shape[0]
    out = np.full(L, -np.inf)
    for li in range(L):
        pool = np.concatenate([c[li][v | o] for c, v, o in zip(conf, visible, occluded)])
        if pool.size == 0:
            continue
        cands = np.concatenate([[-np.inf], np.unique(np.quantile(pool, np.linspace(0, 1, candidates)))])
        best, best_oa = -np.inf, -1.0
        for t in cands:
            accs = []
            for c, v, o in zip(conf, visible, occluded):
                ev = v | o
                if ev.any():
                    accs.append((((c[li] >= t) == v) & ev).sum() / ev.sum())
            m = float(np.mean(accs)) if accs else -1.0
            if m > best_oa + 1e-12:
                best, best_oa = float(t), m
        out[li] = best
    return out
