"""Issue 28's smoke run: PseudoGD arm P against its control P0 on the tiny default, 2 seeds (a mechanism check).

Pre-registered before any run (what is reported, and how it is read):
- per arm and seed: the PseudoGD losses over the last 5 steps (P trains them; P0 measures them with weight 0),
  the LM loss over the last 5 steps, and the probe of the final adapter on the default synthetic eval split
  (`probes/pck.py --depth`): depth delta<1.25 after scale-and-shift at layer -2 (the encoder before the
  projector) and -1, PCK@2 of the -2 and -1 features (cosine matching), and peak Q/K PCK@2;
- the same probe of the untrained model, as the reference every arm started from;
- the question: does P's encoder carry more linearly decodable depth at -2 than P0's? With 2 seeds of a tiny
  random model, a difference within the seeds' spread is reported as none. Nothing here compares with the
  paper's benchmark numbers.

    python experiments/pseudogd_smoke.py --out runs/pseudogd_smoke [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from experiments.smoke import last_checkpoint, run_script

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("P", "P0")
EXPLORATORY = ("P-lin",)     # added after P against P0 was seen (heads absorbed the signal): reported as exploratory


def probe(out: Path, adapter: Path | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = ["probes/pck.py", "--model", "tiny-qwen2.5-vl", "--depth", "--out", str(out)]
    if adapter is not None:
        args += ["--adapter", str(adapter)]            # the probe takes the adapter's input settings (112 px)
    else:
        args += ["--size", "112", "112"]              # the untrained model at the arms' input size
    if not (out / "results.json").is_file():
        run_script(args, out / "probe.log")
    r = json.loads((out / "results.json").read_text())
    d = r["depth"]
    at = {layer: i for i, layer in enumerate(d["layers"])}
    fp = dict(zip(r["feature_pck"]["layers"], r["feature_pck"]["pck_mean"]))
    return {"depth_d125_m2": d["scale_shift"]["delta_1.25"][at[-2]], "depth_d125_m1": d["scale_shift"]["delta_1.25"][at[-1]],
            "feat_pck_m2": fp[-2], "feat_pck_m1": fp[-1], "qk_peak_pck": max(r["pck_mean"]), "git_sha": r.get("git_sha")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "pseudogd_smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--exploratory", action="store_true", help=f"also the arms {EXPLORATORY} (not pre-registered)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [{"arm": "untrained", "seed": None, **probe(a.out / "untrained" / "probe", None)}]
    for arm in ARMS + (EXPLORATORY if a.exploratory else ()):
        for seed in a.seeds:
            run = a.out / f"{arm}-s{seed}"
            if not (run / "train_summary.json").is_file():
                run.mkdir(parents=True, exist_ok=True)
                run_script(["scripts/train_gasp.py", "--config", f"configs/pseudogd/{arm}.yaml", f"run.seed={seed}",
                     f"run.out={run}", "run.eval_sequences=0"], run / "train.log")
            steps = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
            last = steps[-5:]

            def mean(k):
                vals = [s[k] for s in last if s.get(k) is not None]
                return statistics.fmean(vals) if vals else None

            ckpt = last_checkpoint(run)
            rows.append({"arm": arm, "seed": seed, "l_lm_last5": mean("l_lm"), "l_pgd_depth_last5": mean("l_pgd_depth"),
                         "l_pgd_structure_last5": mean("l_pgd_structure"), "steps": len(steps),
                         **probe(run / "probe", ckpt / "adapter")})
            print(f"{arm} seed {seed} done", file=sys.stderr)
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["l_lm_last5", "l_pgd_depth_last5", "l_pgd_structure_last5", "depth_d125_m2", "depth_d125_m1",
            "feat_pck_m2", "feat_pck_m1", "qk_peak_pck"]
    print("| arm | seed | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = ["-" if r.get(c) is None else f"{r[c]:.3f}" for c in cols]
        print(f"| {r['arm']} | {r['seed'] if r['seed'] is not None else '-'} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
