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
    _, conf_h, mass_h = metrics.attention_probs(q, k, k_query=kq, chunk=2)
    assert conf_h.shape == mass_h.shape == (H, Fo, N)
    mass = mass_h.mean(0)
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


def test_per_head_selection_normalises_over_layer_x_head():
    from probes.summary import selection_block

    L, H, F, Q = 2, 3, 2, 4
    rng = np.random.default_rng(5)
    conf_h, mass_h = rng.random((L, H, F, Q)), rng.random((L, H, F, Q))
    valid = rng.random((F, Q)) < 0.8
    done = {"s": {"arrays": {"conf": conf_h.mean(1), "mass": mass_h.mean(1), "conf_head": conf_h,
                             "mass_head": mass_h, "valid": valid}, "attrs": {}}}
    pck_head = rng.random((L, H))
    res = {"layers": [1, 5], "pck_mean": pck_head.mean(1).tolist(), "pck_head": pck_head.tolist()}
    ph = selection_block(res, done, {"s": ["s"]})["per_head"]
    c = (conf_h * valid).sum((-2, -1)) / valid.sum()
    m = (mass_h * valid).sum((-2, -1)) / valid.sum()
    norm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    hm = 3 / (1 / np.maximum(norm(pck_head), 1e-8) + 1 / np.maximum(norm(c), 1e-8) + 1 / np.maximum(norm(m), 1e-8))
    li, hi = np.unravel_index(np.argmax(hm), hm.shape)
    np.testing.assert_allclose(ph["harmonic_mean"], hm)
    assert (ph["layer"], ph["head"]) == ([1, 5][li], hi)


def test_the_probe_names_the_selected_layer_and_head(tmp_path, capsys):
    from gasp_cli.probe import main

    assert main(["--out", str(tmp_path / "p"), "--max-sequences", "1", "--heads", "per-head", "--layers", "0,2"]) == 0
    said = capsys.readouterr().out
    assert "DiffTrack's selection: layer" in said and "best head: layer" in said and "uniform" in said


def test_attention_mass_against_the_models_eager_attention():
    """The mass from the probe's captured Q/K equals the share the model's own eager attention gives frame k
    among frame k's and the query frame's tokens. Causal masking lets a token of the last frame see frame 0
    whole but its own frame only up to itself, so the query frame's keys are cut the same way here."""
    from gasp.adapters import get_adapter
    from gasp.capture.qk import capture_qk
    from gasp.models.tiny import build_tiny
    from tests.test_capture import eager_attentions, frames

    model, tok = build_tiny("tiny-qwen2.5-vl", seed=0)
    inputs, layout = get_adapter(model).prepare_inputs(frames(4), processor_or_tokenizer=tok, prompt="what")
    pos = layout.flat_positions
    F, (h, w) = layout.num_grids, layout.grid
    P = h * w
    li = 1
    with torch.no_grad(), capture_qk(model, layers=[li], positions=pos) as rec:
        model(**inputs)
    q, k = rec.q[li][0].float(), rec.k[li][0].float()                   # (H, F*P, D), (Hkv, F*P, D)
    eager, _ = eager_attentions(model, inputs)
    A = eager[li][0].double()[:, pos][:, :, pos]                        # (H, F*P, F*P) visual rows and columns
    gq = F - 1
    for i in (0, P // 2, P - 1):
        t = gq * P + i
        _, _, mass_h = metrics.attention_probs(q[:, t:t + 1], k[:, None, :P], k_query=k[:, gq * P: t + 1])
        want = A[:, t, :P].sum(-1) / (A[:, t, :P].sum(-1) + A[:, t, gq * P: t + 1].sum(-1))   # (H,)
        torch.testing.assert_close(mass_h[:, 0, 0].double(), want, atol=1e-5, rtol=0)
