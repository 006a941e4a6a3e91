"""tiny-internvl: a ~1M-parameter random InternVL (InternViT + pixel shuffle + Qwen2 LLM).

A 2-layer InternViT on 112 x 112 views with 14-px patches (8 x 8 patches), pixel shuffle 0.5
to 4 x 4 tokens of 28 px per frame, as the released 448-px checkpoints give 16 x 16. The word
tokenizer has no "Frame", so the "FrameK: " labels between frames read as <unk> K : (text only;
the placeholders and <img>/</img> are single special ids as in the real tokenizer).
"""
from __future__ import annotations

from gasp.models.tiny_common import check_keys, register_tiny, token_ids

INTERNVL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]


@register_tiny("tiny-internvl", "internvl", INTERNVL_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
def make_config(tok, text, vision_o, top_o):
    from transformers import InternVLConfig

    (ctx,) = token_ids(tok, "<IMG_CONTEXT>")
    vision = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  image_size=112, patch_size=14)
    vision.update(vision_o)
    side = vision["image_size"] // vision["patch_size"] // 2
    extra = dict(image_seq_length=side * side, downsample_ratio=0.5, vision_feature_layer=-1,
                 vision_feature_select_strategy="default")
    extra.update(top_o)
    cfg = InternVLConfig(text_config={"model_type": "qwen2", **text}, vision_config=vision, image_token_id=ctx, **extra)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
