"""Short model names -> Hugging Face ids (`tiny-*` names are built in code, see tiny.py)."""
from __future__ import annotations

from gasp.models.tiny import TINY_NAMES

ALIASES: dict[str, str] = {
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen3-vl-8b": "Qwen/Qwen3-VL-8B-Instruct",
    "llava-next-video-7b": "llava-hf/LLaVA-NeXT-Video-7B-hf",
    "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    # the checkpoint transformers' Qwen3.5 configs name (auto_docstring in models/qwen3_5); the
    # model card https://huggingface.co/Qwen/Qwen3.5-9B is the 9B of the same family
    "qwen3.5-27b": "Qwen/Qwen3.5-27B",
    "qwen3.5-9b": "Qwen/Qwen3.5-9B",
    # transformers-native InternVL3 (model card https://huggingface.co/OpenGVLab/InternVL3-8B-hf; the
    # config docstring names OpenGVLab/InternVL3-1B-hf), not the trust_remote_code OpenGVLab/InternVL3-8B
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
    "gemma-3-4b": "google/gemma-3-4b-it",
    "paligemma2-3b": "google/paligemma2-3b-pt-224",
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",              # LlavaConfig's documented checkpoint
    "smolvlm2-2.2b": "HuggingFaceTB/SmolVLM2-2.2B-Instruct",  # SmolVLMConfig's documented checkpoint
}


def known_names() -> list[str]:
    """Every short name `load_model` accepts besides paths and `org/name` ids."""
    return sorted(ALIASES) + list(TINY_NAMES)


def resolve_alias(name: str) -> str:
    """The Hugging Face id for an alias (case-insensitive); other strings are returned unchanged."""
    return ALIASES.get(name.lower(), name)
