"""Benchmark the probe with HiSpatial's point map against without, side by side: wall time, CPU time, peak RSS.

Three commands, each a whole `gasp probe` process (model build, point maps, forwards, metrics) on the same cached
tracks, alternating over --runs runs after one warm-up each, OMP_NUM_THREADS=1:
    base     tiny-paligemma without an adapter (no point-map branch);
    lora     with a 2-step LoRA adapter trained the same way without the point map (peft's own cost);
    gt       the same model with a 2-step H adapter (branch joined to the projector), --pointmap gt;
    none     that adapter with --pointmap none (every point invalid: the branch runs on zeros).
The adapter is trained here first (configs/hispatial/H.yaml, 2 steps), the tracks rendered once (--sequences
sequences, 8 frames at 112 px). Peak RSS is the child's (os.wait4). Ratios are to base, run by run.

    python bench/bench_pointmap_probe.py [--runs 5] [--sequences 4] [--out bench_pointmap.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _timed(cmd: list[str]) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode()[-2000:]
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([py, "scripts/train_gasp.py", "--config", "configs/hispatial/H.yaml", f"run.out={tmp / 'h'}",
                        "optim.max_steps=2", "run.eval_sequences=0", "data.synthetic_scenes=2"], cwd=ROOT, env=ENV,
                       check=True, capture_output=True)
        adapter = tmp / "h" / "checkpoint-2" / "adapter"
        subprocess.run([py, "scripts/train_gasp.py", "--config", "configs/hispatial/H.yaml", f"run.out={tmp / 'l'}",
                        "optim.max_steps=2", "run.eval_sequences=0", "data.synthetic_scenes=2", "model.pointmap=null"],
                       cwd=ROOT, env=ENV, check=True, capture_output=True)
        tracks = tmp / "tracks.h5"
        subprocess.run([py, "-c", "from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file; "
                        f"make_synthetic_file({str(tracks)!r}, {a.sequences}, seed=7, grid=8, split='eval', "
                        "config=SyntheticSceneConfig(height=112, width=112, num_frames=26))"], cwd=ROOT, env=ENV,
                       check=True)
        probe = [py, "-m", "gasp_cli.main", "probe", "--model", "tiny-paligemma", "--tracks", str(tracks)]
        cmds = {"base": probe, "lora": [*probe, "--adapter", str(tmp / "l" / "checkpoint-2" / "adapter")], "gt": [*probe, "--adapter", str(adapter), "--pointmap", "gt"],
                "none": [*probe, "--adapter", str(adapter), "--pointmap", "none"]}
        rows = []
        for run in range(a.runs + 1):                       # run 0: warm-up, not counted
            for name, cmd in cmds.items():
                r = _timed([*cmd, "--out", str(tmp / f"p_{name}_{run}")])
                if run:
                    rows.append({"variant": name, "run": run, **r})
                print(f"  run {run} {name}: {r['wall_s']:.2f} s, {r['peak_mb']:.0f} MB", file=sys.stderr)
    print(f"tiny-paligemma, {a.sequences} sequences of 8 frames at 112 px; whole `gasp probe` processes, "
          f"OMP_NUM_THREADS=1, {a.runs} runs each after a warm-up, alternating")
    print()
    print("| variant | wall s (median) | x base (median, min-max) | x lora | cpu s | peak MB | x base | x lora |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for name in cmds:
        mine = [r for r in rows if r["variant"] == name]
        base = {r["run"]: r for r in rows if r["variant"] == "base"}
        ratios = [r["wall_s"] / base[r["run"]]["wall_s"] for r in mine]
        mem = [r["peak_mb"] / base[r["run"]]["peak_mb"] for r in mine]
        s = {k: statistics.median(r[k] for r in mine) for k in ("wall_s", "cpu_s", "peak_mb")}
        lora = {r["run"]: r for r in rows if r["variant"] == "lora"}
        s.update(wall_ratio=statistics.median(ratios), wall_ratio_range=[min(ratios), max(ratios)],
                 mem_ratio=statistics.median(mem),
                 wall_ratio_lora=statistics.median(r["wall_s"] / lora[r["run"]]["wall_s"] for r in mine),
                 mem_ratio_lora=statistics.median(r["peak_mb"] / lora[r["run"]]["peak_mb"] for r in mine))
        summary[name] = s
        print(f"| {name} | {s['wall_s']:.2f} | {s['wall_ratio']:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
              f"{s['wall_ratio_lora']:.3f} | {s['cpu_s']:.2f} | {s['peak_mb']:.0f} | {s['mem_ratio']:.3f} | "
              f"{s['mem_ratio_lora']:.3f} |")
    if a.out:
        a.out.write_text(json.dumps({"summary": summary, "rows": rows, "config": vars(a) | {"out": str(a.out)}},
                                    indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
