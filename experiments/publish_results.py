"""Publish a finished v2/v3 replication (issue 9) into docs/: the JSON, then everything drawn from it.

    python scripts/publish_results.py runs/v3 --dest docs/results/v3

1. DEST/results.json: RUN/results.json with the per-question QA lists dropped (their accuracies
   stay) and the model-free references of the VALIDATION split added (`references_val`,
   from RUN/data/val.h5; the validation head target compares against them).
2. From that JSON only: DEST/figure3.png/.pdf (every arm, the references as lines),
   DEST/loss_curves.png/.pdf (L_corr, L_depth per arm) and DEST/tables.md
   (`scripts/report_small.py`'s tables, which RESULTS.md quotes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _drop_questions(obj):
    if isinstance(obj, dict):
        return {k: _drop_questions(v) for k, v in obj.items() if k != "per_question"}
    if isinstance(obj, list):
        return [_drop_questions(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="output folder of scripts/reproduce_small.py (a v2 preset)")
    ap.add_argument("--dest", default=str(ROOT / "docs" / "results" / "v3"))
    a = ap.parse_args(argv)
    run, dest = Path(a.run), Path(a.dest)
    src = run / "results.json"
    if not src.is_file():
        print(f"publish_results: error: {src} not found (run scripts/reproduce_small.py first)", file=sys.stderr)
        return 2
    from experiments.replication.baselines import TOKEN_PX, benchmark_references
    from experiments.replication.report import report
    from gasp.runinfo import write_json_atomic, write_text_atomic
    from plots.figure3 import draw_figure3
    from plots.loss_curves import draw_loss_curves

    res = _drop_questions(json.loads(src.read_text()))
    if res["plan"].get("version", 1) < 2:
        print(f"publish_results: error: {src} is a v1 run; publish v2 runs only", file=sys.stderr)
        return 2
    val = run / "data" / "val.h5"
    if val.is_file():
        res["references_val"] = benchmark_references(val, TOKEN_PX)
    dest.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dest / "results.json", res)

    res = json.loads((dest / "results.json").read_text())          # everything below reads the committed JSON
    names = list(res["summary"])
    refs = {k: res["references"][k]["2"]["mean"] for k in ("uniform", "same_position", "appearance")}
    fig = draw_figure3([res["summary"][n] for n in names], [res["labels"][n] for n in names], dest / "figure3.png",
                       references=refs)
    curves = draw_loss_curves(res, dest / "loss_curves.png")
    write_text_atomic(dest / "tables.md", report(res))
    print("wrote " + ", ".join(str(p) for p in [dest / "results.json", *fig, *curves, dest / "tables.md"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
