"""Arm D (not in the paper): GASP's losses on the attention itself, no heads (``loss.on=qk``).

The anchor is each layer's post-RoPE query, the candidates the post-RoPE keys (site ``qk``). Per token,
each head's vector is L2-normalised and the H heads are concatenated / sqrt(H) (keys repeated to the query
heads under GQA), so <e_q, e_k> is the mean over heads of the per-head cosine: the probe's similarity
(eq. 10, heads="mean").
"""
from __future__ import annotations

import torch

from gasp.objectives import register
from gasp.objectives.gasp_heads import TrackLosses, qk_embedding


@register
class QKLosses(TrackLosses):
    name = "qk"
    site, sites = "qk", ("qk",)
    head, heads = "none", ("none",)
    paper = "gasp's arm D: eq. 5-8 on post-RoPE Q (anchor) and K (candidates)"

    def layers(self):
        return None                                     # every layer: the losses act on all of them

    def embed(self, head, rec, batch):
        nf, p = batch["grids"]
        q = torch.stack([qk_embedding(rec.q[i][0]) for i in rec.layers])                # (L, F'*P, H*D)
        k = torch.stack([qk_embedding(rec.k[i][0], rec.q[i].shape[1]) for i in rec.layers])
        return k.unflatten(1, (nf, p)), q.unflatten(1, (nf, p))                         # (L, F', P, H*D) each
