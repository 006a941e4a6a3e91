"""GASP geometric losses: InfoNCE correspondence (eq. 5) and soft-argmax depth (eq. 6-8).

Pure functions of one sequence's head embeddings; every layer is handled in one batched
pass. The trainer combines them as L = L_LM + lambda_c L_corr + lambda_d L_depth (eq. 9).

Shape vocabulary:
    L  layers carrying a correspondence head
    F  frames of the sequence (a = `query_frame` is the anchor frame, normally 0; an (N,) tensor
       gives each anchor its own frame, for tracks whose points were queried in different frames)
    N  anchors (query points placed in frame a)
    h x w  token grid per frame, P = h*w tokens per frame
    M  = F*P visual tokens of the sequence, frame-major then row-major
    E  embedding dim of the heads (unit vectors)
    H x W  depth-map pixels

Inputs shared by the losses:
    emb        (L, F, P, E) L2-normalised head embeddings (eq. 4)
    anchor_tok (N,)   long, token of frame a that contains anchor i
    gt_tok     (F, N) long, token of frame b that contains anchor i's ground truth
    valid      (F, N) bool, i visible in frames a and b (and confident enough); row a is ignored
    gt_depth   (F, N) depth of point i in frame b's camera (eq. 8's d_i^b)
    tok_depth  (F, P) depth pooled over each token's pixel box (`pool_token_depth`), NaN if none

Conventions fixed here (the paper leaves them open):
    * Similarities s = <e_i^a, e_j> / tau are computed once per anchor against all M tokens and
      shared by both losses (the paper: "we directly reuse the similarity computations").
    * InfoNCE denominator: every visual token of every frame except the anchor patch itself
      (paper Sec. 5.1). Each valid (anchor, b != a) pair is one term; L_corr averages them.
    * Depth candidates: frame b's tokens with a finite positive pooled depth. Tokens with no
      valid depth pixel are removed from the softmax support (not given depth 0, which would
      pull d_hat toward 0), so A renormalises over the tokens whose depth is known.
    * A depth term counts when the pair is valid, d_i^b is finite and > 0 and frame b has at
      least one candidate; L_depth averages over those.
    * Everything runs in float32 (float64 if the embeddings are float64) with autocast off.
    * Invalid entries are removed with `torch.where` on sanitised values, never NaN * 0, so an
      all-invalid batch gives exactly 0 with zero gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# InfoNCE temperature: 0.07 is the common choice for unit-norm embeddings (InstDisc, MoCo,
# CLIP's initial value). The paper does not report its tau.
DEFAULT_TAU = 0.07
DEFAULT_EPS = 1e-6

__all__ = ["DEFAULT_EPS", "DEFAULT_TAU", "depth_loss", "gasp_losses", "infonce_loss", "pool_token_depth"]


def token_of_pixel(pixels: int, tokens: int, device: torch.device | str | None = None) -> Tensor:
    """(pixels,) long: the token each pixel row (or column) falls in, floor((i + 0.5) * tokens / pixels), in
    integers so it is exact for any size (the box convention of ``pool_token_depth``)."""
    return (2 * torch.arange(pixels, device=device) + 1) * tokens // (2 * pixels)


def pool_token_depth(depth: Tensor, grid: tuple[int, int]) -> Tensor:
    """(F, H, W) depth map -> (F, h*w) mean depth of each token's pixel box (the d_j^b of eq. 7).

    Pixels that are NaN, inf, 0 or negative are ignored; a token with no valid pixel gets NaN.
    Box convention (the same as `gasp.adapters.VisualLayout` and the tracks' pixel-centre
    convention): token (r, c) covers y in [r*H/h - 0.5, (r+1)*H/h - 0.5) and likewise in x, so
    pixel row i belongs to token row floor((i + 0.5) * h / H). When H is not divisible by h the
    boxes differ by one pixel and are placed symmetrically; each pixel counts for exactly one
    token (a hard assignment by pixel centre, no fractional weights).
    """
    if depth.ndim != 3:
        raise ValueError(f"depth must be (F, H, W), got {tuple(depth.shape)}")
    h, w = int(grid[0]), int(grid[1])
    nf, H, W = depth.shape
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"grid {grid} must be between 1x1 and the depth size {H}x{W}")
    dev = depth.device
    # Integer form of floor((i + 0.5) * h / H), exact for any size.
    row, col = token_of_pixel(H, h, dev), token_of_pixel(W, w, dev)  # (H,), (W,)
    # Separable sums: the rows of each token row, then the columns of each token column. The first,
    # full-size step runs a few frames at a time (about 4 MB of float64 each), so its temporaries
    # stay small and are reused instead of being fresh 100 MB arrays (24 frames of
    # 540x960, 124 -> 28 ms in one measurement, the same float64 sums bit for bit).
    total = torch.zeros(nf, h, W, dtype=torch.float64, device=dev)  # (F, h, W)
    count = torch.zeros(nf, h, W, dtype=torch.int32, device=dev)
    step = max(1, (1 << 19) // (H * W))
    for s in range(0, nf, step):
        d = depth[s:s + step]
        # valid = finite and > 0; two comparisons say the same (NaN fails both, -inf the first)
        ok = (d > 0) & (d < float("inf"))
        total[s:s + step].index_add_(1, row, torch.where(ok, d, d.new_zeros(())).double())
        count[s:s + step].index_add_(1, row, ok.int())
    total = torch.zeros(nf, h, w, dtype=total.dtype, device=dev).index_add_(2, col, total).reshape(nf, h * w)
    count = torch.zeros(nf, h, w, dtype=torch.int32, device=dev).index_add_(2, col, count).reshape(nf, h * w)
    out = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
    out_dtype = depth.dtype if depth.is_floating_point() else torch.float32
    return out.to(out_dtype)


def _check(emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth, query_frame, tau) -> None:
    if emb.ndim != 4:
        raise ValueError(f"emb must be (L, F, P, E), got {tuple(emb.shape)}")
    _, nf, p, _ = emb.shape
    n = anchor_tok.shape[0] if anchor_tok.ndim == 1 else -1
    if n < 0:
        raise ValueError(f"anchor_tok must be (N,), got {tuple(anchor_tok.shape)}")
    for name, t, shape in (("gt_tok", gt_tok, (nf, n)), ("valid", valid, (nf, n)),
                           ("gt_depth", gt_depth, (nf, n)), ("tok_depth", tok_depth, (nf, p))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape} for emb {tuple(emb.shape)} and {n} anchors, "
                             f"got {tuple(t.shape)}")
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be bool, got {valid.dtype}")
    qf = torch.as_tensor(query_frame)
    if qf.ndim not in (0, 1) or (qf.ndim == 1 and qf.shape[0] != n):
        raise ValueError(f"query_frame must be an int or ({n},), got shape {tuple(qf.shape)}")
    if qf.numel() and not (0 <= int(qf.min()) and int(qf.max()) < nf):
        raise ValueError(f"query_frame {qf.tolist()} outside the {nf} frames")
    if nf * p < 2:
        raise ValueError("InfoNCE needs at least one visual token besides the anchor patch")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if n and (int(anchor_tok.min()) < 0 or int(anchor_tok.max()) >= p):
        raise ValueError(f"anchor_tok outside [0, {p})")
    if gt_tok is not None and bool(valid.any()):
        g = gt_tok[valid]
        if int(g.min()) < 0 or int(g.max()) >= p:
            raise ValueError(f"gt_tok of a valid pair outside [0, {p})")


def _chunk_sums(emb_flat: Tensor, anchors: Tensor, anc_flat: Tensor, pos_flat: Tensor, v_corr: Tensor,
                v_depth: Tensor, gt_depth: Tensor, cand: Tensor, cand_depth: Tensor,
                tau: float, eps: float, nf: int, want_corr: bool, want_depth: bool) -> tuple[Tensor, Tensor]:
    """Per-layer sums of the loss terms of one anchor chunk (n anchors).

    emb_flat (L, M, E); anchors (L, n, E) their embeddings (gathered once outside, so each
    chunk's backward adds an (L, n, E) gradient, not a dense (L, M, E) one); anc_flat (n,) flat
    index of each anchor patch; pos_flat (n, F) flat
    index of each positive; v_corr, v_depth (n, F) bool; gt_depth (n, F) sanitised (> 0
    everywhere); cand (F, P) bool depth candidates; cand_depth (F, P) sanitised (0 off cand).
    Returns (corr_sum (L,), depth_sum (L,)).
    """
    nl, m, _ = emb_flat.shape
    n = anc_flat.shape[0]
    logits = torch.bmm(anchors, emb_flat.transpose(1, 2)) / tau  # (L, n, M): s_ij / tau
    zero = logits.new_zeros(nl)
    corr_sum, depth_sum = zero, zero

    if want_corr:  # eq. 5: -log softmax over all tokens but the anchor patch, at the positive
        self_patch = F_.one_hot(anc_flat, m).bool()  # (n, M)
        lse = torch.logsumexp(logits.masked_fill(self_patch, float("-inf")), dim=-1)  # (L, n)
        pos = logits.gather(-1, pos_flat.expand(nl, n, nf))  # (L, n, F)
        term = torch.where(v_corr, lse.unsqueeze(-1) - pos, torch.zeros_like(pos))
        corr_sum = term.sum(dim=(1, 2))

    if want_depth:  # eq. 6-8 on the same logits, frame b's depth candidates only
        lb = logits.view(nl, n, nf, m // nf).masked_fill(~cand, float("-inf"))  # (L, n, F, P)
        # The shift cancels in the ratio, so it carries no gradient; frames without
        # candidates get shift 0 and all-zero weights.
        shift = lb.amax(dim=-1, keepdim=True).detach()
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        wgt = torch.exp(lb - shift)  # (L, n, F, P) unnormalised A_ij
        z = wgt.sum(dim=-1)  # (L, n, F)
        d_hat = torch.einsum("lnfp,fp->lnf", wgt, cand_depth) / torch.where(z > 0, z, torch.ones_like(z))
        err = (gt_depth - d_hat).abs() / (gt_depth + d_hat + eps)  # eq. 8 summand
        depth_sum = torch.where(v_depth, err, torch.zeros_like(err)).sum(dim=(1, 2))
    return corr_sum, depth_sum


def _gasp_losses(emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth, *, query_frame, tau, eps,
                 chunk_size, use_checkpoint, want_corr, want_depth, anchor_emb=None) -> dict[str, Tensor]:
    _check(emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth, query_frame, tau)
    if anchor_emb is not None and anchor_emb.shape != emb.shape:
        raise ValueError(f"anchor_emb {tuple(anchor_emb.shape)} must have emb's shape {tuple(emb.shape)}")
    nl, nf, p, e = emb.shape
    n = anchor_tok.shape[0]
    dev = emb.device
    dtype = torch.float64 if emb.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=dev.type, enabled=False):
        emb_flat = emb.to(dtype).reshape(nl, nf * p, e)  # (L, M, E)
        anchor_tok = anchor_tok.to(dev, torch.long)
        frames = torch.arange(nf, device=dev)
        qf = torch.as_tensor(query_frame, device=dev, dtype=torch.long).expand(n)  # (N,) each anchor's frame a
        v_corr = valid.to(dev) & (frames[:, None] != qf[None, :])  # (F, N): b != a
        anc_flat = qf * p + anchor_tok  # (N,)
        gt_tok = torch.zeros(nf, n, dtype=torch.long, device=dev) if gt_tok is None else gt_tok.to(dev, torch.long)
        gt_tok = torch.where(v_corr, gt_tok, torch.zeros_like(gt_tok))  # invalid pairs may hold -1
        pos_flat = (frames[:, None] * p + gt_tok).T.contiguous()  # (N, F)

        if want_depth:
            tok_depth = tok_depth.to(dev, dtype)
            cand = torch.isfinite(tok_depth) & (tok_depth > 0)  # (F, P)
            cand_depth = torch.where(cand, tok_depth, torch.zeros_like(tok_depth))
            gt_depth = gt_depth.to(dev, dtype)
            gt_ok = torch.isfinite(gt_depth) & (gt_depth > 0)
            v_depth = v_corr & gt_ok & cand.any(dim=1)[:, None]  # (F, N)
            gt_safe = torch.where(gt_ok, gt_depth, torch.ones_like(gt_depth))
        else:
            cand = torch.ones(nf, p, dtype=torch.bool, device=dev)
            cand_depth = torch.zeros(nf, p, dtype=dtype, device=dev)
            v_depth = torch.zeros_like(v_corr)
            gt_safe = torch.ones(nf, n, dtype=dtype, device=dev)
        v_corr_t, v_depth_t, gt_t = v_corr.T, v_depth.T, gt_safe.T  # (N, F)

        step = n if not chunk_size else int(chunk_size)
        src = emb_flat if anchor_emb is None else anchor_emb.to(dtype).reshape(nl, nf * p, e)
        anchors = src[:, anc_flat]  # (L, N, E)
        ckpt = bool(chunk_size) and use_checkpoint and torch.is_grad_enabled() and emb.requires_grad
        corr_sum = emb_flat.new_zeros(nl)
        depth_sum = emb_flat.new_zeros(nl)
        # An empty anchor set still runs one (empty) chunk so the result stays in the graph.
        for s in range(0, max(n, 1), max(step, 1)):
            sl = slice(s, s + step)
            args = (emb_flat, anchors[:, sl], anc_flat[sl], pos_flat[sl], v_corr_t[sl], v_depth_t[sl], gt_t[sl],
                    cand, cand_depth, tau, eps, nf, want_corr, want_depth)
            # Checkpointing keeps one chunk's (L, chunk, M) logits alive at a time in backward.
            c, d = checkpoint(_chunk_sums, *args, use_reentrant=False) if ckpt else _chunk_sums(*args)
            corr_sum = corr_sum + c
            depth_sum = depth_sum + d

        n_corr = v_corr.sum()
        n_depth = v_depth.sum()
        per_corr = corr_sum / n_corr.clamp_min(1).to(dtype)  # (L,)
        per_depth = depth_sum / n_depth.clamp_min(1).to(dtype)  # (L,)
    return {"l_corr": per_corr.mean(), "l_depth": per_depth.mean(), "per_layer_corr": per_corr,
            "per_layer_depth": per_depth, "n_valid": n_corr, "n_valid_depth": n_depth}


def gasp_losses(emb: Tensor, anchor_tok: Tensor, gt_tok: Tensor, valid: Tensor, gt_depth: Tensor,
                tok_depth: Tensor, *, query_frame: int = 0, tau: float = DEFAULT_TAU,
                eps: float = DEFAULT_EPS, chunk_size: int | None = None,
                use_checkpoint: bool = True, anchor_emb: Tensor | None = None) -> dict[str, Tensor]:
    """Both GASP losses from one pass over the similarities (eq. 5-8), all layers at once.

    Shapes in the module docstring. `chunk_size` processes that many anchors at a time; the
    chunks' sums are added, so the result equals the unchunked one (up to float summation
    order). With `use_checkpoint` (and grad enabled) each chunk runs under
    `torch.utils.checkpoint`, so backward holds one chunk's (L, chunk, M) logits at a time
    instead of all N anchors' (fine 24x24 grid, 24 frames, 28 layers: 0.9 GB of float32 logits
    per copy unchunked, 0.1 GB with chunk_size=64).

    `anchor_emb` (L, F, P, E), when given, supplies the anchors' embeddings while `emb` supplies
    every candidate token's (the "qk" variant: anchor = the layer's query, candidates = its keys);
    by default both come from `emb`, as in the paper.

    Returns float32 (float64 for float64 input) tensors: `l_corr`, `l_depth` (means over
    layers), `per_layer_corr`, `per_layer_depth` (L,), and the counts `n_valid` (corr pairs)
    and `n_valid_depth` (depth terms).
    """
    return _gasp_losses(emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth, query_frame=query_frame,
                        tau=tau, eps=eps, chunk_size=chunk_size, use_checkpoint=use_checkpoint,
                        want_corr=True, want_depth=True, anchor_emb=anchor_emb)


def infonce_loss(emb: Tensor, anchor_tok: Tensor, gt_tok: Tensor, valid: Tensor, *,
                 query_frame: int = 0, tau: float = DEFAULT_TAU, chunk_size: int | None = None,
                 use_checkpoint: bool = True) -> tuple[Tensor, Tensor]:
    """L_corr (eq. 5) -> (per-layer loss (L,), mean over layers).

    For anchor i and each target frame b != a with valid[b, i]:
        L_ib = logsumexp_{j in all M tokens, j != anchor patch} s_ij - s_i,(b, gt_tok[b, i]),
    s_ij = <e_i^a, e_j> / tau; L_corr is the mean of L_ib over the valid (i, b) pairs.
    """
    out = _gasp_losses(emb, anchor_tok, gt_tok, valid, None, None, query_frame=query_frame, tau=tau,
                       eps=DEFAULT_EPS, chunk_size=chunk_size, use_checkpoint=use_checkpoint,
                       want_corr=True, want_depth=False)
    return out["per_layer_corr"], out["l_corr"]


def depth_loss(emb: Tensor, anchor_tok: Tensor, valid: Tensor, gt_depth: Tensor, tok_depth: Tensor, *,
               query_frame: int = 0, tau: float = DEFAULT_TAU, eps: float = DEFAULT_EPS,
               chunk_size: int | None = None, use_checkpoint: bool = True) -> tuple[Tensor, Tensor]:
    """L_depth (eq. 6-8) -> (per-layer loss (L,), mean over layers).

    A_ij = softmax over frame b's candidate tokens j of s_ij (eq. 6), d_hat = sum_j A_ij d_j^b
    (eq. 7, soft-argmax of the depth map), L = mean over valid terms of
    |d - d_hat| / (d + d_hat + eps) (eq. 8). Candidates and validity: module docstring.
    """
    out = _gasp_losses(emb, anchor_tok, None, valid, gt_depth, tok_depth, query_frame=query_frame,
                       tau=tau, eps=eps, chunk_size=chunk_size, use_checkpoint=use_checkpoint,
                       want_corr=False, want_depth=True)
    return out["per_layer_depth"], out["l_depth"]
