"""gasp/capture/qk.py: captured Q/K reproduce the model's own attention, and the context is tidy."""
import copy

import numpy as np
import pytest
import torch
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface

from gasp.adapters import get_adapter
from gasp.capture.qk import attention_layers, capture_qk
from gasp.models.tiny import TINY_NAMES, build_tiny

# raised inside peft's get_peft_model, not by this project


def frames(n=3, h=56, w=84, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=TINY_NAMES)
def family(request):
    model, tok = build_tiny(request.param, seed=0)
    # An answer puts text after the prompt (PaliGemma's causal suffix, windowed in sliding layers).
    inputs, layout = get_adapter(model).prepare_inputs(frames(), processor_or_tokenizer=tok, prompt="what moves",
                                                       answer="left")
    return model, inputs, layout


@pytest.fixture(scope="module")
def qwen():
    model, tok = build_tiny("tiny-qwen2.5-vl", seed=0)
    inputs, layout = get_adapter(model).prepare_inputs(frames(), processor_or_tokenizer=tok, prompt="what")
    return model, inputs, layout


def impls(model):
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    return m.config.get_text_config()._attn_implementation, m.config.vision_config._attn_implementation


def no_gasp_registrations():
    names = list(AttentionInterface._global_mapping) + list(AttentionMaskInterface._global_mapping)
    return not any(n.startswith("gasp_qk") for n in names)


def eager_attentions(model, inputs):
    """Eager attention weights per layer and the mask each layer's eager attention was given."""
    eager = copy.deepcopy(model)
    base = eager.get_base_model() if hasattr(eager, "get_base_model") else eager
    base.set_attn_implementation({"text_config": "eager"})
    assert impls(eager)[0] == "eager"
    masks = {}
    layers = get_adapter(eager).decoder_layers(eager)
    handles = [layers[i].self_attn.register_forward_pre_hook(
        lambda m, a, kw, i=i: masks.__setitem__(i, kw["attention_mask"]), with_kwargs=True)
        for i in attention_layers(layers)]                  # softmax-attention layers only (Qwen3.5 hybrid)
    try:
        with torch.no_grad():
            attentions = eager(**inputs, output_attentions=True).attentions
    finally:
        for h in handles:
            h.remove()
    return attentions, masks


def attention_from_qk(q, k, scale, mask, softcap=None):
    """softmax(softcap(q . repeat_kv(k)^T * scale) + the model's own mask), (B, H, L, L) float64.

    `mask` is what the model handed its eager attention: an additive float mask, or a
    boolean one (True = attend), so any family's mask (causal, Gemma 3's bidirectional image
    blocks, PaliGemma's prefix, sliding windows) is the model's, not one rebuilt here;
    softcap: Gemma 2's cap * tanh(s / cap), applied before the mask as its eager attention does.
    """
    q = q.double()
    k = repeat_kv(k.double(), q.shape[1] // k.shape[1])
    s = q @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask.dtype == torch.bool:
        return s.masked_fill(~mask, float("-inf")).softmax(-1)
    return (s + mask.double()).softmax(-1)


def add_lora(model):
    from peft import LoraConfig, get_peft_model

    from gasp.models.loading import peft_quietly

    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=get_adapter(model).lora_target_modules(),
                     init_lora_weights=False)  # random B: the adapter changes Q/K
    with peft_quietly():
        return get_peft_model(copy.deepcopy(model), cfg)


