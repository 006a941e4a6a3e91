"""The trained module: a LoRA-wrapped VLM plus its objectives' heads, and the objective (eq. 9 generalised).

    L = L_LM + sum_j w_j L_j          (GASP: L_j = lambda_c L_corr + lambda_d L_depth, eq. 9)

A batch is either an instruction batch (`kind="lm"`: the VLM's own next-token loss on the assistant
tokens, `labels` = -100 elsewhere) or a geometric batch (`kind="geo"`: one forward with every
objective's site captured at the visual tokens, then each objective's loss, `gasp.objectives`). The
objectives are registered classes: GASP's heads on the hidden states (`heads`, the default, eq. 5-8),
the same losses on post-RoPE Q/K (`qk`, arm D) or through a Q/K head pair (`qk_heads`, arm E), and
PseudoGD's depth and structure distillation on the vision encoder (`pgd_depth`, `pgd_structure`).
Objectives that read only the encoder's output before the projector run the vision tower alone.
Everything lives in one nn.Module so that one DDP wrapper syncs the LoRA weights and the heads.

Shapes: F' token grids, P = h*w tokens per grid, L head layers, d hidden, E embedding.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from gasp.objectives.gasp_heads import qk_embedding  # noqa: F401  (arm D's embedding, where tests have read it)
from gasp.train.config import TrainConfig

log = logging.getLogger(__name__)


def build_lora_model(model, adapter, cfg: TrainConfig):
    """peft LoRA on the LLM's projections (the adapter's regex); with ``lora.vision_r`` also a LoRA of that rank on
    the vision blocks' attention, with ``model.train_projector`` the projector in full (peft's modules_to_save, so
    it is saved, loaded and merged with the adapter); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    from gasp.models.loading import enable_activation_checkpointing, peft_quietly

    for p in model.parameters():
        p.requires_grad_(False)
    targets, extra = adapter.lora_target_modules(model), {}
    if cfg.lora.vision_r:
        vision = adapter.vision_lora_target_modules(model)
        if vision is None:
            raise ValueError(f"lora.vision_r={cfg.lora.vision_r}: gasp does not know the {adapter.model_type} "
                             "family's vision blocks; families with a vision LoRA: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA")
        targets = f"(?:{targets})|(?:{vision})"
        extra.update(rank_pattern={vision: cfg.lora.vision_r}, alpha_pattern={vision: cfg.lora.vision_alpha})
    if cfg.model.train_projector:
        proj = adapter.projector(model)
        if proj is None:
            raise ValueError(f"model.train_projector: gasp does not know the {adapter.model_type} family's projector")
        extra["modules_to_save"] = [next(n for n, m in model.named_modules() if m is proj)]
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, bias="none", **extra)
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
    """LoRA VLM + the objectives' heads; `forward(batch)` returns the loss terms of one batch.

    ``heads`` is the head of the objective whose slot is the checkpoint's heads/ folder (GASP's heads, arm E's
    pairs; None otherwise), ``objective_heads`` the other objectives' heads by name.
    """

    def __init__(self, model, heads: nn.Module | None, adapter, cfg: TrainConfig,
                 objectives: list | None = None, objective_heads: dict[str, nn.Module] | None = None,
                 pointmap=None):
        super().__init__()
        self.model = model
        self.heads = heads
        self.adapter = adapter
        self.loss_cfg = cfg.loss
        self.decoder_layers = adapter.decoder_layers(model)
        self.objectives = objectives if objectives is not None else make_objectives(cfg)
        self.objective_heads = nn.ModuleDict(objective_heads or {})
        # HiSpatial's point-map input (gasp.pointmap.PointMapInput): its branch trains with the model, and every
        # forward is fed the batch's point map
        self.fusion = pointmap
        self.pointmap = pointmap.branch if pointmap is not None else None

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dev = next(p for p in self.parameters() if p.requires_grad).device
        inputs = {k: v.to(dev) for k, v in batch["inputs"].items()}
        if self.fusion is not None:
            with self.fusion.feeding(batch["pointmap"].to(dev), inputs):
                return self._forward(inputs, batch, dev)
        return self._forward(inputs, batch, dev)

    def _forward(self, inputs, batch, dev) -> dict[str, torch.Tensor]:
        if batch["kind"] == "lm" and not ("targets" in batch and self.objectives):
            out = self.model(**inputs)
            return {"loss": out.loss, "l_lm": out.loss.detach()}
        return self._geo(inputs, batch, dev, lm=batch["kind"] == "lm")

    def head_of(self, obj) -> nn.Module | None:
        return self.heads if obj.slot == "heads" else self.objective_heads[obj.name] if \
            obj.name in self.objective_heads else None

    def _capture_layers(self, obj) -> list[int] | None:
        head = self.head_of(obj)
        return list(head.layers) if obj.site_name in ("hidden", "qk") and hasattr(head, "layers") else obj.layers()

    def _geo(self, inputs, batch, dev, lm: bool = False) -> dict[str, torch.Tensor]:
        """One forward with every objective's site captured, then each objective's loss, weighted and summed.

        ``lm``: an instruction batch that also carries geometric targets (PseudoGD's one-forward joint step, as the
        paper trains): the same forward gives the LM loss, added to the objectives' weighted losses."""
        from contextlib import ExitStack

        from gasp.objectives.base import VisionRecord, capture_site

        tg = batch["targets"].to(dev)
        keys = {obj.name: (obj.site_name, tuple(self._capture_layers(obj) or ())) for obj in self.objectives}
        recs: dict[tuple, Any] = {}
        lm_out = None
        if not lm and {site for site, _ in keys.values()} == {"pre_projector"}:
            # vision-only objectives: the encoder alone, no LLM forward
            recs[("pre_projector", ())] = VisionRecord(self.adapter.pre_projector_features(self.model, inputs).flatten(1))
        else:
            with ExitStack() as stack:
                for key in dict.fromkeys(keys.values()):
                    recs[key] = stack.enter_context(capture_site(key[0], self.model, self.adapter, inputs, batch,
                                                                 list(key[1]) or None, dev))
                lm_out = self.model(**inputs) if lm else self.model(**inputs, logits_to_keep=1)   # LM head: if needed
        loss, out = None, {}
        if lm:
            loss, out = lm_out.loss, {"l_lm": lm_out.loss.detach()}
        for obj in self.objectives:
            res = obj.loss(self.head_of(obj), recs[keys[obj.name]], batch, tg)
            term = obj.spec.weight * res.pop("loss")
            loss = term if loss is None else loss + term
            out.update(res)
        return {"loss": loss, **out}


