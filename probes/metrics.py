"""Correspondence metrics on captured attention Q/K (paper Sec. 5.3, eq. 10-13).

Pure functions on tensors; no model in here. ``gasp.capture.qk.capture_qk`` gives the
tensors, ``probes/pck.py`` drives them layer by layer.

Shape vocabulary:
    L  LLM layers            H  query heads        Hkv  key/value heads (GQA)
    G  = H // Hkv            F  frames             F'   = F - 1 (frames other than the query frame)
    N  query points          h x w  token grid of one frame, P = h * w
    D  head dim              S  sequences          T    number of Delta-t bins

Conventions:
    * Pixels: (x, y), (0, 0) is the centre of the top-left pixel (``tracks/types.py``).
    * Tokens: (x, y) = (col, row) in token units with token centres at integers, so
      token (c, r) covers pixel centres with ``floor((x + 0.5) / tw) == c``.
    * Predictions are grid indices, returned as (row, col) ``long``.
    * GQA: query head ``h`` is compared with KV head ``h // G`` (transformers'
      ``repeat_kv``, which is ``repeat_interleave`` on the head dim).

Definitions (docs/METHOD.md sec. 1):
    * Similarity (eq. 10): cosine between the frame-1 query descriptor at the query
      point's token and every key descriptor of frame k. Heads: ``"mean"`` averages the
      per-head cosines (default), ``"concat"`` is the cosine of all heads concatenated
      (K repeated to H heads), ``"per-head"`` keeps H.
    * Prediction (eq. 11): argmax of the similarity over frame k's h x w grid.
    * Peers' convention (``match="softmax-mean"``, ``--match softmax-mean``): DiffTrack's
      map, the mean over query heads of softmax(q . k / sqrt(D)) over frame k's tokens.
      Unlike the cosine it weighs heads by how peaked their attention is and keeps the
      dot product's scale. ``bidirectional`` (``--bidirectional``) averages the map with
      the k -> query-frame direction before the argmax, as DiffTrack does; that direction
      asks which frame-k token, used as a query, matches the query point's key best.
    * Correct: Euclidean distance in token units to the ground truth <= delta (2 by
      default; a 1e-6 token slack absorbs float rounding, so exactly 2 counts). Only
      points visible in the query frame and in frame k count.
    * Confidence (eq. 13): per head, max over frame k's P tokens of
      softmax(q . k / sqrt(D)), then averaged over the H heads. Computed from the
      tensors, restricted to frame k; never read from the model's (causal) attention.
      It is the same in every heads mode.
    * rho (eq. 13): Pearson correlation of confidence and 0/1 correctness, NaN where
      either side is constant or there are fewer than 2 predictions.
    * Temporal robustness: PCK per Delta-t = |frame_index[k] - frame_index[query]|,
      Y(Delta-t) = PCK(Delta-t) / PCK(1).

Aggregation across sequences (``summarize``): PCK is mean +- std (ddof 0) of the
per-sequence PCK; rho and PCK(Delta-t) are pooled over every valid prediction of every
sequence, as the paper computes rho per layer over its N predictions. Per-sequence rho
is kept as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as Fn

HeadsMode = Literal["mean", "concat", "per-head"]
HEADS_MODES = ("mean", "concat", "per-head")
MATCH_MODES = ("cosine-mean", "softmax-mean")
_DIST_SLACK = 1e-6  # token units: absorbs float error so a distance of exactly delta counts


def pixels_to_tokens(xy: torch.Tensor, token_size: float | tuple[float, float]) -> torch.Tensor:
    """Pixel (x, y) (..., 2) -> token (x, y) (..., 2), token centres at integers: (x + 0.5) / tw - 0.5.

    ``token_size`` is one token's size in the tracks' pixels: a number, or (th, tw) in the
    order of ``gasp.adapters.VisualLayout.token_size``.
    """
    th, tw = (token_size, token_size) if isinstance(token_size, (int, float)) else token_size
    size = torch.tensor([tw, th], dtype=torch.float64, device=xy.device)
    return (xy.to(torch.float64) + 0.5) / size - 0.5



def _group_queries(q: torch.Tensor, hkv: int) -> torch.Tensor:
    """(H, N, D) -> (Hkv, G, N, D): group query heads by the KV head they attend with."""
    h = q.shape[0]
    if h % hkv:
        raise ValueError(f"{h} query heads are not a multiple of {hkv} KV heads")
    return q.reshape(hkv, h // hkv, *q.shape[1:])


def similarity(q: torch.Tensor, k: torch.Tensor, heads: HeadsMode = "mean") -> torch.Tensor:
    """Cosine similarity of eq. 10.

    q: (H, N, D) query descriptors; k: (Hkv, F, P, D) key descriptors.
    Returns (F, N, P) for "mean"/"concat", (H, F, N, P) for "per-head". float32.
    """
    if heads not in HEADS_MODES:
        raise ValueError(f"heads must be one of {HEADS_MODES}, got {heads!r}")
    q, k = q.float(), k.float()
    hkv = k.shape[0]
    qg = _group_queries(q, hkv)                                    # (Hkv, G, N, D)
    if heads == "concat":
        # <concat q, concat repeat_kv(k)> = sum over KV heads of (sum of its group's q) . k
        dot = torch.einsum("knd,kfpd->fnp", qg.sum(1), k)          # (F, N, P)
        q_norm = q.pow(2).sum((0, 2)).sqrt()                       # (N,)
        k_norm = (k.pow(2).sum((0, 3)) * qg.shape[1]).sqrt()       # (F, P), each KV head repeated G times
        return dot / (q_norm[None, :, None] * k_norm[:, None, :]).clamp_min(1e-12)
    qn, kn = Fn.normalize(qg, dim=-1), Fn.normalize(k, dim=-1)
    if heads == "mean":
        # mean of per-head cosines; summing a group's unit queries first saves a G factor
        return torch.einsum("knd,kfpd->fnp", qn.sum(1), kn) / q.shape[0]
    per_head = torch.einsum("kgnd,kfpd->kgfnp", qn, kn)           # (Hkv, G, F, N, P)
    return per_head.flatten(0, 1)                                  # (H, F, N, P)


def confidence(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Confidence of eq. 13: head-averaged max_j softmax_j(q . k_j * scale) over frame k's tokens.

    q: (H, N, D); k: (Hkv, F, P, D); scale defaults to 1/sqrt(D). Returns (F, N) float32.
    """
    q, k = q.float(), k.float()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.einsum("kgnd,kfpd->kgfnp", _group_queries(q, k.shape[0]), k) * scale
    return logits.softmax(-1).amax(-1).mean((0, 1))               # (F, N)


