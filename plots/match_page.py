"""The match explorer's one self-contained HTML page: frames, matches and heatmaps, drawn client-side.

No server and no network: ``match_page.html`` holds the CSS and JS, the data goes in as
inline JSON with frames as small JPEG data URIs and arrays as base64 little-endian bytes.
The page draws lines and heatmaps on canvas from those arrays, so one sequence costs its
thumbnails plus a few bytes per prediction. Stable element ids (for tests and bookmarks):
``seq`` (select), ``layer`` (range), ``layer-prev`` / ``layer-next`` (buttons), ``point``
(select: -2 a readable subset of a dense sequence, -1 all points, else one point), ``show-all`` (button),
``heat`` (checkbox), ``query-canvas`` (click a point), ``frame-<j>`` canvases,
``status`` (what is shown); ``body[data-ready="1"]`` once drawn, ``data-errors`` counts JS errors.

Arrays per sequence (shapes as ``plots/match_data.py``; L is the page's layers):
    gt (F, N, 2) float32 pixel x, y; visible (F, N) uint8; valid (F', N) uint8;
    pred (L, F', N) uint16 flat token; cat (L, F', N) int8 category (-1 invalid);
    sim (L, F', M, h, w) uint8, cosine -1..1 mapped to 0..255 (absent without maps)
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from plots.match_data import CATEGORIES, SequenceMatches

TEMPLATE = Path(__file__).with_name("match_page.html")


def b64(a: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of ``a`` as ``dtype``, base64 (JS typed arrays read them on any browser)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def jpeg_uri(frame: np.ndarray, size: tuple[int, int], quality: int = 80) -> str:
    """(H, W, 3) uint8 -> data:image/jpeg URI of the frame resized to ``size`` (h, w)."""
    buf = io.BytesIO()
    Image.fromarray(frame).resize(size[::-1], Image.LANCZOS).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumb_size(height: int, width: int, most: int) -> tuple[tuple[int, int], float]:
    """(h, w) of a thumbnail whose longer side is at most ``most``, and its scale."""
    scale = min(1.0, most / max(height, width))
    return (max(1, round(height * scale)), max(1, round(width * scale))), scale


def sequence_entry(sm: SequenceMatches, layer_idx: Sequence[int], most: int = 480) -> dict:
    """One sequence of the page's JSON, at the layers ``layer_idx`` (indices into its L axis)."""
    H, W = sm.frames.shape[1:3]
    size, _ = thumb_size(H, W, most)
    li = list(layer_idx)
    entry = {
        "key": sm.key, "scene": sm.scene, "n": int(sm.valid.shape[1]), "query": int(sm.query),
        "others": sm.others.tolist(), "frame_index": np.asarray(sm.frame_index).tolist(), "dt": sm.dt.tolist(),
        "grid": list(sm.grid), "token_size": list(sm.token_size), "image": [H, W], "thumb": list(size),
        "scale": size[1] / W,            # one factor for x and y: thumbnails keep the aspect to a pixel
        "frames": [jpeg_uri(f, size) for f in sm.frames],
        "gt": b64(np.nan_to_num(sm.gt_px, nan=-1e4), "f4"), "visible": b64(sm.visible, "u1"),
        "valid": b64(sm.valid, "u1"),
        "pred": b64(sm.pred_rc[li, ..., 0] * sm.grid[1] + sm.pred_rc[li, ..., 1], "u2"),
        "cat": b64(sm.categories()[li], "i1"),
        "sim_points": sm.sim_points.tolist(), "sim": None,
    }
    if sm.sim is not None and len(sm.sim_points):
        entry["sim"] = b64(np.clip(np.rint((sm.sim[li] + 1) * 127.5), 0, 255), "u1")
    return entry


def page_data(seqs: Sequence[SequenceMatches], layer_idx: Sequence[int], layers: Sequence[int], delta: float,
              where: dict, title: str, most: int = 480, geometry_png: Path | None = None) -> dict:
    """Everything the page shows: its layers, delta, pooled categories (``where_summary``), sequences and,
    for a probe run with --depth, the PCK-and-depth figure (``plots/pck_depth.py``) as a data URI."""
    geometry = None
    if geometry_png is not None:
        geometry = "data:image/png;base64," + base64.b64encode(Path(geometry_png).read_bytes()).decode()
    return {"title": title, "layers": list(layers), "delta": delta, "categories": list(CATEGORIES), "where": where,
            "sequences": [sequence_entry(s, layer_idx, most) for s in seqs], "geometry": geometry}


def write_page(path: Path, data: dict) -> Path:
    """Fill the template with ``data``; '</' is escaped so no string can close the script element."""
    html = TEMPLATE.read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    html = html.replace("<title>match explorer</title>", f"<title>match explorer — {_escape(data['title'])}</title>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html.replace("/*DATA*/", payload, 1), encoding="utf-8")
    return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
