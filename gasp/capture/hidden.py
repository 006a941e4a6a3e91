"""Hidden states of the visual tokens at every LLM layer, handed over layer by layer.

Shape vocabulary: B batch, L sequence length, Nv captured (visual) positions, D hidden width.

    with capture_hidden(decoder_layers, layers=[-1, 0, 5], positions=pos, on_hidden=f):
        model(**inputs)          # f(layer, x) with x (B, Nv, D), detached, the model's dtype

Layer l >= 0 is the output of decoder layer l: the residual stream after that layer, as
transformers' ``output_hidden_states`` gives it at index l + 1 (the final norm, which HF
applies to the last entry, is not included here). Layer -1 is the input of decoder layer 0:
the visual tokens as the LLM receives them, i.e. the vision tower's output after the
projector (and after any embedding scale the LLM applies before its first layer, e.g.
Gemma's sqrt(D)). Forward hooks only, so any attention implementation works. Each layer's
tensor is selected at ``positions`` inside the hook and handed to ``on_hidden`` at once,
so the extra memory is one (B, Nv, D) tensor at a time. The layers must each run once per
forward; a layer that ran a different number of times is reported when the context exits.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

OnHidden = Callable[[int, torch.Tensor], None]


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


@contextmanager
def capture_hidden(decoder_layers: torch.nn.ModuleList, *, layers: Sequence[int], positions: torch.Tensor,
                   on_hidden: OnHidden) -> Iterator[dict[int, int]]:
    """Call ``on_hidden(layer, (B, Nv, D))`` for each of ``layers`` (-1 = input of layer 0).

    Yields the per-layer call counts; after the block each requested layer must have been
    seen the same number of times (once per forward), else RuntimeError.
    """
    n = len(decoder_layers)
    wanted = sorted(set(int(i) for i in layers))
    bad = [i for i in wanted if not -1 <= i < n]
    if bad or not wanted:
        raise ValueError(f"capture_hidden: layers {bad or wanted} do not exist; use -1 (the LLM's input) or 0..{n - 1}")
    pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    seen = {i: 0 for i in wanted}

    def emit(layer: int, x: torch.Tensor) -> None:
        seen[layer] += 1
        x = x.detach()                                        # (B, L, D)
        on_hidden(layer, x.index_select(1, pos.to(x.device)))  # (B, Nv, D)

    handles = []
    try:
        if -1 in wanted:
            def pre(mod, args, kwargs):
                emit(-1, args[0] if args else kwargs["hidden_states"])
            handles.append(decoder_layers[0].register_forward_pre_hook(pre, with_kwargs=True))
        for i in (j for j in wanted if j >= 0):
            def post(mod, args, out, i=i):
                emit(i, _first(out))
            handles.append(decoder_layers[i].register_forward_hook(post))
        yield seen
        counts = set(seen.values())
        if len(counts) != 1 or 0 in counts:
            raise RuntimeError(f"capture_hidden: every requested layer must run once per forward; calls: {seen}")
    finally:
        for h in handles:
            h.remove()
