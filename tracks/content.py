"""What a tracks file holds, summarised at a stated precision, and the comparison of two summaries.

A re-render is not byte-identical across x86-64 machines. The renderer's small matrix products
(rays, box slabs, texture tints) go through OpenBLAS, which picks its kernel by CPU at load
time: the same numpy 2.4.6 gives depth that differs in the last float32 bits, and so a few
boundary pixels per frame one level apart, under ``OPENBLAS_CORETYPE=Haswell`` (an AVX2 CPU)
and under the SkylakeX kernel of an AVX-512 CPU. PNG and gzip encoders may add their own
differences. So a byte digest proves sameness but cannot prove difference; this summary can.

Per scene frame it keeps the decoded mean of each RGB channel (0-255) and the mean depth over
known pixels; per sequence its frame ids (exact), its visible-point count and the mean
position of its visible track points. :func:`compare` holds them to :data:`TOLERANCE`: wider than
the differences between CPU kernels (measured on the shipped 50-scene test split, SkylakeX against
Haswell: RGB means 0.0007 levels, depth means 2.7e-6 relative, tracks and visibility equal) and far
narrower than any change to scenes, textures, cameras or sampling.

Shapes: T scene frames, F sequence frames, N points.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SUMMARY_VERSION = 1
# rgb: channel mean in levels (a 448^2 frame's mean moves 0.05 when ~10^4 pixel-levels change; 70x the 0.0007
# measured between CPU kernels); depth_rel: frame mean depth, relative (37x the 2.7e-6 measured);
# track_mean: pixels; visible: points per sequence (both measured equal between kernels)
TOLERANCE = {"rgb": 0.05, "depth_rel": 1e-4, "track_mean": 0.01, "visible": 2}


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """{"version", "scenes": {name: {"rgb": (T, 3), "depth": (T,)}}, "sequences": {key: {...}}} of a tracks file."""
    from tracks.io import TrackReader

    out: dict[str, Any] = {"version": SUMMARY_VERSION, "scenes": {}, "sequences": {}}
    with TrackReader(path) as reader:
        for name in reader.scene_names:
            scene = reader.scene(name)
            rgb = scene.frames.reshape(scene.num_frames, -1, 3).mean(axis=1, dtype=np.float64)   # (T, 3)
            entry = {"rgb": np.round(rgb, 4).tolist()}
            if scene.depth is not None:
                d = scene.depth.reshape(scene.num_frames, -1).astype(np.float64)
                ok = np.isfinite(d) & (d > 0)
                entry["depth"] = [round(float(row[m].mean()), 7) if m.any() else None for row, m in zip(d, ok)]
            out["scenes"][name] = entry
        for i, key in enumerate(reader.sequence_keys):
            k, name = reader._locate(i)                           # the datasets alone: no frame is decoded
            g = reader._file(k)[f"sequences/{name}"]
            vis = g["visible"][()].astype(bool)                   # (F, N)
            pts = g["tracks"][()][vis].astype(np.float64)         # (visible, 2)
            out["sequences"][name] = {
                "frame_index": g["frame_index"][()].tolist(), "visible": int(vis.sum()),
                "track_mean": np.round(pts.mean(0), 4).tolist() if len(pts) else None}
    return out


def compare(got: dict[str, Any], want: dict[str, Any], tolerance: dict[str, float] | None = None) -> list[str]:
    """Differences beyond ``tolerance`` (default :data:`TOLERANCE`), one line each; empty when the content agrees."""
    tol = {**TOLERANCE, **(tolerance or {})}
    diffs: list[str] = []
    for part in ("scenes", "sequences"):
        if sorted(got[part]) != sorted(want[part]):
            missing, extra = sorted(set(want[part]) - set(got[part])), sorted(set(got[part]) - set(want[part]))
            diffs.append(f"{part} differ: missing {missing[:3]}, unexpected {extra[:3]}")
    for name in sorted(set(got["scenes"]) & set(want["scenes"])):
        g, w = got["scenes"][name], want["scenes"][name]
        a, b = np.asarray(g["rgb"]), np.asarray(w["rgb"])
        if a.shape != b.shape:
            diffs.append(f"scene {name}: {len(a)} frames, expected {len(b)}")
            continue
        if (err := np.abs(a - b).max(initial=0.0)) > tol["rgb"]:
            diffs.append(f"scene {name}: frame RGB means differ by up to {err:.4f} levels (> {tol['rgb']})")
        if ("depth" in g) != ("depth" in w):
            diffs.append(f"scene {name}: depth {'present' if 'depth' in g else 'missing'}, expected the other")
        elif "depth" in g:
            x = np.array([np.nan if v is None else v for v in g["depth"]], dtype=float)
            y = np.array([np.nan if v is None else v for v in w["depth"]], dtype=float)
            rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
            if not np.array_equal(np.isnan(x), np.isnan(y)) or np.nanmax(rel, initial=0.0) > tol["depth_rel"]:
                diffs.append(f"scene {name}: frame depth means differ by up to {np.nanmax(rel, initial=0.0):.2e} "
                             f"relative (> {tol['depth_rel']})")
    for key in sorted(set(got["sequences"]) & set(want["sequences"])):
        g, w = got["sequences"][key], want["sequences"][key]
        if g["frame_index"] != w["frame_index"]:
            diffs.append(f"sequence {key}: frames {g['frame_index']}, expected {w['frame_index']}")
        if abs(g["visible"] - w["visible"]) > tol["visible"]:
            diffs.append(f"sequence {key}: {g['visible']} visible points, expected {w['visible']}")
        if (g["track_mean"] is None) != (w["track_mean"] is None) or (
                g["track_mean"] is not None
                and np.abs(np.subtract(g["track_mean"], w["track_mean"])).max() > tol["track_mean"]):
            diffs.append(f"sequence {key}: mean track position {g['track_mean']}, expected {w['track_mean']}")
    return diffs


# datasets format v2 added beside v1's (tracks/FORMAT.md); for geometry tracks they derive from the same depth
# and poses, so leaving them out keeps the digest of an identical re-render the same in either format
_V2_ONLY = ("occluded", "query_frames")


def digest(path: str | Path) -> str:
    """sha256 over every dataset of a tracks file (names, then bytes, sorted by name) but v2's
    ``occluded`` and ``query_frames``; identical re-renders match, in format v1 or v2.

    Every byte counts, whatever the library versions: numeric datasets give their raw bytes, and
    the variable-length ones (PNG frames, sequence names) each element's dtype, shape and bytes,
    in order. (The digest recorded at first, before 2026-12-04, hashed numpy's ``repr`` of those:
    truncated to a PNG's first and last three bytes, and worded differently by numpy 2.1 and 2.2.)
    """
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) and n.rsplit("/", 1)[-1] not in _V2_ONLY
                else None)
        for n in sorted(names):
            h.update(n.encode())
            data = f[n][()]
            if f[n].dtype.kind in "fiub":
                h.update(np.ascontiguousarray(data).tobytes())
                continue
            for item in np.asarray(data, dtype=object).reshape(-1):
                item = item.encode() if isinstance(item, str) else item
                b = item if isinstance(item, bytes) else np.ascontiguousarray(item).tobytes()
                head = item.dtype.str + str(item.shape) if isinstance(item, np.ndarray) else type(item).__name__
                h.update(f"{head}:{len(b)}:".encode())
                h.update(b)
    return h.hexdigest()
