"""Model-free reference PCK on a test split: what the probe's PCK@delta is worth (issue 5's reading).

Scored exactly as the probe scores a model (`probes.metrics`: token units, Euclidean
distance to the ground-truth token position <= delta, frame-1 queries visible in frame 1
and frame k, mean over sequences of each sequence's PCK):

    uniform        expected PCK of a prediction drawn uniformly from frame k's h x w tokens
    same_position  PCK of predicting the query's own token (no motion): what a purely
                   positional match gets

Shapes: F frames, N points, h x w tokens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probes.metrics import pixels_to_tokens, within_delta
from tracks.io import TrackReader

TOKEN_PX = 28        # Qwen2.5-VL: 14 px patches merged 2 x 2; the test frames are rendered at the model's input size


def sequence_reference(tracks: np.ndarray, visible: np.ndarray, query_frame: int, grid: tuple[int, int],
                       token_size: float, delta: float = 2.0) -> dict[str, float]:
    """Both references for one sequence; tracks (F, N, 2) pixel x, y, visible (F, N)."""
    h, w = grid
    tok = pixels_to_tokens(torch.as_tensor(tracks, dtype=torch.float64), token_size)        # (F, N, 2)
    vis = torch.as_tensor(visible, dtype=torch.bool) & torch.isfinite(tok).all(-1)
    others = [i for i in range(tok.shape[0]) if i != query_frame]
    valid = vis[query_frame][None] & vis[others]                                             # (F', N)
    gt = tok[others]                                                                         # (F', N, 2)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = torch.stack([rows.reshape(-1), cols.reshape(-1)], -1)                            # (h*w, 2) row, col
    hit = within_delta(cells[:, None, None, :].expand(-1, *gt.shape[:2], 2), gt[None], delta)  # (h*w, F', N)
    q = torch.nan_to_num(tok[query_frame]).add(0.5).floor().long()                           # (N, 2) x, y
    q_rc = torch.stack([q[:, 1].clamp(0, h - 1), q[:, 0].clamp(0, w - 1)], -1)               # (N, 2) row, col
    same = within_delta(q_rc[None].expand(gt.shape[0], -1, -1), gt, delta)                   # (F', N)
    n = valid.sum().clamp_min(1)
    return {"uniform": float((hit.double().mean(0) * valid).sum() / n), "same_position": float((same & valid).sum() / n)}


def reference_pck(tracks_path: str | Path, grid: tuple[int, int], token_size: float,
                  delta: float = 2.0) -> dict[str, float]:
    """Mean over the file's sequences (those with any valid pair) of `sequence_reference`."""
    per: list[dict[str, float]] = []
    with TrackReader(tracks_path) as reader:
        for i in range(len(reader)):
            s = reader[i]
            if (s.visible[s.query_frame][None] & np.delete(s.visible, s.query_frame, 0)).any():
                per.append(sequence_reference(s.tracks, s.visible, s.query_frame, grid, token_size, delta))
    return {k: float(np.mean([p[k] for p in per])) for k in ("uniform", "same_position")} | {"num_sequences": len(per)}


def motion_by_dt(tracks_path: str | Path, token_size: float,
                 bins: tuple[tuple[int, int], ...] = ((1, 4), (5, 12), (13, 20), (21, 24))) -> list[dict]:
    """How far points move between the query frame and frame k, in tokens, per Delta-t bin."""
    disp, dts = [], []
    with TrackReader(tracks_path) as reader:
        for i in range(len(reader)):
            s = reader[i]
            q = s.query_frame
            for f in range(len(s.tracks)):
                m = s.visible[q] & s.visible[f] & np.isfinite(s.tracks[f]).all(-1) & np.isfinite(s.tracks[q]).all(-1)
                if f == q or not m.any():
                    continue
                disp.append(np.linalg.norm(s.tracks[f][m] - s.tracks[q][m], axis=-1) / token_size)
                dts.append(np.full(int(m.sum()), abs(int(s.frame_index[f]) - int(s.frame_index[q]))))
    d, t = np.concatenate(disp), np.concatenate(dts)
    out = []
    for lo, hi in bins:
        sel = d[(t >= lo) & (t <= hi)]
        if sel.size:
            out.append({"dt": [lo, hi], "median": float(np.median(sel)), "p90": float(np.percentile(sel, 90)),
                        "within_2": float((sel <= 2).mean()), "n": int(sel.size)})
    return out


def references_at_input_size(tracks_path: str | Path, image_size: int, delta: float = 2.0) -> dict[str, float]:
    """`reference_pck` for the replication's square frames rendered at the Qwen2.5-VL input size."""
    n = image_size // TOKEN_PX
    return reference_pck(tracks_path, (n, n), float(TOKEN_PX), delta)
