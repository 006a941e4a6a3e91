"""The match explorer's PNGs: matches per frame, similarity heatmaps, where predictions go.

Pixels follow ``tracks/types.py`` ((0, 0) is the centre of the top-left pixel), so frames are
drawn with ``extent=(-0.5, W - 0.5, H - 0.5, -0.5)`` and points land on their pixel. A token's
h x w map covers the same extent. Shapes as in ``plots/match_data.py``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from plots.match_data import CATEGORIES, SequenceMatches  # noqa: E402

OK, BAD, GT, QUERY = "#2ecc40", "#ff3b30", "#ffffff", "#ffdc00"
CATEGORY_COLORS = {"correct": "#2ca02c", "same_position": "#1f77b4", "border": "#ff7f0e", "elsewhere": "#9a9a9a"}


def safe_name(key: str) -> str:
    """A sequence key as a file-name part: its last ':'-separated part, other odd characters as '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key.split(":")[-1])


def _show(ax, frame: np.ndarray, title: str, grey: bool = False) -> None:
    H, W = frame.shape[:2]
    if grey:                                   # under a heatmap, so its colours read as heat only
        frame = frame.mean(-1).astype(np.uint8)
    ax.imshow(frame, cmap="gray", vmin=0, vmax=255, extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="bilinear")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _token_grid(ax, sm: SequenceMatches) -> None:
    """Faint token boundaries, so a prediction can be seen to sit at a token centre."""
    (h, w), (th, tw) = sm.grid, sm.token_size
    kw = dict(color="white", lw=0.3, alpha=0.25)
    for c in range(1, w):
        ax.axvline(c * tw - 0.5, **kw)
    for r in range(1, h):
        ax.axhline(r * th - 0.5, **kw)


