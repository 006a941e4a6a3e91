"""PseudoGD's depth distillation (seed 000, Sec. 3.2, eq. 3, App. A.1) as a gasp objective.

A depth head on the vision encoder's output before the projector (site ``pre_projector``; ``projector``
reads after it) predicts each visual token's depth, y_hat = 7 softplus(x) + 0.1, and eq. 3's half
scale-invariant log loss compares it with the token's depth pooled from the tracks file's depth maps
(``gasp.losses.pool_token_depth``, the same pooling as L_depth's candidates).

Units: the paper's teacher (Depth Pro) is metric, in metres, and eq. 3 clamps at 0.1 m. Here the target is
the tracks file's own depth, in its poses' units: metres for gasp's synthetic scenes, arbitrary for a
COLMAP reconstruction without a metric scale. The clamp at 0.1 and the head's range (0.1, inf) are in those
units. Heads: ``mlp`` (the paper's d -> 1024 -> 1) or ``linear`` (the P-lin arm).
"""
from __future__ import annotations

from torch import Tensor, nn

from gasp.objectives import register
from gasp.objectives.base import Objective
from gasp.objectives.pseudogd import DepthHead, LinearDepthHead, depth_loss


@register
class PseudoGDDepth(Objective):
    name = "pgd_depth"
    site, sites = "pre_projector", ("pre_projector", "projector")
    head, heads = "mlp", ("mlp", "linear")
    needs = ("depth_maps",)
    paper = "PseudoGD (seed 000), eq. 3"

    def make_head(self, peft_model, adapter, width: int) -> nn.Module:
        if self.head_kind == "linear":
            return LinearDepthHead(width)
        return DepthHead(width) if self.spec.head_hidden is None else DepthHead(width, self.spec.head_hidden)

    def loss(self, head, feats, batch, targets) -> dict[str, Tensor]:
        pred = head(feats.x).float()                                  # (F'*P,) depth
        target = targets.tok_depth.reshape(-1).float()                # (F'*P,) NaN where a token saw no depth
        if not target.isfinite().any():                               # nothing to learn from in this sample
            return {"loss": pred.sum() * 0.0, "l_pgd_depth": pred.new_tensor(float("nan"))}
        loss = depth_loss(pred, target)
        return {"loss": loss, "l_pgd_depth": loss.detach()}
