"""Trainer checkpoints: OUT/checkpoint-STEP/{adapter/, heads/, trainer_state.pt}, written atomically.

    adapter/          a standard peft LoRA adapter (adapter_config.json + adapter_model.safetensors):
                      stock `PeftModel.from_pretrained(base, path)` loads it, gasp not needed;
                      with model.freeze_vision: false also gasp_vision_tower.safetensors, the vision
                      tower trained in full, which peft does not carry (gasp's loader, resume and
                      `gasp export` load it; stock peft alone would not)
                      with model.train_projector the projector too (peft's modules_to_save: stock peft
                      loads and merges it)
    heads/            `CorrespondenceHeads.save_pretrained` (training only)
    objective_heads.safetensors   the other objectives' heads (PseudoGD's), by objective name
                      (training only: resume reads them, inference never)
    trainer_state.pt  step, optimizer, scheduler, the RNG states (torch, numpy, python) of every
                      process (a list indexed by rank) and the data position (the next global
                      micro-batch index; the streams are index-based)

The folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint that --resume could pick up.

``trainer_state.pt`` holds tensors and plain Python values only (numpy's RNG state is stored
as a tensor), and is read with ``torch.load(weights_only=True)``: a downloaded checkpoint
cannot run code. Files from before that change also hold a numpy array; exactly the numpy
types needed to rebuild it are allowlisted (``_LEGACY_NUMPY``).
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_NAME = "trainer_state.pt"
OBJECTIVE_HEADS = "objective_heads.safetensors"
logger = logging.getLogger(__name__)


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / f"checkpoint-{step}"


def rng_state() -> dict:
    """This process's torch, numpy and python RNG states, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        npy = (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
               npy["cached_gaussian"])
    np.random.set_state(npy)
    random.setstate(state["python"])


def _legacy_numpy_globals() -> list:
    """What unpickling a numpy RNG key array needs: the array rebuilder, ndarray and the uint32 dtype."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:                     # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_state(state_file: Path) -> dict:
    """``trainer_state.pt`` with ``weights_only=True``; a file that needs anything else is refused."""
    import pickle

    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(state_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), "a non-allowlisted object")
        raise ValueError(f"{state_file}: refused to load: it holds objects other than tensors and plain values "
                         f"({what}). gasp writes no such file; a checkpoint from elsewhere may try to run code "
                         "when unpickled. Start from a checkpoint gasp wrote.") from None


INPUT_FILE = "gasp_input.json"      # beside the peft files: the input settings the adapter was trained with


def input_settings(adapter_dir: str | os.PathLike) -> dict | None:
    """{"model", and gasp.inputs.ModelInput's fields} an adapter was trained with; None if it records none."""
    path = Path(adapter_dir) / INPUT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_checkpoint(path: Path, peft_model, heads, optimizer, scheduler, step: int, micro: int,
                    rng_states: list[dict] | None = None, *, adapter_state: dict | None = None,
                    optimizer_state: dict | list | None = None, inputs: dict | None = None,
                    engine: dict | None = None, vision_state: dict | None = None,
                    objective_heads: dict | None = None, pointmap: tuple | None = None) -> Path:
    """Write the checkpoint; `rng_states` holds every process's `rng_state()` in rank order (default: this one's).

    A sharded run passes what it gathered: ``adapter_state`` (the peft model's full state dict),
    ``optimizer_state`` (keyed by parameter name), and as ``heads`` an unsharded copy holding the
    gathered head weights. ``inputs`` (the model config's input settings) go to adapter/gasp_input.json, so
    that a probe of the adapter sees frames as training did.
    """
    from gasp.runinfo import write_dir_atomic

    def write(tmp: Path) -> None:
        # save_embedding_layers=False: the embeddings are not trained, and "auto" makes peft look the
        # base model up online.
        peft_model.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False, state_dict=adapter_state)
        if inputs is not None:
            (tmp / "adapter" / INPUT_FILE).write_text(json.dumps(inputs, indent=1) + "\n")
        if vision_state is not None:                     # model.freeze_vision: false trains the tower in full
            from safetensors.torch import save_file

            from gasp.models.loading import VISION_FILE
            save_file({k: v.contiguous() for k, v in vision_state.items()}, str(tmp / "adapter" / VISION_FILE))
        if pointmap is not None:                         # (PointMapBranch, source): gasp.pointmap's files
            from gasp.pointmap import save_branch

            save_branch(pointmap[0], pointmap[1], tmp / "adapter")
        if heads is not None:
            heads.save_pretrained(tmp / "heads")
        if objective_heads:                              # {"pgd_depth.fc1.weight": tensor, ...}
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in objective_heads.items()}, str(tmp / OBJECTIVE_HEADS))
        opt_state = optimizer_state if optimizer_state is not None else optimizer.state_dict()
        torch.save({"step": step, "micro": micro, "optimizer": opt_state,
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_states or [rng_state()], "num_threads": torch.get_num_threads(),
                    "engine": engine or {}},
                   tmp / STATE_NAME)

    return write_dir_atomic(path, write)


