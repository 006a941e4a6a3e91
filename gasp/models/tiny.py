"""Tiny random-weight models of every supported family, built in code (no download).

They are what tests and the embedded default use. Each builder makes a config in the
shape of the real checkpoint (same model_type, same token layout), shrunk to about
1M parameters, and a tiny word-level tokenizer whose special-token ids match the
config. Weights are deterministic in `seed` (torch.manual_seed right before init).

`overrides` widen the text model for benchmarks, e.g.
`build_tiny("tiny-qwen2.5-vl", hidden_size=256, num_hidden_layers=8)`: plain keys go to the
text config, `vision_<key>` to the vision config, and a few top-level keys
(`spatial_pool_stride`, `vision_feature_layer`, ...) to the outer config. Widths that must
agree (vision output = text hidden, sum(mrope_section) = head_dim/2) follow the text size.
An unknown key is an error (the configs themselves silently accept misspelled keys).
"""
from __future__ import annotations

import logging
import os

import torch

from gasp.models.tiny_common import (
    FAMILIES, TINY_VOCAB_SIZE, build_tiny_tokenizer, check_keys, check_special_ids, family, qwen_rope,
    split_overrides, text_kwargs, token_ids,
)
from gasp.models import tiny_qwen3_5  # noqa: F401
from gasp.models import tiny_internvl  # noqa: F401
from gasp.models import tiny_gemma3  # noqa: F401,E402  registers tiny-gemma3
from gasp.models import tiny_paligemma  # noqa: F401,E402  registers tiny-paligemma
from gasp.models import tiny_llava  # noqa: F401,E402  registers tiny-llava
from gasp.models import tiny_smolvlm  # noqa: F401,E402  registers tiny-smolvlm

logger = logging.getLogger(__name__)

# family modules register themselves on import (one file per family added since; see tiny_common.register_tiny)
TINY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def build_tiny_config(name: str, tokenizer=None, **overrides):
    """The tiny config for `name` (see module docstring for `overrides`)."""
    from transformers import (
        LlavaNextVideoConfig, LlavaOnevisionConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig,
    )

    fam = family(name)
    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer(name)
    text_o, vision_o, top_o = split_overrides(overrides)
    text = {**text_kwargs(tok), **text_o}
    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    mt = fam.model_type
    if fam.make_config is not None:                       # a family module's builder
        cfg = fam.make_config(tok, text, vision_o, top_o)
        check_special_ids(cfg, tok)
        return cfg

    if mt in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        vs, ve, ip, vp = token_ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        ids = dict(vision_start_token_id=vs, vision_end_token_id=ve, image_token_id=ip, video_token_id=vp)
        if mt == "qwen3_vl":
            head_dim = text.get("head_dim", hidden // heads)
            text.setdefault("head_dim", head_dim)
            text.setdefault("rope_parameters", qwen_rope(head_dim, 5e5, interleaved=True))
            vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                          out_hidden_size=hidden, num_position_embeddings=64, deepstack_visual_indexes=[0])
            cls = Qwen3VLConfig
        elif mt == "qwen2_5_vl":
            text.setdefault("rope_parameters", qwen_rope(hidden // heads, 1e6))
            vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                          fullatt_block_indexes=[1], window_size=112, tokens_per_second=2)
            cls = Qwen2_5_VLConfig
        else:
            text.setdefault("rope_parameters", qwen_rope(hidden // heads, 1e6))
            vision = dict(depth=2, embed_dim=64, hidden_size=hidden, mlp_ratio=2, num_heads=4)
            cls = Qwen2VLConfig
        vision.update(vision_o)
        if mt == "qwen2_vl":
            vision["hidden_size"] = hidden  # the merger's output width must equal the text width
        else:
            vision["out_hidden_size"] = hidden
        cfg = cls(text_config=text, vision_config=vision, **ids, **top_o)
    else:
        img, vid = token_ids(tok, "<image>", "<video>")
        if mt == "llava_next_video":
            text_type = "llama"
            vision = dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=112,
                          projection_dim=64)
            extra = dict(vision_feature_layer=-2, vision_feature_select_strategy="default",
                         spatial_pool_stride=2, video_seq_length=16, image_seq_length=64)
            cls = LlavaNextVideoConfig
        else:
            text_type = "qwen2"
            vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=112,
                          vision_use_head=False)
            extra = dict(vision_feature_layer=-1, vision_feature_select_strategy="full")
            cls = LlavaOnevisionConfig
        vision.update(vision_o)
        extra.update(top_o)
        cfg = cls(text_config={"model_type": text_type, **text}, vision_config=vision,
                  image_token_index=img, video_token_index=vid, **extra)
    check_keys(cfg.get_text_config(), text, "text")
    check_keys(cfg.vision_config, vision, "vision")
    check_special_ids(cfg, tok)
    return cfg


def build_tiny(name: str, seed: int = 0, **overrides):
    """Build `(model, tokenizer)` for a tiny random-weight model, deterministic in `seed`, in eval mode."""
    from transformers import AutoModelForImageTextToText

    tok = build_tiny_tokenizer(name)
    cfg = build_tiny_config(name, tok, **overrides)
    from gasp.adapters import get_adapter

    attn = get_adapter(cfg).attn_implementation()
    if isinstance(attn, str):
        cfg._attn_implementation = attn
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    if family(name).post_init is not None:
        family(name).post_init(model)
    model.eval()
    model.name_or_path = name  # what peft records as base_model_name_or_path
    model.config._name_or_path = name
    return model, tok


def save_tiny(name: str, out_dir: str | os.PathLike, seed: int = 0, **overrides) -> str:
    """Save a tiny model and its tokenizer with save_pretrained, so the normal local-path loader reads it."""
    model, tok = build_tiny(name, seed=seed, **overrides)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    logger.info("saved %s (seed %d) to %s", name, seed, out_dir)
    return out_dir
