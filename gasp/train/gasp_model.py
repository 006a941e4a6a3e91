"""The trained module: a LoRA-wrapped VLM plus its correspondence heads, and the objective (eq. 9).

    L = L_LM + lambda_c L_corr + lambda_d L_depth

Each term is switchable (the paper's ablation rows: LM only, +corr, +corr+depth). A batch
is either an instruction batch (`kind="lm"`: the VLM's own next-token loss on the
assistant tokens, `labels` = -100 elsewhere) or a geometric batch (`kind="geo"`: one
forward with the heads' inputs captured at the visual tokens, `gasp.capture.q_inputs`, then
`gasp.losses.gasp_losses`). Both live in one nn.Module so that one DDP wrapper syncs the
LoRA weights and the heads.

`loss.on="qk_heads"` keeps heads but moves them onto post-RoPE Q (anchor)
and K (candidates), one head pair per layer (`gasp.qk_heads`).

`loss.on="qk"` (not in the paper) puts the same losses on the attention
itself, with no heads: the anchor is each layer's post-RoPE query, the candidates are the
post-RoPE keys (`gasp.capture.qk.capture_qk`, grad mode). Per token, each head's vector is
L2-normalised and the H heads are concatenated / sqrt(H) (keys repeated to the query heads
under GQA), so <e_q, e_k> is the mean over heads of the per-head cosine: the probe's
similarity (eq. 10, heads="mean").

Shapes: F' token grids, P = h*w tokens per grid, L head layers, d hidden, E embedding.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from gasp.capture.q_inputs import capture_q_inputs
from gasp.distributed import gathered
from gasp.train.config import TrainConfig
from gasp.heads import CorrespondenceHeads
from gasp.qk_heads import flat_heads
from gasp.losses import gasp_losses

log = logging.getLogger(__name__)


def build_lora_model(model, adapter, cfg: TrainConfig):
    """peft LoRA on the LLM's projections only (the adapter's regex); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    from gasp.models.loading import enable_activation_checkpointing, peft_quietly

    for p in model.parameters():
        p.requires_grad_(False)
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=adapter.lora_target_modules(model), bias="none")
    with peft_quietly():
        model = get_peft_model(model, lcfg)
    if not cfg.model.freeze_vision:
        for p in adapter.vision_tower(model).parameters():
            p.requires_grad_(True)
    if cfg.model.grad_ckpt:
        from gasp.train.zero import recompute_context

        enable_activation_checkpointing(model, context_fn=recompute_context(model))
    return model


