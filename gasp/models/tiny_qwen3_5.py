"""tiny-qwen3.5: a ~1M-parameter random Qwen3.5 VLM (hybrid Gated DeltaNet / attention LLM).

Four text layers in the released pattern (`full_attention_interval` 4): layers 0-2 linear
attention, layer 3 full attention, so both kinds exist. head_dim 32 with the released
partial_rotary_factor 1/4 (8 rotated dims, M-RoPE sections [2, 1, 1], interleaved); the
vision tower is Qwen3-VL's without deepstack (16-px patches, 2 x 2 merge: 32 px per token).
"""
from __future__ import annotations

from gasp.models.tiny_common import QWEN_SPECIALS, check_keys, qwen_rope, register_tiny, token_ids


@register_tiny("tiny-qwen3.5", "qwen3_5", QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
def make_config(tok, text, vision_o, top_o):
    from transformers import Qwen3_5Config

    vs, ve, ip, vp = token_ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    head_dim = text.setdefault("head_dim", hidden // heads)
    rope = qwen_rope(int(head_dim * 0.25), 1e7, interleaved=True)
    rope["partial_rotary_factor"] = 0.25
    text.setdefault("rope_parameters", rope)
    n = text["num_hidden_layers"]
    text.setdefault("layer_types", ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n)])
    text.setdefault("linear_key_head_dim", 32)
    text.setdefault("linear_value_head_dim", 32)
    text.setdefault("linear_num_key_heads", 2)
    text.setdefault("linear_num_value_heads", 4)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                  num_position_embeddings=64)
    vision.update(vision_o)
    vision["out_hidden_size"] = hidden          # the merger's output width must equal the text width
    cfg = Qwen3_5Config(text_config=text, vision_config=vision, vision_start_token_id=vs, vision_end_token_id=ve,
                        image_token_id=ip, video_token_id=vp, **top_o)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg
