"""AJ and occlusion accuracy (probes/tapvid_metrics.py) against a literal, element-by-element reading of
tapnet's compute_tapvid_metrics on hand-made predictions, a never-visible point included."""
import numpy as np
import pytest
import torch

from probes import tapvid_metrics as tv


def literal(qf, gt_occ, gt_xy, pred_occ, pred_xy, thresholds=tv.THRESHOLDS):
    """One video, points (Q,), frames (F,): tapnet's definitions one element at a time (256 x 256 frames)."""
    Q, F = gt_occ.shape
    agree = n_eval = 0
    tp = {t: 0 for t in thresholds}
    gt_pos = 0
    fp = {t: 0 for t in thresholds}
    for i in range(Q):
        for f in range(F):
            if f == qf[i]:
                continue                                             # evaluation points: not the query frame
            n_eval += 1
            agree += int(pred_occ[i, f] == gt_occ[i, f])
            gt_pos += int(not gt_occ[i, f])
            d2 = ((pred_xy[i, f] - gt_xy[i, f]) ** 2).sum()
            for t in thresholds:
                within = d2 < t * t
                if not pred_occ[i, f] and not gt_occ[i, f] and within:
                    tp[t] += 1
                if not pred_occ[i, f] and (gt_occ[i, f] or not within):
                    fp[t] += 1
    jac = [tp[t] / (gt_pos + fp[t]) for t in thresholds]
    return np.mean(jac), agree / n_eval, jac


def ours(qf, gt_occ, gt_xy, pred_occ, pred_xy):
    """The same video in the probe's record layout: query frame 0 for every point, (F', Q) arrays."""
    assert (qf == 0).all()
    vis = ~gt_occ.T[1:]                                               # (F', Q), every point visible in frame 0
    occ = gt_occ.T[1:]
    bits = tv.within_bits(torch.from_numpy(pred_xy.transpose(1, 0, 2)[1:]), torch.from_numpy(gt_xy.transpose(1, 0, 2)[1:]),
                          (256, 256)).numpy() * vis
    return tv.video_occlusion(bits[None], vis, occ, ~pred_occ.T[1:][None])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jaccard_and_occlusion_accuracy_match_a_literal_reading(seed):
    rng = np.random.default_rng(seed)
    Q, F = 6, 7
    gt_occ = rng.random((Q, F)) < 0.3
    gt_occ[:, 0] = False                                              # visible in the query frame
    gt_occ[2, 1:] = True                                              # point 2 is never visible again
    gt_xy = rng.uniform(0, 256, (Q, F, 2))
    pred_xy = gt_xy + rng.normal(0, 6, (Q, F, 2))                     # within some thresholds, not others
    pred_occ = rng.random((Q, F)) < 0.3
    aj, oa, jac = literal(np.zeros(Q, int), gt_occ, gt_xy, pred_occ, pred_xy)
    j, o = ours(np.zeros(Q, int), gt_occ, gt_xy, pred_occ, pred_xy)
    np.testing.assert_allclose(j[0], jac, atol=1e-12)
    assert o[0] == pytest.approx(oa) and np.mean(j[0]) == pytest.approx(aj)
    # the all-visible rule (DiffTrack's): OA is the fraction of evaluation points that are visible
    j, o = ours(np.zeros(Q, int), gt_occ, gt_xy, np.zeros_like(pred_occ), pred_xy)
    assert o[0] == pytest.approx((~gt_occ[:, 1:]).mean())


def test_videos_are_averaged_after_their_own_scores():
    rng = np.random.default_rng(3)
    per, want_aj, want_oa = [], [], []
    for q in (4, 9):                                                  # videos of different sizes
        gt_occ = rng.random((q, 5)) < 0.4
        gt_occ[:, 0] = False
        gt_xy = rng.uniform(0, 256, (q, 5, 2))
        pred_xy, pred_occ = gt_xy + rng.normal(0, 4, (q, 5, 2)), rng.random((q, 5)) < 0.2
        aj, oa, _ = literal(np.zeros(q, int), gt_occ, gt_xy, pred_occ, pred_xy)
        want_aj.append(aj)
        want_oa.append(oa)
        per.append(ours(np.zeros(q, int), gt_occ, gt_xy, pred_occ, pred_xy))
    res = tv.summarize_occlusion(per)
    assert res["num_videos"] == 2
    assert res["aj"][0] == pytest.approx(np.mean(want_aj)) and res["oa"][0] == pytest.approx(np.mean(want_oa))


def test_the_threshold_is_the_one_that_separates_occlusion_on_the_train_videos():
    rng = np.random.default_rng(4)
    vis = rng.random((6, 20)) < 0.6
    occ = ~vis
    conf = np.where(vis, rng.uniform(0.5, 0.9, vis.shape), rng.uniform(0.1, 0.4, vis.shape))[None]   # (1, F', Q)
    flat = np.concatenate([conf, rng.uniform(0, 1, conf.shape)])     # layer 1: confidence says nothing
    thr = tv.choose_thresholds([flat], [vis], [occ])
    assert 0.4 <= thr[0] <= 0.5 + 1e-9 and (((flat[0] >= thr[0]) == vis)).all()
    rule_oa = (((flat[1] >= thr[1]) == vis)).mean()
    assert rule_oa >= vis.mean() - 1e-12                             # never worse than all-visible on train
