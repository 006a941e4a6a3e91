"""3D boxes (VST eq. 3): R_3d = alpha R_IoU + (1 - alpha) R_F1, alpha = 0.5.

Predicted and true boxes are matched one to one by the Hungarian algorithm on IoU (scipy's
``linear_sum_assignment``). R_IoU is the matched pairs' summed IoU divided by max(#predicted, #true), so a missing
or an extra box costs; a matched pair is a true positive when its IoU > 0.25, and R_F1 = 2 TP / (#predicted +
#true). IoU is the exact rotated 3D IoU (``gasp.rl.box3d``). An answer that does not parse scores 0 (R_format 0).
"""
from __future__ import annotations

import numpy as np

from gasp.rl import box3d
from gasp.rl.rewards import register

ALPHA = 0.5
TP_IOU = 0.25


def match(pred: list, true: list) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(IoU matrix (P, T), the Hungarian pairs maximising summed IoU)."""
    from scipy.optimize import linear_sum_assignment

    m = np.array([[box3d.iou(p, t) for t in true] for p in pred]).reshape(len(pred), len(true))
    if m.size == 0:
        return m, []
    rows, cols = linear_sum_assignment(-m)
    return m, list(zip(rows.tolist(), cols.tolist()))


@register
class Box3DReward:
    kind = "box3d"

    def score(self, text: str, item: dict) -> dict[str, float]:
        """``item``: {"boxes": [9-DoF box, ...]} (angles in degrees)."""
        pred = box3d.parse_boxes(text)
        if pred is None:
            return {"acc": 0.0, "format": 0.0}
        true = [np.asarray(b, dtype=np.float64) for b in item["boxes"]]
        m, pairs = match(pred, true)
        ious = [m[i, j] for i, j in pairs]
        r_iou = sum(ious) / max(len(pred), len(true))
        tp = sum(v > TP_IOU for v in ious)
        f1 = 2 * tp / (len(pred) + len(true))
        return {"acc": float(ALPHA * r_iou + (1 - ALPHA) * f1), "format": 1.0}
