"""The GASP training recipe (paper Sec. 4-5.2): setup, train, evaluate, save. One readable file.

    summary = train(load_config("configs/tiny_synthetic.yaml"))

setup    the VLM with LoRA on its LLM (`gasp.train.gasp_model`), heads on the chosen layers,
         SVD-initialised from q_proj (`gasp.heads`; none with loss.on=qk, where the geometric
         losses act on each layer's post-RoPE Q/K), AdamW (heads at head_lr_mult x lr), a
         cosine schedule with warmup, and the engine the launch names: accelerate's DDP (gloo
         MULTI_CPU when launched with --multi_gpu on a machine without accelerators), gasp's FSDP2
         (run.fsdp, `gasp.train.fsdp`) or DeepSpeed ZeRO-2/3 (`gasp.train.zero`); a launch that
         names one engine and gets another is refused (`check_engine`).
data     global micro-batch m is a geometric or an instruction batch (`lm_stream.batch_kind`);
         process r of W draws sample m*W + r from that stream. Both streams are pure functions
         of the index, so the data position is one integer and resume is exact.
train    grad accumulation (no DDP sync until the last micro-batch), clipping, one optimizer
         and scheduler step per step; OUT/metrics.jsonl gets step, lr, loss, l_lm, l_corr,
         l_depth, grad_norm (terms not computed in a step are null).
evaluate an ``evaluator(run, step, final)`` passed in by the caller, every eval_every steps and at
         the end; the train entry point passes the probe (`probes.train_eval.evaluate`: PCK per layer,
         rho, Y(dt) on held-out sequences, OUT/eval.jsonl and OUT/results.json). None: no evaluation.
save     OUT/checkpoint-STEP (`gasp.train.checkpoint`) every save_every steps and at the end.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp.distributed import gathered, has_accelerator
from gasp.heads import CorrespondenceHeads
from gasp.runinfo import run_info, write_text_atomic
from gasp.train import checkpoint as ckpt
from gasp.train import fsdp, zero
from gasp.train.config import TrainConfig, save_config, to_dict, warmup_steps
from gasp.train.data import prepare_data
from gasp.train.gasp_model import (GaspModel, build_heads, build_lora_model, build_objective_heads, make_objectives,
                                   param_groups)
from gasp.train.geo_stream import GeoStream
from gasp.train.lm_stream import LMStream, batch_kind
from gasp.train.preflight import check_inputs, describe_data, geo_on
from gasp.train.loader import BatchMaker, MicroBatches, TimedBatches

log = logging.getLogger(__name__)
TERMS = ("l_lm", "l_corr", "l_depth")          # always in metrics.jsonl (null when not computed); objectives add theirs


def run_terms(cfg: TrainConfig, objectives: list) -> dict[str, bool]:
    """{metrics.jsonl term: whether this run computes it}: TERMS first, then the objectives' own terms."""
    on = {"l_lm": cfg.loss.lm, "l_corr": False, "l_depth": False}
    for obj in objectives:
        on.update({t: True for t in obj.terms()})
    return on


@dataclass
class Run:
    cfg: TrainConfig
    out: Path
    accelerator: Any
    gm: Any                  # GaspModel as prepared (DDP-wrapped when distributed)
    peft_model: Any
    heads: CorrespondenceHeads | None
    processor: Any
    adapter: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    geo: GeoStream | None
    lm: LMStream | None
    eval_path: Path | None
    heads_copy: Any = None   # run.fsdp: an unsharded copy of the heads, to save gathered weights from

    @property
    def geo_on(self) -> bool:
        """Whether geometric batches are drawn: some objective (the stream may be open for point maps alone)."""
        return bool(self.accelerator.unwrap_model(self.gm).objectives)

    @property
    def sharded(self) -> bool:
        return self.cfg.run.fsdp

    @property
    def deepspeed(self) -> bool:
        return zero.stage(self.accelerator) is not None

    @property
    def collective_forward(self) -> bool:
        """Whether every forward is a collective (weights sharded: FSDP2 or ZeRO-3), so all processes run it."""
        return self.sharded or zero.stage(self.accelerator) == 3


