"""Correspondence heads H_c (paper eq. 4), SVD-initialised from each layer's q_proj (Sec. 5.1).

Shape vocabulary: L hooked layers, d the LLM hidden width, k = `hidden` the head's inner
width, E = `d_emb` the embedding width, H*D q_proj's output width (heads x head_dim);
"..." any leading token dims, e.g. (F, h*w).

What a head reads. Head l reads the visual tokens' *normed* hidden state at decoder layer l,
i.e. x = input_layernorm(hidden_states) - exactly the tensor that layer l's
`self_attn.q_proj` receives (capture it with a forward pre-hook on q_proj, or on the peft
LoRA wrapper around it, whose input is the same x). That is the choice that makes the SVD
initialisation exact: the head's first layer starts as a projection of the very queries the
layer's attention computes from x.

Initialisation (`init="svd"`), from q_proj's pre-trained weight W_q (H*D, d) and bias b_q
(zero if q_proj has none), with W_q = U S V^T (thin SVD, rank r = min(H*D, d), singular values
descending):
  * fc1.weight[:m] = diag(S_m) V_m^T and fc1.bias[:m] = U_m^T b_q, with m = min(k, r). So at
    step 0, fc1(x)[:m] = U_m^T (W_q x + b_q): the coordinates of x's query vector in q_proj's
    top-m principal output subspace. When k >= r, the query is recovered exactly from the
    first r outputs: W_q x + b_q = U_r fc1(x)[:r] + (I - U_r U_r^T) b_q.
  * If k > r, fc1's remaining k - r rows are N(0, sigma^2) with sigma = 0.01 * mean(S) / sqrt(d)
    (1 % of a typical principal coordinate) and bias 0.
  * fc2 (E, k): if E <= k, fc2.weight = [I_E | 0] and bias 0, so at step 0 the head computes
    e(x) = normalize(GELU(U_E^T (W_q x + b_q))) (with U_E the first E columns; rows of fc1
    beyond E get gradient only once fc2's zero block has moved, which its own gradient,
    nonzero from step 1 on, does). GELU(z) = z * Phi(z) is close to z only for z >> 1 and
    close to 0 for z << -1, so the step-0 head is that monotone squashing of a projection of
    the query space, not a linear projection. If E > k, fc2 keeps PyTorch's default init.
`init="random"` keeps PyTorch's default nn.Linear initialisation everywhere.

The heads are training-time only: the deliverable is the VLM plus a LoRA adapter.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "heads.safetensors"
FORMAT_VERSION = 1

__all__ = ["CorrespondenceHead", "CorrespondenceHeads", "base_q_proj", "svd_init_"]


class CorrespondenceHead(nn.Module):
    """2-layer MLP d -> hidden -> d_emb with GELU, L2-normalised output (eq. 4).

    hidden=0 makes a linear head d -> d_emb (no GELU, no fc2): a head with too
    little capacity to do the matching for the LLM. Its SVD init is fc1's rule with k = d_emb.
    """

    def __init__(self, d_model: int, hidden: int = 512, d_emb: int = 128):
        super().__init__()
        if hidden < 0 or d_emb < 1:
            raise ValueError(f"need hidden >= 0 and d_emb >= 1, got {hidden}, {d_emb}")
        self.fc1 = nn.Linear(d_model, hidden or d_emb)
        self.fc2 = nn.Linear(hidden, d_emb) if hidden else None

    def forward(self, x: Tensor) -> Tensor:
        """(..., d) normed hidden states -> (..., d_emb) unit vectors.

        The input is cast to the head's parameter dtype; the normalisation runs in float32
        and the result is float32 (float64 for float64 heads), the dtype the losses use.
        """
        y = self.fc1(x.to(self.fc1.weight.dtype))
        y = self.fc2(F_.gelu(y)) if self.fc2 is not None else y
        y = y if y.dtype == torch.float64 else y.float()
        return F_.normalize(y, dim=-1)

    @torch.no_grad()
    def svd_init_(self, weight: Tensor, bias: Tensor | None = None) -> CorrespondenceHead:
        """Initialise from a q_proj weight (H*D, d) and optional bias (H*D,); see module docstring."""
        svd_init_(self, weight, bias)
        return self


def base_q_proj(layer: nn.Module) -> nn.Linear:
    """The pre-trained q_proj Linear of a decoder layer, under any peft LoRA wrapper.

    A gated q_proj (Qwen3.5 / Qwen3-Next: (H*2D, d), per head D query rows then D gate rows,
    split by ``chunk(view(..., H, 2D), 2)``) is returned as a detached copy holding the H*D
    query rows only, so the SVD init and the widths see the query, not the sigmoid gate.
    """
    attn = getattr(layer, "self_attn", None)
    q = getattr(attn, "q_proj", None)
    if q is None:
        raise TypeError(f"{type(layer).__name__} has no self_attn.q_proj")
    while hasattr(q, "base_layer"):  # peft LoraLayer (possibly nested)
        q = q.base_layer
    if not isinstance(getattr(q, "weight", None), Tensor) or q.weight.ndim != 2:
        raise TypeError(f"q_proj {type(q).__name__} has no 2-D weight")
    cfg, head_dim = getattr(attn, "config", None), getattr(attn, "head_dim", None)
    n_heads = getattr(cfg, "num_attention_heads", None)
    if n_heads and head_dim and q.weight.shape[0] == 2 * n_heads * head_dim:
        return _query_rows(q, n_heads, head_dim)
    return q


@torch.no_grad()
def _query_rows(q: nn.Linear, n_heads: int, head_dim: int) -> nn.Linear:
    """The query half of a gated q_proj (H*2D, d) as a frozen (H*D, d) Linear on q's device."""
    d = q.weight.shape[1]
    out = nn.Linear(d, n_heads * head_dim, bias=q.bias is not None, device=q.weight.device, dtype=q.weight.dtype)
    out.weight.copy_(q.weight.view(n_heads, 2, head_dim, d)[:, 0].reshape(-1, d))   # (H, [query, gate], D, d)
    if q.bias is not None:
        out.bias.copy_(q.bias.view(n_heads, 2, head_dim)[:, 0].reshape(-1))
    return out.requires_grad_(False)


