"""Issue 30's smoke run: VST's SFT stage against SFT then RL, on the tiny default, 2 seeds (a mechanism check).

Pre-registered before any run (what is reported, and how it is read):
- per seed: the SFT adapter (configs/vst_sft_tiny.yaml) and the RL adapter trained from it
  (configs/vst_rl_tiny.yaml, the real rewards); for each, `probes/vst_qa.py` on 4 held-out scenes (R_acc per
  question kind with frames and with grey frames, against chance) and `probes/pck.py --depth` (peak Q/K PCK@2,
  depth delta<1.25 after scale-and-shift at layers -2 and -1);
- from the RL run: the reward, the share of groups dropped and the clip fraction over its steps;
- the question: does RL after SFT change the answers or the model's own correspondence and depth? A change within
  2 SE of a rate, or within the seeds' spread, is reported as none. A tiny random model is expected to earn
  almost no reward, so most groups may be dropped: that is reported as what happened, not tuned away.

    python experiments/vst_smoke.py --out runs/vst_smoke [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from experiments.smoke import run_script

ROOT = Path(__file__).resolve().parents[1]


def read(adapter: Path, out: Path) -> dict:
    if not (out / "vst_qa" / "vst_qa.json").is_file():
        run_script(["probes/vst_qa.py", "--adapter", str(adapter), "--out", str(out / "vst_qa")], out / "vst_qa.log")
    if not (out / "probe" / "results.json").is_file():
        run_script(["probes/pck.py", "--model", "tiny-qwen2.5-vl", "--adapter", str(adapter), "--depth",
             "--out", str(out / "probe")], out / "probe.log")
    qa = json.loads((out / "vst_qa" / "vst_qa.json").read_text())["summary"]
    res = json.loads((out / "probe" / "results.json").read_text())
    d = res["depth"]
    ss = d["scale_shift"]["delta_1.25"]
    return {"qa": qa, "qk_peak_pck": max(res["pck_mean"]), "depth_m2": ss[d["layers"].index(-2)],
            "depth_m1": ss[d["layers"].index(-1)], "git_sha": res.get("git_sha")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "vst_smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in a.seeds:
        sft, rl = a.out / f"sft-s{seed}", a.out / f"rl-s{seed}"
        if not (sft / "train_summary.json").is_file():
            sft.mkdir(parents=True, exist_ok=True)
            run_script(["scripts/train_gasp.py", "--config", "configs/vst_sft_tiny.yaml", f"run.seed={seed}", f"run.out={sft}",
                 "run.eval_sequences=0"], sft / "train.log")
        if not (rl / "rl_summary.json").is_file():
            rl.mkdir(parents=True, exist_ok=True)
            run_script(["scripts/train_vst_rl.py", "--config", "configs/vst_rl_tiny.yaml", f"seed={seed}",
                 f"sft_adapter={sft / 'checkpoint-60'}", f"out={rl}"], rl / "train.log")
        recs = [json.loads(ln) for ln in (rl / "metrics.jsonl").read_text().splitlines()]
        rows.append({"stage": "SFT", "seed": seed, **read(sft / "checkpoint-60" / "adapter", sft)})
        rows.append({"stage": "SFT+RL", "seed": seed, **read(rl / "checkpoint-10" / "adapter", rl),
                     "rl_reward": statistics.fmean(r["reward"] for r in recs),
                     "rl_dropped": statistics.fmean(r["dropped_frac"] for r in recs),
                     "rl_clip": statistics.fmean(r.get("clip_frac", 0.0) for r in recs)})
        print(f"seed {seed} done", file=sys.stderr)
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    kinds = sorted(rows[0]["qa"]["frames"])
    print("| stage | seed | view | " + " | ".join(kinds) + " | Q/K peak PCK | depth -2 | depth -1 |")
    print("|---|---|---|" + "---|" * (len(kinds) + 3))
    for r in rows:
        for view in ("frames", "grey"):
            cells = [f"{r['qa'][view][k]['acc']:.2f}" for k in kinds]
            print(f"| {r['stage']} | {r['seed']} | {view} | " + " | ".join(cells) +
                  f" | {r['qk_peak_pck']:.3f} | {r['depth_m2']:.3f} | {r['depth_m1']:.3f} |")
    for r in rows:
        if "rl_reward" in r:
            print(f"RL seed {r['seed']}: mean reward {r['rl_reward']:.3f}, groups dropped {r['rl_dropped']:.2f}, "
                  f"clip fraction {r['rl_clip']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
