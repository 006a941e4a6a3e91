"""The common starting point of every arm (issue 9, sec. 2): a VLM from random weights that reads its frames.

The analogue of the paper's SFT control. A random-init vision tower is not a vision encoder,
so unlike the arms (LoRA on the LLM, vision frozen) the warm-up trains EVERY weight, vision
tower included, on the LM loss alone: synthetic spatial instruction data (camera motion,
object count, relative depth; `gasp.data.synthetic_instruct`) from scenes of their own seed
range. No geometric loss touches it, so arm A (LM only) and the GASP arms start equal.

    base = full_warmup(init_dir, instruct_json, out, steps=..., lr=..., size=(448, 448))

AdamW, linear warm-up then cosine decay, gradient clipping at 1.0 (`optimize`, shared with
`vision_pretrain`), one example per step from `gasp.train.lm_stream.LMStream` (a pure function
of (seed, index)). OUT/warmup_metrics.jsonl gets the loss
per step; the trained weights and the tokenizer go to OUT/base (save_pretrained).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LOSS_NAMES = {"loss": "LM loss", "l_corr": "L_corr"}     # metrics keys as the progress lines name them


def optimize(params: list[torch.nn.Parameter], step_loss: Callable[[int], torch.Tensor], *, steps: int, lr: float,
             metrics: Path, key: str, label: str, hint: str, warmup_frac: float = 0.05,
             say: Callable[[str], None] | None = None) -> None:
    """The loop the warm-up and the vision pre-training share: `steps` AdamW steps on `step_loss(step)`.

    Linear warm-up (`warmup_frac` of the steps) then cosine decay, clipping at 1.0. Each step's
    loss (under `key`), gradient norm and lr go to `metrics` (JSONL); `say` gets the mean loss
    ten times per run; a non-finite loss raises, naming `hint` as the fix."""
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, max(1, int(warmup_frac * steps)), steps)
    t0, recent = time.time(), []
    with metrics.open("w") as f:
        for step in range(steps):
            loss = step_loss(step)
            loss.backward()
            lv = loss.item()
            gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            recent.append(lv)
            f.write(json.dumps({"step": step + 1, key: round(lv, 5), "grad_norm": round(float(gn), 4),
                                "lr": sched.get_last_lr()[0]}) + "\n")
            if say and ((step + 1) % max(1, steps // 10) == 0 or step + 1 == steps):
                say(f"{label} step {step + 1}/{steps}: mean {LOSS_NAMES.get(key, key)} {sum(recent) / len(recent):.3f} "
                    f"({time.time() - t0:.0f} s)")
                recent = []
            if not math.isfinite(lv):
                raise FloatingPointError(f"{label} {LOSS_NAMES.get(key, key)} became {lv} at step {step + 1}; {hint}")


def full_warmup(init: str | Path, instruct: str | Path, out: str | Path, *, steps: int, lr: float,
                size: tuple[int, int], num_frames: int, seed: int = 0, warmup_frac: float = 0.05,
                say: Callable[[str], None] | None = None, device: str = "cpu", train_vision: bool = True) -> Path:
    """Train every weight of the model at `init` on the instruction data; returns OUT/base.

    train_vision=False keeps the vision tower at its initial weights (v3: a pre-trained tower, frozen)."""
    from gasp.models import load_model
    from gasp.train.lm_stream import LMStream

    out = Path(out)
    base = out / "base"
    if (base / "config.json").exists():
        return base
    torch.manual_seed(seed)
    model, proc, adapter = load_model(str(init), seed=seed, device=device)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    if not train_vision:
        for p in adapter.vision_tower(model).parameters():
            p.requires_grad_(False)
    stream = LMStream(instruct, None, num_frames=num_frames, seed=seed)
    out.mkdir(parents=True, exist_ok=True)

    def step_loss(step: int) -> torch.Tensor:
        inputs, _ = stream[step].adapter_inputs(adapter, proc, fps=2.0, size=size)
        return model(**{k: v.to(device) for k, v in inputs.items()}).loss

    optimize([p for p in model.parameters() if p.requires_grad], step_loss, steps=steps, lr=lr,
             metrics=out / "warmup_metrics.jsonl", key="loss", label="warm-up", hint="lower warmup_lr",
             warmup_frac=warmup_frac, say=say)
    model.save_pretrained(base)
    getattr(proc, "tokenizer", proc).save_pretrained(base)
    return base