def make_objectives(cfg: TrainConfig) -> list:
    """The objectives ``cfg`` trains (``gasp.train.config.objective_specs``), as registered classes' instances."""
    from gasp import objectives
    from gasp.train.config import objective_specs

    return [objectives.get(spec.name)(spec, cfg) for spec in objective_specs(cfg)]


def build_heads(peft_model, adapter, cfg: TrainConfig, objectives: list | None = None):
    """The heads/ slot's head: GASP's correspondence heads ("heads") or a Q/K head pair ("qk_heads"),
    SVD-initialised on ``cfg.heads.layers``; None when no objective keeps its head there ("qk": the losses act on
    Q/K themselves)."""
    objs = objectives if objectives is not None else make_objectives(cfg)
    obj = next((o for o in objs if o.slot == "heads"), None)
    return None if obj is None else obj.make_head(peft_model, adapter, 0)


def build_objective_heads(peft_model, adapter, cfg: TrainConfig, objectives: list | None = None) -> dict[str, nn.Module]:
    """{name: head} of the objectives whose heads are not the heads/ slot (PseudoGD's), sized to their site."""
    from gasp.objectives.base import VISION_SITES, site_width

    objs = objectives if objectives is not None else make_objectives(cfg)
    out = {}
    for obj in objs:
        if obj.slot == "heads":
            continue
        width = site_width(obj.site_name, peft_model, adapter) if obj.site_name in VISION_SITES else 0
        head = obj.make_head(peft_model, adapter, width)
        if head is not None:
            out[obj.name] = head
    return out


def param_groups(gm: GaspModel, lr: float, head_lr_mult: float, weight_decay: float, *,
                 vision_lr_mult: float = 1.0, projector_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups, each named: "lora" (the LLM's LoRA) at lr; "vision" (the vision LoRA or an unfrozen tower) at
    vision_lr_mult x lr and "projector" at projector_lr_mult x lr, each its own group only when its multiplier is
    not 1 (else in "lora", the layout older checkpoints' optimizer state has); "heads" at head_lr_mult x lr; then
    one group per objective head ("head:NAME") at its own ``head_lr_mult`` or head_lr_mult."""
    def trainable(module) -> list:
        return [p for p in (module.parameters() if module is not None else []) if p.requires_grad]

    heads = trainable(gm.heads)
    taken = {id(p) for p in heads} | {id(p) for p in trainable(gm.objective_heads)}
    # the point-map branch (not inside the VLM) belongs to the fused projector: with it, or at lr
    projector = (trainable(gm.adapter.projector(gm.model)) if projector_lr_mult != 1.0 else []) + \
        (trainable(gm.pointmap) if projector_lr_mult != 1.0 else [])
    taken |= {id(p) for p in projector}
    vision = [p for p in trainable(gm.adapter.vision_tower(gm.model)) if id(p) not in taken] \
        if vision_lr_mult != 1.0 else []
    taken |= {id(p) for p in vision}
    base = [p for p in gm.model.parameters() if p.requires_grad and id(p) not in taken]
    if projector_lr_mult == 1.0:
        base += trainable(gm.pointmap)
    groups = [{"params": base, "lr": lr, "weight_decay": weight_decay, "name": "lora"}]
    for name, params, mult in (("vision", vision, vision_lr_mult), ("projector", projector, projector_lr_mult),
                               ("heads", heads, head_lr_mult)):
        if params:
            groups.append({"params": params, "lr": lr * mult, "weight_decay": weight_decay, "name": name})
    for obj in gm.objectives:
        params = trainable(gm.objective_heads[obj.name]) if obj.name in gm.objective_heads else []
        if params:
            mult = head_lr_mult if obj.spec.head_lr_mult is None else obj.spec.head_lr_mult
            groups.append({"params": params, "lr": lr * mult, "weight_decay": weight_decay, "name": f"head:{obj.name}"})
    return groups
