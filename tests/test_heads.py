"""gasp.heads: SVD initialisation against an independent eigen-decomposition, I/O, selection, models."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F_

from gasp.heads import CorrespondenceHead, CorrespondenceHeads, base_q_proj


def _wq(out_dim=24, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_dim, d, generator=g, dtype=torch.float64), torch.randn(out_dim, generator=g,
                                                                               dtype=torch.float64)


def _top_left_subspace(w, k):
    """Top-k eigenvectors of W W^T (descending): q_proj's principal output directions, no SVD."""
    evals, evecs = torch.linalg.eigh(w @ w.T)
    return evecs[:, torch.argsort(evals, descending=True)[:k]]


def _head(d, k, e, w, b):
    return CorrespondenceHead(d, k, e).double().svd_init_(w, b)


@pytest.mark.parametrize("out_dim", [24, 12])  # H*D > d and H*D < d
def test_svd_init_first_layer_is_projection_on_principal_query_subspace(out_dim):
    w, b = _wq(out_dim=out_dim)
    k = 5
    head = _head(16, k, 4, w, b)
    uk = _top_left_subspace(w, k)  # (HD, k), columns up to sign
    x = torch.randn(50, 16, dtype=torch.float64)
    z = head.fc1(x)  # (50, k)
    ref = (x @ w.T + b) @ uk  # U_k^T (W x + b) up to a sign per column
    signs = torch.sign((z * ref).sum(0))
    torch.testing.assert_close(z, ref * signs, rtol=1e-9, atol=1e-9)
    # Row space of fc1.weight == top-k right singular subspace (projectors agree).
    _, _, vh = torch.linalg.svd(w)
    p_ref = vh[:k].T @ vh[:k]
    q, _ = torch.linalg.qr(head.fc1.weight.T)
    torch.testing.assert_close(q @ q.T, p_ref, rtol=1e-9, atol=1e-9)


def test_svd_init_with_hidden_at_least_rank_determines_the_query():
    w, b = _wq(out_dim=24, d=16)  # rank 16
    head = _head(16, 20, 8, w, b)
    # Gram of the first 16 rows reproduces W^T W exactly: no information lost.
    w1 = head.fc1.weight[:16]
    torch.testing.assert_close(w1.T @ w1, w.T @ w, rtol=1e-9, atol=1e-9)
    # W x is a fixed linear function of fc1(x): fit it on some x, check on fresh ones.
    x_fit, x_new = torch.randn(64, 16, dtype=torch.float64), torch.randn(10, 16, dtype=torch.float64)
    z_fit = head.fc1(x_fit)[:, :16] - head.fc1.bias[:16]
    g = torch.linalg.lstsq(z_fit, x_fit @ w.T).solution  # (16, HD)
    z_new = head.fc1(x_new)[:, :16] - head.fc1.bias[:16]
    torch.testing.assert_close(z_new @ g, x_new @ w.T, rtol=1e-8, atol=1e-8)
    # The norm of the query's principal coordinates equals the norm of W x (W x lies in span U_r).
    torch.testing.assert_close(z_new.norm(dim=1), (x_new @ w.T).norm(dim=1), rtol=1e-9, atol=1e-9)
    # The extra rows are small random ones: row norm ~ 0.01 * mean singular value (documented).
    extra_norm = head.fc1.weight[16:].norm(dim=1)
    s_mean = torch.linalg.svdvals(w).mean()
    assert (extra_norm > 0.002 * s_mean).all() and (extra_norm < 0.03 * s_mean).all()
    assert (head.fc1.bias[16:] == 0).all()


def test_step0_head_is_normalized_gelu_of_leading_coordinates():
    w, b = _wq()
    head = _head(16, 10, 6, w, b)
    x = torch.randn(7, 16, dtype=torch.float64)
    expected = F_.normalize(F_.gelu(head.fc1(x)[:, :6]), dim=-1)
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_is_unit_norm(dtype):
    head = CorrespondenceHead(16, 32, 8).to(dtype)
    x = torch.randn(3, 5, 16)  # float32 input into a bf16 head is cast, not an error
    y = head(x)
    assert y.shape == (3, 5, 8) and y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(3, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(3, 5))


def test_save_load_round_trip_and_atomic_overwrite(tmp_path):
    heads = CorrespondenceHeads([0, 2, 3], d_model=16, hidden=12, d_emb=6)
    states = {i: torch.randn(2, 4, 16) for i in (0, 2, 3)}
    out_dir = tmp_path / "heads"
    heads.save_pretrained(out_dir)
    loaded = CorrespondenceHeads.from_pretrained(out_dir)
    assert loaded.layers == [0, 2, 3]
    assert torch.equal(loaded(states), heads(states))
    assert json.loads((out_dir / "config.json").read_text())["layers"] == [0, 2, 3]
    # Overwriting replaces the folder; no temp folders are left next to it.
    other = CorrespondenceHeads([1], d_model=16, hidden=12, d_emb=6)
    other.save_pretrained(out_dir)
    assert CorrespondenceHeads.from_pretrained(out_dir).layers == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads"]
    # bf16 heads round-trip in bf16.
    heads.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    lb = CorrespondenceHeads.from_pretrained(tmp_path / "bf16")
    assert lb[0].fc1.weight.dtype == torch.bfloat16
    assert torch.equal(lb(states), heads(states))


