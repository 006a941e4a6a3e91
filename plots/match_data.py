"""A probe run's predicted matches, read back for looking at them (the match explorer).

``probes/pck.py --out OUT`` stores, per sequence, the predicted token of every query point
in every frame at every layer (eq. 11) and, for a few points, the similarity maps (eq. 10).
This module joins them with the ground-truth tracks and sorts each valid prediction into
one of four places, for ``plots/matches.py`` (PNGs) and ``plots/match_page.py`` (HTML).

Shape vocabulary (as ``probes/metrics.py``):
    L  probed layers          F   frames with a token grid      F' = F - 1 (not the query frame)
    N  query points           M   points with similarity maps    h x w  token grid
    H x W  frame size in the tracks' pixels

Where a valid prediction goes (mutually exclusive; the first that applies wins):
    correct        within delta of the truth (the probe's own ``correct``)
    same_position  the query point's own token (row, col) in the query frame: positional bias
    border         grid row 0 or h-1, or column 0 or w-1
    elsewhere      anything else
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from probes.store import read_finished
from tracks.io import TrackReader

CATEGORIES = ("correct", "same_position", "border", "elsewhere")   # priority order
INVALID = -1


@dataclass
class ProbeRun:
    """OUT/results.json and the finished, not-skipped sequences of OUT/results.h5."""

    out: Path
    results: dict
    records: dict[str, dict]     # key -> {"arrays", "attrs"}, in results["sequences"] order

    @property
    def layers(self) -> list[int]:
        return list(self.results["layers"])

    @property
    def delta(self) -> float:
        return float(self.results.get("delta", 2.0))


@dataclass
class SequenceMatches:
    """One sequence's predictions next to its ground truth, frames indexed like the token grids."""

    key: str
    scene: str
    frames: np.ndarray           # (F, H, W, 3) uint8
    frame_index: np.ndarray      # (F,) source-video frame numbers
    query: int                   # index into F of the query frame
    others: np.ndarray           # (F',) indices into F: the order of every F' axis below
    gt_px: np.ndarray            # (F, N, 2) float pixel x, y of each query point
    visible: np.ndarray          # (F, N) bool
    valid: np.ndarray            # (F', N) bool: visible in the query frame and in frame k
    pred_rc: np.ndarray          # (L, F', N, 2) int64 predicted token row, col
    correct: np.ndarray          # (L, F', N) bool
    dt: np.ndarray               # (F',) |frame_index[k] - frame_index[query]|
    grid: tuple[int, int]        # (h, w)
    token_size: tuple[float, float]  # (th, tw) pixels per token
    sim_points: np.ndarray       # (M,) query point indices with maps (M may be 0)
    sim: np.ndarray | None       # (L, F', M, h, w) float32 cosine maps, or None

    @property
    def query_rc(self) -> np.ndarray:
        """(N, 2) int64 row, col of each query point's token in the query frame (as evaluate_layer)."""
        return query_tokens(self.gt_px[self.query], self.grid, self.token_size)

    def token_centre_px(self, rc: np.ndarray) -> np.ndarray:
        """Token (row, col) (..., 2) -> pixel (x, y) (..., 2) of its centre."""
        th, tw = self.token_size
        return np.stack([(rc[..., 1] + 0.5) * tw - 0.5, (rc[..., 0] + 0.5) * th - 0.5], -1)

    def categories(self) -> np.ndarray:
        """(L, F', N) int8 index into CATEGORIES, INVALID where not valid."""
        return categorize(self.pred_rc, self.correct, self.valid, self.query_rc, self.grid)


def query_tokens(xy: np.ndarray, grid: Sequence[int], token_size: Sequence[float]) -> np.ndarray:
    """Pixel (x, y) (N, 2) -> (N, 2) row, col of the token holding it, clamped to the grid."""
    th, tw = token_size
    tok = (np.nan_to_num(np.asarray(xy, dtype=np.float64)) + 0.5) / np.array([tw, th]) - 0.5  # (N, 2) x, y
    q = np.floor(tok + 0.5).astype(np.int64)
    return np.stack([q[:, 1].clip(0, grid[0] - 1), q[:, 0].clip(0, grid[1] - 1)], -1)


