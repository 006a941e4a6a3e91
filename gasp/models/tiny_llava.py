"""tiny-llava: LLaVA-1.5's shape (CLIP ViT, CLS dropped at layer -2, MLP projector, Llama), about 1M parameters.

112 px input, 14 px patches: 8 x 8 = 64 <image> tokens per frame (the real model: 336 px, 24 x 24 = 576).
"""
from __future__ import annotations

from gasp.models.tiny_common import check_keys, register_tiny, token_ids

LLAVA15_SPECIALS = ["<s>", "</s>", "<image>"]


@register_tiny("tiny-llava", "llava", LLAVA15_SPECIALS, bos="<s>", eos="</s>", pad="<pad>")
def make_config(tok, text, vision_o, top_o):
    from transformers import LlavaConfig

    (img,) = token_ids(tok, "<image>")
    vision = {**dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, patch_size=14, image_size=112, projection_dim=64), **vision_o}
    n = vision["image_size"] // vision["patch_size"]
    extra = {**dict(vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=n * n), **top_o}
    cfg = LlavaConfig(text_config={"model_type": "llama", **text}, vision_config=vision, image_token_index=img, **extra)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
