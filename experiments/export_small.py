"""Export a finished small replication's base model and arm adapters as the shipped checkpoints.

    python scripts/export_small.py runs/v3 --arms A C D E            # -> checkpoints/gasp-v3 (seed 0)
    python scripts/export_small.py runs/small --dest DIR --arms A C D --seed 1

float16 safetensors plus manifest.json (source command, git SHA, plan, the reported test numbers);
`python scripts/demo.py --check` re-probes them against those numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="output folder of scripts/reproduce_small.py")
    ap.add_argument("--dest", default=str(ROOT / "checkpoints" / "gasp-v3"))
    ap.add_argument("--arms", nargs="+", default=["A", "C", "D"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", help="provenance note stored in manifest.json (e.g. a correction to the run's record)")
    a = ap.parse_args(argv)
    from experiments.replication.ship import export_checkpoints

    try:
        man = export_checkpoints(a.run, a.dest, tuple(a.arms), a.seed, a.note)
    except (FileNotFoundError, KeyError) as e:
        print(f"export_small: error: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in Path(a.dest).rglob("*") if p.is_file())
    for arm, m in man["models"].items():
        r = m["reported"]
        print(f"{m['label']}: peak layer {r['peak_layer']}, PCK@2 {r['pck']:.3f} (seed {m['seed']})")
    print(f"wrote {a.dest} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
