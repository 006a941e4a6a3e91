"""tiny-smolvlm: SmolVLM2's shape (SigLIP-style tower, pixel shuffle, Llama LLM), about 1M parameters.

112 px input, 14 px patches, scale_factor 2: 8 x 8 patches -> 4 x 4 = 16 <image> tokens of
28 px per frame (the real 2.2B: 384 px, scale 3, 9 x 9 = 81 tokens of 42 px).
"""
from __future__ import annotations

from gasp.models.tiny_common import check_keys, register_tiny, token_ids

SMOLVLM_SPECIALS = ["<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                    "<global-img>", "<image>"]


@register_tiny("tiny-smolvlm", "smolvlm", SMOLVLM_SPECIALS, bos="<|im_start|>", eos="<end_of_utterance>",
               pad="<|im_end|>")
def make_config(tok, text, vision_o, top_o):
    from transformers import SmolVLMConfig

    (img,) = token_ids(tok, "<image>")
    vision = {**dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=14,
                     image_size=112), **vision_o}
    extra = {"scale_factor": 2, **top_o}
    cfg = SmolVLMConfig(text_config={"model_type": "llama", **text}, vision_config=vision, image_token_id=img, **extra)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