def layer_q_projs(decoder_layers: Sequence[nn.Module], layers: Sequence[int] | None,
                  init: str = "svd") -> dict[int, nn.Linear]:
    """{layer: its base q_proj} for `layers` (default every layer with softmax attention, i.e. all but a
    hybrid LLM's linear-attention layers), or a ValueError naming the layers that exist (or the bad
    `init`): what every head family's `from_model` checks first."""
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    n = len(decoder_layers)
    attn = [i for i, layer in enumerate(decoder_layers) if hasattr(layer, "self_attn")]
    layers = attn if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ValueError(f"layers {bad} do not exist; the model has decoder layers 0..{n - 1}")
    if bad := [i for i in layers if i not in attn]:
        raise ValueError(f"layers {bad} are linear-attention layers without q_proj; heads can sit on {attn}")
    return {i: base_q_proj(decoder_layers[i]) for i in layers}


def common_width(q_projs: Mapping[int, nn.Linear], side: str) -> int:
    """The q_projs' shared "input" (d) or "output" (H*D) width; a ValueError when the layers differ."""
    widths = {q.weight.shape[1 if side == "input" else 0] for q in q_projs.values()}
    if len(widths) != 1:
        raise ValueError(f"q_proj {side} widths differ across layers: {sorted(widths)}")
    return widths.pop()


@torch.no_grad()
def svd_init_(head: CorrespondenceHead, weight: Tensor, bias: Tensor | None = None) -> None:
    """SVD initialisation of `head` from q_proj's W_q (H*D, d) and b_q (module docstring)."""
    fc1, fc2 = head.fc1, head.fc2
    k, d = fc1.weight.shape
    e = fc2.weight.shape[0] if fc2 is not None else k
    if weight.ndim != 2 or weight.shape[1] != d:
        raise ValueError(f"q_proj weight {tuple(weight.shape)} does not take the head's input width {d}")
    # float32 is ample for an initialisation and keeps 28 SVDs of a 3584^2 W_q cheap; a float64
    # weight (the tests) stays float64.
    w = weight.detach().to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (HD, r), (r,), (r, d)
    r = s.shape[0]
    m = min(k, r)
    b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if bias is None else bias.detach().to(w)
    w1 = torch.empty(k, d, dtype=w.dtype, device=w.device)
    b1 = torch.zeros(k, dtype=w.dtype, device=w.device)
    w1[:m] = s[:m, None] * vh[:m]  # diag(S_m) V_m^T
    b1[:m] = u[:, :m].T @ b  # U_m^T b_q
    if k > m:
        sigma = 0.01 * float(s.mean()) / d ** 0.5
        w1[m:] = torch.randn(k - m, d, dtype=w.dtype, device=w.device) * sigma
    fc1.weight.copy_(w1)
    fc1.bias.copy_(b1)
    if fc2 is not None and e <= k:
        fc2.weight.zero_()
        fc2.weight[:, :e].copy_(torch.eye(e))
        fc2.bias.zero_()


