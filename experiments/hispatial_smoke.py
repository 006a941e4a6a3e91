"""Issue 29's smoke run: HiSpatial arm H (ground-truth point map) against its control H0 (every point invalid) on
the tiny default, 2 seeds (a mechanism check).

Pre-registered before any run (what is reported, and how it is read):
- per arm and seed: the LM loss over the last 5 steps; `probes/metric_qa.py` on 2 held-out scenes (success@25 %
  and @50 % per numeric kind, exact match for the choice) with frames and the arm's own point map, and for H also
  with the point map off (none), which measures whether H reads it; `probes/pck.py --pointmap --depth`: depth
  delta<1.25 after scale-and-shift at layer -1 (the LLM's input, where the point map enters) and peak Q/K PCK@2;
- the question: does H answer the metric questions better than H0, and worse with its point map off? With 2
  seeds of a tiny random model and a handful of questions, a difference within the seeds' spread (or within 2 SE
  of a rate) is reported as none. Nothing here compares with the paper's benchmark numbers.

    python experiments/hispatial_smoke.py --out runs/hispatial_smoke [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from experiments.smoke import last_checkpoint, run_script

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"H": "gt", "H0": "none"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "hispatial_smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--qa-scenes", type=int, default=2)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arm, source in ARMS.items():
        for seed in a.seeds:
            run = a.out / f"{arm}-s{seed}"
            if not (run / "train_summary.json").is_file():
                run.mkdir(parents=True, exist_ok=True)
                run_script(["scripts/train_gasp.py", "--config", f"configs/hispatial/{arm}.yaml", f"run.seed={seed}",
                     f"run.out={run}", "run.eval_sequences=0"], run / "train.log")
            steps = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
            ckpt = last_checkpoint(run) / "adapter"
            qa_out = run / "metric_qa"
            if not (qa_out / "metric_qa.json").is_file():
                run_script(["probes/metric_qa.py", "--model", "tiny-paligemma", "--adapter", str(ckpt), "--pointmap", source,
                     "--scenes", str(a.qa_scenes), "--out", str(qa_out)], run / "metric_qa.log")
            qa = json.loads((qa_out / "metric_qa.json").read_text())["summary"]
            probe_out = run / "probe"
            if not (probe_out / "results.json").is_file():
                run_script(["probes/pck.py", "--model", "tiny-paligemma", "--adapter", str(ckpt), "--pointmap", source,
                     "--depth", "--out", str(probe_out)], run / "probe.log")
            res = json.loads((probe_out / "results.json").read_text())
            d = res["depth"]
            row = {"arm": arm, "seed": seed,
                   "l_lm_last5": statistics.fmean(s["l_lm"] for s in steps[-5:]),
                   "depth_d125_m1": d["scale_shift"]["delta_1.25"][d["layers"].index(-1)],
                   "qk_peak_pck": max(res["pck_mean"]), "git_sha": res.get("git_sha"), "qa": qa}
            rows.append(row)
            print(f"{arm} seed {seed} done", file=sys.stderr)
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    kinds = ("point_depth", "object_distance", "object_size")
    print("| arm | seed | condition | " + " | ".join(f"{k} @25/@50" for k in kinds) + " | depth_order | l_lm | "
          "depth d1.25 at -1 | Q/K peak PCK |")
    print("|---|---|---|" + "---|" * (len(kinds) + 4))
    for r in rows:
        for cond, per in r["qa"].items():
            if not cond.startswith("frames"):
                continue
            cells = [f"{per[k]['@0.25']:.2f}/{per[k]['@0.5']:.2f} (n {per[k]['n']})" if k in per else "-" for k in kinds]
            do = per.get("depth_order")
            order = f"{do['exact']:.2f} (n {do['n']})" if do else "-"
            print(f"| {r['arm']} | {r['seed']} | {cond} | " + " | ".join(cells) + f" | {order} | "
                  f"{r['l_lm_last5']:.3f} | {r['depth_d125_m1']:.3f} | {r['qk_peak_pck']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
