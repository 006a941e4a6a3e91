"""Run the small-scale replication (issue 5) end to end: data, warm-up, arms x seeds, test, summary.

    res = run_experiment(make_plan("quick", seeds=1), "runs/small")

1. data     train / val / test tracks (`Plan.split_seeds`) and the instruction data written
            from the train scenes (`gasp.data.synthetic_instruct`).
2. warm-up  a random Qwen2.5-VL (`plan.model_overrides`) saved to OUT/base_init; v3 first trains
            its vision tower on correspondence over the train split (`vision_pretrain`,
            OUT/vision_pretrained); then LM-only training on the instruction data (v1: LoRA,
            merged; v2/v3: `warmup.full_warmup`, v3 with the vision tower frozen), saved as
            OUT/base: the common starting point of every arm.
3. arms     `gasp.train.recipe.train` per arm and seed from OUT/base (OUT/arms/ARM/seedS); the
            recipe's own end-of-run probe uses the validation split only.
4. test     once per trained arm: the probe exactly as a user runs it (`probes.runner.run_probe`
            on OUT/base + the arm's adapter), PCK on the same-texture subset (from the probe's
            per-sequence PCK), head-embedding PCK (arms with heads, `head_probe`), spatial QA
            with and without the frames (`qa_eval`). The warm-up base is tested the same way.
5. summary  `aggregate.summarize_arms`: mean +- std over seeds.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from experiments.replication.plan import ARMS, Plan
from gasp.train.config import TrainConfig, apply_mapping, validate

log = logging.getLogger(__name__)


class PlanMismatchError(ValueError):
    """OUT already holds data or a warm-up base made for another plan."""


TINY_FAMILY = "tiny-qwen2.5-vl"


SPLIT_SPECS = {"train": ("train_scenes", "train_frames", "train"), "val": ("val_scenes", None, "eval"),
               "test": ("test_scenes", None, "eval")}
EVAL_FRAMES = 26                       # evaluation scenes: enough frames for Delta-t up to 24


def make_split(plan: Plan, split: str, path: Path, progress=None) -> Path:
    """Render one split's tracks file (skipped where already there); the same call everywhere, so the
    shipped checkpoints' test split (`scripts/demo.py`) is re-rendered exactly as the experiment did.
    ``progress`` wraps the scene loop (e.g. tqdm)."""
    from tracks.synthetic import make_synthetic_file

    n_key, frames_key, sampler = SPLIT_SPECS[split]
    frames = getattr(plan, frames_key) if frames_key else EVAL_FRAMES
    if not path.exists():
        make_synthetic_file(path, getattr(plan, n_key), seed=plan.split_seeds[split], grid=8, split=sampler,
                            config=plan.scene_config(frames), progress=progress)
    return path


def make_instruct(plan: Plan, path: Path, train: Path) -> Path:
    """Write the instruction data to `path` (skipped where already there); `train` is the train split."""
    from gasp.data.synthetic_instruct import (
        render_scenes,
        scenes_from_tracks,
        write_synthetic_instruct,
    )

    if not path.exists():
        # v1: questions about the train scenes; v2: scenes of their own seed range, many more of them
        scenes = (render_scenes(plan.instruct_scenes, plan.split_seeds["instruct"],
                                plan.scene_config(plan.instruct_frames))
                  if plan.instruct_scenes else scenes_from_tracks(train))
        write_synthetic_instruct(scenes, path.parent, num_frames=plan.qa_frames, seed=0)
    return path


def make_data(plan: Plan, root: Path) -> dict[str, Path]:
    """Render the three splits and the instruction data (skipped where already there)."""
    paths = {k: make_split(plan, k, root / f"{k}.h5") for k in SPLIT_SPECS}
    paths["instruct"] = make_instruct(plan, root / "instruct" / "instruct.json", paths["train"])
    return paths


def _config(plan: Plan, data: dict[str, Path], model: Path, out: Path, seed: int, steps: int, extra: dict,
            lr: float | None = None, lora_r: int | None = None) -> TrainConfig:
    """The trainer's config of one run: the plan's shared settings, this run's paths and steps, then ``extra``
    (an arm's settings), each a typed mapping applied and checked by the same loader as a YAML file."""
    cfg = TrainConfig()
    run = {"model": {"name": str(model)},
           "data": {"tracks": str(data["train"]), "tracks_eval": str(data["val"]), "instruct": str(data["instruct"])},
           "optim": {"max_steps": steps}, "run": {"out": str(out), "seed": seed}}
    for part, mapping in (("plan", plan.train_settings(lr, lora_r)), ("run", run), ("arm", extra)):
        apply_mapping(cfg, mapping, f"replication {part} settings")
    validate(cfg)
    return cfg


def warmup(plan: Plan, data: dict[str, Path], out: Path, say: Callable[[str], None] | None = None,
           device: str = "cpu") -> Path:
    """LM-only warm-up from random weights; returns the base model folder OUT/base.

    plan.warmup "lora" (v1): LoRA on the LLM through the recipe, then merged. "full" (v2):
    every weight, vision tower included (`experiments.replication.warmup`)."""
    from gasp.models import load_model
    from gasp.models.tiny import save_tiny
    from gasp.train.recipe import train
    from probes.train_eval import evaluate

    base = out / "base"
    if (base / "config.json").exists():
        return base
    init = out / "base_init"
    save_tiny(TINY_FAMILY, init, seed=0, **plan.model_overrides())
    s = plan.image_size
    if plan.vision_pretrain_steps:      # v3: a vision tower that already matches points, like a pre-trained one
        from experiments.replication.vision_pretrain import pretrain_vision

        init = pretrain_vision(init, data["train"], out, steps=plan.vision_pretrain_steps, lr=plan.vision_pretrain_lr,
                               size=(s, s), min_frames=plan.min_frames, max_frames=plan.max_frames,
                               radius=plan.radius, seed=0, say=say, device=device)
    if plan.warmup == "full":
        from experiments.replication.warmup import full_warmup

        return full_warmup(init, data["instruct"], out, steps=plan.warmup_steps, lr=plan.warmup_lr, size=(s, s),
                           num_frames=plan.qa_frames, seed=0, say=say, device=device,
                           train_vision=plan.warmup_vision)
    cfg = _config(plan, data, init, out / "warmup", 0, plan.warmup_steps,
                  {"loss": {"corr": False, "depth": False}, "optim": {"lr": plan.warmup_lr}})
    train(cfg, evaluator=evaluate)
    model, proc, _ = load_model(str(init), adapter=out / "warmup" / f"checkpoint-{plan.warmup_steps}" / "adapter")
    model.merge_and_unload().save_pretrained(base)
    getattr(proc, "tokenizer", proc).save_pretrained(base)
    return base


def train_arm(plan: Plan, data: dict[str, Path], base: Path, arm: str, seed: int, out: Path,
              steps: int | None = None, lr: float | None = None, lora_r: int | None = None) -> tuple[Path, dict, dict]:
    """Train one arm from the base; returns (checkpoint folder, validation results, resolved trainer config)."""
    from gasp.train.config import to_dict
    from gasp.train.recipe import train
    from probes.train_eval import evaluate

    steps = steps or plan.arm_steps
    cfg = _config(plan, data, base, out, seed, steps, ARMS[arm]["settings"], lr, lora_r)
    summary = train(cfg, evaluator=evaluate)
    return out / f"checkpoint-{steps}", summary.get("results") or {}, to_dict(cfg)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a metrics JSONL file (blank lines skipped)."""
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def loss_curves(run_dir: Path) -> dict[str, list]:
    """The run's metrics.jsonl as columns: step and each loss term (None where a step did not compute it)."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return {k: [r.get(k) for r in rows] for k in ("step", "l_lm", "l_corr", "l_depth")}


def val_head_pck(plan: Plan, data: dict[str, Path], base: Path, ckpt: Path,
                 device: str = "cpu") -> dict[str, Any] | None:
    """Head-space PCK@2 of a checkpoint's heads on the validation split (None without heads)."""
    from experiments.replication.head_probe import head_pck
    from gasp.models import load_model
    from gasp.qk_heads import load_heads

    if not (ckpt / "heads").is_dir():
        return None
    model, proc, ad = load_model(str(base), adapter=str(ckpt / "adapter"), device=device)
    s = plan.image_size
    return head_pck(model, proc, ad, load_heads(ckpt / "heads", device=device), data["val"], size=(s, s))


def run_sweep(plan: Plan, data: dict[str, Path], base: Path, out: Path,
              say: Callable[[str], None], device: str = "cpu") -> dict[str, Any]:
    """The validation sweep (`Plan.sweep`): arm C, seed 0; picks [lr, lora_r] by mean head-space val PCK."""
    path = out / "sweep" / "sweep.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = []
    for lr, r in plan.sweep:
        d = out / "sweep" / f"lr{lr:g}_r{int(r)}"
        ckpt, val, _ = train_arm(plan, data, base, "C", 0, d, steps=plan.sweep_steps, lr=lr, lora_r=int(r))
        hp = val_head_pck(plan, data, base, ckpt, device)
        vals = [v for v in hp["pck_mean"] if v is not None]
        rows.append({"lr": lr, "lora_r": int(r), "steps": plan.sweep_steps, "val_head_pck": hp["pck_mean"],
                     "val_head_pck_mean": float(sum(vals) / len(vals)) if vals else None,
                     "val_qk_pck": val.get("pck_mean"), "curves": loss_curves(d)})
        say(f"sweep lr {lr:g} r {int(r)}: mean val head PCK@2 {rows[-1]['val_head_pck_mean']:.3f}")
    best = max(rows, key=lambda x: -1.0 if x["val_head_pck_mean"] is None else x["val_head_pck_mean"])
    res = {"rule": "arm C, seed 0, max mean over layers of head-space PCK@2 on the validation split",
           "rows": rows, "chosen": {"lr": best["lr"], "lora_r": best["lora_r"]}}
    path.write_text(json.dumps(res, indent=1) + "\n")
    return res


def feature_table(plan: Plan, data: dict[str, Path], out: Path) -> dict[str, list]:
    """Validation PCK@2 per layer of cosine matching on the raw normed hidden states (`head_probe.feature_pck`):
    the random init, the vision-pre-trained model (v3) and the warm-up base."""
    from experiments.replication.head_probe import feature_pck
    from gasp.models import load_model

    s = plan.image_size
    rows = {}
    for name in ("base_init", "vision_pretrained", "base"):
        if (out / name / "config.json").exists():
            model, proc, ad = load_model(str(out / name))
            rows[name] = feature_pck(model, proc, ad, data["val"], size=(s, s))["pck_mean"]
    return rows


def same_texture_keys(tracks_path: Path) -> set[str]:
    """Keys of the test sequences cut from same-texture-at-two-depths scenes."""
    from tracks.io import TrackReader

    with TrackReader(tracks_path) as r:
        return {r.sequence_keys[i] for i in range(len(r))
                if r.scene_metadata(r.sequence_scene(i)).get("same_texture_two_depths")}


def subset_pck(res: dict, keys: set[str]) -> list[float | None]:
    """Per-layer mean of the per-sequence PCK over the sequences in `keys`."""
    import numpy as np

    rows = [p for k, p in zip(res["sequences"], res["per_sequence"]["pck"]) if k in keys]
    if not rows:
        return [None] * len(res["layers"])
    arr = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    with np.errstate(all="ignore"):
        m = np.nanmean(arr, axis=0)
    return [None if not np.isfinite(v) else float(v) for v in m]


def test_model(plan: Plan, data: dict[str, Path], base: Path, ckpt: Path | None, out: Path, seed: int,
               questions, same_keys: set[str], device: str = "cpu") -> dict[str, Any]:
    """The test-split measurements of one trained model (ckpt None: the warm-up base alone)."""
    from experiments.replication.head_probe import head_pck
    from experiments.replication.qa_eval import score
    from gasp.models import load_model
    from gasp.qk_heads import load_heads
    from probes.runner import ProbeConfig, run_probe

    size = (plan.image_size, plan.image_size)
    adapter = str(ckpt / "adapter") if ckpt is not None else None
    shutil.rmtree(out / "probe", ignore_errors=True)      # the probe resumes from a folder; start clean
    probe = run_probe(ProbeConfig(model=str(base), adapter=adapter, tracks=str(data["test"]), out=str(out / "probe"),
                                  size=size, seed=seed, extra_deltas=tuple(plan.extra_deltas), device=device))
    keep = ("layers", "pck_mean", "pck_std", "rho", "dt", "dt_pck", "dt_norm", "peak_layer", "num_sequences",
            "num_predictions", "sequences", "per_sequence", "delta", "rope", "heads", "frames_mode")
    keep += ("pck_at",) if plan.extra_deltas else ()
    res: dict[str, Any] = {"probe": {k: probe[k] for k in keep},
                           "probe_command": _probe_command(base, adapter, data, out, size)}
    res["same_texture_pck"] = subset_pck(probe, same_keys)
    res["other_pck"] = subset_pck(probe, set(probe["sequences"]) - same_keys)
    model, proc, ad = load_model(str(base), adapter=adapter, device=device)
    if ckpt is not None and (ckpt / "heads").is_dir():
        res["head_pck"] = head_pck(model, proc, ad, load_heads(ckpt / "heads", device=device), data["test"],
                                   size=size)
    res["qa"] = score(model, proc, ad, questions, size=size)
    res["qa_blind"] = score(model, proc, ad, questions, blind=True, size=size)
    return res


def _probe_command(base: Path, adapter: str | None, data: dict, out: Path, size: tuple[int, int]) -> str:
    cmd = (f"python probes/pck.py --model {base} --tracks {data['test']} --out {out / 'probe'} "
           f"--size {size[0]} {size[1]}")
    return cmd + (f" --adapter {adapter}" if adapter else "")


def _check_plan(plan: Plan, out: Path) -> None:
    """Data and the warm-up base are reused from OUT, so OUT must belong to the same plan (seeds and arms aside)."""
    fixed = {k: v for k, v in plan.to_dict().items() if k not in ("seeds", "arms")}
    path = out / "plan.json"
    if path.exists() and json.loads(path.read_text()) != fixed:
        raise PlanMismatchError(f"{out} holds a run of a different plan ({path}); use a fresh --out folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixed, indent=1) + "\n")


def run_experiment(plan: Plan, out: str | Path, progress: Callable[[str], None] | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Everything in the module docstring; returns the results dict (also OUT/results.json's core).

    `device` is where the warm-up, the probes and the QA run; the arms train on accelerate's
    device (an accelerator whenever one is visible)."""
    from experiments.replication.qa_eval import build_questions

    out = Path(out)
    say = progress or log.info
    _check_plan(plan, out)
    timings: dict[str, float] = {}
    t = time.time()
    data = make_data(plan, out / "data")
    timings["data_s"] = time.time() - t
    same = same_texture_keys(data["test"])
    references = None
    if plan.version >= 2:              # model-free, from the test tracks alone, before any model runs
        from experiments.replication.baselines import TOKEN_PX, benchmark_references

        references = benchmark_references(data["test"], TOKEN_PX, same_keys=same)
    t = time.time()
    base = warmup(plan, data, out, say, device)
    timings["warmup_s"] = time.time() - t     # v3: vision pre-training included
    val_features = None
    if plan.version >= 3:              # what the features carry before any arm (validation split, no head)
        t = time.time()
        val_features = feature_table(plan, data, out)
        timings["val_features_s"] = time.time() - t
        say("validation feature PCK@2 per layer: " + "; ".join(
            f"{k} " + ", ".join(f"{v:.2f}" for v in row) for k, row in val_features.items()))
    sweep, chosen = None, {}
    if plan.sweep:
        t = time.time()
        sweep = run_sweep(plan, data, base, out, say, device)
        chosen = sweep["chosen"]
        timings["sweep_s"] = time.time() - t
        say(f"sweep chose lr {chosen['lr']:g}, LoRA rank {chosen['lora_r']} in {timings['sweep_s']:.0f} s")
    questions = build_questions(data["test"], plan.qa_frames, max_scenes=plan.qa_scenes)
    say(f"data + warm-up done in {timings['data_s'] + timings['warmup_s']:.0f} s; {len(questions)} test questions, "
        f"{len(same)} same-texture test sequences")
    t = time.time()
    runs: dict[str, Any] = {"base": test_model(plan, data, base, None, out / "base_test", 0, questions, same,
                                               device)}
    timings["test_base_s"] = time.time() - t
    say(f"warm-up base tested in {timings['test_base_s']:.0f} s")
    for arm in plan.arms:
        runs[arm] = []
        for seed in plan.seeds:
            d = out / "arms" / arm / f"seed{seed}"
            done = d / "run.json"          # a finished run is reused, so an interrupted experiment resumes
            if done.exists():
                runs[arm].append(json.loads(done.read_text()))
                say(f"arm {arm} seed {seed}: reused {done}")
                continue
            t = time.time()
            ckpt, val, cfg = train_arm(plan, data, base, arm, seed, d, lr=chosen.get("lr"),
                                       lora_r=chosen.get("lora_r"))
            t_train = time.time() - t
            res = test_model(plan, data, base, ckpt, d / "test", seed, questions, same, device)
            res.update(seed=seed, checkpoint=str(ckpt), train_config=cfg, train_s=t_train,
                       test_s=time.time() - t - t_train,
                       val={k: val.get(k) for k in ("pck_mean", "rho", "peak_layer")})
            if plan.version >= 2:
                res["curves"] = loss_curves(d)
                vh = val_head_pck(plan, data, base, ckpt, device)
                if vh is not None:
                    res["val_head_pck"] = {k: vh[k] for k in ("layers", "pck_mean", "pck_std")}
            done.write_text(json.dumps(res) + "\n")
            runs[arm].append(res)
            say(f"arm {arm} seed {seed}: train {t_train:.0f} s, test {res['test_s']:.0f} s")
    wcfg = out / "warmup" / "config.yaml"
    warmup_cfg = yaml.safe_load(wcfg.read_text()) if wcfg.exists() else {"warmup": "full", "steps": plan.warmup_steps,
                                                                          "lr": plan.warmup_lr}
    extra = {"references": references, "sweep": sweep} if plan.version >= 2 else {}
    if val_features is not None:
        extra["val_features"] = val_features
    if (out / "vision_metrics.jsonl").exists():
        rows = read_jsonl(out / "vision_metrics.jsonl")
        extra["vision_curve"] = {"step": [r["step"] for r in rows], "l_corr": [r["l_corr"] for r in rows]}
    if plan.version >= 2 and (out / "warmup_metrics.jsonl").exists():
        rows = read_jsonl(out / "warmup_metrics.jsonl")
        extra["warmup_curve"] = {"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]}
    return {**extra, "runs": runs, "timings": timings, "data": {k: str(v) for k, v in data.items()}, "warmup_config": warmup_cfg,
            "num_questions": len(questions), "same_texture_sequences": sorted(same)}
