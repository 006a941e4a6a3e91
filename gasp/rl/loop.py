"""VST's RL stage (seed 004, Sec. 4.1) as one small loop on gasp's adapters: rollouts, rule rewards, DAPO updates.

    summary = train_rl(load_rl_config("configs/vst_rl_tiny.yaml"))

Why not TRL's GRPOTrainer: it builds every prompt through a processor's chat template and the dataset's images
(``prepare_multimodal_messages``, ``apply_chat_template``), while gasp's inputs come from its adapters
(``adapter.prepare_inputs``: frames modes, token grids, tiny models without processors). Driving it from gasp would
mean overriding its private input and generation methods, so gasp keeps its own loop (~250 lines) and gets the
same objective (``gasp.rl.dapo``, tested against the literal formula).

Each step: ``prompts_per_step`` questions (frames + text) from gasp-rendered scenes, ``rollouts`` sampled
completions each (``model.generate``, temperature ``temperature``), rewards R = R_acc + R_format by task kind
(``gasp.rl.rewards``), group-normalised advantages, groups with equal rewards dropped, the old policy's token
log-probs (no grad), then ``iterations`` (>= 2) AdamW steps on -J, so that from the second one the ratio differs
from 1 and the clip acts. The run starts from the SFT stage's adapter (``sft_adapter``; its trained vision tower
too) and trains its LoRA. OUT gets metrics.jsonl (reward per kind, the share of groups dropped, clip fraction,
completion length, loss, and the step's time split into generation and update), config.yaml and checkpoint-STEP/adapter (a peft adapter the probe reads).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gasp.inputs import ModelInput

log = logging.getLogger(__name__)


@dataclass
class RLConfig(ModelInput):
    """The RL stage; ``ModelInput``'s fields (frames_mode, size, fps) default to the SFT adapter's."""

    name: str = "tiny-qwen2.5-vl"
    sft_adapter: str | None = None        # the SFT stage's checkpoint-N/adapter (or checkpoint-N)
    require_sft: bool = True              # refuse to start without it (VST's RL follows SFT)
    tracks: str | None = None             # gasp-rendered scenes; None: synthetic, rendered into OUT/data
    synthetic_scenes: int = 6
    synthetic_size: int = 112
    synthetic_frames: int = 24
    num_frames: int = 4
    kinds: list[str] = field(default_factory=lambda: ["choice", "numeric", "box3d"])   # reward kinds trained
    rollouts: int = 5
    prompts_per_step: int = 2
    iterations: int = 2
    max_new_tokens: int = 48
    temperature: float = 1.0
    lr: float = 1.0e-4                    # VST: a constant 1e-6 at 7B; larger for a tiny random model
    grad_clip: float = 1.0
    max_steps: int = 10
    seed: int = 0
    out: str = "runs/vst_rl"


class RLError(ValueError):
    """An RL setting that cannot work: one line, before any work."""


def load_rl_config(path=None, overrides=()) -> RLConfig:
    from gasp.config import load_typed

    return load_typed(RLConfig, path, overrides)


# ---- prompts --------------------------------------------------------------------------------------------
@dataclass
class Prompt:
    frames: np.ndarray           # (F, H, W, 3)
    text: str
    kind: str                    # the question kind (relative_depth, box3d, ...)
    reward: str                  # the reward kind that scores it
    target: dict


def scene_prompts(scenes, num_frames: int, seed: int) -> list[Prompt]:
    """Every question gasp asks of these scenes (spatial, metric, VST kinds), with the frames it is about."""
    from gasp.data import metric_qa, spatial_qa
    from gasp.data.instruct import sample_indices
    from gasp.data.vst_qa import correspondence_item, vst_questions_for_scene

    out = []
    for i, sc in enumerate(scenes):
        idx = sample_indices(len(sc.frame_index), num_frames)
        frames = sc.frames[idx]
        for it in spatial_qa.questions_for_scene(sc.metadata, np.random.default_rng([seed, i]), frames=idx.tolist()):
            out.append(Prompt(frames, spatial_qa.prompt_text(it), it.kind, "choice",
                              {"options": list(it.options), "answer_index": it.answer_index}))
        for it in metric_qa.metric_questions_for_scene(sc.metadata, np.random.default_rng([seed, i, 1]), idx.tolist()):
            target = {"value": it.value} if it.numeric else {"options": list(it.options), "answer_index": it.answer_index}
            out.append(Prompt(frames, metric_qa.prompt_text(it), it.kind, "numeric" if it.numeric else "choice", target))
        for it in vst_questions_for_scene(sc.metadata, sc.cam_from_world, np.random.default_rng([seed, i, 2]),
                                          idx.tolist()):
            out.append(Prompt(frames, it.prompt(), it.kind, it.reward, it.target))
        corr = correspondence_item(sc, idx, np.random.default_rng([seed, i, 3]))
        if corr is not None:
            images, it, _ = corr
            out.append(Prompt(images, it.prompt(), it.kind, it.reward, it.target))
    return out


def check(cfg: RLConfig) -> None:
    """Refuse, in one line, a run without its SFT adapter, or a reward kind nobody scores."""
    from gasp.rl import rewards

    if cfg.rollouts < 2 or cfg.iterations < 2:
        raise RLError(f"rollouts and iterations must be >= 2 (a group needs peers; the ratio and clip act from the "
                      f"second iteration), got {cfg.rollouts}, {cfg.iterations}")
    if cfg.require_sft:
        if cfg.sft_adapter is None:
            raise RLError("require_sft: VST's RL starts from the SFT stage's adapter; set sft_adapter=RUN/checkpoint-N "
                          "(train configs/vst_sft_tiny.yaml first), or require_sft=false to start from the base")
        if not (Path(sft_dir(cfg.sft_adapter)) / "adapter_config.json").is_file():
            raise RLError(f"sft_adapter={cfg.sft_adapter}: no peft adapter there (adapter_config.json)")
    for k in cfg.kinds:
        try:
            rewards.get(k)
        except rewards.RewardError as e:
            raise RLError(f"kinds: {e}") from None


def check_data(cfg: RLConfig, prompts: list[Prompt]) -> None:
    """Refuse, in one line, a reward kind the data gives no question for."""
    have = {p.reward for p in prompts}
    missing = [k for k in cfg.kinds if k not in have]
    if missing:
        raise RLError(f"kinds: the data has no question scored by {missing} (it has {sorted(have)}); drop them "
                      "from kinds or bring scenes that give such questions")


def sft_dir(path: str) -> Path:
    p = Path(path)
    return p / "adapter" if (p / "adapter").is_dir() else p


# ---- rollouts and log-probs -----------------------------------------------------------------------------------
def _extend(inputs: dict, ids: torch.Tensor, adapter) -> dict:
    """The prompt's inputs with completion ``ids`` (T,) appended, as the answer is appended for SFT."""
    out = dict(inputs)
    extra = ids[None].to(inputs["input_ids"].device)
    out["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    for key, fill in (("mm_token_type_ids", 0), ("token_type_ids", adapter.dialogue_token_type)):
        if key in inputs:
            out[key] = torch.cat([inputs[key], torch.full_like(extra, fill).to(inputs[key].dtype)], dim=1)
    return out


def completion_logp(model, adapter, inputs: dict, ids: torch.Tensor) -> torch.Tensor:
    """(T,) log pi(o_t | q, o_<t) of completion ``ids`` (T,)."""
    full = _extend(inputs, ids, adapter)
    logits = model(**full, logits_to_keep=len(ids) + 1).logits[0, :-1].float()           # (T, V)
    return torch.log_softmax(logits, dim=-1).gather(1, ids[:, None].to(logits.device))[:, 0]


def rollout(model, adapter, tok, inputs: dict, n: int, cfg: RLConfig, stop: list[int]) -> list[torch.Tensor]:
    """``n`` sampled completions (token ids up to and including the first stop token)."""
    outs = []
    plen = inputs["input_ids"].shape[1]
    # special tokens other than the stop tokens (image/video placeholders, turn markers) are never sampled: an
    # answer with a stray <|video_pad|> would no longer match the frames' features
    banned = sorted(set(tok.all_special_ids) - set(stop))
    for _ in range(n):
        with torch.no_grad():
            seq = model.generate(**inputs, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=cfg.max_new_tokens, eos_token_id=stop, suppress_tokens=banned,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop[0])
        ids = seq[0, plen:]
        hit = [i for i, t in enumerate(ids.tolist()) if t in stop]
        outs.append(ids[: hit[0] + 1] if hit else ids)
    return outs


def _padded(rows: list[torch.Tensor], T: int) -> torch.Tensor:
    """(B, T) the (len_b,) rows, zero after their end."""
    return torch.stack([torch.cat([x, x.new_zeros(T - len(x))]) for x in rows])


# ---- the loop ---------------------------------------------------------------------------------------------
def train_rl(cfg: RLConfig, progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    from peft import PeftModel

    import dataclasses

    import yaml

    from gasp.models import load_model
    from gasp.models.loading import load_vision_tower, peft_quietly
    from gasp.rl import rewards
    from gasp.rl.dapo import dapo_loss, group_advantages
    from gasp.runinfo import run_info, write_text_atomic
    from gasp.train.checkpoint import INPUT_FILE, input_settings
    from tracks.io import TrackReader

    check(cfg)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    import shutil
    import tempfile

    tracks = Path(cfg.tracks) if cfg.tracks else out / "data" / "rl_scenes.h5"
    with tempfile.TemporaryDirectory() as tmp:
        made = None
        if not cfg.tracks and not tracks.exists():       # rendered aside, moved into OUT once the data passes
            from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

            s = cfg.synthetic_size
            made = Path(tmp) / tracks.name
            make_synthetic_file(made, cfg.synthetic_scenes, seed=cfg.seed, grid=4, split="train",
                                config=SyntheticSceneConfig(height=s, width=s, num_frames=cfg.synthetic_frames))
        with TrackReader(made or tracks) as reader:
            scenes = [reader.scene(n) for n in reader.scene_names]
        every = scene_prompts(scenes, cfg.num_frames, cfg.seed)
        check_data(cfg, every)                            # a kind the data lacks: refused, nothing written
        if made is not None:
            tracks.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(made), tracks)
    prompts = [p for p in every if p.reward in cfg.kinds]
    model, tok, adapter = load_model(cfg.name, seed=cfg.seed)
    settings = cfg.input_settings()
    if cfg.sft_adapter:
        sft = sft_dir(cfg.sft_adapter)
        with peft_quietly():
            model = PeftModel.from_pretrained(model, str(sft), is_trainable=True)
        load_vision_tower(sft, model)                          # VST's SFT trains the tower too (0.1 x lr)
        saved = input_settings(sft)
        if saved:                                              # frames as the SFT stage saw them
            settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k != "model"}
    else:
        from peft import LoraConfig, get_peft_model

        with peft_quietly():
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=adapter.lora_target_modules(model)))
    settings.pop("prompt", None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    stop = adapter._end_of_turn(tok)
    rng = np.random.default_rng([cfg.seed, 3])
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", yaml.safe_dump({**dataclasses.asdict(cfg), "_run": {k: str(v) for k, v in
                                                                                                run_info().items()}}))
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    bar = progress(total=cfg.max_steps, desc="rl") if progress else None
    import time

    for step in range(cfg.max_steps):
        t0 = time.perf_counter()
        batch = [prompts[i] for i in rng.choice(len(prompts), min(cfg.prompts_per_step, len(prompts)), replace=False)]
        model.eval()
        groups = []
        for p in batch:
            inputs, _ = adapter.prepare_inputs(p.frames, processor_or_tokenizer=tok, prompt=p.text, **settings)
            comps = rollout(model, adapter, tok, inputs, cfg.rollouts, cfg, stop)
            texts = [tok.decode(c, skip_special_tokens=True) for c in comps]
            reward = rewards.get(p.reward)()
            scored = [reward.score(t, p.target) for t in texts]
            groups.append((p, inputs, comps, scored))
        t_gen = time.perf_counter() - t0
        r = torch.tensor([s["acc"] + s["format"] for _, _, _, sc in groups for s in sc])
        adv, keep = group_advantages(r, cfg.rollouts)
        rec: dict[str, Any] = {"step": step + 1, "reward": float(r.mean()),
                               "dropped_frac": float(1 - keep.float().mean()),
                               "completion_len": float(np.mean([len(c) for _, _, cs, _ in groups for c in cs]))}
        for kind in cfg.kinds:
            vals = [s["acc"] + s["format"] for p, _, _, sc in groups if p.reward == kind for s in sc]
            rec[f"reward_{kind}"] = float(np.mean(vals)) if vals else None
        rows = [gi * cfg.rollouts + j for gi, k in enumerate(keep.tolist()) if k for j in range(cfg.rollouts)]
        if rows:                                      # completions of the kept groups, as (prompt inputs, tokens)
            flat = [(inputs, c) for _, inputs, comps, _ in groups for c in comps]
            kept, advk = [flat[i] for i in rows], adv[rows]
            T = max(len(c) for _, c in kept)                                          # (B, T) padded
            mask = torch.stack([torch.arange(T) < len(c) for _, c in kept])
            with torch.no_grad():
                lpo = _padded([completion_logp(model, adapter, i, c) for i, c in kept], T)
            model.train()
            for it in range(cfg.iterations):
                lp = _padded([completion_logp(model, adapter, i, c) for i, c in kept], T)
                loss, stats = dapo_loss(lp, lpo, advk, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                rec[f"loss_it{it + 1}"] = float(loss.detach())
                rec[f"clip_frac_it{it + 1}"] = float(stats["clip_frac"])
                rec[f"ratio_mean_it{it + 1}"] = float(stats["ratio_mean"])
            rec["clip_frac"] = rec[f"clip_frac_it{cfg.iterations}"]
        rec.update(gen_s=round(t_gen, 4), update_s=round(time.perf_counter() - t0 - t_gen, 4),
                   step_s=round(time.perf_counter() - t0, 4))       # rollouts (and rewards) / log-probs and updates
        with metrics.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if bar:
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward']:.2f}", dropped=f"{rec['dropped_frac']:.2f}")
    if bar:
        bar.close()
    ck = out / f"checkpoint-{cfg.max_steps}" / "adapter"
    model.save_pretrained(str(ck), save_embedding_layers=False)
    (ck / INPUT_FILE).write_text(json.dumps({"model": cfg.name, **settings}, indent=1) + "\n")
    if cfg.sft_adapter:
        from gasp.models.loading import VISION_FILE

        src = sft_dir(cfg.sft_adapter) / VISION_FILE
        if src.is_file():                               # the SFT-trained tower, unchanged by RL
            (ck / VISION_FILE).write_bytes(src.read_bytes())
    summary = {"steps": cfg.max_steps, "out": str(out), "adapter": str(ck), "prompts": len(prompts),
               "finite": all(math.isfinite(json.loads(ln)["reward"]) for ln in metrics.read_text().splitlines())}
    write_text_atomic(out / "rl_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
