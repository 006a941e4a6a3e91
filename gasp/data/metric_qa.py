"""Spatial questions with metric answers from synthetic scene metadata (HiSpatial, seed 002, Sec. 3.1, Levels 0-2).

Shape vocabulary: S shown frames of a scene (increasing indices into its T frames).

Kinds, each answered from the renderer's geometry, never from pixels, about boxes clearly visible in the first
shown frame (``spatial_qa.QAThresholds.min_visible_fraction`` of the image):
- "point_depth" (Level 0, depth): a box centre's depth along the first shown camera's optical axis, metres;
- "object_distance" (Level 1): the distance between two boxes' centres, metres;
- "object_size" (Level 1): a box's height (its vertical side), metres;
- "depth_order" (Level 2, a choice): which of two boxes is closer to that camera (``spatial_qa.closer_pairs``'s
  unambiguous pairs).

Numbers are written with one decimal ("2.3"). A numeric answer succeeds within 25 % relative error (SpatialRGPT's
convention) or 50 % (QSpatial's); a choice by exact match. ``NUMBER_GRID`` is what a model's numeric answer is read
from by option log-likelihood (``probes/metric_qa.py``): 0.1 to 15 m, log-spaced, one decimal, neighbours ~10 %
apart, finer than both thresholds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gasp.data.spatial_qa import QAThresholds, _boxes, _min_pixels, _shown, camera_axes, closer_pairs

METRIC_KINDS = ("point_depth", "object_distance", "object_size", "depth_order")
NUMERIC_KINDS = ("point_depth", "object_distance", "object_size")
THRESHOLDS = (0.25, 0.5)                   # relative error: SpatialRGPT, QSpatial
NUMBER_GRID = tuple(sorted({round(float(v), 1) for v in np.geomspace(0.1, 15.0, 52)}))


@dataclass(frozen=True)
class MetricItem:
    question: str
    kind: str                              # one of METRIC_KINDS
    value: float | None = None             # numeric kinds: the true value, metres
    options: tuple[str, ...] = field(default=())   # depth_order: the two options
    answer_index: int = -1

    @property
    def answer(self) -> str:
        return f"{self.value:.1f}" if self.value is not None else self.options[self.answer_index]

    @property
    def numeric(self) -> bool:
        return self.value is not None


def prompt_text(item: MetricItem) -> str:
    if item.numeric:
        return f"{item.question}\nanswer in meters with one decimal."
    return f"{item.question}\noptions: {', '.join(item.options)}."


def relative_error(pred: float, true: float) -> float:
    return abs(pred - true) / abs(true)


def success(item: MetricItem, answer: str) -> dict[str, bool]:
    """{"@0.25": ..., "@0.5": ...} for a numeric item (the first number in ``answer``; none parsed: failure),
    {"exact": ...} for a choice (the option text, case and surrounding space ignored)."""
    if not item.numeric:
        return {"exact": answer.strip().lower() == item.options[item.answer_index].lower()}
    pred = parse_number(answer)
    return {f"@{t:g}": pred is not None and relative_error(pred, item.value) <= t for t in THRESHOLDS}


def parse_number(text: str) -> float | None:
    import re

    m = re.search(r"-?\d+(?:\s*\.\s*\d+)?", text)        # the tiny tokenizer's decoder spaces "2 . 3"
    return float(m.group(0).replace(" ", "")) if m else None


def _visible_boxes(metadata: dict[str, Any], t: int, th: QAThresholds) -> list[dict[str, Any]]:
    need = _min_pixels(metadata, th)
    return [o for o in _boxes(metadata) if o["visible_pixels"][t] >= need]


def metric_questions_for_scene(metadata: dict[str, Any], rng: np.random.Generator,
                               frames: Sequence[int] | None = None,
                               thresholds: QAThresholds = QAThresholds()) -> list[MetricItem]:
    """Up to one question of each kind about the shown ``frames`` (default: all), in METRIC_KINDS order."""
    shown = _shown(metadata, frames)
    first = shown[0]
    boxes = sorted(_visible_boxes(metadata, first, thresholds), key=lambda o: o["name"])
    items: list[MetricItem] = []
    if boxes:
        pos, _, fwd = camera_axes(metadata, first)
        b = boxes[int(rng.integers(len(boxes)))]
        depth = float((np.asarray(b["center"]) - pos) @ fwd)
        items.append(MetricItem(f"how far is the {b['name']} from the camera in the first frame?", "point_depth",
                                round(depth, 1)))
    if len(boxes) >= 2:
        i, j = sorted(rng.choice(len(boxes), 2, replace=False).tolist())
        a, b = boxes[i], boxes[j]
        dist = float(np.linalg.norm(np.asarray(a["center"]) - np.asarray(b["center"])))
        items.append(MetricItem(f"how far is the {a['name']} from the {b['name']}?", "object_distance", round(dist, 1)))
    if boxes:
        b = boxes[int(rng.integers(len(boxes)))]
        items.append(MetricItem(f"what is the height of the {b['name']}?", "object_size", round(float(b["size"][1]), 1)))
    pairs = closer_pairs(metadata, first, thresholds)
    if pairs:
        near, far = pairs[int(rng.integers(len(pairs)))]
        opts = (f"the {near}", f"the {far}")
        if rng.random() < 0.5:
            opts = opts[::-1]
        items.append(MetricItem("which object is closer to the camera in the first frame?", "depth_order",
                                options=opts, answer_index=opts.index(f"the {near}")))
    # a value that rounds to 0.0 cannot be scored by relative error: left out
    return [it for it in items if not it.numeric or it.value > 0]
