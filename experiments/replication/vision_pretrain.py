"""A stand-in for a pre-trained vision encoder (issue 9, v3): train the tower on correspondence.

Every VLM the paper studies starts from a pre-trained encoder whose patch features already
match the same surface across views (probe3d, DIFT). Ours starts from random weights, and a
random 2-block tower is not such an encoder; in v2, training it on spatial QA alone made its
features worse for matching (docs/results/v2 RESULTS, exploration). So before the warm-up,
the vision tower and merger alone are trained with the paper's InfoNCE (eq. 5, `gasp.losses`)
directly on the visual tokens the LLM receives, over the geometric stream of the TRAIN split
(`gasp.train.geo_stream.GeoStream`). No LLM weight is touched and no evaluation scene is seen.
The LLM then has to learn, in the warm-up and in each arm, whether its attention uses them.

    pretrain_vision(init_dir, train_tracks, out, steps=..., lr=..., size=(448, 448), ...)

Shapes: F frames of a sample, P = h*w tokens per frame, d the LLM width, N anchors.
Writes OUT/vision_pretrained (save_pretrained) and OUT/vision_metrics.jsonl (loss per step).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F_

log = logging.getLogger(__name__)


def visual_embeddings(model, adapter, processor, seq, size: tuple[int, int], device: str = "cpu"):
    """(1, F, P, d) unit-norm visual tokens of one sequence and its layout."""
    inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=processor,
                                            prompt="describe the video.", size=size)
    x = adapter.visual_tokens(model, {k: v.to(device) for k, v in inputs.items()})      # (F*P, d)
    f, (h, w) = layout.num_grids, layout.grid
    return F_.normalize(x.float(), dim=-1).view(1, f, h * w, -1), layout


def pretrain_vision(init: str | Path, train_tracks: str | Path, out: str | Path, *, steps: int, lr: float,
                    size: tuple[int, int], min_frames: int, max_frames: int, radius: int, grid: int = 8,
                    seed: int = 0, warmup_frac: float = 0.05, say: Callable[[str], None] | None = None,
                    device: str = "cpu") -> Path:
    """Train the vision tower of the model at `init` with L_corr on its output; returns the saved folder.

    `warmup.optimize`: AdamW, linear warm-up then cosine decay, clipping at 1.0, one geometric
    sample per step."""
    from experiments.replication.warmup import optimize
    from gasp.losses import gasp_losses
    from gasp.models import load_model
    from gasp.train.geo_batch import geo_targets
    from gasp.train.geo_stream import GeoStream

    out = Path(out)
    dest = out / "vision_pretrained"
    if (dest / "config.json").exists():
        return dest
    if steps < 1:
        raise ValueError(f"vision pre-training needs steps >= 1, got {steps}")
    torch.manual_seed(seed)
    model, proc, adapter = load_model(str(init), seed=seed, device=device)
    model.requires_grad_(False)
    tower = adapter.vision_tower(model).train().requires_grad_(True)
    stream = GeoStream(train_tracks, grid=grid, min_frames=min_frames, max_frames=max_frames, radius=radius,
                       seed=seed)
    out.mkdir(parents=True, exist_ok=True)

    def step_loss(step: int) -> torch.Tensor:
        seq = stream[step]
        emb, layout = visual_embeddings(model, adapter, proc, seq, size, device)
        t = geo_targets(seq, layout).to(device)
        return gasp_losses(emb, t.anchor_tok, t.gt_tok, t.valid, t.gt_depth, t.tok_depth,
                           query_frame=t.query_frame)["l_corr"]

    optimize(list(tower.parameters()), step_loss, steps=steps, lr=lr, metrics=out / "vision_metrics.jsonl",
             key="l_corr", label="vision pre-training", hint="lower the lr", warmup_frac=warmup_frac, say=say)
    model.eval()
    tmp = out / "vision_pretrained.partial"
    model.save_pretrained(tmp)
    getattr(proc, "tokenizer", proc).save_pretrained(tmp)
    tmp.rename(dest)
    return dest
