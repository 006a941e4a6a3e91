"""Arm E: a head pair per layer on post-RoPE Q (anchor) and K (candidates), ``loss.on=qk_heads``
(``gasp.qk_heads``: the pair is SVD-initialised from q_proj, so the losses reach q_proj and k_proj through RoPE)."""
from __future__ import annotations

from gasp.objectives import register
from gasp.objectives.gasp_heads import TrackLosses


@register
class QKHeadPairs(TrackLosses):
    name = "qk_heads"
    site, sites = "qk", ("qk",)
    head, heads = "mlp", ("mlp",)
    slot = "heads"
    paper = "gasp's arm E: eq. 5-8 through a head pair on post-RoPE Q and K"

    @property
    def head_cls(self):
        from gasp.qk_heads import QKHeads

        return QKHeads

    def embed(self, head, rec, batch):
        nf, p = batch["grids"]
        anchor, cand = head.embed_record(rec)                                          # (L, F'*P, E) each
        return cand.unflatten(1, (nf, p)), anchor.unflatten(1, (nf, p))
