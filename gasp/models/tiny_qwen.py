"""tiny-qwen2-vl, tiny-qwen2.5-vl, tiny-qwen3-vl: the Qwen VL families' shapes (ViT + 2x2 patch merger, M-RoPE LLM).

Qwen2-VL's merger output width is its vision ``hidden_size``; Qwen2.5-VL's and Qwen3-VL's is
``out_hidden_size``. Both follow the text width. Qwen3-VL interleaves its M-RoPE sections and
feeds one deepstack layer.
"""
from __future__ import annotations

from gasp.models.tiny_common import QWEN_SPECIALS, check_keys, qwen_rope, register_tiny, token_ids

QWEN = dict(eos="<|im_end|>", pad="<|endoftext|>")


def _ids(tok) -> dict[str, int]:
    vs, ve, ip, vp = token_ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    return dict(vision_start_token_id=vs, vision_end_token_id=ve, image_token_id=ip, video_token_id=vp)


def _finish(cfg, text, vision):
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg


@register_tiny("tiny-qwen2-vl", "qwen2_vl", QWEN_SPECIALS, **QWEN)
def qwen2_vl(tok, text, vision_o, top_o):
    from transformers import Qwen2VLConfig

    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    text.setdefault("rope_parameters", qwen_rope(hidden // heads, 1e6))
    vision = {**dict(depth=2, embed_dim=64, hidden_size=hidden, mlp_ratio=2, num_heads=4), **vision_o}
    vision["hidden_size"] = hidden                  # the merger's output width must equal the text width
    return _finish(Qwen2VLConfig(text_config=text, vision_config=vision, **_ids(tok), **top_o), text, vision)


@register_tiny("tiny-qwen2.5-vl", "qwen2_5_vl", QWEN_SPECIALS, **QWEN)
def qwen2_5_vl(tok, text, vision_o, top_o):
    from transformers import Qwen2_5_VLConfig

    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    text.setdefault("rope_parameters", qwen_rope(hidden // heads, 1e6))
    vision = {**dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                     fullatt_block_indexes=[1], window_size=112, tokens_per_second=2), **vision_o}
    vision["out_hidden_size"] = hidden
    return _finish(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_ids(tok), **top_o), text, vision)


@register_tiny("tiny-qwen3-vl", "qwen3_vl", QWEN_SPECIALS, **QWEN)
def qwen3_vl(tok, text, vision_o, top_o):
    from transformers import Qwen3VLConfig

    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    head_dim = text.get("head_dim", hidden // heads)
    text.setdefault("head_dim", head_dim)
    text.setdefault("rope_parameters", qwen_rope(head_dim, 5e5, interleaved=True))
    vision = {**dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                     out_hidden_size=hidden, num_position_embeddings=64, deepstack_visual_indexes=[0]), **vision_o}
    vision["out_hidden_size"] = hidden
    return _finish(Qwen3VLConfig(text_config=text, vision_config=vision, **_ids(tok), **top_o), text, vision)