def test_forward_requires_exactly_the_heads_layers():
    heads = CorrespondenceHeads([1, 3], d_model=8, hidden=8, d_emb=4)
    x = torch.randn(5, 8)
    assert heads({3: x, 1: x}).shape == (2, 5, 4)
    with pytest.raises(KeyError, match=r"\[1, 3\]"):
        heads({1: x})
    with pytest.raises(KeyError, match="no head on layer 2"):
        heads[2]


# ---- real (tiny) models ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_qwen():
    from gasp.models.tiny import build_tiny

    model, _ = build_tiny("tiny-qwen2.5-vl")
    return model


def _capture_q(model, layers, input_ids):
    """{layer: (q_proj input, q_proj output)} from a text-only forward."""
    got, hooks = {}, []
    for i in layers:
        q = model.model.language_model.layers[i].self_attn.q_proj
        hooks.append(q.register_forward_hook(lambda m, a, out, i=i: got.__setitem__(i, (a[0], out))))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for h in hooks:
            h.remove()
    return got


def test_from_tiny_qwen_all_layers_and_subset(tiny_qwen):
    layers = tiny_qwen.model.language_model.layers
    heads = CorrespondenceHeads.from_model(tiny_qwen, hidden=128, d_emb=32)  # decoder layers via the adapter
    assert heads.layers == [0, 1, 2, 3] and heads.d_model == 128
    for i in heads.layers:
        w = layers[i].self_attn.q_proj.weight.double()
        w1 = heads[i].fc1.weight.double()
        torch.testing.assert_close(w1.T @ w1, w.T @ w, rtol=1e-4, atol=1e-4)
    # The head's first layer keeps exactly the query's norm on the model's own activations
    # (H*D = d = 128 = hidden, so U is square): it reads what q_proj reads.
    ids = torch.arange(3, 20)[None]
    cap = _capture_q(tiny_qwen, heads.layers, ids)
    for i, (x, q) in cap.items():
        z = heads[i].fc1(x)
        torch.testing.assert_close(z.norm(dim=-1), q.norm(dim=-1), rtol=1e-4, atol=1e-4)

    sub = CorrespondenceHeads.from_model(tiny_qwen, layers, layers=[3, 1], hidden=16, d_emb=8)
    assert sub.layers == [1, 3]
    with pytest.raises(ValueError, match=r"0\.\.3"):
        CorrespondenceHeads.from_model(tiny_qwen, layers, layers=[0, 4])
    rnd = CorrespondenceHeads.from_model(tiny_qwen, layers, layers=[0], hidden=16, d_emb=8, init="random")
    assert not torch.allclose(rnd[0].fc1.weight, sub[1].fc1.weight)


def test_from_peft_wrapped_tiny_qwen_uses_base_q_proj(tiny_qwen):
    from peft import LoraConfig, get_peft_model

    from gasp.adapters import get_adapter

    plain = CorrespondenceHeads.from_model(tiny_qwen, hidden=64, d_emb=16)
    adapter = get_adapter(tiny_qwen)
    peft_model = get_peft_model(copy.deepcopy(tiny_qwen),
                                LoraConfig(r=4, lora_alpha=8, target_modules=adapter.lora_target_modules()))
    dec = adapter.decoder_layers(peft_model)
    q = dec[0].self_attn.q_proj
    assert hasattr(q, "base_layer")  # really wrapped
    assert base_q_proj(dec[0]) is q.base_layer
    wrapped = CorrespondenceHeads.from_model(peft_model, dec, hidden=64, d_emb=16)
    for i in plain.layers:
        assert torch.equal(wrapped[i].fc1.weight, plain[i].fc1.weight)
        assert torch.equal(wrapped[i].fc1.bias, plain[i].fc1.bias)
    # The heads run on bf16 hidden states of the wrapped model.
    x = torch.randn(6, 128).to(torch.bfloat16)
    assert torch.isfinite(wrapped[2](x)).all()


def _saved_bytes(fn):
    """Bytes autograd keeps for the backward pass while ``fn()`` runs, and fn's result."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_checkpointed_heads_give_the_same_values_and_gradients_and_keep_less_for_backward():
    torch.manual_seed(0)
    heads = CorrespondenceHeads([0, 2, 3], d_model=16, hidden=64, d_emb=8)
    x = {i: torch.randn(5, 40, 16, requires_grad=True) for i in heads.layers}   # (F, P, d) per layer
    w = torch.randn(3, 5, 40, 8)
    grads, saved = [], []
    for ckpt in (False, True):
        heads.zero_grad()
        for t in x.values():
            t.grad = None
        nbytes, emb = _saved_bytes(lambda: heads(x, checkpoint=ckpt))                 # (L, F, P, E)
        (emb * w).sum().backward()
        saved.append(nbytes)
        grads.append([emb.detach()] + [p.grad.clone() for p in heads.parameters()] + [x[i].grad.clone() for i in x])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # without: fc1's output and GELU's (hidden=64 wide) per head; with: only the inputs and the outputs
    inner = 2 * 3 * 5 * 40 * 64 * 4
    assert saved[0] - saved[1] >= inner, saved
    with torch.no_grad():                                                             # no autograd: the plain path
        torch.testing.assert_close(heads(x, checkpoint=True), grads[0][0], rtol=0, atol=0)
