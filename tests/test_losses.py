"""gasp.losses against explicit loop implementations of eq. 5-8, plus gradient behaviour."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F_

from gasp.losses import (
    DEFAULT_EPS,
    depth_loss,
    gasp_losses,
    infonce_loss,
    pool_token_depth,
)


def _problem(L=2, F=3, h=2, w=3, E=5, N=4, seed=0, dtype=torch.float64, query_frame=0):
    """Random unit embeddings, tracks with some invalid pairs, depths with some NaN tokens."""
    g = torch.Generator().manual_seed(seed)
    P = h * w
    emb = F_.normalize(torch.randn(L, F, P, E, generator=g, dtype=dtype), dim=-1)
    anchor_tok = torch.randint(0, P, (N,), generator=g)
    gt_tok = torch.randint(0, P, (F, N), generator=g)
    valid = torch.rand(F, N, generator=g) > 0.3
    valid[query_frame] = True  # must be ignored: frame a is never a target
    gt_tok[~valid] = -1  # garbage where invalid must not matter
    gt_depth = torch.rand(F, N, generator=g, dtype=dtype) * 4 + 0.5
    gt_depth[1, 0] = float("nan")
    tok_depth = torch.rand(F, P, generator=g, dtype=dtype) * 4 + 0.5
    tok_depth[1, 1] = float("nan")
    if F > 2:
        tok_depth[2] = float("nan")  # a frame with no depth candidates at all
    return emb, anchor_tok, gt_tok, valid, gt_depth, tok_depth


def _loop_infonce(emb, anchor_tok, gt_tok, valid, tau, a=0):
    """Eq. 5 literally: per (anchor, b) build the denominator set, excluding the anchor patch."""
    L, F, P, _ = emb.shape
    out = []
    for l in range(L):
        terms = []
        for i in range(len(anchor_tok)):
            ai = int(a[i]) if hasattr(a, "__len__") else a                 # the anchor's own frame
            ea = emb[l, ai, anchor_tok[i]]
            for b in range(F):
                if b == ai or not valid[b, i]:
                    continue
                pos = torch.exp(ea @ emb[l, b, gt_tok[b, i]] / tau)
                denom = 0.0
                for f in range(F):
                    for j in range(P):
                        if f == ai and j == anchor_tok[i]:
                            continue
                        denom = denom + torch.exp(ea @ emb[l, f, j] / tau)
                terms.append(-torch.log(pos / denom))
        out.append(torch.stack(terms).mean() if terms else emb.new_zeros(()))
    return torch.stack(out)


def _loop_depth(emb, anchor_tok, valid, gt_depth, tok_depth, tau, eps=DEFAULT_EPS, a=0):
    """Eq. 6-8 literally, over frame b's tokens that have a finite positive depth."""
    L, F, P, _ = emb.shape
    out = []
    for l in range(L):
        terms = []
        for i in range(len(anchor_tok)):
            ai = int(a[i]) if hasattr(a, "__len__") else a
            ea = emb[l, ai, anchor_tok[i]]
            for b in range(F):
                d = gt_depth[b, i]
                cands = [j for j in range(P) if math.isfinite(tok_depth[b, j]) and tok_depth[b, j] > 0]
                if b == ai or not valid[b, i] or not (math.isfinite(d) and d > 0) or not cands:
                    continue
                s = torch.stack([ea @ emb[l, b, j] / tau for j in cands])
                A = torch.exp(s) / torch.exp(s).sum()
                d_hat = sum(A[k] * tok_depth[b, j] for k, j in enumerate(cands))
                terms.append((d - d_hat).abs() / (d + d_hat + eps))
        out.append(torch.stack(terms).mean() if terms else emb.new_zeros(()))
    return torch.stack(out)


@pytest.mark.parametrize("query_frame", [0, 1])
def test_infonce_matches_loop(query_frame):
    emb, anc, gt, valid, _, _ = _problem(query_frame=query_frame)
    per, mean = infonce_loss(emb, anc, gt, valid, query_frame=query_frame, tau=0.1)
    ref = _loop_infonce(emb, anc, gt, valid, tau=0.1, a=query_frame)
    torch.testing.assert_close(per, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mean, ref.mean())