class CorrespondenceHeads(nn.Module):
    """One CorrespondenceHead per hooked LLM layer, keyed by decoder-layer index."""

    def __init__(self, layers: Sequence[int], d_model: int, hidden: int = 512, d_emb: int = 128):
        super().__init__()
        layers = [int(i) for i in layers]
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ValueError(f"layers must be distinct non-negative indices, got {layers}")
        self.layers: list[int] = sorted(layers)
        self.d_model, self.hidden, self.d_emb = int(d_model), int(hidden), int(d_emb)
        self.heads = nn.ModuleDict({str(i): CorrespondenceHead(d_model, hidden, d_emb) for i in self.layers})

    def __getitem__(self, layer: int) -> CorrespondenceHead:
        if int(layer) not in self.layers:
            raise KeyError(f"no head on layer {layer}; heads are on layers {self.layers}")
        return self.heads[str(int(layer))]

    def forward(self, states: Mapping[int, Tensor], checkpoint: bool = False) -> Tensor:
        """{layer: (..., d) normed visual hidden states} -> (L, ..., E) embeddings, layers ascending.

        The keys must be exactly the heads' layers, so a missing capture is an error, not a
        silently shorter loss. ``checkpoint`` (under autograd) keeps only each head's input for
        the backward pass and recomputes its inner activations there, one head at a time: the
        same values and gradients, without holding L x (..., hidden) activations through the loss
        (a GASP step's peak memory; BENCHMARKS.md).
        """
        got = sorted(int(k) for k in states)
        if got != self.layers:
            raise KeyError(f"hidden states for layers {got}, but the heads are on layers {self.layers}")
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt

            return torch.stack([ckpt(self.heads[str(i)], states[i], use_reentrant=False) for i in self.layers])
        return torch.stack([self.heads[str(i)](states[i]) for i in self.layers])

    def config(self) -> dict:
        return {"format_version": FORMAT_VERSION, "layers": self.layers, "d_model": self.d_model,
                "hidden": self.hidden, "d_emb": self.d_emb}

    @classmethod
    def from_model(cls, model: nn.Module, decoder_layers: Sequence[nn.Module] | None = None,
                   layers: Sequence[int] | None = None, hidden: int = 512, d_emb: int = 128,
                   init: str = "svd", dtype: torch.dtype = torch.float32) -> CorrespondenceHeads:
        """Heads for `layers` (default: every softmax-attention decoder layer) of `model`, plain or peft-wrapped.

        `decoder_layers` is the LLM's layer list (`get_adapter(model).decoder_layers(model)`,
        looked up that way when None). Each head is built on its layer's q_proj device in
        `dtype`; with init="svd" it is initialised from the base (pre-LoRA) q_proj weight/bias.
        """
        if decoder_layers is None:
            from gasp.adapters import get_adapter
            decoder_layers = get_adapter(model).decoder_layers(model)
        qs = layer_q_projs(decoder_layers, layers, init)
        heads = cls(list(qs), common_width(qs, "input"), hidden, d_emb)
        for i, q in qs.items():
            head = heads[i].to(device=q.weight.device, dtype=dtype)
            if init == "svd":
                svd_init_(head, q.weight, q.bias)
        logger.info("correspondence heads on layers %s (d=%d, hidden=%d, d_emb=%d, init=%s)",
                    heads.layers, heads.d_model, hidden, d_emb, init)
        return heads

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json + heads.safetensors, atomically (temp dir, then rename)."""
        from safetensors.torch import save_file

        from gasp.runinfo import write_dir_atomic

        def write(tmp: Path) -> None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n")

        write_dir_atomic(save_directory, write)

    @classmethod
    def from_pretrained(cls, load_directory: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> CorrespondenceHeads:
        """Load heads written by `save_pretrained` (dtype: as saved unless given)."""
        from safetensors.torch import load_file

        src = Path(load_directory)
        cfg = json.loads((src / CONFIG_NAME).read_text())
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{src / CONFIG_NAME}: unsupported format_version {cfg.get('format_version')!r}")
        heads = cls(cfg["layers"], cfg["d_model"], cfg["hidden"], cfg["d_emb"])
        state = load_file(str(src / WEIGHTS_NAME))
        saved_dtype = next(iter(state.values())).dtype
        heads.heads.load_state_dict(state, strict=True)
        return heads.to(device=device, dtype=dtype or saved_dtype)
