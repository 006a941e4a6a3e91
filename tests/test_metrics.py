"""probes/metrics.py against hand-computed values and independent formulas (eq. 10-13)."""
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from probes import metrics as M

TS = 28.0  # token size in pixels


def expand_kv(k: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(Hkv, ...) -> (H, ...): query head h attends with KV head h // (H / Hkv), as transformers' repeat_kv."""
    return k.repeat_interleave(num_heads // k.shape[0], dim=0)


def token_centres_px(h, w):
    """(h*w, 2) pixel x, y at every token centre, row-major."""
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    xy_tok = torch.stack([c.flatten(), r.flatten()], -1).double()
    return (xy_tok + 0.5) * TS - 0.5


def test_pixels_to_tokens_convention():
    xy = torch.tensor([[13.5, 13.5], [-0.5, -0.5], [69.5, 41.5], [27.5, 0.0]])
    tok = M.pixels_to_tokens(xy, TS)
    expected = torch.tensor([[0.0, 0.0], [-0.5, -0.5], [2.0, 1.0], [0.5, 0.5 / TS - 0.5]], dtype=torch.float64)
    assert torch.allclose(tok, expected)
    tok = M.pixels_to_tokens(torch.tensor([[15.5, 6.5]]), (7.0, 16.0))  # (th, tw)
    assert torch.allclose(tok, torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def random_kv(hkv=2, f=3, h=4, w=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(hkv, f, h, w, d, generator=g)


@pytest.mark.parametrize("heads", ["mean", "concat", "per-head"])
def test_identical_descriptors_give_pck_one(heads):
    h, w, f = 4, 6, 3
    k = random_kv(f=1, h=h, w=w).expand(-1, f, -1, -1, -1).contiguous()  # every frame identical
    q = expand_kv(k, 4)                                          # q == repeat_kv(k)
    tracks = token_centres_px(h, w).float().expand(f, -1, -1)            # identity ground truth
    visible = torch.ones(f, h * w, dtype=torch.bool)
    res = M.evaluate_layer(q, k, tracks, visible, TS, heads=heads)
    assert res.valid.all() and res.correct.all()
    assert float(M.masked_mean(res.correct, res.valid).mean()) == 1.0


def test_query_reads_the_token_containing_the_point():
    h, w = 3, 5
    k = random_kv(f=1, h=h, w=w).expand(-1, 2, -1, -1, -1).contiguous()
    q = expand_kv(k, 2)
    centres = token_centres_px(h, w)
    # query pixels at the first and last pixel centres inside each token's box
    first = centres - (TS / 2 - 0.5) + 0.1
    last = centres + (TS / 2 - 0.5) - 0.1
    for query_px in (first, last):
        tracks = torch.stack([query_px, centres]).float()
        res = M.evaluate_layer(q, k, tracks, torch.ones(2, h * w, dtype=torch.bool), TS, delta=0.5)
        assert res.correct.all()


def test_shifted_descriptors_give_predictable_pck():
    h, w, hq = 5, 8, 4
    base = random_kv(f=1, h=h, w=w)[:, 0]                               # (Hkv, h, w, D)
    shifts = [0, 3, 1]                                                   # frame 0 is the query frame
    k = torch.stack([base.roll(s, dims=2) for s in shifts], 1)          # content of col c moves to (c+s) % w
    q = expand_kv(k, hq)
    px = token_centres_px(h, w)
    tracks = torch.stack([px + torch.tensor([s * TS, 0.0], dtype=torch.float64) for s in shifts]).float()
    visible = torch.ones(3, h * w, dtype=torch.bool)                    # off-grid gt left "visible" on purpose
    res = M.evaluate_layer(q, k, tracks, visible, TS)
    cols = torch.arange(h * w) % w
    expected = torch.stack([cols + s < w for s in shifts[1:]])          # wrapped points land w - s tokens away
    assert torch.equal(res.correct, expected)
    assert float(M.masked_mean(res.correct, res.valid)) == pytest.approx((5 * 5 + 5 * 7) / 80)
    # marking the off-grid ground truth invisible excludes exactly the wrong ones
    visible = torch.cat([torch.ones(1, h * w, dtype=torch.bool), expected])
    res = M.evaluate_layer(q, k, tracks, visible, TS)
    assert torch.equal(res.valid, expected) and float(M.masked_mean(res.correct, res.valid)) == 1.0


def test_delta_boundary():
    pred = torch.zeros(5, 2, dtype=torch.long)
    gt = torch.tensor([[2.0, 0.0], [0.0, 2.0], [math.sqrt(2), math.sqrt(2)], [2.01, 0.0], [1.5, 1.5]])
    assert M.within_delta(pred, gt).tolist() == [True, True, True, False, False]
    # the same boundary reached through pixel coordinates
    px = torch.tensor([[(2 + 0.5) * TS - 0.5, 13.5], [(2.01 + 0.5) * TS - 0.5, 13.5]])
    assert M.within_delta(pred[:2], M.pixels_to_tokens(px, TS)).tolist() == [True, False]
    assert M.within_delta(pred[:1], gt[3:4], delta=2.01).tolist() == [True]


def test_invisible_points_excluded():
    pred = torch.zeros(2, 3, 2, dtype=torch.long)                       # (F', N, 2)
    gt = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [1.0, 0.0]],
                       [[9.0, 9.0], [0.0, 1.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, False, True], [False, True, True]])
    assert float(M.pck(pred, gt, valid)) == 1.0
    assert float(M.pck(pred, gt, torch.ones(2, 3, dtype=torch.bool))) == pytest.approx(4 / 6)
    assert math.isnan(float(M.pck(pred, gt, torch.zeros(2, 3, dtype=torch.bool))))


def test_evaluate_layer_visibility_rules():
    h, w = 4, 6
    k = random_kv(f=1, h=h, w=w).expand(-1, 3, -1, -1, -1).contiguous()
    q = expand_kv(k, 2)
    tracks = token_centres_px(h, w).float().expand(3, -1, -1).clone()
    visible = torch.ones(3, h * w, dtype=torch.bool)
    visible[1, 0] = False            # hidden in query frame 1 -> excluded in every frame
    visible[2, 5] = False            # hidden in frame 2 only
    tracks[2, 5] = float("nan")      # invisible points may carry NaN positions
    res = M.evaluate_layer(q, k, tracks, visible, TS, query_frame=1, frame_index=torch.tensor([10, 14, 20]))
    assert res.valid.shape == (2, h * w)
    assert not res.valid[:, 0].any() and not res.valid[1, 5] and res.valid.sum() == 2 * h * w - 3
    assert torch.equal(res.correct, res.valid)
    assert res.dt.tolist() == [4, 6]


def explicit_gqa(q, k):
    """Loop over heads: per-head cosine and softmax with KV head h // (H / Hkv)."""
    hq, hkv = q.shape[0], k.shape[0]
    cos, prob = [], []
    for hh in range(hq):
        kk = k[hh // (hq // hkv)]                                       # (F, P, D)
        dot = torch.einsum("nd,fpd->fnp", q[hh].double(), kk.double())
        cos.append(dot / (q[hh].double().norm(dim=-1)[None, :, None] * kk.double().norm(dim=-1)[:, None, :]))
        prob.append((dot / math.sqrt(q.shape[-1])).softmax(-1))
    return torch.stack(cos), torch.stack(prob)                          # (H, F, N, P)


def test_gqa_mapping_matches_explicit_repeat_kv():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(6, 5, 8, generator=g)                               # H=6, N=5
    k = torch.randn(2, 3, 7, 8, generator=g)                            # Hkv=2, F=3, P=7
    cos, prob = explicit_gqa(q, k)
    assert torch.allclose(M.similarity(q, k, "per-head").double(), cos, atol=1e-6)
    assert torch.allclose(M.similarity(q, k, "mean").double(), cos.mean(0), atol=1e-6)
    conf = prob.amax(-1).mean(0)
    assert torch.allclose(M.confidence(q, k).double(), conf, atol=1e-6)
    # concat: cosine of all heads concatenated, K repeated like transformers.repeat_kv
    from transformers.integrations.sdpa_attention import repeat_kv
    k_rep = repeat_kv(k.flatten(1, 2)[None], 3)[0].reshape(6, 3, 7, 8)  # (H, F, P, D)
    qc = q.permute(1, 0, 2).reshape(5, -1).double()                     # (N, H*D)
    kc = k_rep.permute(1, 2, 0, 3).reshape(3, 7, -1).double()           # (F, P, H*D)
    concat = torch.einsum("nd,fpd->fnp", qc, kc) / (qc.norm(dim=-1)[None, :, None] * kc.norm(dim=-1)[:, None, :])
    assert torch.allclose(M.similarity(q, k, "concat").double(), concat, atol=1e-6)
    assert torch.equal(expand_kv(k, 6), k_rep)                          # the tests' helper is repeat_kv


def test_heads_modes_on_constructed_input():
    # one query, two candidate tokens, 2 heads, no GQA (see the arithmetic in each comment)
    q = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])                     # (H=2, N=1, D=2)
    tok_a = torch.tensor([[10.0, 0.0], [0.0, 1.0]])                     # per-head cos 1, 0 -> mean 0.5
    tok_b = torch.tensor([[0.6, 0.8], [0.6, 0.8]])                      # per-head cos .6, .6 -> mean 0.6
    k = torch.stack([tok_a, tok_b], 1).reshape(2, 1, 1, 2, 2)           # (Hkv=2, F=1, h=1, w=2, D)
    sim_mean = M.similarity(q, k.reshape(2, 1, 2, 2), "mean")
    sim_cat = M.similarity(q, k.reshape(2, 1, 2, 2), "concat")
    assert torch.allclose(sim_mean, torch.tensor([[[0.5, 0.6]]]))
    assert torch.allclose(sim_cat, torch.tensor([[[10 / math.sqrt(2 * 101), 0.6]]]))  # A wins by its norm
    kf = k.reshape(2, 1, 2, 2)                                           # the probe's argmax over frame k's tokens
    assert sim_mean.argmax(-1)[0, 0] == 1 and sim_cat.argmax(-1)[0, 0] == 0
    assert M.similarity(q, kf, "per-head").argmax(-1)[:, 0, 0].tolist() == [0, 1]   # head 0 -> A, head 1 -> B
    conf = M.confidence(q, kf)
    s = 1 / math.sqrt(2)
    p0 = torch.softmax(torch.tensor([10.0, 0.6]) * s, 0).max()
    p1 = torch.softmax(torch.tensor([0.0, 0.6]) * s, 0).max()
    assert float(conf[0, 0]) == pytest.approx(float((p0 + p1) / 2), abs=1e-6)


def test_pearson_matches_scipy_and_masks():
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    correct = rng.random(200) < conf                                    # correlated 0/1
    rho = float(M.pearson(torch.tensor(conf), torch.tensor(correct)))
    assert rho == pytest.approx(scipy.stats.pearsonr(conf, correct.astype(float))[0], abs=1e-12)
    valid = rng.random(200) < 0.6
    rho_v = float(M.pearson(torch.tensor(conf), torch.tensor(correct), torch.tensor(valid)))
    assert rho_v == pytest.approx(scipy.stats.pearsonr(conf[valid], correct[valid].astype(float))[0], abs=1e-12)
    batch = M.pearson(torch.tensor(np.stack([conf, -conf])), torch.tensor(correct))
    assert batch[0] == pytest.approx(rho) and batch[1] == pytest.approx(-rho)


def test_pearson_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(float(M.pearson(torch.rand(10), torch.ones(10, dtype=torch.bool))))
        assert math.isnan(float(M.pearson(torch.full((10,), 0.1), torch.rand(10) > 0.5)))
        assert math.isnan(float(M.pearson(torch.tensor([0.3]), torch.tensor([1.0]))))
        assert math.isnan(float(M.pearson(torch.rand(4), torch.rand(4), torch.zeros(4, dtype=torch.bool))))
        # constant only where valid
        x, y = torch.tensor([0.2, 0.2, 0.9]), torch.tensor([1.0, 0.0, 1.0])
        assert math.isnan(float(M.pearson(x, y, torch.tensor([True, True, False]))))


def test_dt_aggregation_by_hand():
    correct = torch.tensor([[[1, 0], [1, 1], [0, 0]],
                            [[0, 0], [1, 0], [1, 1]]], dtype=torch.bool)  # (L=2, F'=3, N=2)
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    dt = torch.tensor([1, 2, 1])
    out = M._ratio(*M.dt_counts(correct, valid, dt, [1, 2, 3]))
    # layer 0: dt=1 -> frames 0, 2: hits 1 of 4; dt=2 -> frame 1: 1 of 1; dt=3: none
    # layer 1: dt=1 -> 0 + 2 of 4;              dt=2 -> 1 of 1
    expected = torch.tensor([[0.25, 1.0, float("nan")], [0.5, 1.0, float("nan")]], dtype=torch.float64)
    assert torch.allclose(out, expected, equal_nan=True)
    y = M.dt_normalize(out, [1, 2, 3])
    nan = float("nan")
    assert torch.allclose(y, torch.tensor([[1.0, 4.0, nan], [1.0, 2.0, nan]], dtype=torch.float64), equal_nan=True)
    zero_base = M.dt_normalize(torch.tensor([[0.0, 0.5]]), [1, 2])
    assert torch.isnan(zero_base).all()
    assert torch.isnan(M.dt_normalize(torch.tensor([[0.3, 0.5]]), [2, 3])).all()


def make_result(correct, conf, valid, dt):
    return M.LayerResult(correct=torch.tensor(correct), conf=torch.tensor(conf, dtype=torch.float32),
                         valid=torch.tensor(valid), pred_rc=torch.zeros(*np.shape(correct), 2, dtype=torch.long),
                         dt=torch.tensor(dt))


def test_summarize_by_hand():
    # two sequences, two layers; sequence 2 has a different F' and N
    v1 = [[True, True], [True, False]]
    s1 = [make_result([[True, False], [True, True]], [[0.9, 0.2], [0.8, 0.5]], v1, [1, 2]),
          make_result([[False, False], [True, False]], [[0.3, 0.4], [0.7, 0.1]], v1, [1, 2])]
    v2 = [[True, True, True]]
    s2 = [make_result([[True, True, False]], [[0.6, 0.7, 0.1]], v2, [1]),
          make_result([[True, False, False]], [[0.9, 0.2, 0.3]], v2, [1])]
    out = M.summarize([s1, s2], dts=[1, 2])
    pck = torch.tensor([[2 / 3, 1 / 3], [2 / 3, 1 / 3]], dtype=torch.float64)  # (S, L)
    assert torch.allclose(out["pck_seq"], pck)
    assert torch.allclose(out["pck_mean"], pck.mean(0))
    assert torch.allclose(out["pck_std"], torch.zeros(2, dtype=torch.float64))
    # pooled rho, layer 0: valid predictions of both sequences together
    c0 = [0.9, 0.2, 0.8, 0.6, 0.7, 0.1]
    y0 = [1, 0, 1, 1, 1, 0]
    assert float(out["rho"][0]) == pytest.approx(scipy.stats.pearsonr(c0, y0)[0], abs=1e-6)
    assert float(out["rho_seq"][1, 1]) == pytest.approx(scipy.stats.pearsonr([0.9, 0.2, 0.3], [1, 0, 0])[0], abs=1e-6)
    # dt pooled: layer 0, dt=1: seq1 frame0 (1 of 2) + seq2 (2 of 3) = 3/5; dt=2: 1 of 1
    assert torch.allclose(out["dt_pck"][0], torch.tensor([0.6, 1.0], dtype=torch.float64))
    assert torch.allclose(out["dt_norm"][0], torch.tensor([1.0, 1 / 0.6], dtype=torch.float64))
    assert out["num_sequences"] == 2 and out["num_points"] == 5 and out["num_predictions"] == 6


def test_summarize_per_head_adds_head_axis():
    h, w = 3, 4
    k = random_kv(f=1, h=h, w=w).expand(-1, 2, -1, -1, -1).contiguous()
    q = expand_kv(k, 4)
    tracks = token_centres_px(h, w).float().expand(2, -1, -1)
    res = M.evaluate_layer(q, k, tracks, torch.ones(2, h * w, dtype=torch.bool), TS,
                           frame_index=torch.tensor([0, 3]), heads="per-head")
    assert res.correct.shape == (4, 1, h * w) and res.conf.shape == (1, h * w)
    out = M.summarize([[res, res]], dts=[3])
    assert out["pck_mean"].shape == (2, 4) and torch.all(out["pck_mean"] == 1)
    assert out["dt_pck"].shape == (2, 4, 1) and torch.isnan(out["rho"]).all()  # all correct -> constant


def test_summarize_sequence_without_valid_points_is_skipped_in_mean():
    v = [[False, False]]
    bad = [make_result([[False, False]], [[0.5, 0.5]], v, [1])]
    good = [make_result([[True, False]], [[0.9, 0.1]], [[True, True]], [1])]
    out = M.summarize([bad, good], dts=[1])
    assert math.isnan(float(out["pck_seq"][0, 0])) and float(out["pck_mean"][0]) == 0.5
    assert M.nan_to_none(out["pck_seq"]) == [[None], [0.5]]


# ---- peers' matching conventions (issue 10 sec. 6), against explicit per-head loops ----------

def _np_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _expected_maps(q, k, qf, tokens, match, bidirectional):
    """(F', N, P) by explicit loops over frames, points, heads and candidates, in float64 numpy."""
    q, k = q.double().numpy(), k.double().numpy()                    # (H, F, h, w, D), (Hkv, F, h, w, D)
    H, F, h, w, D = q.shape
    G = H // k.shape[0]
    qf_flat, kf_flat = q.reshape(H, F, h * w, D), k.reshape(k.shape[0], F, h * w, D)
    others = [f for f in range(F) if f != qf]
    out = np.zeros((len(others), len(tokens), h * w))

    def score(a, keys, j):                                          # one head's map value at candidate j
        if match == "cosine-mean":
            return a @ keys[j] / (np.linalg.norm(a) * np.linalg.norm(keys[j]))
        return _np_softmax(np.array([a @ kk / math.sqrt(D) for kk in keys]))[j]

    for fi, f in enumerate(others):
        for n, t in enumerate(tokens):
            for j in range(h * w):
                fwd = np.mean([score(qf_flat[hh, qf, t], kf_flat[hh // G, f], j) for hh in range(H)])
                if bidirectional:                       # frame f's token j as the query, the query frame's keys
                    back = np.mean([score(qf_flat[hh, f, j], kf_flat[hh // G, qf], t) for hh in range(H)])
                    fwd = 0.5 * (fwd + back)
                out[fi, n, j] = fwd
    return out


@pytest.mark.parametrize("match,bidirectional", [("softmax-mean", False), ("softmax-mean", True),
                                                 ("cosine-mean", True)])
def test_peer_matching_maps_against_loops(match, bidirectional):
    H, F, h, w, D = 4, 3, 3, 4, 8
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(H, F, h, w, D, generator=g), torch.randn(2, F, h, w, D, generator=g)
    tokens = [0, 5, 11]                                             # query tokens in frame 1 (the query frame)
    tracks = token_centres_px(h, w)[tokens][None].expand(F, -1, -1).float()
    res = M.evaluate_layer(q, k, tracks, torch.ones(F, 3, dtype=torch.bool), TS, query_frame=1,
                           match=match, bidirectional=bidirectional, sim_points=[0, 1, 2])
    expect = _expected_maps(q, k, 1, tokens, match, bidirectional)   # (F', N, P)
    assert np.allclose(res.sim.flatten(-2).numpy(), expect, atol=1e-5)
    idx = expect.argmax(-1)
    assert np.array_equal(res.pred_rc[..., 0].numpy(), idx // w) and np.array_equal(res.pred_rc[..., 1].numpy(), idx % w)
    base = M.evaluate_layer(q, k, tracks, torch.ones(F, 3, dtype=torch.bool), TS, query_frame=1)
    assert torch.equal(res.conf, base.conf)                          # confidence does not depend on the map


def test_softmax_mean_can_disagree_with_cosine_mean():
    """A key with a large norm wins the dot product (softmax) but not the cosine."""
    q = torch.tensor([[1.0, 0.0]])[:, None, None, None, :].expand(1, 2, 1, 2, 2).clone()   # (H=1, F=2, 1, 2, D=2)
    k = torch.zeros(1, 2, 1, 2, 2)
    k[0, 1, 0, 0] = torch.tensor([1.0, 0.0])         # frame 1 token 0: same direction, norm 1
    k[0, 1, 0, 1] = torch.tensor([5.0, 4.0])         # frame 1 token 1: other direction, norm 6.4
    tracks = token_centres_px(1, 2)[:1][None].expand(2, -1, -1).float()
    vis = torch.ones(2, 1, dtype=torch.bool)
    cos = M.evaluate_layer(q, k, tracks, vis, TS, match="cosine-mean")
    soft = M.evaluate_layer(q, k, tracks, vis, TS, match="softmax-mean")
    assert cos.pred_rc[0, 0].tolist() == [0, 0] and soft.pred_rc[0, 0].tolist() == [0, 1]


def test_peer_matching_needs_mean_heads():
    q, k = torch.randn(2, 2, 2, 2, 4), torch.randn(2, 2, 2, 2, 4)
    tracks = token_centres_px(2, 2)[None].expand(2, -1, -1).float()
    with pytest.raises(ValueError, match="heads='mean'"):
        M.evaluate_layer(q, k, tracks, torch.ones(2, 4, dtype=torch.bool), TS, heads="per-head", match="softmax-mean")


def test_the_three_stages_on_a_shifted_copy():
    """match_layer -> predict -> score_layer, the path evaluate_layer (and so the probe) runs: frame 2's keys are
    frame 0's shifted one token right, so every point's argmax is its own token shifted by one column."""
    h, w = 4, 6
    k0 = random_kv(f=1, h=h, w=w)                                        # (Hkv, 1, h, w, D)
    k = torch.cat([k0, k0.roll(1, dims=3)], 1)                          # frame 1: shifted right by one token
    q = expand_kv(k, 4)
    tok = M.pixels_to_tokens(token_centres_px(h, w).double().expand(2, -1, -1), TS)     # (F, N, 2) token x, y
    q_row, q_col = M.query_tokens(tok, 0, (h, w))
    m = M.match_layer(q, k, q_row, q_col)
    assert m.scores.shape == (1, h * w, h * w) and m.conf.shape == (1, h * w) and m.others.tolist() == [1]
    per_head = M.match_layer(q, k, q_row, q_col, heads="per-head")
    assert per_head.scores.shape == (4, 1, h * w, h * w) and torch.equal(per_head.conf, m.conf)
    pred = M.predict(m)                                                 # (F', N, 2) row, col
    assert torch.equal(pred[0, :, 0], q_row) and torch.equal(pred[0, :, 1], (q_col + 1) % w)
    visible = torch.ones(2, h * w, dtype=torch.bool)
    res = M.score_layer(m, pred, tok, visible, 0, delta=0.5, extra_deltas=(1.0,),
                        frame_index=torch.tensor([3, 7]))
    wrapped = (q_col == w - 1)                                          # the roll wraps the last column to 0
    assert torch.equal(res.correct[0], torch.zeros(h * w, dtype=torch.bool))        # one token off: not within 0.5
    assert torch.equal(res.correct_at[1.0][0], ~wrapped) and res.dt.tolist() == [4]
