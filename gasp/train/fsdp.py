"""FSDP2 for the trainer (``run.fsdp=true``): shard the LoRA model, gather full weights to save them.

Sharding (torch's ``fully_shard``, one mesh over every process): each LLM decoder layer is
its own group, the rest of the VLM (embeddings, vision tower, norm, LM head) one more, and
the heads one more, so the probe can call the VLM alone during evaluation. Frozen and
LoRA weights, gradients and the optimizer state are sharded. Decoder layers are not
re-sharded between forward and backward (``reshard_after_forward=False``): the heads' loss
reaches a layer through what its q_proj reads, inside the layer, and FSDP2 re-gathers
weights for backward only where a layer's output receives gradient. So the peak holds
every layer's weights, as ZeRO-2 does, while the optimizer state stays sharded.

Saving gathers: ``full_state_dict`` asks every process for its shards
(``get_model_state_dict(full_state_dict=True, cpu_offload=True)``) and hands the whole
tensors to process 0, which writes a standard peft adapter and the heads exactly as an
unsharded run does. The optimizer state is gathered the same way, keyed by parameter name,
so it loads back onto any sharding. Resume loads the checkpoint's weights into the model
before it is sharded, then the optimizer state after (``load_optimizer_state``).

accelerate's own FSDP path (``distributed_type: FSDP``) does not run on CPU: accelerate
treats a CPU launch as plain multi-CPU data parallel. This module is what the 2-process
CPU test exercises; on GPUs it runs under ``accelerate launch --multi_gpu`` unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def shard(gm: nn.Module, decoder_layers, device: torch.device) -> None:
    """FSDP2-shard ``gm`` (a GaspModel) in place: decoder layers, then the VLM, then the heads."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    for layer in decoder_layers:
        # kept whole from forward to backward: the heads' loss enters a layer through q_proj's input,
        # not through the layer's output, where FSDP2 hooks the re-gather for backward
        fully_shard(layer, mesh=mesh, reshard_after_forward=False)
    fully_shard(gm.model, mesh=mesh)
    if gm.heads is not None:
        fully_shard(gm.heads, mesh=mesh)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Whole CPU tensors on process 0 (an empty dict elsewhere); a collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(cpu_offload=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, whole, on process 0; a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, _inner(optimizer), options=_options(cpu_offload=True))


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of ``full_optimizer_state``: every process passes the same full state; each keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    # not strict: a weight that never had a gradient (the last layer's LoRA in a geo-only run) has no
    # AdamW state in the uninterrupted run either, and must not get one here
    set_optimizer_state_dict(module, _inner(optimizer), state, options=_options(strict=False))


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)        # accelerate's AcceleratedOptimizer wraps it


def gathered(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) parameter; a collective for a DTensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
