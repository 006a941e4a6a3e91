"""A trained LoRA adapter merged into its base, saved as a plain Hugging Face model folder.

    model = merged_model("checkpoints/gasp-v3/base", "checkpoints/gasp-v3/arm_C")   # LoRA folded into the weights
    model.save_pretrained(out); copy_base_files(base_folder, out)

What evaluators (lmms-eval, VLMEvalKit) load is a folder the stock transformers classes read: weights,
config, and the base's own tokenizer/processor files, copied byte for byte. The correspondence heads
are training-only (GASP, Sec. 4) and are not part of it. The command around this (refusals, the model
card, writing atomically) is ``gasp export`` (gasp_cli/export.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"
# what save_pretrained writes itself, or what an export replaces (the card); never copied from the base
_WRITTEN = {"config.json", "generation_config.json", "README.md", ".gitattributes"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")


class ExportError(ValueError):
    """A checkpoint that cannot be exported; the message names the input and the fix."""


def find_adapter(checkpoint: str | os.PathLike) -> Path:
    """The peft adapter folder of a training checkpoint (OUT/checkpoint-N/adapter) or an adapter folder itself."""
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise ExportError(f"{ckpt} is not a folder; pass a training checkpoint (OUT/checkpoint-N) or a LoRA "
                          "adapter folder")
    for cand in (ckpt / "adapter", ckpt):
        if (cand / ADAPTER_CONFIG).is_file():
            return cand
    raise ExportError(f"{ckpt} holds no LoRA adapter (no {ADAPTER_CONFIG} in it or in {ckpt / 'adapter'}); pass a "
                      "training checkpoint OUT/checkpoint-N or the adapter folder a training run wrote")


def adapter_base(adapter_dir: Path) -> str:
    """The base model the adapter records (peft's ``base_model_name_or_path``)."""
    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ExportError(f"{adapter_dir / ADAPTER_CONFIG} names no base model; pass --base")
    return str(base)


def base_files(base_folder: str | os.PathLike) -> list[Path]:
    """The base's tokenizer, processor and chat-template files: every top-level file but weights and what
    save_pretrained writes itself (config.json, generation_config.json) or the export replaces (README.md)."""
    folder = Path(base_folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name not in _WRITTEN and not p.name.endswith(_WEIGHT_SUFFIXES)
                  and not p.name.endswith(".index.json") and not p.name.startswith("."))


def copy_base_files(base_folder: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Copy ``base_files`` into ``out`` (the HF cache's symlinks resolved); returns the names copied."""
    names = []
    for p in base_files(base_folder):
        shutil.copyfile(p, Path(out) / p.name)
        names.append(p.name)
    return names


def merged_model(model, dtype: torch.dtype | None = None):
    """A peft-wrapped model with its LoRA folded into the base weights (W + (alpha/r) B A), the peft wrapper
    removed; cast to ``dtype`` after merging (the merge itself runs in the dtype the model was loaded in)."""
    merged = model.merge_and_unload()
    return merged.to(dtype) if dtype is not None else merged
