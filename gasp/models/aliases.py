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
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",              # LlavaConfig's documented checkpoint
    "smolvlm2-2.2b": "HuggingFaceTB/SmolVLM2-2.2B-Instruct",  # SmolVLMConfig's documented checkpoint
}


def known_names() -> list[str]:
    """Every short name `load_model` accepts besides paths and `org/name` ids."""
    return sorted(ALIASES) + list(TINY_NAMES)


def resolve_alias(name: str) -> str:
    """The Hugging Face id for an alias (case-insensitive); other strings are returned unchanged."""
    return ALIASES.get(name.lower(), name)
