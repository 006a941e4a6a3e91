"""PseudoGD's geometric heads and losses on the vision encoder's output (seed paper 000, Sec. 3.1-3.2).

The heads read ``adapter.pre_projector_features`` (the encoder's output before the projector, one row per
LLM visual token) and are trained jointly with the LM loss. Here: the heads (the paper's MLPs, and linear
ones for the P-lin arm), eq. 3 and eq. 4. The objectives that use them are ``pgd_depth.py`` and
``pgd_structure.py``; the structure targets come from ``structure_teacher.py``.

The paper's structure head is an MLP d -> 2048 -> 256 followed by a transposed-conv decoder to 64 x 64
(App. A.1). Here the targets are pooled to the token grid, so the head stops at the MLP: one 256-d vector
per token, compared with the token's pooled teacher feature.

Shapes: N tokens, d features, C structure channels (256 in the paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

DEPTH_MIN = 0.1          # eq. 3 clamps prediction and target at 0.1 (the paper's metres)


class DepthHead(nn.Module):
    """MLP d -> 1024 -> 1 with GELU; y_hat = 7 * softplus(x) + 0.1, so every prediction is above 0.1 (App. A.1)."""

    def __init__(self, d: int, hidden: int = 1024):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(..., d) features -> (...,) depth."""
        return 7.0 * F_.softplus(self.fc2(F_.gelu(self.fc1(x))).squeeze(-1)) + DEPTH_MIN


class LinearDepthHead(nn.Module):
    """P-lin's depth head: one linear map d -> 1, then the same y_hat = 7 * softplus(x) + 0.1."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 1)

    def forward(self, x: Tensor) -> Tensor:
        return 7.0 * F_.softplus(self.fc(x).squeeze(-1)) + DEPTH_MIN


class StructureHead(nn.Module):
    """MLP d -> 2048 -> C with GELU (the paper's MLP, without its upsampling decoder: module docstring)."""

    def __init__(self, d: int, out: int, hidden: int = 2048):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        """(..., d) -> (..., C)."""
        return self.fc2(F_.gelu(self.fc1(x)))


def depth_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Eq. 3, the scale-invariant log loss: (1/n) sum d_i^2 - (1/(2 n^2)) (sum d_i)^2, d_i = log y_hat_i - log y_i,
    both depths clamped at 0.1, over the n tokens where ``valid`` (default: a finite target). NaN if n = 0.

    The second term makes it half scale-invariant: adding c to every log y_hat changes it by exactly
    c * mean(d) + c^2 / 2, not by c^2 as a plain squared log error would.
    """
    ok = torch.isfinite(target) if valid is None else (valid & torch.isfinite(target))
    d = torch.log(pred[ok].clamp_min(DEPTH_MIN)) - torch.log(target[ok].clamp_min(DEPTH_MIN))
    n = d.numel()
    if n == 0:
        return pred.sum() * float("nan")
    return (d ** 2).sum() / n - d.sum() ** 2 / (2 * n * n)


def structure_loss(pred: Tensor, teacher: Tensor, valid: Tensor | None = None) -> Tensor:
    """Eq. 4: 1 - mean over tokens of cos(f_hat, f_T); pred and teacher (N, C), valid (N,) bool."""
    cos = F_.cosine_similarity(pred, teacher, dim=-1, eps=1e-8)
    cos = cos if valid is None else cos[valid]
    return 1.0 - cos.mean()
