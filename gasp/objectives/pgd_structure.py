"""PseudoGD's structure distillation (seed 000, Sec. 3.2, eq. 4, App. A.1) as a gasp objective.

A head on the vision encoder's output before the projector predicts a C-d feature per visual token
(C = 256, as SAM ViT-B's embeddings), and eq. 4 is 1 - the mean cosine with the teacher's feature of that
token. The teacher (``teacher:``) is a folder of per-frame .npy feature maps, or by default the named
stand-in for SAM: renderer surface ids as fixed random 256-d codes, pooled per token
(``gasp.objectives.structure_teacher``). It carries segment structure, not SAM's semantics.
Heads: ``mlp`` (d -> 2048 -> C, the paper's MLP without its upsampling decoder) or ``linear`` (P-lin).
"""
from __future__ import annotations

from torch import Tensor, nn

from gasp.objectives import register
from gasp.objectives.base import Objective
from gasp.objectives.pseudogd import StructureHead, structure_loss


@register
class PseudoGDStructure(Objective):
    name = "pgd_structure"
    site, sites = "pre_projector", ("pre_projector", "projector")
    head, heads = "mlp", ("mlp", "linear")
    needs = ("structure",)
    paper = "PseudoGD (seed 000), eq. 4"

    @property
    def teacher(self):
        """The targets' source (made on first use: a missing folder is the preflight's one-line refusal)."""
        from gasp.objectives.structure_teacher import StructureTargets

        if getattr(self, "_teacher", None) is None:
            self._teacher = StructureTargets(self.spec.teacher)
        return self._teacher

    def make_head(self, peft_model, adapter, width: int) -> nn.Module:
        out = self.teacher.dim()
        if self.head_kind == "linear":
            return nn.Linear(width, out)
        return StructureHead(width, out) if self.spec.head_hidden is None else StructureHead(width, out, self.spec.head_hidden)

    def loss(self, head, feats, batch, targets) -> dict[str, Tensor]:
        teacher = batch["structure"].to(feats.x.device).reshape(feats.x.shape[0], -1)   # (F'*P, C)
        loss = structure_loss(head(feats.x).float(), teacher.float())
        return {"loss": loss, "l_pgd_structure": loss.detach()}