class GaspModel(nn.Module):
    """LoRA VLM + heads; `forward(batch)` returns the loss terms of one batch."""

    def __init__(self, model, heads: CorrespondenceHeads | None, adapter, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.heads = heads
        self.adapter = adapter
        self.loss_cfg = cfg.loss
        self.checkpoint_heads = cfg.heads.checkpoint
        self.decoder_layers = adapter.decoder_layers(model)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dev = next(p for p in self.parameters() if p.requires_grad).device
        inputs = {k: v.to(dev) for k, v in batch["inputs"].items()}
        if batch["kind"] == "lm":
            out = self.model(**inputs)
            return {"loss": out.loss, "l_lm": out.loss.detach()}
        return self._geo(inputs, batch, dev)

    def _head_embeddings(self, inputs, batch, dev) -> tuple[torch.Tensor, None]:
        nf, p = batch["grids"]
        with capture_q_inputs(self.model, self.decoder_layers, layers=self.heads.layers,
                              positions=batch["positions"].to(dev), require_grad=True) as rec:
            self.model(**inputs, logits_to_keep=1)           # the LM head is not needed here
        states = {i: x[0].unflatten(0, (nf, p)) for i, x in rec.states.items()}  # layer -> (F', P, d)
        return self.heads(states, checkpoint=self.checkpoint_heads), None          # (L, F', P, E)

    def _qk_embeddings(self, inputs, batch, dev) -> tuple[torch.Tensor, torch.Tensor]:
        from gasp.capture.qk import capture_qk

        nf, p = batch["grids"]
        with capture_qk(self.model, self.decoder_layers, positions=batch["positions"].to(dev), grad=True) as rec:
            self.model(**inputs, logits_to_keep=1)
        q = torch.stack([qk_embedding(rec.q[i][0]) for i in rec.layers])      # (L, F'*P, H*D)
        k = torch.stack([qk_embedding(rec.k[i][0], rec.q[i].shape[1]) for i in rec.layers])
        return k.unflatten(1, (nf, p)), q.unflatten(1, (nf, p))              # (L, F', P, H*D) each

    def _qk_head_embeddings(self, inputs, batch, dev) -> tuple[torch.Tensor, torch.Tensor]:
        from gasp.capture.qk import capture_qk

        nf, p = batch["grids"]
        with capture_qk(self.model, self.decoder_layers, layers=self.heads.layers,
                        positions=batch["positions"].to(dev), grad=True) as rec:
            self.model(**inputs, logits_to_keep=1)
        anchor, cand = self.heads.embed_record(rec)                             # (L, F'*P, E) each
        return cand.unflatten(1, (nf, p)), anchor.unflatten(1, (nf, p))

    def _geo(self, inputs, batch, dev) -> dict[str, torch.Tensor]:
        lc = self.loss_cfg
        tg = batch["targets"].to(dev)
        embed = {"qk": self._qk_embeddings, "qk_heads": self._qk_head_embeddings}.get(lc.on, self._head_embeddings)
        emb, anchor_emb = embed(inputs, batch, dev)
        res = gasp_losses(emb, tg.anchor_tok, tg.gt_tok, tg.valid, tg.gt_depth, tg.tok_depth,
                          query_frame=tg.query_frame, tau=lc.tau, chunk_size=lc.chunk_size, anchor_emb=anchor_emb)
        loss = emb.new_zeros(())
        if lc.corr:
            loss = loss + lc.lambda_corr * res["l_corr"]
        if lc.depth:
            loss = loss + lc.lambda_depth * res["l_depth"]
        return {"loss": loss, "l_corr": res["l_corr"].detach(), "l_depth": res["l_depth"].detach(),
                "n_valid": res["n_valid"]}


def qk_embedding(x: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
    """(heads, N, D) Q or K -> (N, H*D): per-head unit vectors, heads concatenated / sqrt(H).

    K (Hkv heads) is repeated to `num_heads` query heads like transformers' repeat_kv, so the
    dot product of a query's and a key's embedding is the mean over heads of their cosines.
    """
    h = num_heads or x.shape[0]
    return flat_heads(torch.nn.functional.normalize(x.float(), dim=-1), num_heads) / h ** 0.5   # (N, H*D)


def build_heads(peft_model, adapter, cfg: TrainConfig):
    """The geometric heads ``cfg.loss.on`` names, SVD-initialised on ``cfg.heads.layers``: GASP's correspondence
    heads ("heads"), a head pair on Q and K ("qk_heads"), or None ("qk": the losses act on Q/K themselves)."""
    from gasp.qk_heads import QKHeads

    head_cls = {"heads": CorrespondenceHeads, "qk_heads": QKHeads}.get(cfg.loss.on)
    if head_cls is None:
        return None
    h = cfg.heads
    layers = adapter.decoder_layers(peft_model)
    q_projs = [p for layer in layers if hasattr(getattr(layer, "self_attn", None), "q_proj")
               for p in layer.self_attn.q_proj.parameters()]
    with gathered(q_projs):                # ZeRO-3 builds the model partitioned; the SVD reads whole weights
        return head_cls.from_model(peft_model, layers, layers=None if h.layers == "all" else h.layers,
                                   hidden=h.hidden, d_emb=h.d_emb, init=h.init)


def param_groups(gm: GaspModel, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
    """AdamW groups: LoRA (and any unfrozen vision) weights at lr, the heads at head_lr_mult x lr."""
    heads = [p for p in (gm.heads.parameters() if gm.heads is not None else []) if p.requires_grad]
    ids = {id(p) for p in heads}
    base = [p for p in gm.model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": base, "lr": lr, "weight_decay": weight_decay, "name": "lora"}]
    if heads:
        groups.append({"params": heads, "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "heads"})
    return groups
