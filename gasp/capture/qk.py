"""Q/K capture at every LLM layer in one forward pass (paper Sec. 3; docs/METHOD.md sec. 1 and 3).

Shape vocabulary: B batch, L sequence length, Nv captured (visual) positions,
H query heads, Hkv key/value heads, D head dim.

    with capture_qk(model, positions=layout.flat_positions) as rec:
        model(**inputs)
    rec.q[l], rec.k[l]            # (B, H, Nv, D), (B, Hkv, Nv, D), the model's dtype

What is captured:
    * rope="post" (default): the exact ``query``/``key`` the attention kernel receives,
      i.e. after q/k projection (+ LoRA), Qwen3's q_norm/k_norm, and RoPE/M-RoPE, before
      ``repeat_kv``. A function registered in ``AttentionInterface`` wraps the LLM's own
      implementation (sdpa, flash_attention_*, flex_attention) and the LLM alone is switched
      to it with ``set_attn_implementation({"text_config": name})``; the vision tower keeps
      its own. The matching mask function is registered too (without it transformers
      silently builds no mask). ``output_attentions`` is never used; eager attention is
      wrapped only where the LLM has no sdpa path (Gemma 2 / PaliGemma 2, whose attention
      logit softcapping sdpa refuses): then the registered function calls the modeling
      file's own ``eager_attention_forward``, which receives ``softcap`` in its kwargs.
    * rope="pre": forward hooks on ``self_attn.q_norm``/``k_norm`` where they exist
      (Qwen3-VL: projection -> per-head RMSNorm, the input RoPE rotates), else on
      ``self_attn.q_proj``/``k_proj`` (output incl. bias and LoRA), reshaped to heads.

Only ``positions`` (sequence indices, e.g. the visual tokens) are kept, selected inside
the wrapper, so memory is O(Nv) per layer. With ``on_layer`` each layer's pair is handed
over as soon as the layer has computed it and is not kept (``keep=False`` by default
then), so peak extra memory is one layer's visual Q/K.

Hybrid LLMs (Qwen3.5): only layers with ``self_attn`` (softmax attention) can be captured;
the default is all of them, and a linear-attention layer (Gated DeltaNet, no softmax over
keys) is refused by name. Qwen3.5's q_proj also emits an output gate, which the attention
module splits off before q_norm and RoPE: the wrapper sees the query alone.

Checks: requested layers must exist (else a ValueError naming the range); after every
forward of the language model each requested layer must have been seen exactly once;
a context that ran no forward fails on exit. Everything (attention implementation,
registrations, hooks) is restored in ``finally``, also after an exception.

Activation checkpointing: the decoder layers re-run in backward (non-reentrant
recompute), which calls the attention function and the hooks again outside any forward
of the language model. Those calls are passed through untouched and not counted.
``grad=False`` (default) detaches at capture. ``grad=True`` (for a trainer) stores plain
references during the forward, with no op of its own inside the checkpointed layers, and
selects ``positions``, fills ``rec.q``/``rec.k`` and calls ``on_layer`` right after the
language model's forward returns, so a loss on them back-propagates through the
recompute whether or not the context is still open during ``backward()``. The cost is
keeping full-length Q/K of the requested layers until that forward ends. (With
``use_reentrant=True`` checkpointing, layer outputs carry no graph: gradients are lost.)

Capture is meant for one prefill-style forward per call (``model(**inputs)``), possibly
repeated inside one context; ``rec.q``/``rec.k`` then hold the last forward's tensors.
With a KV cache holding a prefix, key positions are shifted by the cached length.
"""
from __future__ import annotations

import itertools
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface

from gasp.adapters.base import attention_layers  # the one definition of a softmax-attention layer

logger = logging.getLogger(__name__)

OnLayer = Callable[[int, torch.Tensor, torch.Tensor], None]
_NAMES = itertools.count()


@dataclass
class QKRecord:
    """What ``capture_qk`` yields. ``q``/``k`` are filled only when keep=True."""

    layers: list[int]                                            # requested layer indices, sorted
    rope: str
    q: dict[int, torch.Tensor] = field(default_factory=dict)     # layer -> (B, H, Nv, D)
    k: dict[int, torch.Tensor] = field(default_factory=dict)     # layer -> (B, Hkv, Nv, D)
    num_forwards: int = 0                                        # language-model forwards completed
    attn_implementation: str | None = None                       # registered name while active (post)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    get_base = getattr(model, "get_base_model", None)            # peft
    return get_base() if callable(get_base) else model


def _text_config_key(config) -> str | None:
    """Sub-config key of the LLM (e.g. "text_config"); None for a text-only model."""
    text = config.get_text_config()
    for key in getattr(config, "sub_configs", {}) or {}:
        if getattr(config, key, None) is text:
            return key
    return None


