"""The probe as the trainer's evaluator: ``train(cfg, evaluator=evaluate)`` (gasp_cli/train.py wires it in).

Every ``run.eval_every`` steps and at the end, the model being trained is probed on the held-out
sequences (``data.tracks_eval``, or synthetic ones) in the probe's own format: a line in
OUT/eval.jsonl per evaluation, OUT/results.json at the end.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from gasp.runinfo import write_text_atomic
from gasp.train.recipe import Run
from probes.runner import Probe, ProbeConfig, summarize
from tracks.io import TrackReader

log = logging.getLogger("gasp.train.recipe")          # the trainer's log: its lines read as one run's


def evaluate(run: Run, step: int, final: bool = False) -> dict | None:
    """The probe on the held-out sequences (process 0); returns the results.json content there.

    A sharded model's forward is a collective, so under run.fsdp every process runs the same
    probe forwards and only process 0 reports.
    """
    acc, cfg = run.accelerator, run.cfg
    res = None
    if run.eval_path is not None and (acc.is_main_process or run.sharded):
        m = cfg.model
        pcfg = ProbeConfig(model=m.name, adapter=None, tracks=str(run.eval_path), out=str(run.out),
                           frames_mode=m.frames_mode, fps=m.fps, size=tuple(m.size) if m.size else None,
                           prompt=m.prompt, seed=cfg.run.seed, max_sequences=cfg.run.eval_sequences)
        run.peft_model.eval()
        probe = Probe(pcfg, run.peft_model, run.processor, run.adapter, acc.device)
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
        pck = [v for v in res["pck_mean"] if v is not None]
        line = {"step": step, "pck_peak": max(pck) if pck else None, "peak_layer": res["peak_layer"],
                "pck_mean": res["pck_mean"], "rho": res["rho"]}
        with (run.out / "eval.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        log.info("eval at step %d: %s", step, eval_summary(line, res["rho"]))
        if final:
            write_text_atomic(run.out / "results.json", json.dumps(res, indent=2, allow_nan=False) + "\n")
    acc.wait_for_everyone()
    return res


def eval_summary(line: dict[str, Any], rho: list) -> str:
    """One readable log line, numbers rounded: 'peak PCK@2 0.608 at layer 3 (rho 0.12)'."""
    if line["pck_peak"] is None:
        return "no valid prediction"
    i = line["pck_mean"].index(line["pck_peak"])
    r = rho[i]
    return (f"peak PCK@2 {line['pck_peak']:.3f} at layer {line['peak_layer']}"
            + (f" (rho {r:+.2f})" if r is not None else ""))
