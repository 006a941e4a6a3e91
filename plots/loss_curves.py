"""L_corr and L_depth training curves per arm of a replication run.

    python plots/loss_curves.py docs/results/v3/results.json --out docs/results/v3/loss_curves.png

One panel per loss term. Per arm: the mean over seeds of the term at each geometric step
(LM steps carry no L_corr), smoothed by a running mean over `--smooth` geometric steps, with
the seeds' min-max as a band. The grey band in the L_corr panel is the InfoNCE of a uniform
guess, ln(F * h * w - 1) (all tokens of all F frames but the anchor are candidates), for the
plan's smallest and largest F.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from plots.figure3 import COLORS, save_png_pdf  # noqa: E402

TERMS = (("l_corr", "L_corr (InfoNCE, eq. 5)"), ("l_depth", "L_depth (eq. 8)"))


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(y) < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.full_like(y, np.nan)
    out[k - 1:] = (c[k:] - c[:-k]) / k
    return out


def term_curves(runs: list[dict], term: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps (S,), values (seeds, S)) at the geometric steps every seed logged, or None."""
    per = []
    for r in runs:
        c = r.get("curves") or {}
        pts = {s: v for s, v in zip(c.get("step", []), c.get(term, [])) if v is not None}
        per.append(pts)
    common = sorted(set.intersection(*[set(p) for p in per])) if per else []
    if not common:
        return None
    return np.array(common), np.array([[p[s] for s in common] for p in per], dtype=float)


def draw_loss_curves(res: dict, out: str | Path, smooth: int = 15) -> list[Path]:
    labels = res.get("labels", {})
    fig, axes = plt.subplots(1, len(TERMS), figsize=(12, 4.2), layout="constrained")
    for ax, (term, title) in zip(axes, TERMS):
        for i, (arm, runs) in enumerate(res["runs"].items()):
            if not isinstance(runs, list):
                continue
            got = term_curves(runs, term)
            if got is None:
                continue
            steps, vals = got
            c = COLORS[i % len(COLORS)]
            ax.plot(steps, _smooth(vals.mean(0), smooth), color=c, label=labels.get(arm, arm))
            ax.fill_between(steps, _smooth(vals.min(0), smooth), _smooth(vals.max(0), smooth), color=c, alpha=0.15,
                            lw=0)
        plan = res.get("plan", {})
        if term == "l_corr" and plan.get("image_size"):
            p = (plan["image_size"] // 28) ** 2
            lo, hi = np.log(plan["min_frames"] * p - 1), np.log(plan["max_frames"] * p - 1)
            ax.axhspan(lo, hi, color="0.5", alpha=0.25, lw=0, label="uniform guess")
        ax.set(xlabel="optimizer step", ylabel=term, title=f"{title}, running mean of {smooth} geometric steps")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, max(1, len(names))), frameon=False)
    return save_png_pdf(fig, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a replication's results.json (scripts/reproduce_small.py)")
    ap.add_argument("--out", default="loss_curves.png", help="output PNG; a PDF is written beside it")
    ap.add_argument("--smooth", type=int, default=15, help="running-mean window in geometric steps (default 15)")
    a = ap.parse_args(argv)
    path = Path(a.results)
    if not path.is_file():
        print(f"error: {path} not found (run scripts/reproduce_small.py first)", file=sys.stderr)
        return 2
    if a.smooth < 1:
        print(f"error: --smooth must be >= 1, got {a.smooth}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in draw_loss_curves(json.loads(path.read_text()), a.out, a.smooth)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