def test_anchors_with_their_own_query_frames_match_the_loop():
    """Supplied tracks (TAP-Vid strided queries) anchor each point in its own frame."""
    emb, anc, gt, valid, gd, td = _problem(F=4, N=5)
    qf = torch.tensor([0, 2, 2, 3, 1])
    valid[qf, torch.arange(5)] = True                                   # the anchor's own frame: ignored
    gt[qf, torch.arange(5)] = anc
    out = gasp_losses(emb, anc, gt, valid, gd, td, query_frame=qf, tau=0.1)
    torch.testing.assert_close(out["per_layer_corr"], _loop_infonce(emb, anc, gt, valid, tau=0.1, a=qf),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["per_layer_depth"], _loop_depth(emb, anc, valid, gd, td, tau=0.1, a=qf),
                               rtol=1e-10, atol=1e-10)
    assert int(out["n_valid"]) == int((valid & (torch.arange(4)[:, None] != qf[None])).sum())
    with pytest.raises(ValueError, match="query_frame must be an int or"):
        gasp_losses(emb, anc, gt, valid, gd, td, query_frame=qf[:3])


def test_depth_matches_loop():
    emb, anc, _gt, valid, gd, td = _problem()
    per, mean = depth_loss(emb, anc, valid, gd, td, tau=0.2)
    ref = _loop_depth(emb, anc, valid, gd, td, tau=0.2)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(per, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mean, ref.mean())


def test_gasp_losses_counts_and_consistency():
    emb, anc, gt, valid, gd, td = _problem()
    out = gasp_losses(emb, anc, gt, valid, gd, td, tau=0.2)
    v = valid.clone()
    v[0] = False
    assert int(out["n_valid"]) == int(v.sum())
    vd = v & torch.isfinite(gd) & (gd > 0)
    vd[2] = False  # frame 2 has no depth candidate
    assert int(out["n_valid_depth"]) == int(vd.sum())
    torch.testing.assert_close(out["per_layer_corr"], infonce_loss(emb, anc, gt, valid, tau=0.2)[0])
    torch.testing.assert_close(out["per_layer_depth"], depth_loss(emb, anc, valid, gd, td, tau=0.2)[0])


def test_gradcheck_both_losses():
    emb, anc, gt, valid, gd, td = _problem(L=2, F=3, h=2, w=2, E=4, N=3)
    x = emb.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: infonce_loss(e, anc, gt, valid, tau=0.3)[0], (x,))
    assert torch.autograd.gradcheck(lambda e: depth_loss(e, anc, valid, gd, td, tau=0.3)[0], (x,))
    # Chunked + checkpointed path too.
    assert torch.autograd.gradcheck(
        lambda e: torch.stack([v for k, v in gasp_losses(e, anc, gt, valid, gd, td, tau=0.3, chunk_size=2).items()
                               if k.startswith("per_layer")]), (x,))


def test_chunked_equals_unchunked_values_and_grads():
    emb, anc, gt, valid, gd, td = _problem(L=3, F=4, h=3, w=3, E=6, N=7, dtype=torch.float32, seed=3)

    def run(**kw):
        x = emb.clone().requires_grad_(True)
        out = gasp_losses(x, anc, gt, valid, gd, td, **kw)
        (out["l_corr"] + 2 * out["l_depth"]).backward()
        return out, x.grad

    ref, gref = run()
    for kw in ({"chunk_size": 3}, {"chunk_size": 3, "use_checkpoint": False}, {"chunk_size": 1},
               {"chunk_size": 100}):
        out, g = run(**kw)
        for k in ("l_corr", "l_depth", "per_layer_corr", "per_layer_depth"):
            torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, gref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_all_invalid_gives_zero_loss_and_zero_grads(chunk_size):
    emb, anc, gt, valid, gd, td = _problem(dtype=torch.float32)
    x = emb.clone().requires_grad_(True)
    out = gasp_losses(x, anc, gt, torch.zeros_like(valid), gd, td, chunk_size=chunk_size)
    assert out["l_corr"].item() == 0 and out["l_depth"].item() == 0
    (out["l_corr"] + out["l_depth"]).backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()

    # Valid tracks but no usable depth anywhere: depth term 0 with zero grads, corr unaffected.
    x = emb.clone().requires_grad_(True)
    nan_depth = torch.full_like(td, float("nan"))
    out = gasp_losses(x, anc, gt, valid, gd, nan_depth, chunk_size=chunk_size)
    assert out["l_depth"].item() == 0 and out["l_corr"].item() > 0
    out["l_depth"].backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()

    # No anchors at all.
    x = emb.clone().requires_grad_(True)
    out = gasp_losses(x, anc[:0], gt[:, :0], valid[:, :0], gd[:, :0], td, chunk_size=chunk_size)
    (out["l_corr"] + out["l_depth"]).backward()
    assert out["l_corr"].item() == 0 and (x.grad == 0).all()