@pytest.mark.parametrize("lora", [False, True], ids=["base", "lora"])
def test_captured_qk_reproduce_eager_attention(family, lora):
    model, inputs, _ = family
    before = impls(model)
    model = add_lora(model) if lora else model
    layers = get_adapter(model).decoder_layers(model)
    with torch.no_grad(), capture_qk(model) as rec:
        model(**inputs)
    # every softmax-attention layer (all layers but a hybrid LLM's linear-attention ones, Qwen3.5)
    full = attention_layers(layers)
    assert rec.layers == full and rec.num_forwards == 1 and len(full) >= 1
    assert impls(model) == before and no_gasp_registrations()
    eager, masks = eager_attentions(model, inputs)   # one map per attention layer, in layer order
    assert len(eager) == len(full)
    n = inputs["input_ids"].shape[1]
    for j, li in enumerate(rec.layers):
        assert rec.q[li].shape[2] == n
        mask = masks[li]
        assert mask is not None and mask.shape[-2:] == (n, n), li
        attn = layers[li].self_attn
        ours = attention_from_qk(rec.q[li], rec.k[li], attn.scaling, mask, getattr(attn, "attn_logit_softcapping", None))
        assert (ours - eager[j].double()).abs().max() < 1e-5, li
    if lora:  # the adapter must matter, or the LoRA case proves nothing
        plain, l0 = family[0], full[0]
        with torch.no_grad(), capture_qk(plain, layers=[l0]) as rec0:
            plain(**inputs)
        assert (rec0.q[l0] - rec.q[l0]).abs().max() > 1e-3


def test_visual_positions_are_selected(family):
    model, inputs, layout = family
    with torch.no_grad(), capture_qk(model) as full:
        model(**inputs)
    pos = layout.flat_positions
    some = [i for i in (1, 3) if i in full.layers]     # a hybrid LLM (Qwen3.5) has attention at 3 only
    with torch.no_grad(), capture_qk(model, positions=pos, layers=some) as vis:
        model(**inputs)
    assert sorted(vis.q) == some
    for li in some:
        assert vis.q[li].shape[2] == pos.numel() == vis.k[li].shape[2]
        assert torch.equal(vis.q[li], full.q[li][:, :, pos]) and torch.equal(vis.k[li], full.k[li][:, :, pos])


def test_on_layer_streams_the_same_tensors(qwen):
    model, inputs, layout = qwen
    layers = get_adapter(model).decoder_layers(model)
    pos = layout.flat_positions
    with torch.no_grad(), capture_qk(model, positions=pos) as kept:
        model(**inputs)
    log, got = [], {}
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: log.append(("layer", i)))
               for i, layer in enumerate(layers)]

    def on_layer(li, q, k):
        log.append(("callback", li))
        got[li] = (q, k)

    try:
        with torch.no_grad(), capture_qk(model, positions=pos, on_layer=on_layer) as rec:
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    assert rec.q == {} and rec.k == {}  # streamed, not kept
    # each layer's tensors are handed over before the next layer starts
    assert log == [e for i in range(len(layers)) for e in (("layer", i), ("callback", i))]
    for li in rec.layers:
        assert torch.equal(got[li][0], kept.q[li]) and torch.equal(got[li][1], kept.k[li])


def test_bad_layer_list_is_a_clear_error(qwen):
    model, inputs, _ = qwen
    with pytest.raises(ValueError, match=r"layer\(s\) \[9\] requested; the model has layers 0\.\.3"):
        with capture_qk(model, layers=[0, 9]):
            model(**inputs)
    with pytest.raises(ValueError, match="duplicate"):
        with capture_qk(model, layers=[1, 1]):
            model(**inputs)
    assert impls(model) == ("sdpa", "sdpa") and no_gasp_registrations()


def test_restored_after_context_and_after_exception(qwen):
    model, inputs, _ = qwen
    with torch.no_grad():
        ref = model(**inputs).logits
    with torch.no_grad(), capture_qk(model):
        assert impls(model)[0].startswith("gasp_qk") and impls(model)[1] == "sdpa"  # vision keeps its own
        model(**inputs)
    assert impls(model) == ("sdpa", "sdpa") and no_gasp_registrations()
    with pytest.raises(KeyError, match="boom"):
        with torch.no_grad(), capture_qk(model, rope="pre"):
            model(**inputs)
            raise KeyError("boom")
    with pytest.raises(KeyError, match="boom"):
        with torch.no_grad(), capture_qk(model):
            raise KeyError("boom")
    assert impls(model) == ("sdpa", "sdpa") and no_gasp_registrations()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref)


