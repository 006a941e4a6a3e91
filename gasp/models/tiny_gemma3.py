"""tiny-gemma3: a Gemma 3 config (SigLIP + Gemma 3 text) shrunk to about 1M parameters.

Same layout as google/gemma-3-4b-it: SigLIP patches average-pooled by the projector to
`mm_tokens_per_image` tokens per image (real 64x64 patches -> 16x16 tokens, kernel 4;
tiny 112 px / 14 = 8x8 patches -> 4x4 tokens, kernel 2), wrapped in <start_of_image> /
<end_of_image>. The text layers alternate sliding / global attention (the real 5:1 pattern
would give four sliding layers and no global one), with a sliding window (32) shorter than a
probe sequence, q_norm/k_norm, and query_pre_attn_scalar != head_dim (as in gemma-3-27b),
so every Gemma 3 attention feature is exercised.
"""
from __future__ import annotations

from gasp.models.tiny_common import check_keys, register_tiny, token_ids

GEMMA3_SPECIALS = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
                   "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def _reinit_projector(model) -> None:
    """Gemma 3's _init_weights zeroes the image projection; a random tiny model needs it random."""
    import torch

    w = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        w.normal_(0.0, w.shape[0] ** -0.5)


@register_tiny("tiny-gemma3", "gemma3", GEMMA3_SPECIALS, bos="<bos>", eos="<eos>", pad="<pad>",
               post_init=_reinit_projector)
def gemma3_config(tok, text, vision_o, top_o):
    from transformers import Gemma3Config

    boi, eoi, img = token_ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    head_dim = text.get("head_dim", text["hidden_size"] // text["num_attention_heads"])
    n_layers = text["num_hidden_layers"]
    text = {"head_dim": head_dim, "query_pre_attn_scalar": 48, "sliding_window": 32,
            "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
            **text}
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  patch_size=14, image_size=112, vision_use_head=False, **vision_o)
    top = dict(mm_tokens_per_image=16, **top_o)
    cfg = Gemma3Config(text_config={"model_type": "gemma3_text", **text},
                       vision_config={"model_type": "siglip_vision_model", **vision},
                       boi_token_index=boi, eoi_token_index=eoi, image_token_index=img, **top)
    check_keys(cfg.text_config, text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
