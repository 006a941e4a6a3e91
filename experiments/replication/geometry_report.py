"""Issue 18's geometry report: PCK and the depth probe per layer for the shipped v3 checkpoints.

    python -m experiments.replication.geometry_report --out runs/geometry      # probe base, A, C, D, E; write geometry.json
    python -m experiments.replication.geometry_report --report                 # RESULTS.md's section from the committed JSON

Every model is probed on v3's test split (re-rendered as ``scripts/demo.py`` does) with
``--depth``; the depth probe is fitted on v3's train split (the scenes the adapters were
trained on, disjoint from test) with 5-fold cross-validation by scene, and scored on the
test split. The reading was pre-registered in ``docs/results/v3/GEOMETRY_PLAN.md`` before
the run. The JSON and figure go to ``docs/results/v3/geometry.json`` / ``geometry.png``
with ``--publish``; RESULTS.md's section between the ``geometry`` markers is generated from
the JSON by ``--report`` (and checked by ``tests/test_geometry_report.py``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]    # the defaults of main's path options only
BEGIN, END = "<!-- geometry:begin (generated: python -m experiments.replication.geometry_report --report) -->", \
    "<!-- geometry:end -->"
FOLDS = 5
MARGIN = 0.03           # the pre-registered difference in depth δ<1.25 that counts (GEOMETRY_PLAN.md)


def run(out: Path, ckpt: Path, device: str | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    from experiments.replication.ship import model_free_references, shipped_runs
    from experiments.replication.small import make_split
    from gasp.runinfo import run_info, write_json_atomic
    from gasp_cli.compare import _slug
    from probes.runner import ProbeConfig, run_probe

    t0 = time.monotonic()
    model, test, size, runs, plan = shipped_runs(ckpt, out, progress=lambda it: tqdm(it, desc="render test"))
    train = make_split(plan, "train", out / "data" / "train.h5", progress=lambda it: tqdm(it, desc="render train"))
    models = {"base": None, **{label: adapter for label, (adapter, _) in runs.items()}}
    probes = {}
    for label, adapter in models.items():
        cfg = ProbeConfig(model=model, adapter=adapter, tracks=str(test), out=str(out / _slug(label)), size=size,
                          depth=True, depth_train=str(train), depth_folds=FOLDS, explore_sequences=0, device=device)
        print(f"probing {label}", flush=True)
        res = run_probe(cfg, progress=tqdm)
        probes[label] = {"layers": res["layers"], "pck_mean": res["pck_mean"], "depth": res["depth"],
                         "config": res["config"]}
    summary = {"what": "issue 18: PCK@2 and the depth probe per layer, shipped v3 checkpoints",
               "checkpoints": str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else str(ckpt),
               "pck_references": model_free_references(test, size[0], plan.version),
               "models": probes, "margin": MARGIN, "wall_s": round(time.monotonic() - t0), **run_info()}
    write_json_atomic(out / "geometry.json", summary)
    figure(summary, out / "geometry.png")
    return summary


def figure(summary: dict[str, Any], path: Path) -> list[Path]:
    from plots.pck_depth import draw_geometry

    results = [{**m, "references": summary["pck_references"], "delta": 2} for m in summary["models"].values()]
    return draw_geometry(results, list(summary["models"]), path)


def _peak(vals: list[float | None], layers: list[int], llm_only: bool = True) -> tuple[int, float]:
    pairs = [(layer, v) for layer, v in zip(layers, vals) if v is not None and (layer >= 0 or not llm_only)]
    return max(pairs, key=lambda p: p[1])


def report(summary: dict[str, Any]) -> str:
    """RESULTS.md's section, every number read from ``summary`` (geometry.json)."""
    models = summary["models"]
    first = next(iter(models.values()))["depth"]
    refs = first["references"]
    ss = "scale_shift"
    lines = [
        "## Where geometry lives: depth in the hidden states (issue 18)", "",
        "Pre-registered in [`docs/results/v3/GEOMETRY_PLAN.md`](docs/results/v3/GEOMETRY_PLAN.md) before the run. "
        f"A linear ridge probe from each visual token's hidden state to its depth (`probes/pck.py --depth`), fitted "
        f"on v3's train split ({first['split']['train']['num_sequences']} sequences, {first['num_train_images']} "
        f"images, {first['folds']}-fold CV by scene) and scored on the {first['split']['held_out']['num_sequences']} "
        f"test sequences ({first['num_eval_images']} images). δ < 1.25 after a per-image scale-and-shift fit "
        f"(probe3d's); layer −1 is the LLM's input (the vision tower's output). "
        f"Commit `{summary['git_sha'][:7]}`, seed {first['split']['seed']}, "
        f"{summary['wall_s'] / 60:.0f} min on 2 CPU cores. Numbers: "
        "[`docs/results/v3/geometry.json`](docs/results/v3/geometry.json); figure: "
        "[`geometry.png`](docs/results/v3/geometry.png).", "",
        "| model | depth δ<1.25, layer −1 | best LLM layer | depth δ<1.25 there | AbsRel there | "
        "mean over LLM layers | peak PCK@2 |", "|---|---|---|---|---|---|---|"]
    mean = {}
    for label, m in models.items():
        d = m["depth"]
        vals = d[ss]["delta_1.25"]
        layer, best = _peak(vals, d["layers"])
        llm = [v for layer_, v in zip(d["layers"], vals) if layer_ >= 0 and v is not None]
        mean[label] = sum(llm) / len(llm)
        pck_layer, pck = _peak(m["pck_mean"], m["layers"])
        lines.append(f"| {label} | {vals[0]:.3f} | {layer} | {best:.3f} | "
                     f"{d[ss]['abs_rel'][d['layers'].index(layer)]:.3f} | {mean[label]:.3f} | {pck:.3f} (layer "
                     f"{pck_layer}) |")
    lines += [f"| (no model) pixel patches, ridge | {refs['pixels'][ss]['delta_1.25']:.3f} | | | "
              f"{refs['pixels'][ss]['abs_rel']:.3f} | | |",
              f"| (no model) constant mean depth | {refs['constant'][ss]['delta_1.25']:.3f} | | | "
              f"{refs['constant'][ss]['abs_rel']:.3f} | | |", ""]
    labels = list(models)
    a = next(lab for lab in labels if lab.startswith("A"))
    c = next(lab for lab in labels if lab.startswith("C"))
    dq = next(lab for lab in labels if lab.startswith("D"))
    m = summary["margin"]
    dc, dd = mean[c] - mean[a], mean[dq] - mean[a]
    verdict_c = "puts depth into the hidden states" if dc >= m else "leaves the hidden states' depth where it was"
    control = "sees" if dd >= m else "does not see"
    lines += [
        f"**Reading (pre-registered margin {m:g} in the mean over LLM layers).** C − A = {dc:+.3f}: "
        f"GASP's L_depth on the heads {verdict_c}. D − A = {dd:+.3f}: the probe {control} the depth the same loss "
        "puts in when it acts on Q/K directly (the positive control)"
        + ("." if dd >= m else ", so a null C − A cannot be told from a probe that is blind here.")
        + " The metric (unaligned) numbers and every layer are in the JSON.", ""]
    return "\n".join(lines)