def softmax_mean(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """DiffTrack's matching map: mean over query heads of softmax_j(q . k_j * scale) over frame k's tokens.

    q: (H, N, D); k: (Hkv, F, P, D); scale defaults to 1/sqrt(D). Returns (F, N, P) float32.
    """
    q, k = q.float(), k.float()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.einsum("kgnd,kfpd->kgfnp", _group_queries(q, k.shape[0]), k) * scale
    return logits.softmax(-1).mean((0, 1))


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float | None = None,
                    chunk: int = 256, k_query: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Head-mean softmax(q . k * scale) over frame k's tokens (F', N, P), each query head's eq. 13
    confidence (H, F', N), and with ``k_query`` (Hkv, P0, D) the query frame's keys, each head's
    DiffTrack cross-frame attention mass (H, F', N); their head means are eq. 13 and DiffTrack's score.

    The three share one set of logits: the confidence is the head mean of each head's maximum
    probability (:func:`confidence`), the map the head mean of the probabilities
    (:func:`softmax_mean`). The mass is the share of attention that a query puts on frame k when it
    attends over the query frame's tokens and frame k's together, head-averaged:
    sigmoid(logsumexp_k - logsumexp_query), no (P0 + P) matrix formed. Points go ``chunk`` at a time,
    so the per-head probabilities held at once are (Hkv, G, F', chunk, P). q: (H, N, D); k: (Hkv, F', P, D).
    """
    q, k = q.float(), k.float()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qg = _group_queries(q, k.shape[0])                                    # (Hkv, G, N, D)
    maps, confs, masses = [], [], []
    for s in range(0, max(q.shape[1], 1), chunk):
        logits = torch.einsum("kgnd,kfpd->kgfnp", qg[:, :, s:s + chunk], k) * scale
        probs = logits.softmax(-1)
        maps.append(probs.mean((0, 1)))                                    # (F', n, P)
        confs.append(probs.amax(-1).flatten(0, 1))                         # (H, F', n)
        if k_query is not None:
            own = (torch.einsum("kgnd,kpd->kgnp", qg[:, :, s:s + chunk], k_query.float()) * scale).logsumexp(-1)
            masses.append(torch.sigmoid(logits.logsumexp(-1) - own[:, :, None]).flatten(0, 1))   # (H, F', n)
    return torch.cat(maps, 1), torch.cat(confs, 2), (torch.cat(masses, 2) if masses else None)


def reverse_map(q_other: torch.Tensor, k_query: torch.Tensor, tokens: torch.Tensor, match: str,
                scale: float | None = None) -> torch.Tensor:
    """The k -> query-frame direction, read at each query point: (F', N, P).

    Entry (f, i, j) is how well frame f's token j, as a query, matches query point i's token
    in the query frame, as a key: the head-mean cosine of q_f_j and k_query[tokens[i]], or for
    "softmax-mean" the head-mean softmax of q_f_j . k over all query-frame tokens, at tokens[i].
    q_other: (H, F', P, D); k_query: (Hkv, P0, D); tokens: (N,) flat indices into P0.
    """
    hq, fo, p, d = q_other.shape
    if match == "cosine-mean":
        keys = k_query.index_select(1, tokens)[:, None]                            # (Hkv, 1, N, D)
        return similarity(q_other.flatten(1, 2), keys, "mean")[0].unflatten(0, (fo, p)).transpose(1, 2)
    rows = []
    for f in range(fo):                                      # one frame at a time: (Hkv, G, P, P0) at most
        rows.append(softmax_mean(q_other[:, f], k_query[:, None], scale)[0].index_select(-1, tokens))  # (P, N)
    return torch.stack(rows).transpose(1, 2)



def within_delta(pred_rc: torch.Tensor, gt_xy: torch.Tensor, delta: float = 2.0) -> torch.Tensor:
    """Bool (...): Euclidean distance between pred (row, col) and gt token (x, y) <= delta."""
    d_col = pred_rc[..., 1].to(torch.float64) - gt_xy[..., 0].to(torch.float64)
    d_row = pred_rc[..., 0].to(torch.float64) - gt_xy[..., 1].to(torch.float64)
    return torch.hypot(d_col, d_row) <= delta + _DIST_SLACK


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the trailing ``valid.ndim`` dims where valid; NaN if none (float64)."""
    dims = tuple(range(-valid.ndim, 0))
    v = valid.expand(values.shape)
    total = v.sum(dims)
    hits = (values.to(torch.float64) * v).sum(dims)
    return torch.where(total > 0, hits / total.clamp_min(1), torch.nan)


def pck(pred_rc: torch.Tensor, gt_xy: torch.Tensor, valid: torch.Tensor, delta: float = 2.0) -> torch.Tensor:
    """PCK@delta over the trailing ``valid.ndim`` dims (e.g. (F', N)); leading dims (heads) kept.

    pred_rc: (..., F', N, 2) row, col; gt_xy: (F', N, 2) token x, y; valid: (F', N) bool.
    NaN where no point is valid.
    """
    return masked_mean(within_delta(pred_rc, gt_xy, delta), valid)


def pearson(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson rho (eq. 13) along the last dim, over entries where ``valid``; (...,) float64.

    NaN (silently) where fewer than 2 valid entries or either side is constant there.
    """
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    v = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.expand(x.shape)
    n = v.sum(-1)
    big = torch.finfo(torch.float64).max
    # exact constancy test (max == min) so float noise in a mean can't fake a variance
    const_x = torch.where(v, x, -big).amax(-1) == torch.where(v, x, big).amin(-1)
    const_y = torch.where(v, y, -big).amax(-1) == torch.where(v, y, big).amin(-1)
    nn = n.clamp_min(1).unsqueeze(-1)
    xc = torch.where(v, x - (x * v).sum(-1, keepdim=True) / nn, 0.0)
    yc = torch.where(v, y - (y * v).sum(-1, keepdim=True) / nn, 0.0)
    sxy, sxx, syy = (xc * yc).sum(-1), (xc * xc).sum(-1), (yc * yc).sum(-1)
    ok = (n >= 2) & ~const_x & ~const_y & (sxx > 0) & (syy > 0)
    rho = sxy / torch.where(ok, (sxx * syy).sqrt(), 1.0)
    return torch.where(ok, rho.clamp(-1.0, 1.0), torch.nan)


def dt_counts(
    correct: torch.Tensor, valid: torch.Tensor, dt: torch.Tensor, dts: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct and valid counts per Delta-t bin: (..., T) each, float64.

    correct: (..., F', N) bool; valid: (F', N) bool; dt: (F',) frame distance of each
    frame to the query frame, or (F', N) when points have their own query frames. Pairs
    whose Delta-t is not in ``dts`` are ignored.
    """
    dt = dt.reshape(-1, 1) if dt.ndim == 1 else dt                                        # (F', 1) or (F', N)
    onehot = (dt.unsqueeze(-1) == torch.as_tensor(list(dts), device=dt.device)).to(torch.float64)  # (F', 1|N, T)
    onehot = onehot.expand(*valid.shape, len(dts))                                         # (F', N, T)
    v = valid.to(torch.float64)
    hits = torch.einsum("...fn,fn,fnt->...t", correct.to(torch.float64), v, onehot)
    total = torch.einsum("fn,fnt->t", v, onehot).expand(hits.shape)
    return hits, total



def dt_normalize(pck_dt: torch.Tensor, dts: Sequence[int]) -> torch.Tensor:
    """Y(Delta-t) = PCK(Delta-t) / PCK(1) along the last dim; all NaN if PCK(1) is 0/NaN or 1 not in dts."""
    dts = list(dts)
    if 1 not in dts:
        return torch.full_like(pck_dt, torch.nan)
    base = pck_dt[..., dts.index(1)].unsqueeze(-1)
    ok = torch.isfinite(base) & (base > 0)
    return torch.where(ok, pck_dt / torch.where(ok, base, 1.0), torch.nan)


def _ratio(hits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    return torch.where(total > 0, hits / total.clamp_min(1), torch.nan)


@dataclass
class LayerResult:
    """One layer of one sequence: every prediction the probe makes."""

    correct: torch.Tensor          # (F', N) bool, or (H, F', N) for heads="per-head"
    conf: torch.Tensor             # (F', N) float32 head-averaged confidence (eq. 13)
    valid: torch.Tensor            # (F', N) bool: visible in the query frame and in frame k
    pred_rc: torch.Tensor          # (F', N, 2) long row, col, or (H, F', N, 2)
    dt: torch.Tensor | None = None  # (F',) long |frame_index[k] - frame_index[query]|, or (F', N) per point
    correct_at: dict[float, torch.Tensor] | None = None  # extra thresholds: delta -> (F', N) bool, like correct
    sim: torch.Tensor | None = None  # (F', M, h, w) head-mean cosine maps of the points asked for (sim_points)
    within_px: torch.Tensor | None = None  # (F', N) uint8 TAP-Vid δ bits (probes.tapvid_metrics.within_bits)
    mass: torch.Tensor | None = None   # (F', N) cross-frame attention mass (DiffTrack's attention score)
    conf_head: torch.Tensor | None = None  # (H, F', N) per-head confidence and mass, heads="per-head" only
    mass_head: torch.Tensor | None = None
    correct_px: torch.Tensor | None = None  # (F', N) bool: within pck_px pixels (evaluate_layer)


def merge_results(parts: Sequence[LayerResult]) -> LayerResult:
    """One layer's results of one sequence whose points were probed in groups (one per query frame).

    Concatenates along the points; each group's Delta-t (F',) becomes (F', N_g) first, since
    row f of a group is the f-th frame other than *its* query frame.
    """
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: torch.cat([getattr(r, name) for r in parts], -1)  # noqa: E731
    dts = [r.dt.reshape(-1, 1).expand_as(r.valid) if r.dt is not None and r.dt.ndim == 1 else r.dt for r in parts]
    return LayerResult(correct=cat("correct"), conf=cat("conf"), valid=cat("valid"), pred_rc=torch.empty(0),
                       dt=None if any(d is None for d in dts) else torch.cat(dts, -1))


@dataclass
class Matches:
    """Stage 1 of a layer: the query points' descriptors matched against every other frame's tokens.

    scores: the map whose argmax is the prediction, (F', N, P), or (H, F', N, P) for heads="per-head";
    probs and conf: the head-mean attention softmax (F', N, P) and eq. 13's confidence (F', N);
    others: (F',) the frames other than the query frame; grid: (h, w); queries (H, N, D) and keys
    (Hkv, F', P, D) float32: the descriptors matched, kept for maps of a few points.
    """

    scores: torch.Tensor
    probs: torch.Tensor
    conf: torch.Tensor
    others: torch.Tensor
    grid: tuple[int, int]
    queries: torch.Tensor
    keys: torch.Tensor
    mass: torch.Tensor | None = None   # (F', N) DiffTrack's cross-frame attention mass (attention_probs)
    conf_head: torch.Tensor | None = None   # (H, F', N) per query head, for heads="per-head"
    mass_head: torch.Tensor | None = None   # (H, F', N)


def query_tokens(tok: torch.Tensor, query_frame: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) (N,) each of the query-frame token that contains each point; tok (F, N, 2) token x, y."""
    h, w = grid
    q_xy = torch.nan_to_num(tok[query_frame]).add(0.5).floor().long()  # (N, 2) token containing the point
    return q_xy[:, 1].clamp(0, h - 1), q_xy[:, 0].clamp(0, w - 1)


def match_layer(q: torch.Tensor, k: torch.Tensor, q_row: torch.Tensor, q_col: torch.Tensor, query_frame: int = 0,
                heads: HeadsMode = "mean", match: str = "cosine-mean", bidirectional: bool = False,
                scale: float | None = None) -> Matches:
    """Stage 1: the similarity map of each query point over every other frame (eq. 10, or a peer's map).

    q: (H, F, h, w, D), k: (Hkv, F, h, w, D); q_row, q_col (N,) the query tokens.
    ``match`` and ``bidirectional`` choose the map whose argmax is the prediction:
        "cosine-mean"   the paper's eq. 10 (default; ``heads`` picks how heads combine)
        "softmax-mean"  DiffTrack's: the mean over query heads of softmax(q . k / sqrt(D)) over
                        frame k's tokens (``heads`` must be "mean")
        bidirectional   the map averaged with the k -> query-frame direction (``reverse_map``),
                        as DiffTrack averages 0 -> k and k -> 0 before its argmax
    Confidence (eq. 13) is the same whatever the map.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    custom = match != "cosine-mean" or bidirectional
    if custom and heads != "mean":
        raise ValueError(f"match={match!r}{' with bidirectional' if bidirectional else ''} averages over heads; "
                         f"it needs heads='mean', got {heads!r}")
    f, h, w = q.shape[1:4]
    q1 = q[:, query_frame, q_row, q_col]                               # (H, N, D)
    others = torch.tensor([i for i in range(f) if i != query_frame], dtype=torch.long, device=k.device)
    kf = k.index_select(1, others).flatten(2, 3).float()               # (Hkv, F', P, D)
    probs, conf_h, mass_h = attention_probs(q1, kf, scale, k_query=k[:, query_frame].flatten(1, 2))  # (F', N, P), (H, F', N) x2
    if not custom:
        scores = similarity(q1, kf, heads)                             # (F', N, P) or (H, F', N, P)
    else:
        scores = similarity(q1, kf, "mean") if match == "cosine-mean" else probs                   # (F', N, P)
        if bidirectional:
            tokens = (q_row * w + q_col).to(q.device)
            back = reverse_map(q.index_select(1, others).flatten(2, 3), k[:, query_frame].flatten(1, 2), tokens,
                               match, scale)
            scores = 0.5 * (scores + back)
    per_head = heads == "per-head"
    return Matches(scores=scores, probs=probs, conf=conf_h.mean(0), others=others, grid=(h, w), queries=q1, keys=kf,
                   mass=mass_h.mean(0), conf_head=conf_h if per_head else None, mass_head=mass_h if per_head else None)


def predict(m: Matches) -> torch.Tensor:
    """Stage 2: the predicted token (row, col) of each point in each frame, the map's argmax: (F', N, 2),
    or (H, F', N, 2) per head."""
    idx = m.scores.argmax(-1)
    return torch.stack((idx // m.grid[1], idx % m.grid[1]), dim=-1)


def score_layer(m: Matches, pred_rc: torch.Tensor, tok: torch.Tensor, visible: torch.Tensor, query_frame: int,
                delta: float = 2.0, extra_deltas: Sequence[float] = (), frame_index: torch.Tensor | None = None,
                ) -> LayerResult:
    """Stage 3: PCK@delta correctness (and at ``extra_deltas``), validity and Delta-t of each prediction.

    tok (F, N, 2) token x, y; visible (F, N) bool, already False where the point is not finite.
    A prediction is valid where the point is visible in the query frame and in frame k.
    """
    others = m.others
    gt = tok.index_select(0, others.to(tok.device))                    # (F', N, 2)
    valid = visible[query_frame].unsqueeze(0) & visible.index_select(0, others.to(visible.device))
    gt, valid = gt.to(pred_rc.device), valid.to(pred_rc.device)
    correct = within_delta(pred_rc, gt, delta) & valid
    correct_at = {float(d): within_delta(pred_rc, gt, d) & valid for d in extra_deltas}
    dt = None
    if frame_index is not None:
        fi = torch.as_tensor(frame_index, dtype=torch.long)
        dt = (fi.index_select(0, others.cpu()) - fi[query_frame]).abs()
    return LayerResult(correct=correct, conf=m.conf, valid=valid, pred_rc=pred_rc, dt=dt,
                       correct_at=correct_at or None, mass=m.mass, conf_head=m.conf_head, mass_head=m.mass_head)


def evaluate_layer(
    q: torch.Tensor,
    k: torch.Tensor,
    tracks: torch.Tensor,
    visible: torch.Tensor,
    token_size: float | tuple[float, float],
    frame_index: torch.Tensor | None = None,
    query_frame: int = 0,
    heads: HeadsMode = "mean",
    delta: float = 2.0,
    scale: float | None = None,
    extra_deltas: Sequence[float] = (),
    sim_points: Sequence[int] = (),
    match: str = "cosine-mean",
    bidirectional: bool = False,
    image_size: tuple[int, int] | None = None,
    refine: str = "softargmax",
    pck_px: tuple[float, tuple[int, int]] | None = None,
) -> LayerResult:
    """Everything the probe needs from one layer of one sequence: :func:`match_layer`, :func:`predict`,
    :func:`score_layer`, then TAP-Vid's pixel metrics of the refined positions.

    q: (H, F, h, w, D) and k: (Hkv, F, h, w, D) visual-token Q/K of the layer (batch
    removed); tracks: (F, N, 2) pixel x, y; visible: (F, N) bool; token_size: one
    token's size in the tracks' pixels, a number or (th, tw) (``VisualLayout.token_size``);
    frame_index: (F,) source-video frame numbers.
    Query point i reads the query-frame token that contains tracks[query_frame, i].
    ``sim_points`` (M indices into N) also returns their matching maps over every other
    frame (the eq.-10 head-mean cosine by default), for the match explorer (``plots/matches.py``).
    ``match`` and ``bidirectional``: see :func:`match_layer`.

    With ``image_size`` (H, W) of the tracks' frames, ``within_px`` holds TAP-Vid's δ bits of
    each prediction (``probes.tapvid_metrics``), its position refined below one token by
    ``refine`` ("softargmax", the default, or "none": the argmax token's centre). With ``pck_px``
    (x, (H', W')) also ``correct_px``: the same position within x px (strict <) once both are scaled to
    an H' x W' frame (DiffTrack's PCK at 8 px at 480 x 720).
    """
    hq, f, h, w, d = q.shape
    if k.shape[1:] != (f, h, w, d):
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on (F, h, w, D)")
    if tracks.shape[:1] != (f,) or visible.shape != tracks.shape[:2]:
        raise ValueError(f"tracks {tuple(tracks.shape)} / visible {tuple(visible.shape)} do not match {f} frames")
    tok = pixels_to_tokens(tracks, token_size)                         # (F, N, 2) token x, y
    visible = visible.to(torch.bool) & torch.isfinite(tok).all(-1)
    q_row, q_col = query_tokens(tok, query_frame, (h, w))
    m = match_layer(q, k, q_row, q_col, query_frame, heads, match, bidirectional, scale)
    pred_rc = predict(m)
    res = score_layer(m, pred_rc, tok, visible, query_frame, delta, extra_deltas, frame_index)
    if len(sim_points):
        sel = torch.as_tensor(list(sim_points), dtype=torch.long, device=m.scores.device)
        if match != "cosine-mean" or bidirectional:                    # the peer's map the argmax read
            sim = m.scores.index_select(1, sel)
        else:                                                          # eq. 10's head-mean cosine, those points only
            sim = similarity(m.queries.index_select(1, sel), m.keys, "mean")
        res.sim = sim.unflatten(-1, (h, w))                            # (F', M, h, w)
    if image_size is not None and heads != "per-head":
        from probes import tapvid_metrics as tv

        if refine not in tv.REFINE_MODES:
            raise ValueError(f"refine must be one of {tv.REFINE_MODES}, got {refine!r}")
        pos = tv.refine_positions(m.probs, pred_rc, (h, w)) if refine == "softargmax" else pred_rc.flip(-1).double()
        th, tw = (token_size, token_size) if isinstance(token_size, (int, float)) else token_size
        size = torch.tensor([tw, th], dtype=torch.float64, device=pos.device)
        pred_px = (pos + 0.5) * size - 0.5                                 # (F', N, 2) pixel x, y
        gt_px = tracks.index_select(0, m.others.to(tracks.device)).to(pos.device)
        res.within_px = tv.within_bits(pred_px, gt_px, image_size) * res.valid.to(torch.uint8)
        if pck_px is not None:
            x, size_hw = pck_px
            res.correct_px = tv.within_bits(pred_px, gt_px, image_size, (x,), tuple(size_hw)).bool() & res.valid
    return res


def reference_pck(tracks: torch.Tensor, visible: torch.Tensor, query_frame: int, grid: tuple[int, int],
                  token_size: float | tuple[float, float], delta: float = 2.0) -> dict[str, float]:
    """PCK@delta of two predictors that never look at the model, for one sequence.

    tracks (F, N, 2) pixel x, y; visible (F, N). Scored as ``evaluate_layer`` scores a layer:
        uniform        expected PCK of a token drawn uniformly from frame k's h x w grid (chance)
        same_position  PCK of predicting the query's own token in every frame (a purely
                       positional match: what the probe would get from a model that ignores content)
    NaN when no point is visible in the query frame and another frame.
    """
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
    n = int(valid.sum())
    if n == 0:
        return {"uniform": math.nan, "same_position": math.nan}
    return {"uniform": float((hit.double().mean(0) * valid).sum() / n), "same_position": float((same & valid).sum() / n)}


def summarize(
    results: Sequence[Sequence[LayerResult]], dts: Sequence[int] = tuple(range(1, 25))
) -> dict[str, Any]:
    """Reduce per-sequence, per-layer results (``results[s][l]``) to the probe's numbers.

    Returned tensors are float64 with a leading L axis; heads="per-head" results add an
    H axis after L everywhere. Keys: pck_seq (S, L), pck_mean / pck_std (L,) across
    sequences that have a valid point (std with ddof 0), rho (L,) pooled over all valid
    predictions, rho_seq (S, L), dts (T,), dt_pck and dt_norm (L, T) pooled per bin
    (absent when no result carries dt), num_sequences, num_points (query points) and
    num_predictions (valid pairs).
    """
    if not results:
        raise ValueError("summarize needs at least one sequence")
    num_layers = {len(r) for r in results}
    if len(num_layers) != 1:
        raise ValueError(f"sequences have different numbers of layers: {sorted(num_layers)}")
    pck_seq, rho_seq, flat = [], [], []
    hits = total = None
    with_dt = all(lr.dt is not None for r in results for lr in r)
    for seq in results:
        correct = torch.stack([lr.correct.cpu() for lr in seq])        # (L, [H,] F', N)
        conf = torch.stack([lr.conf.cpu() for lr in seq])              # (L, F', N)
        valid = seq[0].valid.cpu()                                     # (F', N)
        if correct.ndim == 4:
            conf = conf.unsqueeze(1)                                   # (L, 1, F', N)
        pck_seq.append(masked_mean(correct, valid))
        rho_seq.append(pearson(conf.flatten(-2), correct.flatten(-2), valid.flatten()))
        flat.append((correct.flatten(-2), conf.flatten(-2), valid.flatten()))
        if with_dt:
            h_, t_ = dt_counts(correct, valid, seq[0].dt.cpu(), dts)
            hits, total = (h_, t_) if hits is None else (hits + h_, total + t_)
    pck_seq_t = torch.stack(pck_seq)                                   # (S, L[, H])
    ok = torch.isfinite(pck_seq_t)
    n_ok = ok.sum(0)
    mean = torch.where(ok, pck_seq_t, 0.0).sum(0) / n_ok.clamp_min(1)
    var = torch.where(ok, (pck_seq_t - mean) ** 2, 0.0).sum(0) / n_ok.clamp_min(1)
    correct_all = torch.cat([c for c, _, _ in flat], -1)
    conf_all = torch.cat([c.expand(*correct_all.shape[:-1], c.shape[-1]) for _, c, _ in flat], -1)
    valid_all = torch.cat([v for _, _, v in flat], -1)
    out: dict[str, Any] = {
        "pck_seq": pck_seq_t,
        "pck_mean": torch.where(n_ok > 0, mean, torch.nan),
        "pck_std": torch.where(n_ok > 0, var.sqrt(), torch.nan),
        "rho": pearson(conf_all, correct_all, valid_all),
        "rho_seq": torch.stack(rho_seq),
        "num_sequences": len(results),
        "num_points": int(sum(r[0].valid.shape[-1] for r in results)),
        "num_predictions": int(valid_all.sum()),
    }
    if with_dt:
        out["dts"] = torch.as_tensor(list(dts), dtype=torch.long)
        out["dt_pck"] = _ratio(hits, total)
        out["dt_norm"] = dt_normalize(out["dt_pck"], dts)
    return out


def nan_to_none(x: torch.Tensor | float) -> Any:
    """Tensor/float -> nested lists with NaN as None (JSON has no NaN)."""
    values = x.tolist() if isinstance(x, torch.Tensor) else x
    if isinstance(values, list):
        return [nan_to_none(v) for v in values]
    return None if isinstance(values, float) and math.isnan(values) else values
