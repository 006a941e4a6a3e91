"""Does GASP work? The paper's Figure 3 and ablation as a controlled small-scale run on CPU (issue 5).

    python scripts/reproduce_small.py --out runs/v3                         # issue 9's second run: 2 seeds x arms A-F
    python scripts/reproduce_small.py --out runs/v3_quick --quick           # one seed, a smaller model (minutes)
    python scripts/reproduce_small.py --out runs/smoke --smoke              # seconds; what the test runs
    python scripts/reproduce_small.py --out runs/v3_gpu --preset gpu --device cuda   # the larger preset, one GPU
    python scripts/reproduce_small.py --out runs/v2 --preset v2             # issue 9's first run (docs/results/v2)
    python scripts/reproduce_small.py --out runs/small --preset v1          # issue 5's run (docs/results/small)

Arms A (LM only), B (+corr), C (+corr+depth), D (corr+depth on Q/K directly), E (C on Q/K head
pairs) and F (C with linear heads) from one shared LM warm-up; the model, splits, the validation
sweep and every hyperparameter are fixed in `experiments/replication/plan.py` (docs/results/v3/PLAN.md).
Writes OUT/results.json (every number, seeds, plan, trainer configs, git SHA, timings),
OUT/figure3.png/.pdf (all arms overlaid) and OUT/qa_table.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plan_sha(doc: str) -> str | None:
    """The last commit that touched the plan's pre-registration (e.g. docs/results/v3/PLAN.md), if git knows it."""
    import subprocess

    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", doc], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seeds", type=int, help="number of seeds (0..N-1) per arm (default: 3; 1 with --smoke)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller model, fewer scenes and steps (minutes)")
    size.add_argument("--smoke", action="store_true", help="a minimal run for the tests (seconds)")
    size.add_argument("--preset", help="a preset by name (full, quick, smoke, gpu, v2, v1, v1-quick, "
                                       "v1-smoke); v2 and v1 re-make earlier runs")
    ap.add_argument("--device", help="where the warm-up, probes and QA run (default: cuda if available, else cpu); "
                                     "the arms train on accelerate's device. With --device cpu on a GPU machine, "
                                     "also set CUDA_VISIBLE_DEVICES= to keep training on the CPU")
    ap.add_argument("--arms", nargs="+", help="subset of arms (default: the preset's, A-F for v2)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("gasp", "probes", "tracks", "transformers", "peft", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("reproduce_small")

    from experiments.replication import ARMS, make_plan
    from experiments.replication.aggregate import qa_table, summarize_arms
    from experiments.replication.small import PlanMismatchError, run_experiment
    from gasp.runinfo import run_info, write_json_atomic, write_text_atomic
    from plots.figure3 import draw_figure3

    preset = args.preset or ("smoke" if args.smoke else "quick" if args.quick else "full")
    seeds = args.seeds if args.seeds is not None else (1 if args.smoke else None)
    try:
        plan = make_plan(preset, seeds=seeds, arms=args.arms)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info = run_info()                     # the code that runs: taken now, not after an hour of edits
    info["plan_sha"] = plan_sha(plan.plan_doc)
    try:
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        res = run_experiment(plan, out, progress=log.warning, device=device)
    except PlanMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize_arms(res["runs"])
    labels = {"base": "warm-up base", **{a: ARMS[a]["label"] for a in plan.arms}}
    names = [n for n in summary if n != "base"]
    fig = draw_figure3([summary[n] for n in ["base", *names]], [labels[n] for n in ["base", *names]],
                       out / "figure3.png")
    table = qa_table(summary, labels)
    write_text_atomic(out / "qa_table.md", table)
    res["timings"]["total_s"] = time.time() - t0
    write_json_atomic(out / "results.json", {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "preset": preset, "plan": plan.to_dict(), "seeds": plan.seeds, "labels": labels, "summary": summary,
        "qa_table": table, "figure": [str(p) for p in fig], **res, **info,
        **({"git_sha_at_end": end} if (end := run_info()["git_sha"]) != info["git_sha"] else {})})
    log.warning("done in %.0f s: %s, %s, %s", res["timings"]["total_s"], out / "results.json", fig[0],
                out / "qa_table.md")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
