"""What every training objective is: where it reads, its head, its loss, its targets.

An objective is a small class registered by name (``gasp.objectives.register``). The trainer's
``objectives`` list names the ones a run trains, each with a weight (``ObjectiveConfig``):

    objectives:
      - {name: pgd_depth, weight: 1.0}
      - {name: pgd_structure, weight: 1.0, head: linear}

Sites, where an objective reads (``SITES``):

    pre_projector  the vision encoder's output before the projector, one row per LLM visual token
                   (``adapter.pre_projector_features``: (F'*P, k, d), flattened here to (F'*P, k*d))
    projector      the projector's output: the visual tokens as the LLM's first layer receives them (the
                   probe's layer -1), (F'*P, D)
    hidden         an LLM layer's hidden state as q_proj receives it (GASP's heads, eq. 5-8)
    qk             an LLM layer's post-RoPE Q and K (arm D, and arm E's head pairs)

Heads (``HEAD_KINDS``): none, linear or mlp; each objective says which it takes. An objective whose
head goes in the checkpoint's ``heads/`` folder (GASP's heads and arm E's pairs) has ``slot = "heads"``;
the others' heads go to ``objective_heads.safetensors`` (training state: PseudoGD's heads are not used at
inference). One forward serves every objective of a geometric batch: the sites are captured together.

Shapes: F' token grids, P = h*w tokens per grid, k encoder vectors per token, d / D widths.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from torch import Tensor, nn

SITES = {
    "pre_projector": "the vision encoder's output before the projector",
    "projector": "the projector's output (layer -1, the LLM's visual tokens)",
    "hidden": "an LLM layer's hidden state (q_proj's input)",
    "qk": "an LLM layer's post-RoPE Q and K",
}
VISION_SITES = ("pre_projector", "projector")
HEAD_KINDS = ("none", "linear", "mlp")


@dataclass
class ObjectiveConfig:
    """One entry of the trainer's ``objectives`` list."""

    name: str = ""
    weight: float = 1.0                 # its loss is multiplied by this (0: the same parameters, no signal)
    head: str = "default"               # none | linear | mlp | default (the objective's own)
    site: str = "default"               # where it reads (SITES) | default (the objective's own)
    teacher: str | None = None          # pgd_structure: a folder of .npy feature maps; None: the stated stand-in
    head_lr_mult: float | None = None   # its head's lr / optim.lr; None: optim.head_lr_mult
    head_hidden: int | None = None      # an MLP head's inner width; None: the paper's (pgd: 1024 depth, 2048 structure)


class ObjectiveError(ValueError):
    """An objective that cannot run with this model, data or config: one line, before any work."""


