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
predicted visible, so occlusion accuracy and Jaccard are not reported.
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
