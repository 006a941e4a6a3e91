"""Probe one base model with several LoRA adapters on the same tracks and overlay their Figure 3.

    python probes/compare.py                         # the shipped v2 replication's arms (checkpoints/gasp-v2)
    python probes/compare.py --model qwen2.5-vl-7b --tracks test.h5 --out runs/cmp \\
        --adapter baseline=none --adapter gasp=runs/gasp/checkpoint-2000/adapter

With no --model, the checkpoints shipped in checkpoints/gasp-v2 (see its manifest.json) are
probed on their test split, re-rendered exactly as `scripts/reproduce_small.py` made it, and each
model's peak-layer PCK is printed beside the number the replication reported (RESULTS.md);
`--check` exits non-zero when any differs by more than --tolerance.

Writes OUT/LABEL/ (each probe's results.h5, results.json), OUT/figure3.png/.pdf (overlaid)
and OUT/compare.json (the table, the configs, the git SHA).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from probes.runner import ProbeConfig, ProbeError, run_probe  # noqa: E402
from tracks.io import TrackFormatError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "gasp-v2"


def shipped_runs(ckpt: Path, out: Path) -> tuple[str, Path, tuple[int, int], dict[str, tuple[str | None, dict]], Any]:
    """(base model, test tracks, input size, {label: (adapter, reported)}, plan) of the shipped checkpoints."""
    from gasp.experiment.plan import Plan
    from gasp.experiment.ship import MANIFEST, tracks_digest
    from gasp.experiment.small import make_split

    path = ckpt / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --model (and --adapter) or point --checkpoints at an "
                                "export of scripts/export_small.py")
    man = json.loads(path.read_text())
    plan = Plan(**man["plan"])
    tracks = make_split(plan, "test", out / "data" / "test.h5")
    if tracks_digest(tracks) != man["test_split"]["digest"]:
        logging.getLogger("compare").warning(
            "the re-rendered test split differs from the one the numbers were reported on (%s); "
            "expect small differences", tracks)
    runs = {m["label"]: (str(ckpt / m["adapter"]), m["reported"]) for m in man["models"].values()}
    return str(ckpt / "base"), tracks, (plan.image_size, plan.image_size), runs, plan


def model_free_references(tracks: Path, size: int, version: int) -> dict[str, float]:
    """PCK@2 of the no-model references on the test split, as the probe averages (mean over sequences)."""
    if version >= 2:
        from gasp.experiment.baselines import benchmark_references

        ref = benchmark_references(tracks)
        return {k: ref[k]["2"]["mean"] for k in ("uniform", "same_position", "appearance")}
    from gasp.experiment.baselines import references_at_input_size

    return {k: v for k, v in references_at_input_size(tracks, size).items() if k != "num_sequences"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="base model (alias, folder or id); default: the shipped small checkpoints")
    p.add_argument("--adapter", action="append", metavar="LABEL=PATH",
                   help="a model to probe: LoRA adapter folder, or 'none' for the base alone (repeatable)")
    p.add_argument("--tracks", help="tracks file or folder (required with --model)")
    p.add_argument("--checkpoints", default=str(SHIPPED), help="shipped checkpoints folder (default %(default)s)")
    p.add_argument("--out", default="runs/compare", help="output folder (default %(default)s)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model input size in pixels")
    p.add_argument("--max-sequences", type=int, help="probe only the first N sequences")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", help="torch device")
    p.add_argument("--check", action="store_true", help="exit 1 if a peak PCK differs from the reported one")
    p.add_argument("--tolerance", type=float, default=0.02, help="for --check (default %(default)s)")
    a = p.parse_args(argv)
    if a.model and (not a.adapter or not a.tracks):
        p.error("--model needs --tracks and at least one --adapter LABEL=PATH (PATH may be 'none')")
    if a.adapter and not a.model:
        p.error("--adapter needs --model (without --model the shipped checkpoints are compared)")
    for spec in a.adapter or []:
        if "=" not in spec or not spec.split("=", 1)[0]:
            p.error(f"--adapter {spec!r}: expected LABEL=PATH, e.g. gasp=runs/gasp/checkpoint-2000/adapter")
    return a


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from gasp.experiment.ship import peak_numbers
    from gasp.runinfo import run_info, write_json_atomic
    from plots.figure3 import draw_figure3

    out = Path(a.out)
    try:
        if a.model:
            model, tracks, size = a.model, Path(a.tracks), tuple(a.size) if a.size else None
            runs = {lab: (None if p.lower() == "none" else p, None) for lab, p in (s.split("=", 1) for s in a.adapter)}
        else:
            model, tracks, size, runs, plan = shipped_runs(Path(a.checkpoints), out)
            size = tuple(a.size) if a.size else size
        refs = None if a.model else model_free_references(tracks, size[0], plan.version)
        results, rows, configs = [], [], {}
        for label, (adapter, reported) in runs.items():
            cfg = ProbeConfig(model=model, adapter=adapter, tracks=str(tracks), out=str(out / _slug(label)),
                              size=size, max_sequences=a.max_sequences, dtype=a.dtype, device=a.device)
            print(f"probing {label}: {model}" + (f" + {adapter}" if adapter else ""), flush=True)
            res = run_probe(cfg, progress=tqdm)
            p = peak_numbers(res)
            row = {"label": label, **{k: p[k] for k in ("peak_layer", "pck", "rho", "y_dt24", "num_sequences")}}
            if reported is not None and reported["num_sequences"] == p["num_sequences"]:   # not with --max-sequences
                row.update(reported_pck=reported["pck"], reported_layer=reported["peak_layer"],
                           abs_diff=abs(p["pck"] - reported["pck"]))
            results.append(res)
            rows.append(row)
            configs[label] = res["config"]
    except (ProbeError, TrackFormatError, FileNotFoundError, ValueError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    fig = draw_figure3(results, [r["label"] for r in rows], out / "figure3.png", references=refs)
    print(f"\n{'model':28s} {'peak layer':>10s} {'PCK@2':>7s} {'rho':>7s} {'Y(24)':>7s} {'reported':>9s}")
    for r in rows:
        print(f"{r['label']:28s} {r['peak_layer']:>10d} {_f(r['pck']):>7s} {_f(r['rho']):>7s} {_f(r['y_dt24']):>7s} "
              f"{_f(r.get('reported_pck')):>9s}")
    names = {"uniform": "uniform random token", "same_position": "same position as query",
             "appearance": "pixel-patch NCC, no learning"}
    for k, v in (refs or {}).items():
        print(f"{'(no model) ' + names.get(k, k):39s} {v:>7.3f}")
    write_json_atomic(out / "compare.json", {"model": model, "tracks": str(tracks), "rows": rows,
                                              "references": refs, "configs": configs, **run_info()})
    print(f"\nfigure: {fig[0]}\ntable:  {out / 'compare.json'}")
    bad = [r for r in rows if r.get("abs_diff") is not None and r["abs_diff"] > a.tolerance]
    if a.check and bad:
        print("compare: peak PCK differs from the reported number by more than "
              f"{a.tolerance}: {', '.join(r['label'] for r in bad)}", file=sys.stderr)
        return 1
    return 0


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_") or "model"


if __name__ == "__main__":
    sys.exit(main())
