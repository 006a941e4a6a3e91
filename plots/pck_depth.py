"""Where geometry lives: PCK and depth per LLM layer on one figure, models overlaid.

Two panels sharing the layer axis: (a) PCK@δ of the model's own Q/K (``probes/pck.py``),
(b) the depth probe's δ < 1.25 (``probes/pck.py --depth``; solid: scale-and-shift aligned,
dotted: metric), with layer -2 (the vision encoder before the projector, where the family has that hook)
and layer -1 (the LLM's input, the projector's output) at the left.
Model-free references are horizontal lines: chance and same position in (a), the pixel-patch
probe and the constant-mean predictor (aligned) in (b).

    python plots/pck_depth.py runs/base runs/gasp --labels base GASP --out geometry.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.ticker  # noqa: E402

from plots.figure3 import COLORS, _arr, load_results, plt, save_png_pdf  # noqa: E402
from probes.results import ProbeResults  # noqa: E402

PCK_REFS = {"uniform": "chance (uniform)", "same_position": "same position"}
DEPTH_REFS = {"pixels": "pixel patches, ridge", "constant": "constant mean"}


def draw_geometry(results: list[dict], labels: list[str], out: str | Path) -> list[Path]:
    """Write ``out`` (PNG) and a PDF beside it from results.json dicts holding a ``depth`` block."""
    if len(results) != len(labels):
        raise ValueError(f"{len(results)} results but {len(labels)} labels")
    missing = [lab for r, lab in zip(results, labels) if not r.get("depth")]
    if missing:
        raise ValueError(f"no depth block in the results of {missing}: probe them with python probes/pck.py --depth")
    fig, (ax_pck, ax_d) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained", sharex=True)
    for i, (res, label) in enumerate(zip(results, labels)):
        c = COLORS[i % len(COLORS)]
        ax_pck.plot(res["layers"], ProbeResults(res).series("pck_mean"), "-o", ms=3, color=c, label=label)
        d = res["depth"]
        ax_d.plot(d["layers"], _arr(d["scale_shift"]["delta_1.25"]), "-o", ms=3, color=c, label=label)
        ax_d.plot(d["layers"], _arr(d["metric"]["delta_1.25"]), ":", lw=1.2, color=c)
    styles = ("--", "-.")
    for (key, name), ls in zip(PCK_REFS.items(), styles):
        v = (results[0].get("references") or {}).get(key)
        if v is not None:
            ax_pck.axhline(v, color="0.35", lw=1.0, ls=ls, label=f"{name} (no model): {v:.2f}")
    refs = results[0]["depth"]["references"]
    for (key, name), ls in zip(DEPTH_REFS.items(), styles):
        v = refs[key]["scale_shift"]["delta_1.25"]
        if v is not None:
            ax_d.axhline(v, color="0.35", lw=1.0, ls=ls, label=f"{name} (no model): {v:.2f}")
    ax_d.plot([], [], ":", color="0.3", label="dotted: metric (no alignment)")
    d0 = results[0]["depth"]
    ax_pck.set(xlabel="LLM layer", ylabel=f"PCK@{results[0].get('delta', 2):g} (fraction of visible points)",
               ylim=(0, 1.02), title="(a) matching: the model's own Q/K")
    ax_d.set(xlabel="layer (-2: encoder before projector, -1: LLM input)",
             ylabel="depth δ < 1.25 (fraction of tokens)", ylim=(0, 1.02),
             title=f"(b) depth: linear probe, {d0['num_eval_images']} held-out images")
    for ax in (ax_pck, ax_d):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    # the legends go below the panels, where they cover no curve or reference line
    seen, handles, names = set(), [], []
    for ax in (ax_pck, ax_d):
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in seen:
                seen.add(n)
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), frameon=False, fontsize=8)
    return save_png_pdf(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="probe output folders (python probes/pck.py --depth --out DIR)")
    p.add_argument("--labels", nargs="+", help="one per run (default: the folder names)")
    p.add_argument("--out", default="geometry.png", help="output PNG; a PDF is written beside it")
    a = p.parse_args(argv)
    labels = a.labels or [Path(r).name for r in a.runs]
    try:
        paths = draw_geometry([load_results(r) for r in a.runs], labels, a.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"geometry: error: {e}", file=sys.stderr)
        return 2
    print(f"figure: {paths[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
