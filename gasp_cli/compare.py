"""Probe one base model with several LoRA adapters on the same tracks and overlay their Figure 3.

    python probes/compare.py --model qwen2.5-vl-7b --tracks test.h5 --out runs/cmp \\
        --adapter baseline=none --adapter gasp=runs/gasp/checkpoint-2000/adapter

Writes OUT/LABEL/ (each probe's results.h5, results.json), OUT/figure3.png/.pdf (overlaid,
with the probe's chance and same-position references), with --depth OUT/geometry.png/.pdf
(PCK and the depth probe per layer, plots/pck_depth.py), and OUT/compare.json (the table, the
configs, the git SHA). The shipped replication checkpoints have their own entry point,
`python scripts/demo.py`, which uses this module.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from plots.figure3 import draw_figure3
from probes.results import ProbeResults
from probes.runner import ProbeConfig, ProbeError, run_probe
from tracks.io import TrackFormatError


def compare(model: str, runs: dict[str, tuple[str | None, dict | None]], tracks: Path, out: Path,
            size: tuple[int, int] | None = None, references: dict[str, float] | None = None,
            **probe_options: Any) -> list[dict[str, Any]]:
    """Probe ``model`` under each adapter of ``runs`` ({label: (adapter or None, reported peak or None)}).

    Writes OUT/LABEL/ (each probe), OUT/figure3.png/.pdf (overlaid, with ``references`` as lines)
    and OUT/compare.json; returns the table's rows. A reported peak ({"pck", "peak_layer",
    "num_sequences"}) adds the difference to it, when the same sequences were probed.
    """
    from gasp.models.loading import check_model
    from gasp.runinfo import run_info, write_json_atomic
    from tracks.io import TrackReader

    TrackReader(tracks).close()                      # every input checked before the first probe says anything
    for adapter, _ in runs.values():
        check_model(model, adapter=adapter)
    results, rows, configs = [], [], {}
    for label, (adapter, reported) in runs.items():
        cfg = ProbeConfig(model=model, adapter=adapter, tracks=str(tracks), out=str(out / _slug(label)), size=size,
                          **probe_options)
        print(f"probing {label}: {model}" + (f" + {adapter}" if adapter else ""), flush=True)
        res = run_probe(cfg, progress=tqdm)
        p = ProbeResults(res).peak()
        row = {"label": label, **{k: p[k] for k in ("peak_layer", "pck", "rho", "y_dt24", "num_sequences")}}
        if reported is not None and reported["num_sequences"] == p["num_sequences"]:   # not with --max-sequences
            row.update(reported_pck=reported["pck"], reported_layer=reported["peak_layer"],
                       abs_diff=abs(p["pck"] - reported["pck"]))
        results.append(res)
        rows.append(row)
        configs[label] = res["config"]
    fig = draw_figure3(results, [r["label"] for r in rows], out / "figure3.png",
                       references=references if references is not None else results[0].get("references"))
    if all(r.get("depth") for r in results):             # probed with --depth: PCK and depth per layer, overlaid
        from plots.pck_depth import draw_geometry  # noqa: PLC0415

        fig = [*fig, *draw_geometry(results, [r["label"] for r in rows], out / "geometry.png")]
    write_json_atomic(out / "compare.json", {"model": model, "tracks": str(tracks), "rows": rows,
                                              "references": references, "configs": configs, **run_info()})
    print_table(rows, references)
    print(f"\nfigure: {fig[0]}" + (f"\ngeometry: {fig[2]}" if len(fig) > 2 else "") + f"\ntable:  {out / 'compare.json'}")
    return rows


REFERENCE_NAMES = {"uniform": "uniform random token", "same_position": "same position as query",
                   "appearance": "pixel-patch NCC, no learning"}


def print_table(rows: list[dict[str, Any]], references: dict[str, float] | None = None) -> None:
    print(f"\n{'model':28s} {'peak layer':>10s} {'PCK@2':>7s} {'rho':>7s} {'Y(24)':>7s} {'reported':>9s}")
    for r in rows:
        print(f"{r['label']:28s} {r['peak_layer']:>10d} {_f(r['pck']):>7s} {_f(r['rho']):>7s} {_f(r['y_dt24']):>7s} "
              f"{_f(r.get('reported_pck')):>9s}")
    for k, v in (references or {}).items():
        print(f"{'(no model) ' + REFERENCE_NAMES.get(k, k):39s} {v:>7.3f}")


def check_reported(rows: list[dict[str, Any]], tolerance: float) -> int:
    """1 (and a message) if any row's peak PCK differs from its reported one by more than ``tolerance``."""
    bad = [r for r in rows if r.get("abs_diff") is not None and r["abs_diff"] > tolerance]
    if bad:
        print(f"compare: peak PCK differs from the reported number by more than {tolerance}: "
              f"{', '.join(r['label'] for r in bad)}", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="base model (alias, folder or id)")
    p.add_argument("--adapter", action="append", metavar="LABEL=PATH",
                   help="a model to probe: LoRA adapter folder, or 'none' for the base alone (repeatable)")
    p.add_argument("--tracks", help="tracks file or folder")
    p.add_argument("--out", default="runs/compare", help="output folder (default %(default)s)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model input size in pixels")
    p.add_argument("--max-sequences", type=int, help="probe only the first N sequences")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", help="torch device")
    p.add_argument("--depth", action="store_true", help="also the depth probe per layer (probes/depth.py); "
                                                        "writes OUT/geometry.png, the models overlaid")
    p.add_argument("--depth-train", help="tracks the depth probe is fitted on (default: a split of --tracks)")
    a = p.parse_args(argv)
    if not a.model:
        p.error("argument --model is required (the shipped replication checkpoints are probed by "
                "`python scripts/demo.py`)")
    for arg, val in (("--tracks", a.tracks), ("--adapter", a.adapter)):
        if not val:
            p.error(f"argument {arg} is required with --model")
    for spec in a.adapter:
        if "=" not in spec or not spec.split("=", 1)[0]:
            p.error(f"argument --adapter: {spec!r} is not LABEL=PATH, e.g. gasp=runs/gasp/checkpoint-2000/adapter")
    return a


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    runs = {lab: (None if p.lower() == "none" else p, None) for lab, p in (s.split("=", 1) for s in a.adapter)}
    try:
        compare(a.model, runs, Path(a.tracks), Path(a.out), size=tuple(a.size) if a.size else None,
                max_sequences=a.max_sequences, dtype=a.dtype, device=a.device,
                depth=a.depth or a.depth_train is not None, depth_train=a.depth_train)
    except (ProbeError, TrackFormatError, FileNotFoundError, ValueError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    return 0


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_") or "model"


if __name__ == "__main__":
    sys.exit(main())