def _owner_of(model: torch.nn.Module, layers: torch.nn.ModuleList) -> torch.nn.Module:
    for m in model.modules():
        if getattr(m, "layers", None) is layers:
            return m
    raise ValueError("could not find the module that owns the decoder layers inside the model")


def _resolve_layers(requested: Sequence[int] | None, n: int, allowed: Sequence[int] | None = None) -> list[int]:
    """Requested layer indices, sorted (default: ``allowed``, else all n), or a ValueError naming what exists."""
    if requested is None:
        return list(range(n)) if allowed is None else list(allowed)
    out = [int(i) for i in requested]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"layer(s) {bad} requested; the model has layers 0..{n - 1}")
    if allowed is not None and (bad := [i for i in out if i not in set(allowed)]):
        raise ValueError(f"layer(s) {bad} have no softmax attention (linear-attention layers); "
                         f"the attention layers are {list(allowed)}")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate layers in {out}")
    if not out:
        raise ValueError("empty layer list")
    return sorted(out)


class _Capture:
    """State shared by the attention wrapper / hooks and the forward-boundary hooks."""

    def __init__(self, rec: QKRecord, positions, on_layer: OnLayer | None, keep: bool, grad: bool):
        self.rec, self.positions, self.on_layer, self.keep, self.grad = rec, positions, on_layer, keep, grad
        self.max_position = None if positions is None else int(positions.max())
        self.wanted = set(rec.layers)
        self.in_forward = False
        self.seen: dict[int, int] = {}
        self.pending: dict[int, list] = {}     # grad mode: layer -> [q, k] full length, until end()
        self.halves: dict[int, list] = {}      # rope="pre": layer -> [q or None, k or None]

    # -- forward boundaries of the language model --------------------------------------
    def begin(self, module, args) -> None:
        self.in_forward, self.seen, self.pending, self.halves = True, {}, {}, {}

    def end(self, module, args, output) -> None:
        self.in_forward = False
        wrong = {i: self.seen.get(i, 0) for i in self.rec.layers if self.seen.get(i, 0) != 1}
        if wrong:
            raise RuntimeError(
                "capture_qk: every requested layer must be seen exactly once per forward; "
                f"calls per layer that were not 1: {wrong} (requested {self.rec.layers})"
            )
        if self.grad:
            for layer in self.rec.layers:
                q, k = self.pending[layer]
                self.emit(layer, self.select(q, 0), self.select(k, k.shape[2] - q.shape[2]))
        self.pending = {}
        self.rec.num_forwards += 1

    # -- capture -----------------------------------------------------------------------
    def select(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """(B, heads, L, D) -> (B, heads, Nv, D) at ``positions`` (+ offset for cached keys)."""
        if self.positions is None:
            return x
        if self.max_position + offset >= x.shape[2]:
            raise ValueError(
                f"capture_qk: position {self.max_position} is beyond the sequence length {x.shape[2] - offset}"
            )
        pos = self.positions.to(x.device)
        return x.index_select(2, pos + offset if offset else pos)

    def emit(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        if self.on_layer is not None:
            self.on_layer(layer, q, k)
        if self.keep:
            self.rec.q[layer], self.rec.k[layer] = q, k

    def record(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        """Full-length (B, heads, L, D) Q and K of one layer, as the layer computed them."""
        self.seen[layer] = self.seen.get(layer, 0) + 1
        if self.seen[layer] > 1:
            return                              # reported by end()
        if self.grad:
            self.pending[layer] = [q, k]        # no op inside a possibly checkpointed layer
        else:
            q, k = q.detach(), k.detach()
            self.emit(layer, self.select(q, 0), self.select(k, k.shape[2] - q.shape[2]))

    def active_layer(self, module: torch.nn.Module, index: dict[int, int]) -> int | None:
        """The layer to record for a call, or None (other module, recompute, not requested)."""
        layer = index.get(id(module))
        if layer is None or layer not in self.wanted or not self.in_forward:
            return None
        return layer


def _module_eager(module, query, key, value, attention_mask, **kwargs):
    """The eager attention of the module's own modeling file (Gemma 2's applies softcapping)."""
    return sys.modules[type(module).__module__].eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs)


def _post_rope_wrapper(cap: _Capture, inner: Callable, index: dict[int, int]) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        layer = cap.active_layer(module, index)
        if layer is not None:
            cap.record(layer, query, key)
        return inner(module, query, key, value, attention_mask, **kwargs)

    return attention


def _pre_rope_hooks(cap: _Capture, attns: dict[int, torch.nn.Module], index: dict[int, int]) -> list:
    handles = []
    for layer, attn in attns.items():
        head_dim = int(attn.head_dim)
        for slot, (norm, proj) in enumerate((("q_norm", "q_proj"), ("k_norm", "k_proj"))):
            target = getattr(attn, norm, None)
            target = getattr(attn, proj) if target is None else target

            def hook(mod, args, out, attn=attn, slot=slot, head_dim=head_dim):
                layer = cap.active_layer(attn, index)
                if layer is None:
                    return
                x = out.view(*out.shape[:2], -1, head_dim).transpose(1, 2)   # (B, heads, L, D)
                halves = cap.halves.setdefault(layer, [None, None])
                halves[slot] = x
                if halves[0] is not None and halves[1] is not None:
                    del cap.halves[layer]
                    cap.record(layer, *halves)

            handles.append(target.register_forward_hook(hook))
    return handles


@contextmanager
def capture_qk(
    model: torch.nn.Module,
    decoder_layers: torch.nn.ModuleList | None = None,
    *,
    layers: Sequence[int] | None = None,
    positions: torch.Tensor | None = None,
    rope: str = "post",
    on_layer: OnLayer | None = None,
    keep: bool | None = None,
    grad: bool = False,
) -> Iterator[QKRecord]:
    """Capture Q/K of the LLM's decoder layers during forwards run inside the context.

    model: a transformers VLM or LLM, plain or peft-wrapped. decoder_layers: the LLM's
    layers (default: ``gasp.adapters.get_adapter(model).decoder_layers(model)``).
    layers: indices into decoder_layers (default all with ``self_attn``; asking for a
    linear-attention layer of a hybrid LLM is a ValueError). positions: (Nv,) long sequence
    indices to keep (default all L). rope: "post" or "pre". on_layer(layer, q, k) is
    called with (B, H, Nv, D) / (B, Hkv, Nv, D) per layer. keep: fill ``rec.q``/``rec.k``
    (default: True unless on_layer is given). grad: keep the autograd graph (see module
    docstring). Yields a QKRecord.
    """
    if rope not in ("post", "pre"):
        raise ValueError(f"rope must be 'post' or 'pre', got {rope!r}")
    if decoder_layers is None:
        from gasp.adapters import get_adapter

        decoder_layers = get_adapter(model).decoder_layers(model)
    attn_layers = attention_layers(decoder_layers)
    wanted = _resolve_layers(layers, len(decoder_layers), attn_layers)
    if positions is not None:
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        if positions.numel() == 0 or int(positions.min()) < 0:
            raise ValueError("positions must be a non-empty tensor of non-negative sequence indices")
    keep = on_layer is None if keep is None else keep

    base = _unwrap(model)
    attns = {i: decoder_layers[i].self_attn for i in wanted}
    index = {id(decoder_layers[i].self_attn): i for i in attn_layers}
    if len(index) != len(attn_layers):
        raise ValueError("decoder layers share one attention module; calls cannot be told apart")
    rec = QKRecord(layers=wanted, rope=rope)
    cap = _Capture(rec, positions, on_layer, keep, grad)
    owner = _owner_of(model, decoder_layers)

    handles: list = []
    name = original = None
    text_key = _text_config_key(base.config)
    try:
        handles.append(owner.register_forward_pre_hook(cap.begin))
        handles.append(owner.register_forward_hook(cap.end))
        if rope == "pre":
            handles += _pre_rope_hooks(cap, attns, index)
        else:
            original = base.config.get_text_config()._attn_implementation
            if original is None or original.startswith("paged"):
                raise ValueError(
                    f"capture_qk wraps sdpa/flash/flex/eager attention; the LLM uses {original!r}. "
                    "Load the model with attn_implementation='sdpa'."
                )
            inner = _module_eager if original == "eager" else AttentionInterface._global_mapping[original]
            name = f"gasp_qk{next(_NAMES)}_{original}"  # keeps "flash..." in the name for flash-specific paths
            AttentionInterface.register(name, _post_rope_wrapper(cap, inner, index))
            if original in AttentionMaskInterface._global_mapping:
                AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[original])
            base.set_attn_implementation({text_key: name} if text_key else name)
            rec.attn_implementation = name
        yield rec
        if rec.num_forwards == 0:
            raise RuntimeError("capture_qk: no forward of the language model ran inside the context")
    finally:
        for h in handles:
            h.remove()
        if name is not None:
            try:
                if base.config.get_text_config()._attn_implementation == name:
                    base.set_attn_implementation({text_key: original} if text_key else original)
            finally:
                AttentionInterface._global_mapping.pop(name, None)
                AttentionMaskInterface._global_mapping.pop(name, None)