def draw_matches(sm: SequenceMatches, li: int, layer: int, delta: float, dest: Path,
                 points: Sequence[int] | None = None) -> Path:
    """matches_<seq>_L<layer>.png: per frame k, GT position -> predicted token centre, green if correct."""
    keep = np.zeros(sm.valid.shape[1], bool)
    keep[list(points) if points is not None else slice(None)] = True
    frames = [sm.query, *sm.others]
    ncol = min(4, len(frames))
    nrow = math.ceil(len(frames) / ncol)
    H, W = sm.frames.shape[1:3]
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 3.3 * nrow * H / W + 0.8), squeeze=False,
                             layout="constrained")
    q_vis = sm.visible[sm.query] & keep
    _show(axes[0, 0], sm.frames[sm.query], f"query: video frame {sm.frame_index[sm.query]} ({int(q_vis.sum())} points)")
    qx, qy = sm.gt_px[sm.query, q_vis].T
    axes[0, 0].scatter(qx, qy, s=14, c=QUERY, edgecolors="black", linewidths=0.5, zorder=3)
    for i in (points if points is not None else sm.sim_points):       # the points one would follow up
        if q_vis[i]:
            axes[0, 0].annotate(str(i), sm.gt_px[sm.query, i], xytext=(4, 4), textcoords="offset points",
                                fontsize=7, color="black", bbox=dict(boxstyle="round,pad=0.15", fc=QUERY, lw=0))
    centres = sm.token_centre_px(sm.pred_rc[li])                                 # (F', N, 2) x, y
    for j, f in enumerate(sm.others):
        ax = axes.flat[j + 1]
        v = sm.valid[j] & keep
        ok = sm.correct[li, j] & v
        _show(ax, sm.frames[f], f"video frame {sm.frame_index[f]} (Δt {sm.dt[j]}): "
                                f"{int(ok.sum())}/{int(v.sum())} correct")
        _token_grid(ax, sm)
        for sel, color in ((v & ~ok, BAD), (ok, OK)):                             # correct ones on top
            gx, gy = sm.gt_px[f, sel].T
            px, py = centres[j, sel].T
            ax.plot(np.stack([gx, px]), np.stack([gy, py]), color=color, lw=0.9, alpha=0.85)
            ax.scatter(gx, gy, s=9, c=GT, edgecolors="black", linewidths=0.4, zorder=3)
            ax.scatter(px, py, s=16, c=color, marker="x", linewidths=1.0, zorder=4)
    for ax in axes.flat[len(frames):]:
        ax.axis("off")
    handles = [Line2D([], [], color="none", marker="o", mfc=QUERY, mec="black", label="query point"),
               Line2D([], [], color="none", marker="o", mfc=GT, mec="black", label="ground truth in frame k"),
               Line2D([], [], color=OK, marker="x", label=f"→ predicted token centre, within δ={delta:g} tokens"),
               Line2D([], [], color=BAD, marker="x", label="→ predicted token centre, wrong")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{sm.key} — layer {layer}", fontsize=9)
    return _save(fig, dest / f"matches_{safe_name(sm.key)}_L{layer}.png")


def pick_frames(sm: SequenceMatches, point: int, most: int = 3) -> list[int]:
    """Up to ``most`` F' indices where ``point`` is valid, spread from the nearest to the farthest Δt."""
    idx = np.flatnonzero(sm.valid[:, point])
    idx = idx[np.argsort(sm.dt[idx], kind="stable")]
    return [int(idx[round(t)]) for t in np.unique(np.linspace(0, len(idx) - 1, min(most, len(idx))).round())]


def draw_heatmaps(sm: SequenceMatches, layer_idx: Sequence[int], layers: Sequence[int], point: int,
                  dest: Path) -> Path | None:
    """heatmap_<seq>_p<point>.png: rows are frames k, columns layers; the query frame on the left."""
    rows = pick_frames(sm, point)
    if sm.sim is None or point not in sm.sim_points or not rows:
        return None
    m = int(np.flatnonzero(sm.sim_points == point)[0])
    (h, w), (th, tw) = sm.grid, sm.token_size
    H, W = sm.frames.shape[1:3]
    extent = (-0.5, w * tw - 0.5, h * th - 0.5, -0.5)
    ncol = len(layer_idx) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.6 * len(rows) * H / W + 0.5), squeeze=False,
                             layout="constrained")
    _show(axes[0, 0], sm.frames[sm.query], f"query: video frame {sm.frame_index[sm.query]}, point {point}")
    axes[0, 0].scatter(*sm.gt_px[sm.query, point], s=60, c=QUERY, edgecolors="black", linewidths=0.8, zorder=3)
    for ax in axes[1:, 0]:
        ax.axis("off")
    for r, j in enumerate(rows):
        f = sm.others[j]
        for c, (li, layer) in enumerate(zip(layer_idx, layers), start=1):
            ax = axes[r, c]
            mp = sm.sim[li, j, m]                                                  # (h, w) cosine
            ok = bool(sm.correct[li, j, point])
            _show(ax, sm.frames[f], f"L{layer} · video frame {sm.frame_index[f]} (Δt {sm.dt[j]}) · "
                                    f"{'correct' if ok else 'wrong'}\ncos {mp.min():.2f}…{mp.max():.2f}", grey=True)
            ax.imshow(mp, extent=extent, cmap="inferno", alpha=0.7, interpolation="nearest",
                      vmin=float(mp.min()), vmax=float(mp.max()) + 1e-6)
            ax.scatter(*sm.gt_px[f, point], s=50, facecolors="none", edgecolors="cyan", linewidths=1.5, zorder=3)
            ax.scatter(*sm.token_centre_px(sm.pred_rc[li, j, point]), s=50, c=OK if ok else BAD, marker="x",
                       linewidths=1.8, zorder=4)
    handles = [Line2D([], [], color="none", marker="o", mfc="none", mec="cyan", label="ground truth"),
               Line2D([], [], color="none", marker="x", mec=OK, label="prediction (correct)"),
               Line2D([], [], color="none", marker="x", mec=BAD, label="prediction (wrong)"),
               Line2D([], [], color="none", label="heat: cosine similarity (eq. 10), each panel min→max")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{sm.key} — query point {point}", fontsize=9)
    return _save(fig, dest / f"heatmap_{safe_name(sm.key)}_p{point}.png")


def draw_where(summary: dict, dest: Path, references: dict | None = None) -> Path:
    """where.png: per layer, stacked fractions of valid predictions in each category."""
    layers = summary["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.55 * len(layers) + 4), 4.2), layout="constrained")
    bottom = np.zeros(len(layers))
    for name in CATEGORIES:
        v = np.array(summary["fractions"][name])
        ax.bar(x, v, bottom=bottom, color=CATEGORY_COLORS[name], width=0.75, label=name.replace("_", " "))
        if len(layers) <= 12:
            for xi, b, vi in zip(x, bottom, v):
                if vi >= 0.04:
                    ax.text(xi, b + vi / 2, f"{vi:.2f}", ha="center", va="center", fontsize=7, color="white")
        bottom += v
    ax.set_xticks(x, [str(v) for v in layers])
    ax.set(xlabel="LLM layer", ylabel="fraction of valid predictions", ylim=(0, 1))
    ax.set_title(f"Where predictions go, pooled over sequences ({summary['num_predictions'][0]} per layer)\n"
                 f"first that applies: correct (δ={summary['delta']:g}) > same position > border > elsewhere",
                 fontsize=8)
    notes = [f"border tokens: {summary['border_tokens']:.2f} of the grid"] if "border_tokens" in summary else []
    if references:
        notes.append("no-model PCK: chance {:.2f}, same position {:.2f}".format(
            references["uniform"], references["same_position"]))
    ax.text(1.02, 0.0, "\n".join(notes), transform=ax.transAxes, ha="left", va="bottom", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _save(fig, dest / "where.png")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
