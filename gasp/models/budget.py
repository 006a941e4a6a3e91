"""How many frames of a given size a model's context holds, read from its config and processor only.

    frame_budget("llava-1.5-7b", (480, 854))   # {"max_frames": 6, "tokens_per_frame": 576, ...}

The adapter turns F blank frames into the model's real input sequence, so the count is the
family's own (visual tokens, separators, per-frame text); the sequence length is linear in
F, measured at 2 and 4 frames. The budget is the largest F whose sequence, plus a margin for
the prompt and answer, fits ``max_position_embeddings``, capped at ``cap``. No weights are
loaded: tiny models build only their tokenizer and config, checkpoints load config and
processor from the local folder or cache.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TEXT_MARGIN = 256          # tokens left for the prompt's words and an answer


class ModelBudgetError(ValueError):
    """The model cannot be read, or not even two frames of this size fit its context."""


def _config_and_processor(name: str, trust_remote_code: bool) -> tuple[Any, Any]:
    from gasp.models.loading import (ModelNotFoundError, UnknownModelError, _load_processor, check_model)
    from gasp.models.tiny import build_tiny_config
    from gasp.models.tiny_common import build_tiny_tokenizer

    try:
        path = check_model(name, trust_remote_code=trust_remote_code)
    except (ModelNotFoundError, UnknownModelError) as e:
        raise ModelBudgetError(str(e)) from None
    if path is None:
        tok = build_tiny_tokenizer(name.lower())
        return build_tiny_config(name.lower(), tok), tok
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    return config, _load_processor(path, trust_remote_code)


def frame_budget(name: str, frame_hw: tuple[int, int], cap: int = 24, frames_mode: str | None = None,
                 size: tuple[int, int] | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """{"max_frames", "tokens_per_frame", "other_tokens", "context", "cap"} for frames of ``frame_hw`` (H, W)."""
    from gasp.adapters import get_adapter

    config, processor = _config_and_processor(name, trust_remote_code)
    adapter = get_adapter(config)
    H, W = frame_hw

    def length(n: int) -> int:
        frames = np.zeros((n, H, W, 3), dtype=np.uint8)
        try:
            inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=processor, prompt="describe the video.",
                                               frames_mode=frames_mode, size=size)
        except ValueError as e:
            raise ModelBudgetError(f"{name}: frames of {H}x{W} px cannot be prepared: {e}") from None
        return int(inputs["input_ids"].shape[1])

    l2, l4 = length(2), length(4)
    per = (l4 - l2) / 2
    other = l2 - 2 * per
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context is None or per <= 0:
        n = cap
    else:
        n = int((context - other - TEXT_MARGIN) // per)
    if n < 2:
        raise ModelBudgetError(f"{name}: one {H}x{W} frame takes {per:g} tokens, so two do not fit its {context}-token "
                               f"context; store smaller frames (--resize)")
    out = {"max_frames": int(min(n, cap)), "tokens_per_frame": per, "other_tokens": other, "context": context,
           "cap": cap, "frame_hw": [int(H), int(W)]}
    log.info("%s: %g tokens per %dx%d frame, %s-token context -> at most %d frames (cap %d)", name, per, H, W, context,
             out["max_frames"], cap)
    return out
