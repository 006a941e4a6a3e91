"""accelerate process state that also shards work on CPU-only machines.

``PartialState()`` treats ``accelerate launch --multi_gpu`` on a machine without an
accelerator as N independent single processes (distributed type NO), so every process
would do all the work. Asking for the CPU explicitly when no accelerator is present
gives gloo MULTI_CPU instead, which is what the launch meant.
"""
from __future__ import annotations

import torch


def has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def process_state(device: str | None = None):
    """The accelerate ``PartialState`` for this process (CPU if ``device`` says so or nothing else exists)."""
    from accelerate import PartialState

    cpu = (device is not None and str(device).startswith("cpu")) or not has_accelerator()
    return PartialState(cpu=cpu)
