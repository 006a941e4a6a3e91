"""The paper's fairness baseline (Sec. 5.4): the same ground-truth tracks, rewritten as VQA.

Shape vocabulary: F frames of a sequence, N query points, H x W pixels.

Each sample is a 2-frame "video" (image 1 = the sequence's query frame, image 2 = another
frame drawn at random) in the LLaVA-Video JSON format, of one of two kinds:
- "choice": a red disk marks query point i in image 1; image 2 carries four yellow disks
  with letter labels A-D, one at the point's ground-truth position and three at other
  tracked points (distractors); the answer is the letter.
- "coords": the same marked image 1 and an unmarked image 2; the answer is "[x, y]", the
  integer pixel of image 2 that contains the point: (0, 0) is the top-left pixel (its
  centre, as in tracks/FORMAT.md), x right, y down, x = floor(track_x + 0.5).
Only points visible in both frames are asked about, and only points visible in image 2
serve as distractors, each at least `DrawStyle.min_distance` pixels from the true point;
no option's disk or letter tile overlaps another option's.

Drawing is numpy (disks) plus PIL text for the letters, in pixels rounded as above.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from gasp.data.instruct import VIDEO_TOKEN, write_frame_folder
from tracks.types import TrackSequence

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
QUERY_COLOR = (255, 0, 0)
LABEL_COLOR = (255, 255, 0)
OUTLINE_COLOR = (0, 0, 0)
TEXT_COLOR = (0, 0, 0)
CHOICE_QUESTION = "which labeled point in image 2 corresponds to the marked point in image 1?"
COORDS_QUESTION = ("give the pixel coordinates [x, y] in image 2 of the marked point in image 1. "
                   "x is the column and y the row, from 0 at the top left pixel.")


@dataclass
class DrawStyle:
    """Sizes in pixels; `for_image` scales them to the frame size."""

    radius: int = 2        # disk radius; an outline ring of 1 px surrounds it
    label: int = 11        # side of the square letter tile

    @classmethod
    def for_image(cls, height: int, width: int) -> "DrawStyle":
        label = max(9, round(min(height, width) / 10))
        return cls(radius=max(2, label // 4), label=label)

    @property
    def min_distance(self) -> float:
        """Least distance in pixels between the true point and a distractor."""
        return 2.0 * self.label


@dataclass
class CorrespondenceSample:
    id: str
    images: np.ndarray          # (2, H, W, 3) uint8 drawn image 1 and image 2
    question: str
    answer: str
    kind: str                   # "choice" | "coords"
    info: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable ground truth


def pixel_of(xy) -> np.ndarray:
    """(..., 2) float x, y -> int pixel (col, row) that contains it: floor(v + 0.5)."""
    return np.floor(np.asarray(xy, dtype=np.float64) + 0.5).astype(np.int64)


def draw_disk(image: np.ndarray, xy, radius: int, color, outline=OUTLINE_COLOR) -> None:
    """In place: a filled disk of `color` centred on the pixel containing xy, ringed by 1 px of `outline`."""
    cx, cy = pixel_of(xy)
    yy, xx = np.ogrid[: image.shape[0], : image.shape[1]]
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    image[d2 <= (radius + 1) ** 2] = outline
    image[d2 <= radius ** 2] = color


def render_label(letter: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 tile: the letter in black, centred on the label colour."""
    from PIL import Image, ImageDraw, ImageFont

    tile = Image.new("RGB", (size, size), LABEL_COLOR)
    font = ImageFont.load_default(size=max(6, size - 2))
    ImageDraw.Draw(tile).text((size / 2, size / 2), letter, fill=TEXT_COLOR, font=font, anchor="mm")
    return np.asarray(tile)


def label_box(xy, style: DrawStyle, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive pixel box of the tile beside the disk at xy, kept inside the image."""
    cx, cy = pixel_of(xy)
    gap, s = style.radius + 2, style.label
    x0 = cx + gap if cx + gap + s <= width else cx - gap - s
    y0 = cy - gap - s if cy - gap - s >= 0 else cy + gap
    if x0 < 0 or y0 + s > height:
        raise ValueError(f"a {s}-px label does not fit beside ({cx}, {cy}) in a {width}x{height} image")
    return int(x0), int(y0), int(x0 + s), int(y0 + s)


def draw_label(image: np.ndarray, xy, letter: str, style: DrawStyle) -> tuple[int, int, int, int]:
    """In place: a label disk at xy and its letter tile; returns the tile's box."""
    draw_disk(image, xy, style.radius, LABEL_COLOR)
    x0, y0, x1, y1 = label_box(xy, style, *image.shape[:2])
    image[y0:y1, x0:x1] = render_label(letter, style.label)
    return x0, y0, x1, y1


def _footprint(xy, style: DrawStyle, height: int, width: int) -> list[tuple[int, int, int, int]] | None:
    """Exclusive boxes an option covers (disk with its ring, letter tile), or None if the tile does not fit."""
    try:
        tile = label_box(xy, style, height, width)
    except ValueError:
        return None
    cx, cy = pixel_of(xy)
    r = style.radius + 1
    return [(int(cx - r), int(cy - r), int(cx + r + 1), int(cy + r + 1)), tile]


def _overlap(a: list[tuple[int, int, int, int]], b: list[tuple[int, int, int, int]]) -> bool:
    return any(p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3] for p in a for q in b)


