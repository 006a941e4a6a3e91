"""The probe as the trainer's evaluator: ``train(cfg, evaluator=evaluate)`` (gasp_cli/train.py wires it in).

Every ``run.eval_every`` steps and at the end, the model being trained is probed on the held-out
sequences (``data.tracks_eval``, or synthetic ones) in the probe's own format: a line in
OUT/eval.jsonl per evaluation, OUT/results.json at the end.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from gasp.runinfo import write_text_atomic
from gasp.train.config import TrainConfig
from gasp.train.recipe import Run
from probes.results import ProbeResults
from probes.runner import Probe, ProbeConfig, summarize
from tracks.io import TrackReader

log = logging.getLogger("gasp.train.recipe")          # the trainer's log: its lines read as one run's


def evaluate(run: Run, step: int, final: bool = False) -> dict | None:
    """The probe on the held-out sequences (process 0); returns the results.json content there.

    A sharded model's forward is a collective, so under FSDP2 or ZeRO-3 every process runs the same
    probe forwards and only process 0 reports.
    """
    acc, cfg = run.accelerator, run.cfg
    res = None
    if run.eval_path is not None and (acc.is_main_process or run.collective_forward):
        pcfg = probe_config(cfg, run.eval_path, run.out)
        run.peft_model.eval()
        probe = Probe(pcfg, run.peft_model, run.processor, run.adapter, acc.device, training=True)
        reader = TrackReader(run.eval_path)
        done = {}
        for i in range(min(len(reader), cfg.run.eval_sequences)):
            seq = reader[i]
            for r in probe.evaluate([seq])[0]:            # one record, or one per query-frame group
                done[r.key] = {"arrays": r.arrays, "attrs": {**r.attrs, "skipped": not r.arrays["valid"].any()}}
        run.peft_model.train()
    if run.eval_path is not None and acc.is_main_process:
        skipped = [k for k, r in done.items() if r["attrs"]["skipped"]]
        res = summarize(pcfg, probe.layers, done, skipped, probe.layer_kinds)
        res.update(step=step, tracks=str(run.eval_path), train_config=str(run.out / "config.yaml"))
        results = ProbeResults(res)
        line = {"step": step, "pck_peak": res["pck_mean"][results.peak_index], "peak_layer": res["peak_layer"],
                "pck_mean": res["pck_mean"], "rho": res["rho"], "references": res.get("references")}
        untrained = _untrained(run.out / "eval.jsonl") if step else None       # read before this line is added
        with (run.out / "eval.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        log.info("eval at step %d: %s", step, results.summary_line(untrained))
        if final:
            write_text_atomic(run.out / "results.json", json.dumps(res, indent=2, allow_nan=False) + "\n")
    acc.wait_for_everyone()
    return res


def probe_config(cfg: TrainConfig, tracks: Path, out: Path) -> ProbeConfig:
    """The probe of the model being trained: its model, fed as in training (the shared ``ModelInput`` fields)."""
    return ProbeConfig(model=cfg.model.name, adapter=None, tracks=str(tracks), out=str(out), seed=cfg.run.seed,
                       max_sequences=cfg.run.eval_sequences, pointmap=cfg.model.pointmap, **cfg.model.input_settings())


def _untrained(evals: Path) -> dict[str, float]:
    """{"untrained": peak PCK at step 0}, when this run evaluated before its first step."""
    for ln in evals.read_text().splitlines() if evals.is_file() else []:
        rec = json.loads(ln)
        if rec["step"] == 0 and rec["pck_peak"] is not None:
            return {"untrained": rec["pck_peak"]}
    return {}