class Objective:
    """Base class. Subclasses set the class attributes and implement ``make_head`` and ``loss``."""

    name: ClassVar[str] = ""
    site: ClassVar[str] = ""                        # its default site
    sites: ClassVar[tuple[str, ...]] = ()           # the sites it can read
    head: ClassVar[str] = "none"                    # its default head kind
    heads: ClassVar[tuple[str, ...]] = ("none",)    # the head kinds it takes
    slot: ClassVar[str] = "objective"               # "heads": its head is the checkpoint's heads/ folder
    needs: ClassVar[tuple[str, ...]] = ()           # targets: "tracks", "depth_maps", "structure"
    paper: ClassVar[str] = ""                       # where it comes from, for the docs and errors

    def __init__(self, spec: ObjectiveConfig, cfg):
        self.spec, self.cfg = spec, cfg
        self.site_name = self.site if spec.site == "default" else spec.site
        self.head_kind = self.head if spec.head == "default" else spec.head

    # ---- what the run checks before any work ----------------------------------------------
    def check_spec(self) -> None:
        """Refuse a site or head this objective does not have (one line; the config's own check)."""
        if self.site_name not in self.sites:
            raise ObjectiveError(f"{self.name} reads {', '.join(self.sites)}, not site {self.spec.site!r}")
        if self.head_kind not in self.heads:
            raise ObjectiveError(f"{self.name} takes heads {', '.join(self.heads)}, not {self.spec.head!r}")

    def check(self, adapter) -> None:
        """Refuse a site or head this objective, or the model family, does not have (one line)."""
        self.check_spec()
        if self.site_name not in adapter.objective_sites():
            raise ObjectiveError(f"objective {self.name} reads {SITES[self.site_name]} ({self.site_name}), which the "
                                 f"{adapter.model_type} adapter does not expose; families that do: "
                                 f"{', '.join(families_with(self.site_name))}")

    def terms(self) -> tuple[str, ...]:
        """The names of the loss terms it logs (metrics.jsonl keys)."""
        return (f"l_{self.name}",)

    def layers(self) -> list[int] | None:
        """The LLM layers it reads at an LLM site (None: every layer)."""
        return None

    # ---- training ------------------------------------------------------------------------------
    def make_head(self, peft_model, adapter, width: int) -> nn.Module | None:
        """Its trainable head for features of ``width`` channels, or None."""
        return None

    def loss(self, head: nn.Module | None, feats: Any, batch: dict, targets) -> dict[str, Tensor]:
        """{"loss": the unweighted loss, term: detached value, ...} from the captured site ``feats``."""
        raise NotImplementedError


def families_with(site: str) -> list[str]:
    from gasp.adapters import _REGISTRY

    return sorted(t for t, cls in _REGISTRY.items() if site in cls.objective_sites())


# ---- capturing the sites during one forward ------------------------------------------------------
@dataclass
class VisionRecord:
    """A vision site's features of one forward, in the LLM's visual-token order."""

    x: Tensor | None = None           # (F'*P, k*d) pre_projector / (F'*P, D) projector


@contextmanager
def capture_site(site: str, model, adapter, inputs: dict, batch: dict, layers: list[int] | None,
                 dev) -> Iterator[Any]:
    """Hooks that record ``site`` during the forward run inside the block; yields the record."""
    decoder_layers = adapter.decoder_layers(model)
    positions = batch["positions"].to(dev)
    if site == "hidden":
        from gasp.capture.q_inputs import capture_q_inputs

        with capture_q_inputs(model, decoder_layers, layers=layers, positions=positions, require_grad=True) as rec:
            yield rec
    elif site == "qk":
        from gasp.capture.qk import capture_qk

        with capture_qk(model, decoder_layers, layers=layers, positions=positions, grad=True) as rec:
            yield rec
    elif site == "pre_projector":
        rec = VisionRecord()

        def pre(module, args):
            rec.x = adapter.pre_projector_from_input(args[0], inputs, model).flatten(1)   # (F'*P, k*d)

        handle = adapter.projector(model).register_forward_pre_hook(pre)
        try:
            yield rec
        finally:
            handle.remove()
    elif site == "projector":
        rec = VisionRecord()

        def first_layer(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]                   # (1, L, D)
            rec.x = x[0].index_select(0, positions)                            # (F'*P, D)

        handle = decoder_layers[0].register_forward_pre_hook(first_layer, with_kwargs=True)
        try:
            yield rec
        finally:
            handle.remove()
    else:
        raise ObjectiveError(f"unknown site {site!r}; sites: {', '.join(SITES)}")


def site_width(site: str, peft_model, adapter) -> int:
    """The channel count of a vision site's features (what a head there reads): the LLM's width after the
    projector, the projector's first linear layer's input width before it (k*d: Qwen's merger reads a token's
    k = m*m patches at once, LLaVA's projector one vector)."""
    if site == "projector":
        return int(adapter.text_config(peft_model).hidden_size)
    if site == "pre_projector":
        first = next(m for m in adapter.projector(peft_model).modules() if isinstance(m, nn.Linear))
        return int(first.in_features)
    raise ObjectiveError(f"site {site!r} has no single width")