def _pick_options(truth: np.ndarray, candidates: np.ndarray, style: DrawStyle, height: int, width: int,
                  rng: np.random.Generator, n: int = 3) -> np.ndarray | None:
    """Indices of n candidates at >= style.min_distance from the truth whose drawings overlap neither
    the truth's nor each other's, or None."""
    taken = [_footprint(truth, style, height, width)]
    if taken[0] is None:
        return None
    chosen: list[int] = []
    for j in rng.permutation(len(candidates)):
        if np.linalg.norm(candidates[j] - truth) < style.min_distance:
            continue
        foot = _footprint(candidates[j], style, height, width)
        if foot is None or any(_overlap(foot, t) for t in taken):
            continue
        chosen.append(int(j))
        taken.append(foot)
        if len(chosen) == n:
            return np.asarray(chosen)
    return None


def make_samples(seq: TrackSequence, rng: np.random.Generator, kind: str = "choice", count: int = 1,
                 style: DrawStyle | None = None, name: str = "") -> list[CorrespondenceSample]:
    """Up to `count` samples of `kind` from one sequence (fewer if too few points qualify)."""
    if kind not in ("choice", "coords"):
        raise ValueError(f"kind must be 'choice' or 'coords', got {kind!r}")
    H, W = seq.image_size
    style = style or DrawStyle.for_image(H, W)
    a = seq.query_frame
    inside = ((seq.tracks >= -0.5) & (seq.tracks < np.array([W, H]) - 0.5)).all(-1)  # (F, N)
    vis = seq.visible & inside & np.isfinite(seq.tracks).all(-1)
    others = [f for f in range(seq.num_frames) if f != a]
    samples: list[CorrespondenceSample] = []
    for k in range(count):
        for _ in range(20):  # a few draws of (frame, point) until one works
            b = int(rng.choice(others))
            both = np.flatnonzero(vis[a] & vis[b])
            if len(both) == 0:
                continue
            i = int(rng.choice(both))
            truth = seq.tracks[b, i].astype(np.float64)
            info = {"sequence": seq.key, "scene": seq.scene, "point": i,
                    "frames": [int(seq.frame_index[a]), int(seq.frame_index[b])],
                    "query_xy": seq.tracks[a, i].tolist(), "target_xy": truth.tolist(),
                    "pixel_convention": "(0,0) = centre of the top-left pixel; x right, y down"}
            img1, img2 = seq.frames[a].copy(), seq.frames[b].copy()
            draw_disk(img1, seq.tracks[a, i], style.radius, QUERY_COLOR)
            sid = f"{name or seq.key.replace('/', '_')}_{kind}{k}"
            if kind == "coords":
                x, y = pixel_of(truth)
                samples.append(CorrespondenceSample(sid, np.stack([img1, img2]), COORDS_QUESTION, f"[{x}, {y}]",
                                                    kind, info))
                break
            cand = np.flatnonzero(vis[b])
            cand = cand[cand != i]
            pick = _pick_options(truth, seq.tracks[b, cand].astype(np.float64), style, H, W, rng)
            if pick is None:
                continue
            points = np.concatenate([[i], cand[pick]])             # (4,) truth first
            order = rng.permutation(4)                             # option o shows points[order[o]]
            answer = int(np.flatnonzero(order == 0)[0])
            option_xy = seq.tracks[b, points[order]].astype(np.float64)
            boxes = [draw_label(img2, xy, LETTERS[o], style) for o, xy in enumerate(option_xy)]
            info.update(options=list(LETTERS), answer_index=answer, option_points=points[order].tolist(),
                        option_xy=option_xy.tolist(), label_boxes=[list(bx) for bx in boxes])
            question = f"{CHOICE_QUESTION}\noptions: {', '.join(LETTERS)}."
            samples.append(CorrespondenceSample(sid, np.stack([img1, img2]), question, LETTERS[answer], kind, info))
            break
        else:
            logger.warning("sequence %s: no usable point for a %s sample", seq.key, kind)
    return samples


def write_correspondence_vqa(sequences: Iterable[TrackSequence], out_dir: str | os.PathLike, kind: str = "both",
                             per_sequence: int = 2, seed: int = 0,
                             progress: Callable[[Iterable], Iterable] | None = None) -> Path:
    """Write `out_dir/videos/<id>/000.png, 001.png` and `out_dir/instruct.json`; returns the JSON path.

    `kind` is "choice", "coords" or "both" (`per_sequence` of each). Sequence s draws from
    `np.random.default_rng([seed, s])`. Records carry the ground truth under "vqa".
    """
    kinds = {"choice": ["choice"], "coords": ["coords"], "both": ["choice", "coords"]}.get(kind)
    if kinds is None:
        raise ValueError(f"kind must be 'choice', 'coords' or 'both', got {kind!r}")
    out = Path(out_dir)
    records = []
    for s, seq in enumerate((progress or iter)(sequences)):
        rng = np.random.default_rng([seed, s])
        for kd in kinds:
            for sample in make_samples(seq, rng, kd, per_sequence, name=f"seq{s:05d}"):
                rel = f"videos/{sample.id}"
                write_frame_folder(sample.images, out / rel)
                records.append({"id": sample.id, "video": rel,
                                "conversations": [{"from": "human", "value": f"{VIDEO_TOKEN}\n{sample.question}"},
                                                  {"from": "gpt", "value": sample.answer}],
                                "vqa": {"kind": sample.kind, **sample.info}})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "instruct.json"
    path.write_text(json.dumps(records, indent=1))
    logger.info("wrote %d correspondence VQA records to %s", len(records), path)
    return path
