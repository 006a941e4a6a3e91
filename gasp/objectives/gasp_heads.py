"""GASP's objective (paper 003, eq. 5-9): correspondence heads on the LLM's hidden states, InfoNCE + depth.

Reads each head layer's hidden state as q_proj receives it (site ``hidden``), embeds it with the
SVD-initialised heads (``gasp.heads``), and returns lambda_c L_corr + lambda_d L_depth over the batch's
tracks (``gasp.losses.gasp_losses``; ``loss.corr``, ``loss.depth``, ``loss.lambda_*``, ``loss.tau`` and
``heads.*`` keep their meaning). ``loss.on=heads`` (the default) is this objective.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gasp.objectives import register
from gasp.objectives.base import Objective


class TrackLosses(Objective):
    """Eq. 5-8 on embeddings of an LLM site; subclasses say how the site becomes embeddings."""

    head_cls: ClassVar[Any] = None
    needs = ("tracks",)

    def terms(self) -> tuple[str, ...]:
        lc = self.cfg.loss
        return tuple(t for t, on in (("l_corr", lc.corr), ("l_depth", lc.depth)) if on)

    def layers(self) -> list[int] | None:
        h = self.cfg.heads.layers
        return None if h == "all" else list(h)

    def make_head(self, peft_model, adapter, width: int) -> nn.Module | None:
        from gasp.distributed import gathered

        if self.head_cls is None:
            return None
        h = self.cfg.heads
        layers = adapter.decoder_layers(peft_model)
        q_projs = [p for layer in layers if hasattr(getattr(layer, "self_attn", None), "q_proj")
                   for p in layer.self_attn.q_proj.parameters()]
        with gathered(q_projs):            # ZeRO-3 builds the model partitioned; the SVD reads whole weights
            return self.head_cls.from_model(peft_model, layers, layers=self.layers(), hidden=h.hidden,
                                            d_emb=h.d_emb, init=h.init)

    def embed(self, head, rec, batch) -> tuple[Tensor, Tensor | None]:
        """(candidates (L, F', P, E), anchors (L, F', P, E) or None: the candidates') from the record."""
        raise NotImplementedError

    def loss(self, head, feats, batch, targets) -> dict[str, Tensor]:
        from gasp.losses import gasp_losses

        lc, tg = self.cfg.loss, targets
        emb, anchor_emb = self.embed(head, feats, batch)
        res = gasp_losses(emb, tg.anchor_tok, tg.gt_tok, tg.valid, tg.gt_depth, tg.tok_depth,
                          query_frame=tg.query_frame, tau=lc.tau, chunk_size=lc.chunk_size, anchor_emb=anchor_emb)
        loss = emb.new_zeros(())
        if lc.corr:
            loss = loss + lc.lambda_corr * res["l_corr"]
        if lc.depth:
            loss = loss + lc.lambda_depth * res["l_depth"]
        return {"loss": loss, "l_corr": res["l_corr"].detach(), "l_depth": res["l_depth"].detach(),
                "n_valid": res["n_valid"]}


@register
class GaspHeads(TrackLosses):
    name = "heads"
    site, sites = "hidden", ("hidden",)
    head, heads = "mlp", ("mlp",)
    slot = "heads"
    paper = "GASP (seed 003), eq. 5-9"

    @property
    def head_cls(self):
        from gasp.heads import CorrespondenceHeads

        return CorrespondenceHeads

    def embed(self, head, rec, batch):
        nf, p = batch["grids"]
        states = {i: x[0].unflatten(0, (nf, p)) for i, x in rec.states.items()}       # layer -> (F', P, d)
        return head(states, checkpoint=self.cfg.heads.checkpoint), None                 # (L, F', P, E)


def qk_embedding(x: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
    """(heads, N, D) Q or K -> (N, H*D): per-head unit vectors, heads concatenated / sqrt(H).

    K (Hkv heads) is repeated to `num_heads` query heads like transformers' repeat_kv, so the
    dot product of a query's and a key's embedding is the mean over heads of their cosines.
    """
    from gasp.qk_heads import flat_heads

    h = num_heads or x.shape[0]
    return flat_heads(torch.nn.functional.normalize(x.float(), dim=-1), num_heads) / h ** 0.5   # (N, H*D)