def categorize(pred_rc: np.ndarray, correct: np.ndarray, valid: np.ndarray, query_rc: np.ndarray,
               grid: Sequence[int]) -> np.ndarray:
    """Where each prediction goes: (L, F', N) int8 index into CATEGORIES, INVALID where not valid.

    pred_rc: (L, F', N, 2) row, col; correct: (L, F', N) bool; valid: (F', N) bool;
    query_rc: (N, 2) row, col of the query token; grid: (h, w).
    """
    h, w = grid
    r, c = pred_rc[..., 0], pred_rc[..., 1]
    same = (r == query_rc[:, 0]) & (c == query_rc[:, 1])                       # (L, F', N)
    border = (r == 0) | (r == h - 1) | (c == 0) | (c == w - 1)
    cat = np.select([correct, same, border], [0, 1, 2], default=3).astype(np.int8)
    return np.where(np.broadcast_to(valid, cat.shape), cat, np.int8(INVALID))


def where_summary(seqs: Iterable[SequenceMatches], layers: Sequence[int], delta: float) -> dict:
    """Pool every sequence's categories into per-layer counts and fractions of valid predictions.

    Besides the exclusive categories, ``any`` gives the fraction at the query's own token and
    on the border regardless of the priority (a same-position guess is often also correct),
    and ``border_tokens`` the share of the grid's tokens on its border (what chance gives).
    """
    counts = np.zeros((len(layers), len(CATEGORIES)), dtype=np.int64)
    same_any = np.zeros(len(layers), dtype=np.int64)
    border_any = np.zeros(len(layers), dtype=np.int64)
    border_tokens, grids = 0.0, 0
    for sm in seqs:
        cat, v = sm.categories(), sm.valid                                     # (L, F', N), (F', N)
        counts += np.stack([(cat == i).sum((1, 2)) for i in range(len(CATEGORIES))], -1)
        (h, w), (r, c) = sm.grid, (sm.pred_rc[..., 0], sm.pred_rc[..., 1])
        same_any += (((r == sm.query_rc[:, 0]) & (c == sm.query_rc[:, 1])) & v).sum((1, 2))
        border_any += (((r == 0) | (r == h - 1) | (c == 0) | (c == w - 1)) & v).sum((1, 2))
        border_tokens += 1 - max(h - 2, 0) * max(w - 2, 0) / (h * w)
        grids += 1
    total = counts.sum(1)
    n = np.maximum(total, 1)
    return {"layers": list(layers), "delta": delta, "priority": list(CATEGORIES),
            "num_predictions": total.tolist(),
            "fractions": {name: (counts[:, i] / n).tolist() for i, name in enumerate(CATEGORIES)},
            "counts": {name: counts[:, i].tolist() for i, name in enumerate(CATEGORIES)},
            "any": {"same_position": (same_any / n).tolist(), "border": (border_any / n).tolist()},
            "border_tokens": border_tokens / max(grids, 1)}


def load_run(out: str | Path) -> ProbeRun:
    out = Path(out)
    path = out / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass a probe output folder (python probes/pck.py --out DIR)")
    results = json.loads(path.read_text())
    done = read_finished(out)
    missing = [k for k in results["sequences"] if k not in done]
    if missing:
        raise FileNotFoundError(f"{out / 'results.h5'} lacks {len(missing)} sequence(s) listed in {path}, "
                                f"e.g. {missing[0]!r}")
    records = {k: done[k] for k in results["sequences"] if not done[k]["attrs"].get("skipped", False)}
    if not records:
        raise ValueError(f"{out / 'results.h5'} holds no sequence with a valid point to look at")
    if "pred" not in next(iter(records.values()))["arrays"]:
        raise ValueError(f"{out / 'results.h5'} has no per-point predictions (written by an older probe); "
                         f"rerun python probes/pck.py with a fresh --out")
    return ProbeRun(out=out, results=results, records=records)