# ---- setup ------------------------------------------------------------------------------
def _tensorboard_available() -> bool:
    from accelerate.utils import is_tensorboard_available

    return is_tensorboard_available()


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from accelerate.utils import InitProcessGroupKwargs

    mp = cfg.model.mixed_precision
    if mp == "auto":
        mp = "bf16" if has_accelerator() and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # find_unused_parameters: a geo step leaves the last layers' LoRA unused, an LM step the heads.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    cpu = not has_accelerator()
    if cpu and deepspeed_requested():
        # accelerate turns any CPU launch into multi-CPU DDP, DeepSpeed config or not; DeepSpeed itself runs on
        # CPU (its CPU accelerator, gloo), so the launch is taken as a device launch with gloo as the backend.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        cpu = False
    # Trackers: metrics.jsonl is always written by the recipe; TensorBoard too where it is installed.
    return Accelerator(cpu=cpu, mixed_precision=mp, log_with="tensorboard" if _tensorboard_available() else None,
                       project_dir=cfg.run.out, kwargs_handlers=handlers)


def engine_info(acc, cfg: TrainConfig) -> dict[str, Any]:
    """What the run trains on: accelerate's distributed type, the ZeRO stage, FSDP2, the process count."""
    return {"distributed_type": str(acc.distributed_type).split(".")[-1], "zero_stage": zero.stage(acc),
            "fsdp2": cfg.run.fsdp, "num_processes": acc.num_processes}


def check_engine(acc, cfg: TrainConfig, resume: str | Path | None) -> None:
    """Refuse, in one line and before anything is written, to train on another engine than the launch named."""
    from accelerate.utils import DistributedType

    got = str(acc.distributed_type).split(".")[-1]
    if deepspeed_requested() and acc.distributed_type != DistributedType.DEEPSPEED:
        raise EngineError(f"the launch asked for DeepSpeed, but accelerate set up {got}; is deepspeed installed "
                          "(pip install deepspeed)? gasp does not train on another engine than the one named")
    if deepspeed_requested() and cfg.run.fsdp:
        raise EngineError("run.fsdp=true (gasp's FSDP2) under a DeepSpeed launch: choose one")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and acc.distributed_type != DistributedType.FSDP:
        raise EngineError(f"the launch asked for accelerate's FSDP, but accelerate set up {got} (its FSDP plugin needs "
                          "GPUs); on CPU use gasp's FSDP2: accelerate launch --multi_gpu ... run.fsdp=true")
    zero.configure(acc, cfg)                                  # ZeroConfigError: a DeepSpeed setting that cannot work
    if resume is not None:
        saved = (ckpt.read_state(Path(resume) / ckpt.STATE_NAME).get("engine") or {}).get("zero_stage")
        if saved != zero.stage(acc):
            def name(st):
                return "no DeepSpeed" if st is None else f"DeepSpeed ZeRO-{st}"
            raise EngineError(f"--resume {resume} was saved under {name(saved)}, this launch runs {name(zero.stage(acc))}; "
                              "its optimizer state only loads on the engine that wrote it")


class EngineError(RuntimeError):
    """A launch whose engine is not what it asked for; one line, before training."""


deepspeed_requested = zero.requested


