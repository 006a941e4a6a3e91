"""How a sequence's frames reach the model: the settings the probe and the trainer share.

``ProbeConfig`` (flat: ``--size 448 448``) and the trainer's ``ModelConfig`` (``model.size=[448,448]``)
both extend ``ModelInput``, so one set of fields, defaults and checks feeds every adapter's
``prepare_inputs`` (``gasp/adapters/base.py``), and a trained adapter records them in
adapter/gasp_input.json so that a probe of it sees frames as training did.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class ModelInput:
    frames_mode: str | None = None       # None: the adapter's default (its frames_modes[0])
    size: tuple[int, int] | None = None  # model input (H, W) px; None: the adapter's default for the frames
    fps: float = 2.0                     # the frame rate the model is told (Qwen's temporal position ids)
    prompt: str = "describe the video."  # the user turn after the frames

    def input_settings(self) -> dict[str, Any]:
        """The shared fields alone, e.g. ``adapter.prepare_inputs(frames, processor_or_tokenizer=p, **s)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelInput)}


INPUT_KEYS = tuple(f.name for f in dataclasses.fields(ModelInput))


def check_input(cfg: ModelInput, prefix: str = "") -> str | None:
    """What is wrong with the input settings (a message naming ``prefix + key``), or None."""
    if cfg.size is not None and (len(cfg.size) != 2 or min(cfg.size) < 1):
        return f"{prefix}size must be [H, W] in pixels, got {list(cfg.size)}"
    if not cfg.fps > 0:
        return f"{prefix}fps must be > 0, got {cfg.fps}"
    return None
