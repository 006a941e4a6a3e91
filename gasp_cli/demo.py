"""Probe the shipped checkpoints of the v3 small replication and check them against RESULTS.md.

    python scripts/demo.py --out runs/demo                   # README command (1)
    python scripts/demo.py --out runs/demo --check           # exit 1 if a peak PCK moved by > 0.02

The base model and LoRA adapters in checkpoints/gasp-v3 (see its manifest.json) are probed on
their test split, re-rendered exactly as `scripts/reproduce_small.py` made it. Each model's
peak-layer PCK@2 is printed beside the number the replication reported, with three model-free
references. Writes OUT/LABEL/ (each probe), OUT/figure3.png/.pdf and OUT/compare.json.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHIPPED = ROOT / "checkpoints" / "gasp-v3"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=str(SHIPPED), help="exported checkpoints folder (default %(default)s)")
    p.add_argument("--out", default="runs/demo", help="output folder (default %(default)s)")
    p.add_argument("--max-sequences", type=int, help="probe only the first N test sequences (no check then)")
    p.add_argument("--device", help="torch device")
    p.add_argument("--check", action="store_true", help="exit 1 if a peak PCK differs from the reported one")
    p.add_argument("--tolerance", type=float, default=0.02, help="for --check (default %(default)s)")
    a = p.parse_args(argv)
    if a.max_sequences is not None and a.max_sequences < 1:
        p.error(f"argument --max-sequences: must be >= 1, got {a.max_sequences}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from experiments.replication.ship import check_test_split, model_free_references, shipped_runs
    from gasp_cli.compare import check_reported, compare
    from probes.runner import ProbeError
    from tracks.io import TrackFormatError

    out, t0 = Path(a.out), time.monotonic()
    if not (Path(a.checkpoints) / "manifest.json").is_file():          # checked before anything is said or made
        print(f"demo: error: {Path(a.checkpoints) / 'manifest.json'} not found: point --checkpoints at an export "
              "of experiments/export_small.py", file=sys.stderr)
        return 2
    try:
        from tqdm import tqdm

        print("the test split (rendered once per OUT):", flush=True)
        model, tracks, size, runs, plan = shipped_runs(
            Path(a.checkpoints), out, progress=lambda it: tqdm(it, desc="render test scenes", unit="scene"))
        print(check_test_split(tracks, Path(a.checkpoints)), flush=True)
        print("computing the model-free references (about 10 s) ...", flush=True)
        refs = model_free_references(tracks, size[0], plan.version)
        rows = compare(model, runs, tracks, out, size=size, references=refs, max_sequences=a.max_sequences,
                       device=a.device)
    except (ProbeError, TrackFormatError, FileNotFoundError, ValueError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    print(reproduction_line(rows, a.tolerance))
    print(f"done in {time.monotonic() - t0:.0f} s")
    return check_reported(rows, a.tolerance) if a.check else 0


def reproduction_line(rows: list[dict], tolerance: float) -> str:
    """Whether every model's peak PCK@2 is within ``tolerance`` of the reported one (compared on the full split only)."""
    diffs = [r["abs_diff"] for r in rows if r.get("abs_diff") is not None]
    if len(diffs) < len(rows):
        return "numbers: not compared with the reported ones (a subset of the test split was probed)"
    worst = max(diffs)
    verdict = "reproduce" if worst <= tolerance else "DO NOT reproduce"
    return (f"numbers: {verdict}: every peak PCK@2 is {'within' if worst <= tolerance else 'not all within'} "
            f"{tolerance} of the reported one (largest difference {worst:.4f})")


if __name__ == "__main__":
    sys.exit(main())
