"""The vision encoder's output before the projector, per LLM visual token (adapter.pre_projector_features):
pushed through the family's own projector it gives the model's own visual tokens, in the LLM's order."""
import numpy as np
import pytest
import torch

from gasp.adapters import get_adapter
from gasp.models.tiny import build_tiny


def _frames(n=4, hw=224, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, hw, hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen2-vl"])
def test_qwen_features_through_the_merger_are_the_models_visual_tokens(name):
    model, tok = build_tiny(name, seed=0)
    adapter = get_adapter(model)
    inputs, layout = adapter.prepare_inputs(_frames(), processor_or_tokenizer=tok, prompt="what", size=(224, 224))
    feats = adapter.pre_projector_features(model, inputs)                         # (T, 4, d)
    merger = adapter.vision_tower(model).merger
    with torch.no_grad():
        want = adapter.visual_tokens(model, inputs)                               # (T, D) the LLM's tokens
        got = merger.mlp(merger.ln_q(feats).reshape(feats.shape[0], -1))
    assert feats.shape[:2] == (layout.num_grids * layout.grid[0] * layout.grid[1], 4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    if name == "tiny-qwen2.5-vl":                                                 # 4 windows of 4 x 4 tokens per frame
        order = adapter._window_order(adapter.vision_tower(model), inputs.get("video_grid_thw", inputs.get("image_grid_thw")))
        assert not torch.equal(order, torch.arange(len(order)))                   # so un-permuting is tested
        raw = feats[order]                                                       # back in window order: wrong tokens
        with torch.no_grad():
            wrong = merger.mlp(merger.ln_q(raw).reshape(raw.shape[0], -1))
        assert (wrong - want).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["tiny-qwen3-vl", "tiny-qwen3.5"])
def test_qwen3_features_through_the_merger_are_the_models_visual_tokens(name):
    """Qwen3-VL / Qwen3.5 inherit the hook (no window attention): their merger reads one patch a row."""
    model, tok = build_tiny(name, seed=0)
    adapter = get_adapter(model)
    inputs, layout = adapter.prepare_inputs(_frames(), processor_or_tokenizer=tok, prompt="what", size=(224, 224))
    feats = adapter.pre_projector_features(model, inputs)                         # (T, 4, d)
    with torch.no_grad():
        want = adapter.visual_tokens(model, inputs)
        got = adapter.projector(model)(feats.reshape(-1, feats.shape[-1]))
    assert feats.shape[:2] == (layout.num_grids * layout.grid[0] * layout.grid[1], 4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_qwen_features_carry_gradients_to_the_vision_tower():
    model, tok = build_tiny("tiny-qwen2.5-vl", seed=0)
    adapter = get_adapter(model)
    inputs, _ = adapter.prepare_inputs(_frames(2), processor_or_tokenizer=tok, prompt="what", size=(224, 224))
    adapter.pre_projector_features(model, inputs).square().mean().backward()
    blocks = adapter.vision_tower(model).blocks
    assert blocks[0].attn.qkv.weight.grad is not None and blocks[0].attn.qkv.weight.grad.abs().max() > 0


def test_llava_features_through_the_projector_are_the_image_features():
    model, tok = build_tiny("tiny-llava", seed=0)
    adapter = get_adapter(model)
    size = adapter.image_size
    inputs, layout = adapter.prepare_inputs(_frames(2, size), processor_or_tokenizer=tok, prompt="what")
    feats = adapter.pre_projector_features(model, inputs)                         # (F*h*w, 1, d)
    inner = adapter.inner_model(model)
    with torch.no_grad():
        cfg = model.config
        want = inner.get_image_features(inputs["pixel_values"], vision_feature_layer=cfg.vision_feature_layer,
                                        vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        want = torch.cat(list(getattr(want, "pooler_output", want)))              # (F*h*w, D)
        got = inner.multi_modal_projector(feats[:, 0])
    assert feats.shape[0] == layout.num_grids * layout.grid[0] * layout.grid[1]
    torch.testing.assert_close(got, want.reshape(got.shape), atol=1e-5, rtol=0)


def test_paligemma_features_through_the_projector_are_the_image_features():
    model, tok = build_tiny("tiny-paligemma", seed=0)
    adapter = get_adapter(model)
    inputs, layout = adapter.prepare_inputs(_frames(2, 112), processor_or_tokenizer=tok, prompt="what")
    feats = adapter.pre_projector_features(model, inputs)                         # (F*n*n, 1, d)
    inner = adapter.inner_model(model)
    with torch.no_grad():
        want = inner.get_image_features(inputs["pixel_values"]).pooler_output.reshape(-1, inner.config.text_config.hidden_size)
        got = adapter.projector(model)(feats[:, 0])
    assert feats.shape[0] == layout.num_grids * layout.grid[0] * layout.grid[1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_family_without_it_says_which_have_it():
    model, _ = build_tiny("tiny-smolvlm", seed=0)
    with pytest.raises(NotImplementedError, match="supported: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, LLaVA, PaliGemma"):
        get_adapter(model).pre_projector_features(model, {})
