"""DiffTrack's layer selection (probes/summary.py, probes/metrics.py): the attention score against an explicit
softmax over both frames' keys, and the harmonic-mean choice against a hand computation."""
import numpy as np
import pytest
import torch

from probes import metrics


def test_attention_mass_is_the_share_of_a_joint_softmax_on_frame_k():
    g = torch.Generator().manual_seed(0)
    H, Hkv, N, Fo, P, P0, D = 4, 2, 5, 3, 6, 6, 8
    q = torch.randn(H, N, D, generator=g)
    k = torch.randn(Hkv, Fo, P, D, generator=g)
    kq = torch.randn(Hkv, P0, D, generator=g)
    _, _, mass = metrics.attention_probs(q, k, k_query=kq, chunk=2)
    want = torch.zeros(Fo, N)
    for h in range(H):
        kv = h // (H // Hkv)                                           # grouped-query attention: head h reads KV h // G
        for f in range(Fo):
            for i in range(N):
                logits = torch.cat([kq[kv] @ q[h, i], k[kv, f] @ q[h, i]]) / D ** 0.5      # (P0 + P,)
                want[f, i] += logits.softmax(0)[P0:].sum() / H
    torch.testing.assert_close(mass, want, atol=1e-6, rtol=0)


def test_the_selection_is_the_harmonic_mean_of_normalised_scores():
    from probes.summary import selection_block

    L, F, Q = 3, 2, 4
    valid = np.ones((F, Q), bool)
    conf = np.stack([np.full((F, Q), c) for c in (0.2, 0.5, 0.4)])
    mass = np.stack([np.full((F, Q), m) for m in (0.6, 0.5, 0.9)])
    done = {"s": {"arrays": {"conf": conf, "mass": mass, "valid": valid}, "attrs": {}}}
    res = {"layers": [0, 4, 7], "pck_mean": [0.1, 0.3, 0.25]}
    sel = selection_block(res, done, {"s": ["s"]})
    norm = lambda x: (np.array(x) - min(x)) / (max(x) - min(x))  # noqa: E731
    a, c, m = norm([0.1, 0.3, 0.25]), norm([0.2, 0.5, 0.4]), norm([0.6, 0.5, 0.9])
    hm = [3 / sum(1 / max(v, 1e-8) for v in (a[i], c[i], m[i])) for i in range(L)]
    assert sel["harmonic_mean"] == pytest.approx(hm) and sel["layer"] == 7 and sel["layer_index"] == 2
    assert sel["confidence"] == pytest.approx([0.2, 0.5, 0.4]) and sel["attention_score"] == pytest.approx([0.6, 0.5, 0.9])
