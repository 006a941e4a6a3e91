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

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Words the tiny tokenizer knows besides letters, digits and punctuation.
_WORDS = (
    "the a an of in on at to and or is are was be this that it its what which where who how "
    "point points frame frames image images video videos labeled marked corresponds correspond "
    "predict describe x y left right top bottom first second next previous same object camera "
    "scene moves move motion depth near far yes no color red green blue white black one two three "
    "four five six seven eight nine ten user assistant system you answer question seconds"
).split()
# Appended later for the synthetic spatial QA and correspondence VQA (gasp.data); kept after
# _WORDS so that every earlier id stays the same.
_QA_WORDS = (
    "yellow orange purple cyan pink brown gray beige box boxes many closer farther forward backward "
    "does way options there see can pixel pixels coordinates coordinate give label labels column row from "
    "A B C D"
).split()
_PUNCT = list(".,:;!?'\"()[]{}<>-_/+*=#%&|@")

# Per-family special tokens, in the order their ids are assigned (after <unk>, <pad>).
_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
_LLAVA_SPECIALS = ["<s>", "</s>", "<image>", "<video>"]
_QWEN_LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

TINY_VOCAB_SIZE = 512  # text vocab_size of every tiny model; all tokenizer ids stay below it


@dataclass(frozen=True)
class _Family:
    model_type: str
    specials: list[str]
    bos: str | None
    eos: str
    pad: str


_FAMILIES: dict[str, _Family] = {
    "tiny-qwen2-vl": _Family("qwen2_vl", _QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>"),
    "tiny-qwen2.5-vl": _Family("qwen2_5_vl", _QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>"),
    "tiny-qwen3-vl": _Family("qwen3_vl", _QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>"),
    "tiny-llava-next-video": _Family("llava_next_video", _LLAVA_SPECIALS, "<s>", "</s>", "<pad>"),
    "tiny-llava-onevision": _Family(
        "llava_onevision", _QWEN_LLAVA_SPECIALS, None, "<|im_end|>", "<|endoftext|>"
    ),
}
TINY_NAMES: tuple[str, ...] = tuple(_FAMILIES)


def build_tiny_tokenizer(name: str):
    """A PreTrainedTokenizerFast over a small word vocabulary plus the family's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    fam = _family(name)
    specials = ["<unk>"] + (["<pad>"] if fam.pad == "<pad>" else []) + fam.specials
    plain = list("abcdefghijklmnopqrstuvwxyz") + list("0123456789") + _PUNCT + _WORDS + _QA_WORDS
    vocab: dict[str, int] = {}
    for tok in specials + plain:
        vocab.setdefault(tok, len(vocab))
    assert len(vocab) <= TINY_VOCAB_SIZE, len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token=fam.pad,
        eos_token=fam.eos,
        bos_token=fam.bos,
        additional_special_tokens=[t for t in fam.specials if t not in (fam.pad, fam.eos, fam.bos)],
        model_max_length=1 << 20,
    )
    return tok


def _family(name: str) -> _Family:
    if name not in _FAMILIES:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_NAMES)}")
    return _FAMILIES[name]


def _ids(tok, *tokens: str) -> list[int]:
    ids = tok.convert_tokens_to_ids(list(tokens))
    assert tok.unk_token_id not in ids or "<unk>" in tokens, tokens
    return ids


def _text_kwargs(tok) -> dict[str, Any]:
    return dict(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    text, vision, top = {}, {}, {}
    for k, v in overrides.items():
        if k.startswith("vision_"):
            vision[k[len("vision_"):]] = v
        elif k.startswith("text_"):
            text[k[len("text_"):]] = v
        elif k in ("image_token_id", "video_token_id", "spatial_pool_stride", "vision_feature_layer",
                   "vision_feature_select_strategy", "tie_word_embeddings"):
            top[k] = v
        else:
            text[k] = v
    return text, vision, top


def _check_keys(cfg, keys: dict, where: str) -> None:
    # Configs accept misspelled keys silently, so compare against the declared fields.
    known = {f.name for f in dataclasses.fields(type(cfg))} | set(getattr(cfg, "attribute_map", {}))
    known |= {"model_type", "pad_token_id", "bos_token_id", "eos_token_id"}
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        raise ValueError(f"unknown {where} config key(s) {unknown} for {type(cfg).__name__}")


def _qwen_rope(head_dim: int, theta: float, interleaved: bool = False) -> dict:
    # sum(mrope_section) must equal head_dim/2; split like the real checkpoints (t gets the least).
    half = head_dim // 2
    t = half // 4 if not interleaved else half - 2 * (half * 5 // 16)
    hw = (half - t) // 2
    sec = [half - 2 * hw, hw, hw]
    rope = {"rope_type": "default", "rope_theta": theta, "mrope_section": sec}
    if interleaved:
        rope["mrope_interleaved"] = True
    return rope


def build_tiny_config(name: str, tokenizer=None, **overrides):
    """The tiny config for `name` (see module docstring for `overrides`)."""
    from transformers import (
        LlavaNextVideoConfig, LlavaOnevisionConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig,
    )

    fam = _family(name)
    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer(name)
    text_o, vision_o, top_o = _split_overrides(overrides)
    text = {**_text_kwargs(tok), **text_o}
    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    mt = fam.model_type

    if mt in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        vs, ve, ip, vp = _ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        ids = dict(vision_start_token_id=vs, vision_end_token_id=ve, image_token_id=ip, video_token_id=vp)
        if mt == "qwen3_vl":
            head_dim = text.get("head_dim", hidden // heads)
            text.setdefault("head_dim", head_dim)
            text.setdefault("rope_parameters", _qwen_rope(head_dim, 5e5, interleaved=True))
            vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                          out_hidden_size=hidden, num_position_embeddings=64, deepstack_visual_indexes=[0])
            cls = Qwen3VLConfig
        elif mt == "qwen2_5_vl":
            text.setdefault("rope_parameters", _qwen_rope(hidden // heads, 1e6))
            vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                          fullatt_block_indexes=[1], window_size=112, tokens_per_second=2)
            cls = Qwen2_5_VLConfig
        else:
            text.setdefault("rope_parameters", _qwen_rope(hidden // heads, 1e6))
            vision = dict(depth=2, embed_dim=64, hidden_size=hidden, mlp_ratio=2, num_heads=4)
            cls = Qwen2VLConfig
        vision.update(vision_o)
        if mt == "qwen2_vl":
            vision["hidden_size"] = hidden  # the merger's output width must equal the text width
        else:
            vision["out_hidden_size"] = hidden
        cfg = cls(text_config=text, vision_config=vision, **ids, **top_o)
    else:
        img, vid = _ids(tok, "<image>", "<video>")
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
    _check_keys(cfg.get_text_config(), text, "text")
    _check_keys(cfg.vision_config, vision, "vision")
    _check_special_ids(cfg, tok)
    return cfg


def _check_special_ids(cfg, tok) -> None:
    vocab = cfg.get_text_config().vocab_size
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None and v >= vocab:
            raise ValueError(f"{n}={v} is not below vocab_size={vocab}")
    if len(tok) > vocab:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than vocab_size={vocab}")


def build_tiny(name: str, seed: int = 0, **overrides):
    """Build `(model, tokenizer)` for a tiny random-weight model, deterministic in `seed`, in eval mode."""
    from transformers import AutoModelForImageTextToText

    tok = build_tiny_tokenizer(name)
    cfg = build_tiny_config(name, tok, **overrides)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
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
