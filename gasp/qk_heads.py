"""Q/K head pairs: correspondence heads on each layer's post-RoPE Q and K (`loss.on=qk_heads`).

The paper's head (`gasp.heads`) reads the hidden state that q_proj receives, so its
loss reaches only the layers before it, and layer l's own q_proj/k_proj, the ones the probe
reads, only indirectly. Here layer l has two heads: the anchor's embedding comes from its
post-RoPE query, e_a = H_q(q), and every candidate's from its post-RoPE key, e_b = H_k(k), so
the InfoNCE/depth losses (eq. 5-8) back-propagate through RoPE into layer l's q_proj and
k_proj, the way the probe compares them (eq. 10). Arm D is the limit of this design with
identity heads (`loss.on="qk"`); this keeps a learnt 2-layer head of the paper's shape.

Inputs: q (H, N, D) and k (Hkv, N, D) per layer; K is repeated to the H query heads as
transformers' repeat_kv does, and both are flattened head-major to (N, H*D), q_proj's own
output layout. Initialisation (`init="svd"`): with W_q = U S V^T (thin SVD), both heads'
fc1 start as U_m^T (m = min(hidden, rank) rows; the rest small noise as in `gasp.heads`)
and fc2 as [I_E | 0], so at step 0 the pair compares Q with K in one basis, the principal
output directions of W_q: e_a . e_b ~ GELU(U^T q) . GELU(U^T k). The two heads then train
apart, which lets the pair be asymmetric, as Q and K are.

Shape vocabulary: L head layers, N tokens, H (Hkv) query (key) heads, D head dim, E embedding.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from gasp.heads import CONFIG_NAME, FORMAT_VERSION, CorrespondenceHeads, common_width, layer_q_projs

logger = logging.getLogger(__name__)
KIND = "qk_pair"


def flat_heads(x: Tensor, num_heads: int | None = None) -> Tensor:
    """(heads, N, D) Q or K -> (N, H*D) head-major; K's heads repeated to `num_heads` (repeat_kv)."""
    if num_heads is not None and num_heads != x.shape[0]:
        x = x.repeat_interleave(num_heads // x.shape[0], dim=0)                 # (H, N, D)
    return x.transpose(0, 1).flatten(1)


class QKHeads(nn.Module):
    """Per layer, a query head and a key head (`CorrespondenceHeads` each) on post-RoPE Q/K."""

    def __init__(self, layers: Sequence[int], d_model: int, hidden: int = 512, d_emb: int = 128):
        super().__init__()
        self.q = CorrespondenceHeads(layers, d_model, hidden, d_emb)
        self.k = CorrespondenceHeads(layers, d_model, hidden, d_emb)
        self.layers = self.q.layers
        self.d_model, self.hidden, self.d_emb = self.q.d_model, self.q.hidden, self.q.d_emb

    def forward(self, q: Mapping[int, Tensor], k: Mapping[int, Tensor]) -> tuple[Tensor, Tensor]:
        """{layer: (N, H*D) Q}, {layer: (N, H*D) K} -> anchor and candidate embeddings, each (L, N, E)."""
        return self.q(q), self.k(k)

    def embed_record(self, rec) -> tuple[Tensor, Tensor]:
        """Anchor and candidate embeddings (L, N, E) from a `gasp.capture.qk.capture_qk` record of one sequence."""
        return self({i: flat_heads(rec.q[i][0]) for i in rec.layers},
                    {i: flat_heads(rec.k[i][0], rec.q[i].shape[1]) for i in rec.layers})

    def config(self) -> dict:
        return {**self.q.config(), "kind": KIND}

    @classmethod
    def from_model(cls, model: nn.Module, decoder_layers: Sequence[nn.Module], layers: Sequence[int] | None = None,
                   hidden: int = 512, d_emb: int = 128, init: str = "svd") -> QKHeads:
        qs = layer_q_projs(decoder_layers, layers, init)
        heads = cls(list(qs), common_width(qs, "output"), hidden, d_emb)
        for i, qp in qs.items():
            for side in (heads.q[i], heads.k[i]):
                side.to(device=qp.weight.device)
                if init == "svd":
                    _basis_init_(side, qp.weight)
        logger.info("Q/K head pairs on layers %s (H*D=%d, hidden=%d, d_emb=%d, init=%s)",
                    heads.layers, heads.d_model, hidden, d_emb, init)
        return heads

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        out = Path(save_directory)
        self.q.save_pretrained(out / "q")
        self.k.save_pretrained(out / "k")
        (out / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, load_directory: str | os.PathLike, device: str | torch.device = "cpu") -> QKHeads:
        src = Path(load_directory)
        cfg = json.loads((src / CONFIG_NAME).read_text())
        if cfg.get("kind") != KIND or cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{src / CONFIG_NAME} does not describe Q/K head pairs (format {FORMAT_VERSION})")
        heads = cls(cfg["layers"], cfg["d_model"], cfg["hidden"], cfg["d_emb"])
        heads.q = CorrespondenceHeads.from_pretrained(src / "q", device=device)
        heads.k = CorrespondenceHeads.from_pretrained(src / "k", device=device)
        return heads.to(device)


@torch.no_grad()
def _basis_init_(head, weight: Tensor) -> None:
    """fc1[:m] = U_m^T of W_q (H*D, d), fc1's other rows small noise, fc2 = [I_E | 0] (module docstring)."""
    fc1, fc2 = head.fc1, head.fc2
    k = fc1.weight.shape[0]
    u, s, _ = torch.linalg.svd(weight.detach().float(), full_matrices=False)         # (HD, r)
    m = min(k, u.shape[1])
    w1 = torch.randn(k, u.shape[0], device=u.device) * (0.01 / u.shape[0] ** 0.5)
    w1[:m] = u[:, :m].T
    fc1.weight.copy_(w1.to(fc1.weight))
    fc1.bias.zero_()
    if fc2 is not None and fc2.weight.shape[0] <= k:
        fc2.weight.zero_()
        fc2.weight[:, :fc2.weight.shape[0]].copy_(torch.eye(fc2.weight.shape[0]))
        fc2.bias.zero_()


def load_heads(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A checkpoint's heads/ folder: `QKHeads` where its config says so, else `CorrespondenceHeads`."""
    cfg = json.loads((Path(path) / CONFIG_NAME).read_text())
    return (QKHeads if cfg.get("kind") == KIND else CorrespondenceHeads).from_pretrained(path, device=device)
