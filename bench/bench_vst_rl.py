"""Benchmark one VST RL step (rollouts + update) against one SFT step, side by side, with the RL step split into
generation and update.

Both on the tiny default (tiny-qwen2.5-vl, 4 frames at 112 px, VST-style synthetic questions), fp32 CPU,
OMP_NUM_THREADS=1, each in fresh processes, --rounds rounds alternating:
    sft   configs/vst_sft_tiny.yaml, --steps steps: the time a step takes is the training loop's time / steps
          (train_summary.json's loop_s; no evaluation, data built in the process);
    rl    configs/vst_rl_tiny.yaml from that SFT adapter (5 rollouts x 2 prompts, 2 iterations, at most 48 new
          tokens), --steps steps: the median of metrics.jsonl's step_s, gen_s (rollouts and rewards) and update_s
          (old log-probs and the iterations' forward, backward and AdamW), with a reward that varies within every
          group (the completion's length parity), so no group is dropped and every step updates.

    python bench/bench_vst_rl.py [--rounds 3] [--steps 4] [--out bench_vst_rl.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

RL_CHILD = """
import sys
from gasp.rl import loop, rewards
class Parity:
    kind = "choice"
    def score(self, text, item):
        return {"acc": float(len(text) % 2), "format": 0.0}
real = rewards.get
rewards.get = lambda k: Parity if k == "choice" else real(k)
loop.train_rl(loop.load_rl_config(sys.argv[1], sys.argv[2:]))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sft0 = tmp / "sft0"
        subprocess.run([py, "scripts/train_gasp.py", "--config", "configs/vst_sft_tiny.yaml", f"run.out={sft0}",
                        "optim.max_steps=2", "run.eval_sequences=0", "data.num_workers=0"], cwd=ROOT, env=ENV,
                       check=True, capture_output=True)
        for rnd in range(a.rounds):
            out = tmp / f"sft{rnd + 1}"
            subprocess.run([py, "scripts/train_gasp.py", "--config", "configs/vst_sft_tiny.yaml", f"run.out={out}",
                            f"optim.max_steps={a.steps}", "run.eval_sequences=0", "data.num_workers=0",
                            f"data.cache={sft0 / 'data'}"], cwd=ROOT, env=ENV, check=True, capture_output=True)
            s = json.loads((out / "train_summary.json").read_text())
            rows.append({"variant": "sft", "round": rnd, "step_s": s["data"]["loop_s"] / a.steps})
            out = tmp / f"rl{rnd}"
            subprocess.run([py, "-c", RL_CHILD, str(ROOT / "configs" / "vst_rl_tiny.yaml"),
                            f"sft_adapter={sft0 / 'checkpoint-2'}", f"out={out}", f"max_steps={a.steps}",
                            "kinds=[choice]"], cwd=ROOT, env=ENV, check=True, capture_output=True)
            recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
            rows.append({"variant": "rl", "round": rnd, **{k: statistics.median(r[k] for r in recs)
                                                          for k in ("step_s", "gen_s", "update_s", "completion_len")}})
            print(f"  round {rnd}: sft {rows[-2]['step_s']:.2f} s, rl {rows[-1]['step_s']:.2f} s", file=sys.stderr)
    sft = statistics.median(r["step_s"] for r in rows if r["variant"] == "sft")
    rl = {k: statistics.median(r[k] for r in rows if r["variant"] == "rl")
          for k in ("step_s", "gen_s", "update_s", "completion_len")}
    print(f"tiny-qwen2.5-vl, 4 frames at 112 px, fp32 CPU, 1 thread; {a.rounds} rounds x {a.steps} steps")
    print()
    print("| step | median s | x SFT | generation s | update s | completion tokens |")
    print("|---|---|---|---|---|---|")
    print(f"| SFT (one instruction micro-batch) | {sft:.3f} | 1.00 | - | - | - |")
    print(f"| RL (2 prompts x 5 rollouts, 2 iterations) | {rl['step_s']:.3f} | {rl['step_s'] / sft:.1f} | "
          f"{rl['gen_s']:.3f} | {rl['update_s']:.3f} | {rl['completion_len']:.1f} |")
    if a.out:
        a.out.write_text(json.dumps({"rows": rows, "sft_step_s": sft, "rl": rl, "config": vars(a) | {"out": str(a.out)}},
                                    indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
