"""DeepSpeed ZeRO-2/3 under `accelerate launch --config_file configs/accelerate/deepspeed_zero{2,3}.yaml`.

accelerate builds the DeepSpeed engine in ``prepare``; this module makes the run's own settings the
engine's and says when they disagree:

- the recipe owns the batch (one sequence per micro-batch), the accumulation (``optim.grad_accum``) and
  the clipping (``optim.grad_clip``); they are written into the DeepSpeed config, and a DeepSpeed config
  that names other values is refused before training (``ZeroConfigError``);
- torch's AdamW is the optimizer on every engine (``zero_allow_untested_optimizer``): DeepSpeed's own
  Adam kernels are compiled ops that its CPU accelerator lacks, and one optimizer keeps runs comparable;
- ZeRO-3 must gather weights to save them (``zero3_save_16bit_model: true``): without it the checkpoint
  would hold each process's empty partitions, so that setting is refused;
- each process's optimizer partition (AdamW's moments and the fp32 master weights of DeepSpeed's flat
  groups: tensors and plain values) is gathered into the checkpoint, so a ZeRO run resumes exactly on
  the same number of processes (``optimizer_state`` / ``load_optimizer_state``).

Under ZeRO-3 every weight is partitioned as the model is built (``zero3_init_flag``); what reads whole
weights outside a forward (the heads' SVD initialisation, the weights checksum) gathers them first
(``gasp.distributed.gathered``).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from typing import Any


def requested() -> bool:
    """Whether `accelerate launch` was given a DeepSpeed config (it says so in the environment)."""
    import os

    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


class ZeroConfigError(ValueError):
    """A DeepSpeed setting that cannot work with this run; said in one line before training."""


def plugin(acc) -> Any | None:
    """accelerate's DeepSpeed plugin when the engine is DeepSpeed, else None."""
    from accelerate.utils import DistributedType

    return acc.state.deepspeed_plugin if acc.distributed_type == DistributedType.DEEPSPEED else None