def test_bf16_autocast_input_gives_float32_loss():
    emb, anc, gt, valid, gd, td = _problem(dtype=torch.float32)
    x = emb.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gasp_losses(x, anc, gt, valid, gd, td, chunk_size=2)
    assert out["l_corr"].dtype == torch.float32 and out["l_depth"].dtype == torch.float32
    ref = gasp_losses(x.detach().float(), anc, gt, valid, gd, td)
    torch.testing.assert_close(out["l_corr"], ref["l_corr"])
    (out["l_corr"] + out["l_depth"]).backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def _basis_problem():
    """Two frames, 4 tokens each; the anchor's embedding equals frame 1 token 2's exactly."""
    E = 8
    eye = torch.eye(E, dtype=torch.float64)
    emb = torch.stack([eye[:4], eye[4:]])[None]  # (1, 2, 4, E): all 8 tokens orthonormal
    emb[0, 0, 0] = eye[6]  # anchor (frame 0, token 0) == frame 1 token 2
    anc = torch.tensor([0])
    valid = torch.tensor([[True], [True]])
    tok_depth = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 5.0, 7.0, 11.0]], dtype=torch.float64)
    return emb, anc, valid, tok_depth


def test_soft_argmax_of_one_hot_map_returns_its_value():
    emb, anc, valid, td = _basis_problem()
    # tau -> 0 makes A one-hot on token 2, so d_hat = 7: zero loss at gt 7, |14-7|/(14+7) at gt 14.
    gd = torch.tensor([[1.0], [7.0]], dtype=torch.float64)
    per, _ = depth_loss(emb, anc, valid, gd, td, tau=1e-3, eps=0.0)
    assert per.item() == pytest.approx(0.0, abs=1e-12)
    gd = torch.tensor([[1.0], [14.0]], dtype=torch.float64)
    per, _ = depth_loss(emb, anc, valid, gd, td, tau=1e-3, eps=0.0)
    assert per.item() == pytest.approx(7 / 21, abs=1e-12)


def test_depth_gradient_reaches_embeddings_through_soft_argmax():
    emb, anc, gt, valid, gd, td = _problem(dtype=torch.float32)
    x = emb.clone().requires_grad_(True)
    out = gasp_losses(x, anc, gt, valid, gd, td, tau=0.2)
    out["l_depth"].backward()
    g = x.grad
    assert g.abs().sum() > 0
    assert g[:, 0, anc].abs().sum() > 0  # the anchors
    assert g[:, 1].abs().sum() > 0  # frame b's candidates
    # Frame 2 has no depth candidate, so nothing in it receives a depth gradient.
    assert (g[:, 2] == 0).all()


def test_depth_separates_lookalikes_that_corr_does_not():
    """Two candidates with identical embeddings at different depths (docstring of the case).

    Frame 0 holds the anchor; frame 1 holds: the positive p (depth 2), a look-alike c_near
    (depth 2) and a look-alike c_far (depth 8) with identical embeddings, and a distractor
    (depth 5). The positive is a third token, so for L_corr c_near and c_far are both plain
    negatives with the same logit: their gradients are identical and so are their similarities
    after any number of L_corr steps. d_hat lies above the true depth 2 because of c_far, so
    L_depth moves weight from c_far to c_near: after one SGD step s(anchor, c_far) must be
    smaller than s(anchor, c_near).
    """
    raw = torch.tensor([
        [[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, -1.0, 0.5]],  # frame 0, anchor = token 0
        [[1.0, 0.0, 0.1], [0.8, 0.6, 0.0], [0.8, 0.6, 0.0], [-1.0, 0.0, 0.0]],  # p, c_near, c_far, distractor
    ], dtype=torch.float64)[None]
    anc, gt = torch.tensor([0]), torch.tensor([[0], [0]])
    valid = torch.tensor([[True], [True]])
    gd = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    td = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 8.0, 5.0]], dtype=torch.float64)

    def step(loss_name, lr=0.5):
        x = raw.clone().requires_grad_(True)
        e = F_.normalize(x, dim=-1)
        gasp_losses(e, anc, gt, valid, gd, td, tau=0.1)[loss_name].backward()
        e = F_.normalize(x.detach() - lr * x.grad, dim=-1)
        s = e[0, 1] @ e[0, 0, 0]  # similarity of the anchor to frame 1's tokens
        return x.grad, s[1].item(), s[2].item()

    s0 = F_.normalize(raw, dim=-1)[0, 1] @ F_.normalize(raw, dim=-1)[0, 0, 0]
    assert s0[1] == s0[2]

    g, near, far = step("l_corr")
    assert torch.equal(g[0, 1, 1], g[0, 1, 2]) and g[0, 1, 1].abs().sum() > 0
    assert near == far

    g, near, far = step("l_depth")
    assert not torch.equal(g[0, 1, 1], g[0, 1, 2])
    # Relative, not absolute: the anchor itself also moves (toward p and c_near, which both
    # lie near c_far), so both similarities may rise; the gap is what L_depth creates.
    assert far < near - 1e-3


