"""Gradient-carrying capture of the heads' inputs: q_proj's input at the visual positions.

Shape vocabulary: B batch, L sequence length, Nv captured (visual) positions, d hidden width.

    with capture_q_inputs(model, decoder_layers, layers=heads.layers, positions=pos) as rec:
        out = model(**inputs)
    emb = heads(rec.states)                 # rec.states[l]: (B, Nv, d)

What is read: x = input_layernorm(hidden_states) of decoder layer l, the tensor that
`self_attn.q_proj` (or the peft LoRA wrapper around it, whose input is the same x) receives,
taken by a forward pre-hook. This is what `gasp.heads` is SVD-initialised for.

Activation checkpointing (docs/METHOD.md sec. 3): with non-reentrant checkpointing the decoder
layers re-run in backward and the pre-hooks fire again. Only calls made while the language
model's own forward is running (bracketed by a pre-hook and a hook on the module owning the
layers) are recorded; recompute calls are ignored. The hook stores a plain reference and
does no op inside the (checkpointed) layer; the visual positions are selected after the
language model's forward returns, so a loss on `rec.states` back-propagates through the
recompute. Each requested layer must be seen exactly once per forward. With reentrant
checkpointing the stored tensors carry no graph: with `require_grad`, a forward in
which no captured layer carries a graph is an error.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from gasp.capture.qk import _owner_of, _resolve_layers, attention_layers


@dataclass
class QInputRecord:
    layers: list[int]
    states: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, Nv, d)
    num_forwards: int = 0


@contextmanager
def capture_q_inputs(model: torch.nn.Module, decoder_layers: torch.nn.ModuleList, *,
                     layers: Sequence[int] | None = None, positions: torch.Tensor | None = None,
                     require_grad: bool = False) -> Iterator[QInputRecord]:
    """Record q_proj's input of `layers` at `positions` (default all) during forwards in the context."""
    wanted = _resolve_layers(layers, len(decoder_layers), attention_layers(decoder_layers))
    if positions is not None:
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    rec = QInputRecord(layers=wanted)
    state = {"in_forward": False, "pending": {}, "seen": {}}

    def begin(module, args):
        state.update(in_forward=True, pending={}, seen={})

    def end(module, args, output):
        state["in_forward"] = False
        wrong = {i: state["seen"].get(i, 0) for i in wanted if state["seen"].get(i, 0) != 1}
        if wrong:
            raise RuntimeError(f"capture_q_inputs: every requested layer must be seen exactly once per forward; "
                               f"calls per layer that were not 1: {wrong}")
        xs = {i: state["pending"][i] for i in wanted}                # layer -> (B, L, d)
        # Layer 0's input may legitimately carry no graph (frozen embeddings); none at all means
        # the graph was cut, e.g. by reentrant checkpointing.
        if require_grad and torch.is_grad_enabled() and len(wanted) > 1 and not any(
                x.requires_grad for x in xs.values()):
            raise RuntimeError("capture_q_inputs: the captured hidden states carry no gradient "
                               "(reentrant activation checkpointing?); use use_reentrant=False")
        for i, x in xs.items():
            rec.states[i] = x if positions is None else x.index_select(1, positions.to(x.device))
        state["pending"] = {}
        rec.num_forwards += 1

    def make_hook(layer: int):
        def hook(module, args, kwargs=None):
            if not state["in_forward"]:
                return                                              # checkpoint recompute: ignore
            state["seen"][layer] = state["seen"].get(layer, 0) + 1
            x = args[0] if args else kwargs["x"] if kwargs and "x" in kwargs else kwargs["input"]
            state["pending"][layer] = x
        return hook

    owner = _owner_of(model, decoder_layers)
    handles = []
    try:
        handles.append(owner.register_forward_pre_hook(begin))
        handles.append(owner.register_forward_hook(end))
        for i in wanted:
            q = decoder_layers[i].self_attn.q_proj
            handles.append(q.register_forward_pre_hook(make_hook(i), with_kwargs=True))
        yield rec
    finally:
        for h in handles:
            h.remove()