def stage(acc) -> int | None:
    """The ZeRO stage DeepSpeed runs (None: not DeepSpeed)."""
    p = plugin(acc)
    return None if p is None else int(p.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def configure(acc, cfg) -> None:
    """Write the recipe's batch, accumulation and clipping into the DeepSpeed config; refuse contradictions."""
    p = plugin(acc)
    if p is None:
        return
    ds = p.deepspeed_config
    owned = {"train_micro_batch_size_per_gpu": (1, "one sequence per micro-batch"),
             "gradient_accumulation_steps": (cfg.optim.grad_accum, "optim.grad_accum"),
             "gradient_clipping": (cfg.optim.grad_clip, "optim.grad_clip")}
    for key, (want, ours) in owned.items():
        have = ds.get(key, "auto")
        if have not in ("auto", None) and float(have) != float(want):
            raise ZeroConfigError(f"the DeepSpeed config sets {key}: {have}, but this run uses {want} ({ours}); "
                                  f"remove {key} from the DeepSpeed config (gasp sets it) or set {ours} to {have}")
        ds[key] = want
    ds["train_batch_size"] = cfg.optim.grad_accum * acc.num_processes
    ds["zero_allow_untested_optimizer"] = True       # torch's AdamW: DeepSpeed's Adam ops are not built on CPU
    zero = ds.setdefault("zero_optimization", {})
    if int(zero.get("stage", 0)) == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save", False):
        raise ZeroConfigError("ZeRO-3 without zero3_save_16bit_model: true (stage3_gather_16bit_weights_on_model_save) "
                              "cannot gather the weights to save them, so every checkpoint would hold empty "
                              "partitions; set zero3_save_16bit_model: true in the accelerate config")


def optimizer_state(acc, optimizer) -> list[dict]:
    """Every process's ZeRO optimizer partition, in rank order (a collective; the list on every process).

    DeepSpeed's own ``state_dict`` minus the entries that are objects rather than tensors and plain values
    (its loss scaler, the stage enum, fragment maps): those describe the engine, not the training state,
    and ``load_optimizer_state`` takes them from the engine it loads into, so the checkpoint loads with
    ``torch.load(weights_only=True)`` like the rest of trainer_state.pt.
    """
    from accelerate.utils import gather_object, send_to_device

    sd = _zero_optimizer(optimizer).state_dict()
    mine = send_to_device({k: v for k, v in sd.items() if _plain(v)}, "cpu")
    return gather_object([mine])


def load_optimizer_state(acc, optimizer, states: list[dict]) -> None:
    """This process's partition from ``optimizer_state``'s list, with the fp32 master weights it saved."""
    if len(states) != acc.num_processes:
        raise ValueError(f"the checkpoint holds {len(states)} DeepSpeed optimizer partitions; resume it on "
                         f"{len(states)} processes, not {acc.num_processes}")
    opt = _zero_optimizer(optimizer)
    engine_parts = {k: v for k, v in opt.state_dict().items() if not _plain(v)}
    merged = [{**engine_parts, **st} for st in states]
    opt.load_state_dict(merged, load_optimizer_states=True, load_from_fp32_weights=True)


def clear_stale_gradients(optimizer) -> None:
    """Zero ZeRO-3's gradient partitions before a step's first micro-batch.

    ZeRO-3 copies a weight's reduced gradient into its partition at the first micro-batch of a step and adds
    to it at the later ones, without zeroing in between steps. A weight that the first micro-batch does not
    use (GASP's heads in an LM micro-batch, the last layers' LoRA in a geometric one) then adds its later
    gradient to the previous step's, and one that no micro-batch uses is stepped with the previous step's
    gradient (DeepSpeed 0.19.8, stage3.py's partition_grads). Zeroing the flat buffer first makes both
    zero, as DDP's fresh gradients are. A no-op for other engines.
    """
    buf = getattr(_zero_optimizer(optimizer), "grad_partitions_flat_buffer", None)
    if buf is not None:
        buf.zero_()


def _zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer under accelerate's DeepSpeedOptimizerWrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _plain(v) -> bool:
    """Tensors, numbers, strings, None and containers of them: what ``weights_only`` loading accepts."""
    import torch

    if v is None or type(v) in (bool, int, float, str, torch.Size) or isinstance(v, torch.Tensor):
        return True                               # exact types: an IntEnum (ZeRO's stage) is an int, not plain
    if isinstance(v, dict):
        return all(type(k) in (int, str) and _plain(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return False


_RECOMPUTE = -1                     # a submodule id no DeepSpeed module has: "in use by a checkpoint recompute"


def recompute_context(model) -> Callable[[], tuple[Any, Any]]:
    """A ``context_fn`` for torch's non-reentrant checkpoint that keeps ZeRO-3 from re-partitioning frozen
    weights while a checkpointed block is recomputed in backward.

    torch saves a frozen (requires_grad=False) weight by reference, not as a detached copy; ZeRO-3 gathers it
    for the recompute and, at the end of each submodule's forward, partitions it in place (shape -> [0]), so
    the recompute no longer matches the forward (``CheckpointError``, huggingface/transformers#47254).
    DeepSpeed's own fix (0.19.8) attributes such weights to the submodule whose backward is running; under
    GASP's losses, which reach a layer through what its q_proj reads rather than through its output, no
    backward hook of that layer has run yet, so nothing holds them. Marking every partitioned frozen weight
    as in use for the length of the recompute keeps the ones it gathers whole; the backward that follows
    releases them as usual. A no-op without ZeRO-3 (no weight has a ``ds_id``).
    """
    @contextmanager
    def recompute():
        frozen = [p for p in model.parameters() if hasattr(p, "ds_id") and not p.requires_grad]
        for p in frozen:
            p.ds_active_sub_modules.add(_RECOMPUTE)
        try:
            yield
        finally:
            for p in frozen:
                p.ds_active_sub_modules.discard(_RECOMPUTE)

    return lambda: (nullcontext(), recompute())
