"""GRPO as revised by DAPO (VST, seed 004, Sec. 4.1): the objective, group advantages and online filtering.

    J = (1 / sum_i |o_i|) sum_i sum_t min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i),
    r_it = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t),   A_i = (R_i - mean(R)) / (std(R) + 1e-6),

over the G completions of a prompt (G = 5), the token mean over all completions of the batch (DAPO's token-level
loss), eps_low = 0.2, eps_high = 0.28 (the asymmetric "clip-higher"), no KL term. A group whose rewards are all
equal has no advantage and is dropped before the update (online filtering). The loss minimised is -J.

Shapes: B completions (groups of G), T completion tokens (padded), mask (B, T) true on real tokens.
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS_LOW, EPS_HIGH = 0.2, 0.28


def group_advantages(rewards: Tensor, group: int) -> tuple[Tensor, Tensor]:
    """(B,) rewards in groups of ``group`` -> ((B,) advantages, (B / group,) bool: the group is kept (not flat))."""
    r = rewards.float().view(-1, group)
    std = r.std(dim=1, unbiased=False)
    keep = std > 0
    adv = (r - r.mean(dim=1, keepdim=True)) / (std[:, None] + 1e-6)
    return adv.view(-1), keep


def dapo_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, eps_low: float = EPS_LOW,
              eps_high: float = EPS_HIGH) -> tuple[Tensor, dict[str, Tensor]]:
    """-J over the kept completions: logp, logp_old (B, T) per-token log-probs, adv (B,), mask (B, T).

    Returns (loss, {"clip_frac": share of real tokens where the clip bound is the minimum's active side,
    "ratio_mean": mean ratio})."""
    ratio = torch.exp(logp - logp_old)                                         # (B, T)
    a = adv[:, None]
    unclipped = ratio * a
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * a
    per_token = torch.minimum(unclipped, clipped)
    m = mask.to(per_token.dtype)
    n = m.sum().clamp_min(1)
    j = (per_token * m).sum() / n
    with torch.no_grad():
        active = (clipped < unclipped) & mask.bool()                           # the clip decided this token
        stats = {"clip_frac": active.sum() / n, "ratio_mean": (ratio * m).sum() / n}
    return -j, stats