def test_pool_token_depth_hand_computed():
    nan = float("nan")
    # H=5, W=3 into a 2x2 grid: row boundary at y = 5/2 - 0.5 = 2.0, so pixel rows {0,1} | {2,3,4};
    # column boundary at x = 3/2 - 0.5 = 1.0, so pixel cols {0} | {1,2}.
    d = torch.tensor([[
        [1.0, 2.0, 3.0],
        [nan, 4.0, 0.0],
        [5.0, -1.0, 6.0],
        [0.0, nan, 7.0],
        [9.0, 8.0, nan],
    ]])
    expected = torch.tensor([[
        1.0,                    # (0,0): {1, nan} -> 1
        (2 + 3 + 4) / 3,        # (0,1): {2, 3, 4, 0}
        (5 + 9) / 2,            # (1,0): {5, 0, 9}
        (6 + 7 + 8) / 3,        # (1,1): {-1, 6, nan, 7, 8, nan}
    ]])
    torch.testing.assert_close(pool_token_depth(d, (2, 2)), expected)
    # A token whose pixels are all invalid is NaN; the others are unaffected.
    d2 = d.clone()
    d2[0, :2, 0] = 0.0
    out = pool_token_depth(d2, (2, 2))
    assert torch.isnan(out[0, 0]) and torch.isfinite(out[0, 1:]).all()


def test_pool_token_depth_divisible_matches_avg_pool():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(3, 12, 8, generator=g) + 0.1
    ref = F_.avg_pool2d(d[:, None], kernel_size=(3, 2))[:, 0].reshape(3, -1)
    torch.testing.assert_close(pool_token_depth(d, (4, 4)), ref)


def test_bad_shapes_are_clear_errors():
    emb, anc, gt, valid, gd, td = _problem()
    with pytest.raises(ValueError, match="gt_tok"):
        infonce_loss(emb, anc, gt[:, :2], valid)
    with pytest.raises(ValueError, match="tok_depth"):
        depth_loss(emb, anc, valid, gd, td[:, :2])
    with pytest.raises(TypeError, match="bool"):
        infonce_loss(emb, anc, gt, valid.long())
    with pytest.raises(ValueError, match="query_frame"):
        infonce_loss(emb, anc, gt, valid, query_frame=5)


def test_pool_token_depth_matches_a_per_pixel_assignment_at_odd_sizes():
    """Non-divisible sizes with every kind of invalid pixel, against numpy: each pixel goes to token
    (floor((i + 0.5) h / H), floor((j + 0.5) w / W)), and a token averages its finite positive pixels."""
    rng = np.random.default_rng(3)
    F, H, W, h, w = 3, 37, 53, 5, 7
    d = rng.uniform(0.2, 9.0, (F, H, W)).astype(np.float32)
    bad = rng.random((F, H, W))
    d[bad < 0.05], d[(bad >= 0.05) & (bad < 0.1)], d[(bad >= 0.1) & (bad < 0.12)] = np.nan, 0.0, -2.0
    d[bad > 0.98] = np.inf
    d[1, :8, :8] = np.nan                                          # token (0, 0) of frame 1: no valid pixel
    ti = np.floor((np.arange(H) + 0.5) * h / H).astype(int)
    tj = np.floor((np.arange(W) + 0.5) * w / W).astype(int)
    want = np.full((F, h * w), np.nan)
    for f in range(F):
        for r in range(h):
            for c in range(w):
                px = d[f][np.ix_(ti == r, tj == c)].astype(np.float64)
                px = px[np.isfinite(px) & (px > 0)]
                if px.size:
                    want[f, r * w + c] = px.mean()
    got = pool_token_depth(torch.from_numpy(d), (h, w)).numpy()
    assert np.isnan(got[1, 0]) and np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, equal_nan=True)
