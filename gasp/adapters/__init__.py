"""Model adapters, a registry keyed by `config.model_type` (one file per family).

    adapter = get_adapter(model)            # or a config, or a model_type string
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok)
"""
from __future__ import annotations

from gasp.adapters.base import ModelAdapter, VisualLayout

_REGISTRY: dict[str, type[ModelAdapter]] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: register an adapter under its `model_type`."""
    if not cls.model_type:
        raise ValueError(f"{cls.__name__} has no model_type")
    if cls.model_type in _REGISTRY and _REGISTRY[cls.model_type] is not cls:
        raise ValueError(f"model_type {cls.model_type!r} is already registered to {_REGISTRY[cls.model_type].__name__}")
    _REGISTRY[cls.model_type] = cls
    return cls


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_adapter(model_or_config) -> ModelAdapter:
    """The adapter for a model (plain or peft-wrapped), a config, or a model_type string."""
    if isinstance(model_or_config, str):
        model_type, config = model_or_config, None
    else:
        obj = ModelAdapter.unwrap(model_or_config)
        config = getattr(obj, "config", obj)
        model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(supported_model_types())}"
        )
    return _REGISTRY[model_type](config)


# Importing the family modules registers them.
from gasp.adapters import (  # noqa: E402,F401
    gemma3, idefics3, internvl, llava, llava_next_video, llava_onevision, paligemma, qwen2_5_vl, qwen2_vl, qwen3_5,
    qwen3_vl, smolvlm,
)

__all__ = ["ModelAdapter", "VisualLayout", "get_adapter", "register_adapter", "supported_model_types"]
