"""The trainer's input pipeline: micro-batches prepared by DataLoader workers ahead of the step.

A geometric sample costs a scene read, a track build and the processor's preprocessing
(hundreds of ms at 448², more at DL3DV's 960×540), which would otherwise stall every step.
Micro-batch ``m`` of process ``p`` is ``BatchMaker(kind(m), m * world + p)``: a pure function
of its index (``gasp.train.geo_stream``, ``gasp.train.lm_stream``), so the workers' order
does not matter and a resumed run that starts at micro-batch ``m`` sees exactly the batches
the uninterrupted run saw. The DataLoader keeps that order (no shuffling; ``batch_size=None``
hands over one micro-batch at a time) and prefetches ``prefetch`` per worker. A worker hands
its micro-batch over as one byte buffer (``pack``): each tensor sent on its own costs the
receiving process a shared-memory file descriptor and a mapping, about 5 ms for a tiny-default
batch of 12 tensors against 2 ms packed (BENCHMARKS.md).

Readers are fork-safe: ``tracks.io.TrackReader`` reopens its HDF5 files in a new process,
and instruction videos are opened per sample. ``data.num_workers=0`` builds batches in the
training process, as before.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from gasp.train.geo_batch import geo_targets
from tracks.types import TrackSequence
from gasp.train.lm_stream import batch_kind


@dataclass
class BatchMaker:
    """Builds micro-batch ``(kind, index)``; holds only picklable, fork-safe parts."""

    model_cfg: Any          # ModelConfig; its ModelInput fields (frames_mode, size, fps, prompt) are used
    adapter: Any
    processor: Any
    geo: Any                # GeoStream or None
    lm: Any                 # LMStream or None
    structure: Any = None   # StructureTargets (gasp.objectives.structure_teacher) when an objective needs them
    joint: bool = False     # instruction batches carry their scene's geometric targets (PseudoGD's joint step)
    pointmap: str | None = None   # model.pointmap: every batch carries its frames' point map (gasp.pointmap)

    def __call__(self, kind: str, index: int) -> dict[str, Any]:
        settings = self.model_cfg.input_settings()
        if kind == "lm":                  # an instruct sample brings its own prompt
            ex = self.lm[index]
            inputs, layout = ex.adapter_inputs(self.adapter, self.processor,
                                               **{k: v for k, v in settings.items() if k != "prompt"})
            batch = {"kind": "lm", "inputs": inputs}
            seq = self._scene_sequence(ex) if (self.joint or self.pointmap) and ex.source_frames is not None else None
            if self.joint and seq is not None:
                batch.update(self._targets(seq, layout))
            if self.pointmap:
                batch["pointmap"] = self._pointmap(seq, layout, index, ex.id)
            return batch
        seq = self.geo[index]
        inputs, layout = self.adapter.prepare_inputs(seq.frames, processor_or_tokenizer=self.processor, **settings)
        batch = {"kind": "geo", "inputs": inputs, **self._targets(seq, layout)}
        if self.pointmap:
            batch["pointmap"] = self._pointmap(seq, layout, index, seq.key)
        return batch

    def _pointmap(self, seq, layout, index: int, what: str) -> torch.Tensor:
        """(F', H', W', 4) the batch's point map (``model.pointmap``), seeded by the batch index (the noisy source)."""
        from gasp.pointmap import PointMapError, batch_pointmap

        if seq is None:
            raise PointMapError(f"instruction record {what!r} names no scene of the training tracks, so it has no point "
                                "map; point maps need gasp's synthetic instruction data")
        return batch_pointmap(self.pointmap, seq, layout, self.adapter, seed=index)

    def _targets(self, seq, layout) -> dict[str, Any]:
        """The geometric part of a batch: loss targets, visual-token positions, grids, structure targets."""
        out = {"targets": geo_targets(seq, layout), "positions": layout.flat_positions,
               "grids": (layout.num_grids, layout.grid[0] * layout.grid[1])}
        if self.structure is not None:                                   # (F', P, C) per-token teacher features
            out["structure"] = self.structure(seq, layout, self.geo.reader.scene_metadata(seq.scene))
        return out

    def _scene_sequence(self, ex) -> TrackSequence:
        """An instruction example's frames as a sequence of its scene (depth, cameras; no points), read from the
        training tracks file its record was made from (``ex.geometry``)."""
        return self.geo.reader.scene(ex.geometry["scene"], frames=ex.source_frames).without_points(key=ex.id)


@dataclass
class MicroBatches(torch.utils.data.Dataset):
    """This process's micro-batches ``start .. stop - 1`` (global micro-batch numbers)."""

    make: Callable[[str, int], dict[str, Any]]
    start: int
    stop: int
    rank: int
    world: int
    lm_ratio: float
    lm_on: bool
    geo_on: bool

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> dict[str, Any]:
        micro = self.start + i
        kind = batch_kind(micro, self.lm_ratio, self.lm_on, self.geo_on)
        return self.make(kind, micro * self.world + self.rank)


class TimedBatches:
    """Iterate micro-batches, adding up the time the training loop waited for them."""

    def __init__(self, batches: MicroBatches, num_workers: int, prefetch: int = 2):
        if num_workers > 0:
            # the parent's fast tokenizer has run; forked workers would warn and disable it anyway
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            # its own generator: seeding the workers must not draw from the global torch RNG, whose
            # state the checkpoint restores (LoRA dropout would otherwise differ after a resume)
            loader = torch.utils.data.DataLoader(_Packed(batches), batch_size=None, shuffle=False, num_workers=num_workers,
                                                 prefetch_factor=prefetch, persistent_workers=False,
                                                 generator=torch.Generator().manual_seed(0))
            self._it: Iterator = iter(loader)
        else:
            self._it = (batches[i] for i in range(len(batches)))
        self.wait_s = 0.0           # every wait, the first included
        self.first_wait_s = 0.0     # the first micro-batch's (worker start-up, nothing prefetched yet)
        self.count = 0

    def __next__(self) -> dict[str, Any]:
        t = time.perf_counter()
        batch = next(self._it)
        if isinstance(batch, Packed):
            batch = batch.unpack()
        dt = time.perf_counter() - t
        self.wait_s += dt
        if self.count == 0:
            self.first_wait_s = dt
        self.count += 1
        return batch

    def __iter__(self) -> "TimedBatches":
        return self


# ----------------------------------------------------------------------------- one buffer per micro-batch

_ALIGN = 64                 # every tensor starts on a 64-byte boundary of the buffer, so any dtype can view it


@dataclass
class _Slot:
    """Where a tensor sits in a packed buffer."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def _map_tensors(x: Any, fn: Callable[[Any], Any]) -> Any:
    """``x`` with every tensor (or _Slot) leaf replaced by ``fn(leaf)``: through dicts and dict-likes
    (a processor's BatchFeature), lists, tuples and dataclasses (GeoTargets), in place where mutable."""
    if isinstance(x, (torch.Tensor, _Slot)):
        return fn(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            setattr(x, f.name, _map_tensors(getattr(x, f.name), fn))
        return x
    if isinstance(x, tuple):
        return type(x)(*(_map_tensors(v, fn) for v in x)) if hasattr(x, "_fields") else \
            tuple(_map_tensors(v, fn) for v in x)
    if isinstance(x, list):
        x[:] = [_map_tensors(v, fn) for v in x]
        return x
    if hasattr(x, "items") and hasattr(x, "__setitem__"):
        for k, v in list(x.items()):
            x[k] = _map_tensors(v, fn)
        return x
    return x


@dataclass
class Packed:
    """A micro-batch whose tensors are copied into one uint8 buffer: the batch holds _Slots."""

    buffer: torch.Tensor        # (bytes,) uint8
    batch: Any

    @classmethod
    def pack(cls, batch: Any) -> "Packed":
        tensors: list[torch.Tensor] = []
        _map_tensors(batch, lambda t: tensors.append(t) or t)
        offsets, n = [], 0
        for t in tensors:
            offsets.append(n)
            n += -(-t.nbytes // _ALIGN) * _ALIGN
        buffer = torch.empty(n, dtype=torch.uint8)
        where = iter(offsets)

        def put(t: torch.Tensor) -> _Slot:
            o = next(where)
            _view(buffer, o, t.dtype, t.shape).copy_(t)
            return _Slot(o, t.dtype, tuple(t.shape))

        return cls(buffer, _map_tensors(batch, put))

    def unpack(self) -> Any:
        """The batch with its tensors back, as views of the buffer (same dtypes, shapes and bytes)."""
        return _map_tensors(self.batch, lambda s: _view(self.buffer, s.offset, s.dtype, s.shape))


def _view(buffer: torch.Tensor, offset: int, dtype: torch.dtype, shape) -> torch.Tensor:
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    return buffer[offset:offset + nbytes].view(dtype).view(shape)


@dataclass
class _Packed(torch.utils.data.Dataset):
    """MicroBatches as the workers hand them over: packed."""

    batches: MicroBatches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Packed:
        return Packed.pack(self.batches[i])