def test_each_requested_layer_seen_exactly_once(qwen):
    model, inputs, _ = qwen
    layers = get_adapter(model).decoder_layers(model)
    attn0, attn1 = layers[0].self_attn, layers[1].self_attn
    try:
        with pytest.raises(RuntimeError, match=r"exactly once.*\{0: 2, 1: 0\}"):
            with torch.no_grad(), capture_qk(model):
                layers[1].self_attn = attn0  # layer 0's attention now runs twice, layer 1's never
                model(**inputs)
    finally:
        layers[1].self_attn = attn1
    try:
        layers[1].self_attn = attn0
        with pytest.raises(ValueError, match="share one attention module"):
            with capture_qk(model):
                pass
    finally:
        layers[1].self_attn = attn1
    with pytest.raises(RuntimeError, match="no forward"):
        with capture_qk(model):
            pass
    with torch.no_grad(), capture_qk(model, layers=[2]) as rec:  # two forwards, each checked
        model(**inputs)
        model(**inputs)
    assert rec.num_forwards == 2 and list(rec.q) == [2]
    assert impls(model) == ("sdpa", "sdpa") and no_gasp_registrations()


def test_bf16_model_keeps_bf16(qwen):
    model, inputs, layout = qwen
    model = copy.deepcopy(model).to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad(), capture_qk(model, positions=layout.flat_positions) as rec:
        model(**inputs)
    with torch.no_grad(), capture_qk(model, positions=layout.flat_positions, rope="pre") as pre:
        model(**inputs)
    for r in (rec, pre):
        assert all(t.dtype == torch.bfloat16 for t in [*r.q.values(), *r.k.values()])


@pytest.mark.parametrize("name", ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-llava-next-video", "tiny-qwen3.5"])
def test_pre_rope_is_the_tensor_rope_rotates(name):
    model, tok = build_tiny(name, seed=0)
    inputs, _ = get_adapter(model).prepare_inputs(frames(), processor_or_tokenizer=tok, prompt="what")
    with torch.no_grad(), capture_qk(model) as post:
        model(**inputs)
    with torch.no_grad(), capture_qk(model, rope="pre") as pre:
        model(**inputs)
    for li in post.layers:
        for a, b in ((pre.q[li], post.q[li]), (pre.k[li], post.k[li])):
            assert a.shape == b.shape
            # RoPE is a rotation per head and token: norms agree (for Qwen3 only after q_norm/k_norm)
            assert torch.allclose(a.norm(dim=-1), b.norm(dim=-1), rtol=1e-5, atol=1e-6)
            assert torch.allclose(a[:, :, 0], b[:, :, 0], atol=1e-6)  # position 0: identity rotation
            assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-3     # elsewhere RoPE moved them


@pytest.mark.parametrize("rope", ["post", "pre"])
def test_grad_mode_under_activation_checkpointing(qwen, rope):
    model, inputs, layout = qwen
    pos = layout.flat_positions
    weights = {li: torch.randn(1, 4, pos.numel(), 32, generator=torch.Generator().manual_seed(li)) for li in range(4)}

    def grads(checkpointing, backward_inside):
        m = copy.deepcopy(model).train()
        if checkpointing:
            m.activation_checkpointing_enable()
        with capture_qk(m, positions=pos, grad=True, rope=rope) as rec:
            m(**inputs, use_cache=False)
            loss = sum((rec.q[li] * weights[li]).sum() + rec.k[li].pow(2).sum() for li in rec.layers)
            if backward_inside:
                loss.backward()
        if not backward_inside:
            loss.backward()
        assert rec.num_forwards == 1
        layers = get_adapter(m).decoder_layers(m)
        return torch.cat([layers[i].self_attn.q_proj.weight.grad.flatten() for i in range(4)])

    ref = grads(False, True)
    assert ref.abs().max() > 0
    for inside in (True, False):
        assert torch.allclose(grads(True, inside), ref, rtol=1e-5, atol=1e-7)
    # grad=False under checkpointing: detached, and the recompute in backward is not reported
    m = copy.deepcopy(model).train()
    m.activation_checkpointing_enable()
    calls = []
    with capture_qk(m, positions=pos, rope=rope, on_layer=lambda li, q, k: calls.append((li, q.requires_grad))) as rec:
        m(**inputs, use_cache=False).logits.float().logsumexp(-1).sum().backward()
    assert calls == [(li, False) for li in range(4)] and rec.num_forwards == 1
