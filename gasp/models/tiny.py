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

# each family module registers its tiny model(s) on import, in this order (TINY_NAMES lists them so)
from gasp.models import tiny_qwen  # noqa: F401  tiny-qwen2-vl, tiny-qwen2.5-vl, tiny-qwen3-vl
from gasp.models import tiny_llava_video  # noqa: F401  tiny-llava-next-video, tiny-llava-onevision
from gasp.models import tiny_qwen3_5  # noqa: F401
from gasp.models import tiny_internvl  # noqa: F401
from gasp.models import tiny_gemma3  # noqa: F401
from gasp.models import tiny_paligemma  # noqa: F401
from gasp.models import tiny_llava  # noqa: F401
from gasp.models import tiny_smolvlm  # noqa: F401
from gasp.models.tiny_common import FAMILIES, build_tiny_tokenizer, check_special_ids, family, split_overrides, text_kwargs

logger = logging.getLogger(__name__)

TINY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def build_tiny_config(name: str, tokenizer=None, **overrides):
    """The tiny config for `name` (see module docstring for `overrides`), from its family module's builder."""
    fam = family(name)
    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer(name)
    text_o, vision_o, top_o = split_overrides(overrides)
    cfg = fam.make_config(tok, {**text_kwargs(tok), **text_o}, vision_o, top_o)
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