def match_threads(saved: int | None, path: Path) -> None:
    """Run on the intra-op thread count the checkpoint was saved with.

    ATen splits a large CPU reduction into one partial sum per thread, so the thread count sets the
    order of float additions: a 4M-element float32 sum differs at ~1e-7 relative between 1 and 2
    threads (one ad-hoc check, torch 2.13.0 CPU). A process started with other threads (OMP_NUM_THREADS unset on a machine
    whose free cores changed) would then drift from the uninterrupted run at that level. Checkpoints
    from before this field (``saved`` None) leave the count alone.
    """
    if saved is not None and int(saved) != torch.get_num_threads():
        logger.warning("--resume %s: the run was saved with %d intra-op threads, this process has %d; using %d so "
                       "that float reductions add in the same order", path, saved, torch.get_num_threads(), saved)
        torch.set_num_threads(int(saved))


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete what a killed save left in ``out``: half-written checkpoint folders, and replaced ones moved aside
    (``gasp.runinfo.write_dir_atomic``) but not yet removed."""
    stale = sorted([*Path(out).glob(".checkpoint-*.tmp-*"), *Path(out).glob(".checkpoint-*.old-*")])
    for p in stale:
        logger.info("removing %s, left by an interrupted save", p)
        shutil.rmtree(p, ignore_errors=True)
    return stale


def load_weights(path: str | Path, peft_model, heads, objective_heads=None, pointmap=None) -> None:
    """The LoRA adapter, heads and objective heads (an nn.ModuleDict) of checkpoint `path` into (unsharded) modules."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"--resume {path}: no {STATE_NAME}; is it an OUT/checkpoint-STEP folder?")
    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    res = set_peft_model_state_dict(peft_model, weights)
    unexpected = [k for k in res.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ValueError(f"--resume {path}: adapter weights do not fit the model: {unexpected[:5]}")
    from gasp.models.loading import load_vision_tower

    load_vision_tower(path / "adapter", peft_model)
    if heads is not None:
        from gasp.qk_heads import load_heads

        saved = load_heads(path / "heads")
        if saved.layers != heads.layers or type(saved) is not type(heads):
            raise ValueError(f"--resume {path}: {type(saved).__name__} on layers {saved.layers}, the config asks for "
                             f"{type(heads).__name__} on {heads.layers}")
        heads.load_state_dict(saved.state_dict())
    if pointmap is not None:
        from gasp.pointmap import WEIGHTS_FILE

        if not (path / "adapter" / WEIGHTS_FILE).is_file():
            raise ValueError(f"--resume {path}: no point-map branch ({WEIGHTS_FILE}), but the config has model.pointmap")
        pointmap.load_state_dict(load_file(str(path / "adapter" / WEIGHTS_FILE)))
    if objective_heads is not None and len(objective_heads):
        if not (path / OBJECTIVE_HEADS).is_file():
            raise ValueError(f"--resume {path}: no {OBJECTIVE_HEADS}, but the config trains objectives with heads "
                             f"({', '.join(objective_heads)})")
        saved = load_file(str(path / OBJECTIVE_HEADS))
        want = set(objective_heads.state_dict())
        if set(saved) != want:
            raise ValueError(f"--resume {path}: its objective heads ({sorted({k.split('.')[0] for k in saved})}) are "
                             f"not the config's ({sorted(objective_heads)})")
        objective_heads.load_state_dict(saved)


def load_training_state(path: str | Path, optimizer, scheduler, rank: int = 0, num_processes: int = 1,
                        load_optimizer=None) -> dict:
    """Optimizer, scheduler and this process's RNG from checkpoint `path`; returns {"step", "micro"}.

    ``load_optimizer(state)`` replaces ``optimizer.load_state_dict`` (a sharded run's loader).
    """
    path = Path(path)
    state = read_state(path / STATE_NAME)
    (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]   # a dict: saved by one process
    if len(rng) != num_processes:
        logger.warning("--resume %s: saved by %d process(es), resumed on %d; every process takes rank 0's "
                       "RNG state, so dropout masks differ from an uninterrupted run", path, len(rng), num_processes)
    set_rng_state(rng[rank] if len(rng) == num_processes else rng[0])
    match_threads(state.get("num_threads"), path)
    return {"step": int(state["step"]), "micro": int(state["micro"])}
