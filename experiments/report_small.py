"""Print the markdown tables of a finished small replication (what RESULTS.md quotes).

    python scripts/report_small.py                     # the committed v3 run: docs/results/v3
    python scripts/report_small.py runs/small > tables.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default=str(ROOT / "docs" / "results" / "v3"),
                    help="a folder with results.json: a scripts/reproduce_small.py output or a published "
                         "docs/results/vN (default %(default)s)")
    a = ap.parse_args(argv)
    path = Path(a.run) / "results.json"
    if not path.is_file():
        print(f"report_small: error: {path} not found (run scripts/reproduce_small.py first)", file=sys.stderr)
        return 2
    from experiments.replication.report import report

    print(report(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