def setup(cfg: TrainConfig, resume: str | Path | None = None) -> tuple[Run, dict]:
    from gasp.models import load_model

    check_inputs(cfg, resume)                             # every input, before anything is made or written
    for line in describe_data(cfg):
        log.info(line)
    accelerator = make_accelerator(cfg)
    check_engine(accelerator, cfg, resume)                # the engine asked for is the one running, or stop
    out = Path(cfg.run.out)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    tracks, tracks_eval, instruct = prepare_data(cfg, out, accelerator)
    d = cfg.data
    geo = GeoStream(tracks, grid=d.grid, min_frames=d.min_frames, max_frames=d.max_frames, radius=d.radius,
                    seed=cfg.run.seed, mode=d.source) if tracks else None
    objectives = make_objectives(cfg) if geo_on(cfg) else []
    if geo is not None and any("l_depth" in o.terms() for o in objectives) and geo.depthless:
        what = "stored sequences" if geo.mode == "sequences" else "scenes"
        log.info("L_depth: %d of %d %s in %s have no depth (depth maps and track_depth), so L_depth has no term in "
                 "their samples%s; set loss.depth=false to turn it off, or bring depth (scripts/convert_colmap.py "
                 "--depth-npy, scripts/convert_vggt.py)", geo.depthless, geo.num_items, what, tracks,
                 " and adds 0" if geo.depthless == geo.num_items else " (the others keep it)")
    lm = LMStream(instruct, d.video_root, num_frames=d.num_frames_lm, seed=cfg.run.seed) if instruct else None

    model, processor, adapter = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu", seed=cfg.run.seed)
    if joint_step(cfg, objectives):
        log.info("objectives %s ride on the instruction batches too: one forward gives L_LM and their losses (the "
                 "paper's joint step); data.lm_ratio=%g of the micro-batches are such joint batches, the rest geometric "
                 "only", ", ".join(o.name for o in objectives), cfg.data.lm_ratio)
    for obj in objectives:
        if "structure" in obj.needs and obj.spec.teacher is not None and cfg.data.tracks is None:
            obj.teacher.check(geo.reader)                 # the synthetic data exists only now; before any training
    torch.manual_seed(cfg.run.seed)                       # LoRA init is identical on every process
    peft_model = build_lora_model(model, adapter, cfg)
    heads = build_heads(peft_model, adapter, cfg, objectives)                # loss.on=qk, PseudoGD: none
    objective_heads = build_objective_heads(peft_model, adapter, cfg, objectives)
    fusion = None
    if cfg.model.pointmap is not None:                   # HiSpatial's point-map input joined to the projector
        from gasp.pointmap import PointMapInput, branch_for

        fusion = PointMapInput.install(peft_model, adapter, branch_for(peft_model, adapter))
        peft_model.gasp_pointmap = fusion                 # the in-training probe feeds it as the probe does
    gm = GaspModel(peft_model, heads, adapter, cfg, objectives, objective_heads, fusion)
    if resume is not None:
        ckpt.load_weights(resume, peft_model, heads, gm.objective_heads, gm.pointmap)   # whole model, before sharding
    heads_copy = None
    if cfg.run.fsdp or zero3(accelerator):
        heads_copy = copy.deepcopy(heads)                  # unsharded, CPU: receives gathered weights to save them
    if cfg.run.fsdp:
        fsdp.shard(gm, adapter.decoder_layers(peft_model), accelerator.device)
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(gm, o.lr, o.head_lr_mult, o.weight_decay, vision_lr_mult=o.vision_lr_mult,
                                               projector_lr_mult=o.projector_lr_mult), lr=o.lr)
    scheduler = cosine_with_warmup(optimizer, warmup_steps(o), o.max_steps)
    position = {"step": 0, "micro": 0}
    zero_states: list = []                                # a ZeRO run's optimizer partitions, loaded once prepared
    if resume is not None:
        loader = (lambda st: fsdp.load_optimizer_state(gm, optimizer, st)) if cfg.run.fsdp else \
            zero_states.append if zero.stage(accelerator) is not None else None
        position = ckpt.load_training_state(resume, optimizer, scheduler, accelerator.process_index,
                                            accelerator.num_processes, load_optimizer=loader)
        log.info("resumed from %s at step %d", resume, position["step"])
    gm.train()
    # The optimizer is prepared with the model (FSDP/DeepSpeed need both); the scheduler is stepped
    # by hand once per optimizer step, so the schedule does not depend on the process count.
    # run.fsdp: the model is sharded already; only the optimizer goes through accelerate.
    if cfg.run.fsdp:
        prepared, optimizer = gm, accelerator.prepare(optimizer)
    else:
        prepared, optimizer = accelerator.prepare(gm, optimizer)
    if zero_states:
        zero.load_optimizer_state(accelerator, optimizer, zero_states[0])
    if accelerator.is_main_process and _tensorboard_available():
        accelerator.init_trackers("gasp", config={k: v for sec in to_dict(cfg).values() for k, v in sec.items()
                                                  if isinstance(v, (int, float, str, bool))})
    run = Run(cfg, out, accelerator, prepared, peft_model, heads, processor, adapter, optimizer, scheduler,
              geo, lm, tracks_eval, heads_copy=heads_copy)
    return run, position


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Optimizer step s (0-based) runs at lr * (s + 1) / warmup for s < warmup, then a cosine decay to 0 at total.

    transformers' get_cosine_schedule_with_warmup gives step 0 a factor of 0, so the first step changed
    nothing and steps 1 and 2 logged the same loss; here the first step already moves.
    """
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- data -------------------------------------------------------------------------------
def make_batch(run: Run, kind: str, index: int) -> dict[str, Any]:
    """Micro-batch ``(kind, index)`` built in this process (``gasp.train.loader`` does it in workers)."""
    return batch_maker(run)(kind, index)


def batch_maker(run: Run) -> BatchMaker:
    gm = run.accelerator.unwrap_model(run.gm)
    structure = next((o.teacher for o in gm.objectives if "structure" in o.needs), None)
    return BatchMaker(run.cfg.model, run.adapter, run.processor, run.geo, run.lm, structure,
                      joint_step(run.cfg, gm.objectives), run.cfg.model.pointmap)


def joint_step(cfg: TrainConfig, objectives: list) -> bool:
    """Whether instruction batches also carry the objectives' targets, so that one forward gives L_LM and the
    objectives' losses (PseudoGD's one stage, the paper's joint step): objectives that need per-token depth or
    structure only (not tracks), the LM loss on, and instruction data gasp made from the training tracks (its
    records name their scene and frames there)."""
    return bool(objectives) and cfg.loss.lm and not cfg.data.instruct and \
        all(set(o.needs) <= {"depth_maps", "structure"} for o in objectives)


def micro_batches(run: Run, start_step: int, stop_step: int) -> TimedBatches:
    """This process's micro-batches for steps ``start_step .. stop_step - 1``, prepared by
    ``data.num_workers`` DataLoader workers (0: in this process)."""
    acc, cfg = run.accelerator, run.cfg
    ga = cfg.optim.grad_accum
    ds = MicroBatches(batch_maker(run), start_step * ga, stop_step * ga, acc.process_index, acc.num_processes,
                      cfg.data.lm_ratio, run.lm is not None, run.geo_on)
    return TimedBatches(ds, cfg.data.num_workers, cfg.data.prefetch)


# ---- train ------------------------------------------------------------------------------
def train_step(run: Run, step: int, batches: TimedBatches | None = None) -> dict[str, Any]:
    """One optimizer step over grad_accum micro-batches; returns the step's (process-averaged) metrics.

    ``batches`` yields this step's micro-batches in order (``micro_batches``); without it they
    are built here with ``make_batch``.
    """
    acc, o = run.accelerator, run.cfg.optim
    terms = run_terms(run.cfg, acc.unwrap_model(run.gm).objectives)
    sums = {k: [] for k in ("loss", *terms)}
    if run.deepspeed:
        zero.clear_stale_gradients(run.optimizer)        # ZeRO-3 keeps the last step's gradient partitions
    for j in range(o.grad_accum):
        micro = step * o.grad_accum + j
        if batches is not None:
            batch = next(batches)
        else:
            kind = batch_kind(micro, run.cfg.data.lm_ratio, run.lm is not None, run.geo_on)
            batch = make_batch(run, kind, micro * acc.num_processes + acc.process_index)
        sync = j == o.grad_accum - 1
        if run.deepspeed:
            # the engine reduces (ZeRO-2/3 partition gradients as they come, so no no_sync), and at the last
            # micro-batch clips, steps AdamW and zeroes the gradients; the loss is scaled here, as below
            res = run.gm(batch)
            acc.deepspeed_engine_wrapped.backward(res["loss"] / o.grad_accum, sync_gradients=sync,
                                                  scale_wrt_gas=False)
        else:
            with (acc.no_sync(run.gm) if not sync else nullcontext()), acc.autocast():
                res = run.gm(batch)
                acc.backward(res["loss"] / o.grad_accum)
        sums["loss"].append(res["loss"].detach().float())
        for k, on in terms.items():
            if on and k in res:                  # only the terms that are part of the objective
                sums[k].append(res[k].float())
    params = [p for p in run.gm.parameters() if p.requires_grad]
    grad_norm = acc.clip_grad_norm_(params, o.grad_clip)      # DeepSpeed: the norm its step clipped
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()                                       # DeepSpeed: a no-op, the engine stepped
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    rec = {"step": step + 1, "lr": lr}
    for k, vals in sums.items():  # every process ran the same kinds, so the mean is over the same terms
        # nanmean: a sample with nothing for a term (pgd_depth on a frame without depth) reports NaN, not 0
        # (a diverged step still shows: its "loss" is the plain mean)
        v = None
        if vals:
            mean = torch.stack(vals).mean() if k == "loss" else torch.stack(vals).nanmean()
            v = float(acc.reduce(mean, "mean"))
        rec[k] = None if v is None or (k != "loss" and math.isnan(v)) else v
    rec["grad_norm"] = float(grad_norm)
    return rec


def weights_checksum(run: Run) -> float:
    """Sum of every trainable weight in float64: equal on every process iff DDP kept them in sync
    (sharded weights are gathered first, so under FSDP it is the whole model's sum on every process)."""
    params = [p for p in run.gm.parameters() if p.requires_grad]
    with gathered(params):                                     # ZeRO-3: each process holds a partition
        return float(sum(fsdp.gathered(p.detach()).double().sum() for p in params))


Evaluator = Callable[["Run", int, bool], "dict | None"]     # (run, step, final) -> results.json content or None


def train(cfg: TrainConfig, resume: str | Path | None = None, stop_after: int | None = None,
          progress: Callable[..., Any] | None = None, evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Run (or resume) training; `stop_after` ends early after that step as if interrupted.

    ``evaluator(run, step, final)`` runs before the first step of a new run (the untrained reference), every
    ``run.eval_every`` steps and after the last one (every process calls it; it returns the results on
    process 0); None evaluates nothing.
    """
    run, pos = setup(cfg, resume)
    acc, out = run.accelerator, run.out
    metrics = out / "metrics.jsonl"
    if acc.is_main_process:
        save_config(cfg, out / "config.yaml", extra={**run_info(), **engine_info(acc, cfg)})
        _truncate_metrics(metrics, pos["step"])
        ckpt.remove_stale_temporaries(out)
    last = min(cfg.optim.max_steps, stop_after or cfg.optim.max_steps)
    bar = progress(total=cfg.optim.max_steps, initial=pos["step"], desc="train",
                   disable=not acc.is_local_main_process) if progress else None
    if evaluator and pos["step"] == 0:
        evaluator(run, 0, False)           # the untrained model: what every later evaluation is read against
    batches = micro_batches(run, pos["step"], last)
    t_loop = time.perf_counter()
    for step in range(pos["step"], last):
        rec = train_step(run, step, batches)
        s = rec["step"]
        if acc.is_main_process and (s % cfg.run.log_every == 0 or s == last):
            with metrics.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            if acc.trackers:
                acc.log({k: v for k, v in rec.items() if v is not None and k != "step"}, step=s)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        if evaluator and cfg.run.eval_every and s % cfg.run.eval_every == 0 and s < cfg.optim.max_steps:
            evaluator(run, s, False)
        if (cfg.run.save_every and s % cfg.run.save_every == 0) or s == cfg.optim.max_steps:
            save(run, s)
    loop_s = time.perf_counter() - t_loop
    if bar:
        bar.close()
    for tracker in acc.trackers:            # not acc.end_training(): that also ends the process group
        tracker.finish()
    summary: dict[str, Any] = {"step": last, "out": str(out),
                               "engine": {**engine_info(acc, cfg), "prepared": type(run.gm).__name__},
                               # the loop's time waiting for data (this process), evaluation and saving included in loop_s
                               "data": {"num_workers": cfg.data.num_workers, "wait_s": round(batches.wait_s, 3),
                                        "first_wait_s": round(batches.first_wait_s, 3), "loop_s": round(loop_s, 3),
                                        "micro_batches": batches.count}}
    sums = acc.gather(torch.tensor([weights_checksum(run)], dtype=torch.float64, device=acc.device))
    summary["weights_checksum"] = sums.cpu().tolist()
    if evaluator and last == cfg.optim.max_steps:
        summary["results"] = evaluator(run, last, True)
    if acc.is_main_process:
        write_text_atomic(out / "train_summary.json",
                          json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2) + "\n")
    acc.wait_for_everyone()
    return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines past `step` (an interrupted run may have logged beyond its last checkpoint)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:         # the last line of a run killed mid-write
            continue
        if rec["step"] <= step:
            keep.append(ln)
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


# ---- save --------------------------------------------------------------------------------
def _vision_state(run: Run, full: dict | None) -> dict:
    """The vision tower's weights, from the gathered state dict of a sharded run or from the module (a collective
    under ZeRO-3's partitioning, so every process calls it)."""
    tower = run.adapter.vision_tower(run.peft_model)
    prefix = next(n for n, m in run.peft_model.named_modules() if m is tower) + "."
    if full is not None:
        return {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
    with gathered(list(tower.parameters())):
        return {k: v.detach().cpu().clone() for k, v in tower.state_dict().items()}


def _objective_heads_state(run: Run, full: dict | None) -> dict:
    """The objective heads' weights, whole: from ZeRO-3's gathered parameters (``full``), gathered from FSDP2's
    shards (a collective), or from the module."""
    gm = run.accelerator.unwrap_model(run.gm)
    if not len(gm.objective_heads):
        return {}
    prefix = "objective_heads."
    if full is not None:
        return {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
    if run.sharded:
        return fsdp.full_state_dict(gm.objective_heads)
    return {k: v.detach().cpu().clone() for k, v in gm.objective_heads.state_dict().items()}


def zero3(acc) -> bool:
    """Whether accelerate runs DeepSpeed ZeRO stage 3 (weights partitioned over processes)."""
    return zero.stage(acc) == 3


def save(run: Run, step: int) -> None:
    """Checkpoint ``step``; a sharded run first gathers the full weights and optimizer state (every process)."""
    from accelerate.utils import gather_object

    acc = run.accelerator
    acc.wait_for_everyone()
    rng_states = gather_object([ckpt.rng_state()])        # every rank's, in rank order (one process: its own)
    extra: dict[str, Any] = {}
    heads = run.heads
    full = None                                        # ZeRO-3: every trained weight, gathered, by parameter name
    if run.sharded:
        extra["adapter_state"] = fsdp.full_state_dict(run.peft_model)
        extra["optimizer_state"] = fsdp.full_optimizer_state(run.gm, run.optimizer)
        if run.heads is not None:
            head_state = fsdp.full_state_dict(run.heads)
            if acc.is_main_process:
                run.heads_copy.load_state_dict(head_state)
            heads = run.heads_copy
    if run.deepspeed:
        extra["optimizer_state"] = zero.optimizer_state(acc, run.optimizer)   # every process's partition
    if zero3(acc):
        # ZeRO-3 partitions every weight: gather the trained ones (LoRA, heads; a collective) to process 0
        trained = {n: p for n, p in acc.unwrap_model(run.gm).named_parameters() if p.requires_grad}
        with gathered(trained.values()):
            full = {n: p.detach().cpu().clone() for n, p in trained.items()} if acc.is_main_process else {}
        extra["adapter_state"] = {k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")}
        if run.heads is not None and acc.is_main_process:
            run.heads_copy.load_state_dict({k.removeprefix("heads."): v for k, v in full.items()
                                            if k.startswith("heads.")})
            heads = run.heads_copy
    extra["objective_heads"] = _objective_heads_state(run, full)
    if run.cfg.model.pointmap is not None:             # the point-map branch: peft's adapter does not carry it
        extra["pointmap"] = (acc.unwrap_model(run.gm).pointmap, run.cfg.model.pointmap)
    if not run.cfg.model.freeze_vision:                # trained in full: peft's adapter does not carry it
        extra["vision_state"] = _vision_state(run, extra.get("adapter_state"))
    if acc.is_main_process:
        micro = step * run.cfg.optim.grad_accum
        m = run.cfg.model
        inputs = {"model": m.name, **m.input_settings()}
        ckpt.save_checkpoint(ckpt.checkpoint_dir(run.out, step), run.peft_model, heads, run.optimizer,
                             run.scheduler, step, micro, rng_states, inputs=inputs,
                             engine=engine_info(acc, run.cfg), **extra)
    acc.wait_for_everyone()
