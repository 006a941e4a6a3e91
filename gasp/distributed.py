"""accelerate process state that also shards work on CPU-only machines.

``PartialState()`` treats ``accelerate launch --multi_gpu`` on a machine without an
accelerator as N independent single processes (distributed type NO), so every process
would do all the work. Asking for the CPU explicitly when no accelerator is present
gives gloo MULTI_CPU instead, which is what the launch meant.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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


@contextmanager
def gathered(params: Iterable[torch.nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """DeepSpeed ZeRO-3-partitioned ``params`` whole for the block (a collective: every process enters).

    Under ZeRO-3 (``zero3_init_flag``) a model is partitioned as it is built, and each process holds an
    empty placeholder for every weight; reading one (the heads' SVD initialisation reads q_proj) needs
    the whole tensor first. ``modifier_rank``: the process whose writes are kept (None: read only).
    Parameters that are not partitioned pass through untouched, so the block is a no-op elsewhere.
    """
    parts = [p for p in params if hasattr(p, "ds_id")]
    if not parts:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(parts, modifier_rank=modifier_rank):
        yield