def write_results_section(summary: dict[str, Any], results_md: Path) -> None:
    text = results_md.read_text()
    section = f"{BEGIN}\n{report(summary)}{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        first = text.index("\n## ", text.index("## v3"))           # after v3's own section
        text = text[:first] + "\n" + section + "\n" + text[first:]
    results_md.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/geometry", help="output folder (default %(default)s)")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "gasp-v3"))
    p.add_argument("--published", type=Path, default=ROOT / "docs" / "results" / "v3",
                   help="where --publish writes and --report reads geometry.json (default %(default)s)")
    p.add_argument("--results-md", type=Path, default=ROOT / "RESULTS.md", help="the file --report rewrites")
    p.add_argument("--device")
    p.add_argument("--publish", action="store_true", help="copy geometry.json and the figure to --published")
    p.add_argument("--report", action="store_true", help="only regenerate --results-md's section from the "
                                                         "published geometry.json")
    a = p.parse_args(argv)
    if a.report:
        summary = json.loads((a.published / "geometry.json").read_text())
        write_results_section(summary, a.results_md)
        print(f"{a.results_md}: section regenerated from {a.published / 'geometry.json'}")
        return 0
    summary = run(Path(a.out), Path(a.checkpoints), a.device)
    if a.publish:
        from gasp.runinfo import write_json_atomic

        write_json_atomic(a.published / "geometry.json", summary)
        figure(summary, a.published / "geometry.png")
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
