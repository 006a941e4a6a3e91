"""The paper's Figure 3 from probe results folders (each holding a results.json).

Three panels, models overlaid: (a) PCK@δ vs layer with a ±std band across
sequences, (b) calibration ρ vs layer, (c) Y(Δt) = PCK(Δt)/PCK(1) vs Δt at each
model's peak-PCK layer (or averaged over layers with ``dt_mode="mean"``), and (d), where a run's
cameras allowed it (results.json ``viewpoint``), Y(Δθ) = PCK(bin)/PCK(first bin) per camera-rotation bin. A second
figure draws the layer × head PCK map when a run used ``--heads per-head``.
Hybrid LLMs (Qwen3.5): the linear-attention layers a run left out (results.json's
``linear_attention_layers``) are shaded grey in panels (a) and (b), so the curve's gaps
read as "not probed", not as missing data.

    python plots/figure3.py runs/base runs/gasp --labels baseline GASP --out fig.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401
import numpy as np  # noqa: E402

from probes.results import ProbeResults, load_results  # noqa: E402,F401  (re-exported)
from probes.results import series as _arr  # noqa: E402

COLORS = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]


def draw_figure3(results: list[dict], labels: list[str], out: str | Path, dt_mode: str = "peak",
                 references: dict[str, float] | None = None) -> list[Path]:
    """Write ``out`` (PNG) and a PDF beside it; return the written paths.

    ``references`` ({"uniform": 0.05, "same_position": 0.14, ...}, model-free PCK at the same
    delta) are drawn in panel (a) as labelled horizontal lines.
    """
    if len(results) != len(labels):
        raise ValueError(f"{len(results)} results but {len(labels)} labels")
    views = [(r.get("viewpoint") or {}) for r in results]
    with_view = any("y" in v for v in views)                 # panel (d) where some run binned by viewpoint
    fig, axes = plt.subplots(1, 4 if with_view else 3, figsize=(20 if with_view else 15, 4.6), layout="constrained")
    ax_pck, ax_rho, ax_dt = axes[:3]
    for i, (res, label) in enumerate(zip(results, labels)):
        res = res if isinstance(res, ProbeResults) else ProbeResults(res)
        c = COLORS[i % len(COLORS)]
        layers = np.array(res.layers)
        pck, std = res.series("pck_mean"), res.series("pck_std")
        ax_pck.plot(layers, pck, "-o", ms=3, color=c, label=label)
        ax_pck.fill_between(layers, np.clip(pck - std, 0, 1), np.clip(pck + std, 0, 1), color=c, alpha=0.18, lw=0)
        ax_rho.plot(layers, res.series("rho"), "-o", ms=3, color=c, label=label)
        dt, dt_norm = np.array(res["dt"]), res.series("dt_norm")
        if dt_mode == "peak":
            k = res.peak_index
            y, tag = dt_norm[k], f"{label} (layer {layers[k]})"
        else:
            with np.errstate(all="ignore"):
                y, tag = np.nanmean(dt_norm, axis=0), f"{label} (mean over layers)"
        ok = np.isfinite(y)                                   # Δt without support in this run are left out
        ax_dt.plot(dt[ok], y[ok], "-o", ms=3, color=c, label=tag)
        v = views[i]
        if with_view and "y" in v:
            yv = _arr(v["y"])[res.peak_index if dt_mode == "peak" else slice(None)]
            yv = yv if dt_mode == "peak" else np.nanmean(yv, axis=0)
            okv = np.isfinite(yv)
            axes[3].plot(np.arange(len(yv))[okv], yv[okv], "-o", ms=3, color=c)
    linear = sorted({int(i) for res in results for i in res.get("linear_attention_layers") or []})
    for ax in (ax_pck, ax_rho):
        for j, i in enumerate(linear):
            ax.axvspan(i - 0.5, i + 0.5, facecolor="0.88", edgecolor="0.7", hatch="//", lw=0, zorder=0,
                       label="linear attention (not probed)" if j == 0 else None)
    for (name, value), ls in zip((references or {}).items(), ("--", ":", "-.", (0, (5, 1)))):
        name = "chance (uniform)" if name == "uniform" else name.replace("_", " ")
        ax_pck.axhline(value, color="0.35", lw=1.0, ls=ls, label=f"{name} (no model): {value:.2f}")
    delta = results[0].get("delta", 2)
    rope = results[0].get("rope", "post")
    ax_pck.set(xlabel="LLM layer", ylabel=f"PCK@{delta:g} (fraction of visible points)", ylim=(0, 1.02),
               title=f"(a) layer-wise matching ({rope}-RoPE Q/K)")
    ax_rho.axhline(0, color="0.6", lw=0.8)
    ax_rho.set(xlabel="LLM layer", ylabel="Pearson ρ (confidence vs. correct)", ylim=(-1.02, 1.02),
               title="(b) confidence–accuracy correlation")
    ax_dt.axhline(1, color="0.6", lw=0.8)
    ax_dt.set(xlabel="Δt (source-video frames)", ylabel="Y(Δt) = PCK(Δt) / PCK(1)",
              title="(c) temporal robustness" + (" at peak layer" if dt_mode == "peak" else ", mean over layers"))
    # one legend, below the panels: a legend inside an axes covers curves or reference lines (the 0.94
    # "same position" line sits where "upper right" puts it)
    handles, names = ax_dt.get_legend_handles_labels()
    extra = [(h, n) for h, n in zip(*ax_pck.get_legend_handles_labels()) if "no model" in n]
    extra += [(h, n) for h, n in zip(*ax_rho.get_legend_handles_labels()) if n.startswith("linear attention")]
    handles, names = handles + [h for h, _ in extra], names + [n for _, n in extra]
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), frameon=False)
    if with_view:
        edges = next(v["bins_deg"] for v in views if "y" in v)
        names_v = [f"{a:g}–{b:g}°" for a, b in zip(edges, edges[1:])]
        axes[3].axhline(1, color="0.6", lw=0.8)
        axes[3].set_xticks(range(len(names_v)), names_v)
        axes[3].set(xlabel="camera rotation between query frame and frame k", ylabel="Y(Δθ) = PCK(bin) / PCK(first bin)",
                    title="(d) viewpoint robustness" + (" at peak layer" if dt_mode == "peak" else ", mean over layers"))
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in (ax_pck, ax_rho):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_dt.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return save_png_pdf(fig, out)


def save_png_pdf(fig, out: str | Path) -> list[Path]:
    """Write `fig` as OUT.png and OUT.pdf (folders made as needed), close it, return both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def draw_head_map(res: dict, label: str, out: str | Path) -> Path:
    """Layer × head PCK heatmap from a per-head run."""
    m = _arr(res["pck_head"])                                  # (L, H)
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * m.shape[1], 1.2 + 0.3 * m.shape[0]), constrained_layout=True)
    im = ax.imshow(m, vmin=0, vmax=max(1e-6, np.nanmax(m)), cmap="viridis", aspect="auto")
    ax.set(xlabel="query head", ylabel="LLM layer", title=f"PCK@{res.get('delta', 2):g} per head — {label}")
    ax.set_yticks(range(m.shape[0]), res["layers"])
    ax.set_xticks(range(m.shape[1]))
    fig.colorbar(im, ax=ax, label="PCK")
    out = Path(out)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="probe output folders (or results.json files)")
    p.add_argument("--labels", nargs="+", help="legend labels, one per run (default: folder names)")
    p.add_argument("--out", default="figure3.png", help="output PNG; a PDF is written beside it")
    p.add_argument("--dt-mode", choices=["peak", "mean"], default="peak",
                   help="Y(Δt) at each model's peak-PCK layer, or averaged over layers")
    args = p.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    try:
        results = [load_results(r) for r in args.runs]
        paths = draw_figure3(results, labels, args.out, args.dt_mode)
    except (FileNotFoundError, ValueError) as e:
        print(f"figure3: error: {e}", file=sys.stderr)
        return 2
    for res, label in zip(results, labels):
        if "pck_head" in res:
            paths.append(draw_head_map(res, label, Path(args.out).with_name(f"{Path(args.out).stem}_heads_{label}.png")))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
