"""tiny-paligemma: a PaliGemma 2 config (SigLIP + Gemma 2 text) shrunk to about 1M parameters.

Same layout as google/paligemma2-3b-pt-224: one SigLIP token per patch (no pooling;
tiny 112 px / 14 = 8x8 tokens per image), linearly projected, the image tokens first, then
<bos>, the prompt and "\\n". The Gemma 2 text keeps the features the probe must survive:
attention logit softcapping, final logit softcapping (30), sliding / global layers
alternating with a window (32) shorter than a probe sequence, and query_pre_attn_scalar !=
head_dim. The attention cap is 0.1 instead of Gemma 2's default 50: random-weight scores stay
below about 0.25, so only a small cap bites, and a Q/K reconstruction that forgot it fails.
"""
from __future__ import annotations

from gasp.models.tiny_common import check_keys, register_tiny, token_ids

PALIGEMMA_SPECIALS = ["<bos>", "<eos>", "<image>"]


@register_tiny("tiny-paligemma", "paligemma", PALIGEMMA_SPECIALS, bos="<bos>", eos="<eos>", pad="<pad>")
def paligemma_config(tok, text, vision_o, top_o):
    from transformers import PaliGemmaConfig

    (img,) = token_ids(tok, "<image>")
    hidden = text["hidden_size"]
    head_dim = text.get("head_dim", hidden // text["num_attention_heads"])
    text = {"head_dim": head_dim, "query_pre_attn_scalar": 48, "sliding_window": 32,
            "attn_logit_softcapping": 0.1, "final_logit_softcapping": 30.0, **text}
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  patch_size=14, image_size=112, vision_use_head=False, **vision_o)
    cfg = PaliGemmaConfig(text_config={"model_type": "gemma2", **text},
                          vision_config={"model_type": "siglip_vision_model", **vision},
                          image_token_index=img, projection_dim=hidden, hidden_size=hidden,
                          vocab_size=text["vocab_size"], **top_o)
    check_keys(cfg.text_config, text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
