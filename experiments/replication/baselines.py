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
from probes.metrics import reference_pck as sequence_reference
from tracks.io import TrackReader

TOKEN_PX = 28        # Qwen2.5-VL: 14 px patches merged 2 x 2; the test frames are rendered at the model's input size


def reference_pck(tracks_path: str | Path, grid: tuple[int, int], token_size: float,
                  delta: float = 2.0) -> dict[str, float]:
    """Mean over the file's sequences (those with any valid pair) of `probes.metrics.reference_pck`."""
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


# ---- benchmark v2 (issue 9): several thresholds, Delta-t bins, visibility, an appearance matcher ----

DELTAS = (1.0, 2.0, 4.0)
DT_BINS = ((1, 4), (5, 11), (12, 24))


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def patch_descriptors(frame: np.ndarray, xy: np.ndarray, window: int, pool: int = 4) -> np.ndarray:
    """(H, W, 3), (N, 2) pixel x, y -> (N, C) zero-mean, unit-norm descriptors of the `window` px square
    patches centred on the points (edge-padded), average-pooled by `pool` px (C = (window/pool)^2 * 3)
    so that a sub-token offset between two views of one surface costs little correlation."""
    half = window // 2
    pad = np.pad(frame.astype(np.float32), ((half, half), (half, half), (0, 0)), mode="edge")
    x0 = np.clip(np.rint(xy[:, 0]).astype(int), 0, frame.shape[1] - 1)       # top-left in the padded frame
    y0 = np.clip(np.rint(xy[:, 1]).astype(int), 0, frame.shape[0] - 1)
    c = window // pool
    x = np.stack([pad[y:y + window, x:x + window] for x, y in zip(x0, y0)])  # (N, window, window, 3)
    return _unit(x.reshape(len(xy), c, pool, c, pool, 3).mean((2, 4)).reshape(len(xy), -1))


