"""tiny-llava-next-video and tiny-llava-onevision: the LLaVA video families' shapes, about 1M parameters.

LLaVA-NeXT-Video: CLIP patches (CLS dropped at layer -2), 2x2 average pooling per video frame, Llama.
LLaVA-OneVision: SigLIP patches, bilinear resize per video frame, Qwen2, one newline token per video.
"""
from __future__ import annotations

from gasp.models.tiny_common import LLAVA_SPECIALS, QWEN_LLAVA_SPECIALS, check_keys, register_tiny, token_ids


def _config(cls, tok, text_type, text, vision, extra):
    img, vid = token_ids(tok, "<image>", "<video>")
    cfg = cls(text_config={"model_type": text_type, **text}, vision_config=vision, image_token_index=img,
              video_token_index=vid, **extra)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    return cfg


@register_tiny("tiny-llava-next-video", "llava_next_video", LLAVA_SPECIALS, bos="<s>", eos="</s>", pad="<pad>")
def llava_next_video(tok, text, vision_o, top_o):
    from transformers import LlavaNextVideoConfig

    vision = {**dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, patch_size=14, image_size=112, projection_dim=64), **vision_o}
    extra = {**dict(vision_feature_layer=-2, vision_feature_select_strategy="default", spatial_pool_stride=2,
                    video_seq_length=16, image_seq_length=64), **top_o}
    return _config(LlavaNextVideoConfig, tok, "llama", text, vision, extra)


@register_tiny("tiny-llava-onevision", "llava_onevision", QWEN_LLAVA_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
def llava_onevision(tok, text, vision_o, top_o):
    from transformers import LlavaOnevisionConfig

    vision = {**dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, patch_size=14, image_size=112, vision_use_head=False), **vision_o}
    extra = {**dict(vision_feature_layer=-1, vision_feature_select_strategy="full"), **top_o}
    return _config(LlavaOnevisionConfig, tok, "qwen2", text, vision, extra)