def open_tracks(run: ProbeRun, path: str | Path | None = None) -> TrackReader:
    """The tracks the probe read (or ``path``), with a clear way out if they are gone."""
    path = Path(path or run.results["tracks"])
    if not path.exists():
        if run.results.get("config", {}).get("tracks") is None:
            how = (f"these are the probe's default synthetic tracks, cached under GASP_CACHE; rerun the same probe "
                   f"command (python probes/pck.py --out {run.out} with the options in {run.out / 'results.json'} "
                   f"'config'): every sequence is already finished, so it only re-renders them, deterministically")
        else:
            how = "restore that file, or pass a copy with --tracks"
        raise FileNotFoundError(f"tracks file {path} (read by the probe) is missing: {how}")
    return TrackReader(path)


def load_sequence(reader: TrackReader, key: str, rec: dict) -> SequenceMatches:
    """Join one sequence's stored predictions with its frames and tracks."""
    parent = str(rec["attrs"].get("parent", key))           # a query-frame group's record names its sequence
    if parent not in reader.sequence_keys:
        raise KeyError(f"sequence {parent!r} of the probe results is not in {reader.paths[0]}: wrong tracks file?")
    seq = reader[reader.sequence_keys.index(parent)]
    a = rec["arrays"]
    if "points" in a:
        seq = seq.subset(a["points"])
    fids, qg = a["frame_ids"], int(a["query_grid"])
    h, w = (int(v) for v in a["grid"])
    pred = a["pred"].astype(np.int64)                                            # (L, F', N) flat
    if pred.shape[-1] != seq.num_points:
        raise ValueError(f"sequence {key!r}: results have {pred.shape[-1]} points, the tracks {seq.num_points}")
    return SequenceMatches(
        key=key, scene=str(rec["attrs"].get("scene", seq.scene)), frames=seq.frames[fids],
        frame_index=np.asarray(seq.frame_index)[fids], query=qg,
        others=np.array([f for f in range(len(fids)) if f != qg]), gt_px=seq.tracks[fids].astype(np.float64),
        visible=seq.visible[fids].astype(bool), valid=a["valid"].astype(bool),
        pred_rc=np.stack([pred // w, pred % w], -1), correct=a["correct"].astype(bool), dt=a["dt"],
        grid=(h, w), token_size=tuple(float(v) for v in a["token_size"]),
        sim_points=a.get("sim_points", np.zeros(0, np.int32)).astype(np.int64),
        sim=a["sim"].astype(np.float32) if "sim" in a else None)


def select_sequences(run: ProbeRun, wanted: Sequence[str] | None) -> list[str]:
    """Keys for ``wanted`` (indices into results' sequences, keys or unique key parts); default: those with maps."""
    keys = list(run.records)
    if not wanted:
        with_maps = [k for k in keys if "sim" in run.records[k]["arrays"]]
        return with_maps or keys[:8]
    out = []
    for w in wanted:
        hits = [keys[int(w)]] if w.isdigit() and int(w) < len(keys) else \
            [k for k in keys if k == w] or [k for k in keys if w in k]
        if len(hits) != 1:
            raise ValueError(f"--sequences {w!r} matches {len(hits)} of the {len(keys)} probed sequences "
                             f"(give an index 0..{len(keys) - 1}, a key or a unique part of one), e.g. {keys[0]!r}")
        out.append(hits[0])
    return list(dict.fromkeys(out))


def select_layers(run: ProbeRun, wanted: Sequence[int] | None, most: int = 6) -> list[int]:
    """``wanted`` (checked against the probed layers), else all, or ``most`` spread ones with the peak."""
    layers = run.layers
    if wanted:
        bad = [v for v in wanted if v not in layers]
        if bad:
            raise ValueError(f"--layers {bad} were not probed; {run.out / 'results.json'} has layers {layers}")
        return list(dict.fromkeys(wanted))
    if len(layers) <= most:
        return layers
    pick = {layers[round(i)] for i in np.linspace(0, len(layers) - 1, most - 1)}
    if run.results.get("peak_layer") is not None:
        pick.add(run.results["peak_layer"])
    return sorted(pick)