def ncc_predictions(frames: np.ndarray, query_xy: np.ndarray, query_frame: int, token_size: int,
                    window: int | None = None) -> np.ndarray:
    """Appearance-only matcher, no learning: (F', N, 2) row, col of the frame-k token whose patch
    (`window` px, default two tokens, centred on the token) has the highest normalised
    cross-correlation with the patch centred on the query point, for every frame but the query's.
    It answers at the probe's resolution: one token per query."""
    window = window or 2 * token_size
    F, H, W, _ = frames.shape
    h, w = H // token_size, W // token_size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centres = np.stack([cols.ravel(), rows.ravel()], -1) * token_size + (token_size - 1) / 2   # (P, 2) x, y
    q = patch_descriptors(frames[query_frame], np.nan_to_num(query_xy), window)             # (N, C)
    others = [i for i in range(F) if i != query_frame]
    cand = np.stack([patch_descriptors(frames[i], centres, window) for i in others])         # (F', P, C)
    best = np.einsum("nc,fpc->fnp", q, cand).argmax(-1)                                      # (F', N)
    return np.stack([best // w, best % w], -1)


def pair_references(seq, token_size: int, deltas=DELTAS) -> dict[str, np.ndarray]:
    """Per (frame k, point) pair of one sequence: valid, dt, and each reference's correctness per delta.

    Keys: valid (F', N) bool, dt (F',), motion (F', N) tokens, and for each delta d the arrays
    uniform@d (expected hit rate of a uniform guess), same_position@d and appearance@d (bool).
    """
    H, W = seq.frames.shape[1:3]
    h, w = H // token_size, W // token_size
    qf = seq.query_frame
    tok = pixels_to_tokens(torch.as_tensor(seq.tracks, dtype=torch.float64), float(token_size))   # (F, N, 2) x, y
    vis = torch.as_tensor(seq.visible, dtype=torch.bool) & torch.isfinite(tok).all(-1)
    others = [i for i in range(tok.shape[0]) if i != qf]
    valid = (vis[qf][None] & vis[others]).numpy()                                            # (F', N)
    gt = tok[others]                                                                         # (F', N, 2)
    q = torch.nan_to_num(tok[qf]).add(0.5).floor().long()
    q_rc = torch.stack([q[:, 1].clamp(0, h - 1), q[:, 0].clamp(0, w - 1)], -1)              # (N, 2) row, col
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = torch.stack([rows.reshape(-1), cols.reshape(-1)], -1)                            # (h*w, 2)
    app = torch.from_numpy(ncc_predictions(seq.frames, seq.tracks[qf], qf, token_size))        # (F', N, 2)
    out = {"valid": valid, "n_query": int(vis[qf].sum()), "dt": np.abs(seq.frame_index[others] - seq.frame_index[qf]),
           "motion": torch.linalg.norm(gt - tok[qf][None], dim=-1).numpy()}
    for d in deltas:
        out[f"uniform@{d:g}"] = within_delta(cells[:, None, None], gt[None], d).double().mean(0).numpy()
        out[f"same_position@{d:g}"] = within_delta(q_rc[None].expand(len(others), -1, -1), gt, d).numpy()
        out[f"appearance@{d:g}"] = within_delta(app, gt, d).numpy()
    return out


def benchmark_references(tracks_path: str | Path, token_size: int = TOKEN_PX, deltas=DELTAS,
                         dt_bins=DT_BINS, max_dt: int = 24, same_keys: set[str] | None = None) -> dict:
    """The model-free references of a test split (issue 9, sec. 1), from its tracks and frames alone.

    For each reference (uniform, same_position, appearance) and delta: `mean` (mean over sequences
    of each sequence's PCK, how the probe reports a model), `pooled` (over all valid pairs) and
    pooled per Delta-t bin. Also: point motion per bin, the fraction of query points still
    visible at each Delta-t, and the number of sequences from same-texture scenes.
    """
    per = []
    with TrackReader(tracks_path) as reader:
        keys = [reader.sequence_keys[i] for i in range(len(reader))]
        for i in range(len(reader)):
            per.append(pair_references(reader[i], token_size, deltas))
    valid = np.concatenate([p["valid"].ravel() for p in per])
    dt = np.concatenate([np.repeat(p["dt"], p["valid"].shape[1]) for p in per])
    motion = np.concatenate([p["motion"].ravel() for p in per])
    res: dict = {"token_px": token_size, "deltas": list(deltas), "num_sequences": len(per),
                 "num_pairs": int(valid.sum())}
    for name in ("uniform", "same_position", "appearance"):
        res[name] = {}
        for d in deltas:
            k = f"{name}@{d:g}"
            vals = np.concatenate([p[k].ravel() for p in per]).astype(float)
            seq_pck = [float(p[k][p["valid"]].mean()) for p in per if p["valid"].any()]
            res[name][f"{d:g}"] = {
                "mean": float(np.mean(seq_pck)), "pooled": float(vals[valid].mean()),
                "by_dt": {f"{lo}-{hi}": float(vals[valid & (dt >= lo) & (dt <= hi)].mean()) for lo, hi in dt_bins}}
    res["motion_by_dt"] = [{"dt": [lo, hi], "median": float(np.median(motion[valid & (dt >= lo) & (dt <= hi)])),
                            "within_2": float((motion[valid & (dt >= lo) & (dt <= hi)] <= 2).mean())}
                           for lo, hi in dt_bins]
    # visibility: of the query points visible in the query frame, the share still visible at Delta-t
    seen = {}
    for p in per:
        n_q = p["n_query"]
        for j, t in enumerate(p["dt"]):
            a, b = seen.get(int(t), (0, 0))
            seen[int(t)] = (a + int(p["valid"][j].sum()), b + n_q)
    res["visible_at_dt"] = {str(t): a / b for t, (a, b) in sorted(seen.items()) if b}
    res["visible_at_max_dt"] = res["visible_at_dt"].get(str(max_dt))
    if same_keys is not None:
        res["same_texture_sequences"] = sum(k in same_keys for k in keys)
    return res
