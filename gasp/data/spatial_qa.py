"""Multiple-choice spatial questions from synthetic scene metadata (the paper's downstream
spatial-QA claim: camera pose, counting, relative depth).

Shape vocabulary: T frames of the scene, S shown frames (a subset of the T, in time order).

Question kinds, each answered from geometry, never from pixels:
- "camera_motion" (All-Angles camera pose): the translation of the camera from the first to
  the last shown frame, expressed in the FIRST shown camera's frame (x right, z forward):
  left/right if |dx| dominates, forward/backward if |dz| does. The scene metadata stores
  camera centres and optical axes (`camera_path[t].position / .forward`); cameras have no
  roll (the generator's look-at, world y down), so camera right = normalise(down x forward).
  Asked only if the dominant component is clear (>= `dominance` times the other, and
  >= `min_move_m` metres).
- "object_count" (VSI-Bench counting): boxes seen in any shown frame. A box counts when its
  visible pixel count (metadata `visible_pixels[t]`) reaches `min_visible_fraction` of the
  image in some shown frame; if some box is only glimpsed (seen, but below that), the count
  is ambiguous and the question is skipped. The same-texture panel is not a box.
- "relative_depth" (BLINK relative depth): which of two boxes, both clearly visible in the
  first shown frame, is closer to that camera. Depth is camera z of the box centre; a pair
  is used only if the centre depths differ by >= `min_depth_gap_m` and >= `min_depth_ratio`,
  and the boxes' nearest corners are in the same order (so "closer" is not a matter of
  centre vs. surface).

Words stay inside the tiny tokenizer's vocabulary (`gasp.models.tiny`), and options are
lower case. `prompt_text` writes the question with its options; the answer text is the
option itself, so option log-likelihood scoring and SFT targets use the same strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np

MOTION_OPTIONS = ("left", "right", "forward", "backward")
KINDS = ("camera_motion", "object_count", "relative_depth")
WORLD_DOWN = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class QAItem:
    question: str
    options: tuple[str, ...]
    answer_index: int
    kind: str  # one of KINDS

    @property
    def answer(self) -> str:
        return self.options[self.answer_index]


@dataclass(frozen=True)
class QAThresholds:
    dominance: float = 1.5              # camera motion: dominant / other displacement component
    min_move_m: float = 0.15            # camera motion: dominant component, metres
    min_visible_fraction: float = 0.002  # a box is "seen" with this share of the image's pixels
    min_depth_gap_m: float = 0.5        # relative depth: centre depth difference, metres
    min_depth_ratio: float = 1.15       # relative depth: far / near centre depth


def prompt_text(item: QAItem) -> str:
    """The question followed by its options, e.g. 'which way does the camera move?\\noptions: left, right.'"""
    return f"{item.question}\noptions: {', '.join(item.options)}."


def _shown(metadata: dict[str, Any], frames: Sequence[int] | None) -> list[int]:
    n = len(metadata["camera_path"])
    shown = list(range(n)) if frames is None else [int(f) for f in frames]
    if len(shown) < 2 or any(not 0 <= f < n for f in shown) or sorted(shown) != shown:
        raise ValueError(f"shown frames must be >= 2 increasing indices into the scene's {n} frames, got {shown}")
    return shown


def camera_axes(metadata: dict[str, Any], t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera t's centre (3,), right axis (3,) and forward axis (3,) in world coordinates."""
    cam = metadata["camera_path"][t]
    fwd = np.asarray(cam["forward"], dtype=np.float64)
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(WORLD_DOWN, fwd)  # no roll: right is horizontal (world y is down)
    return np.asarray(cam["position"], dtype=np.float64), right / np.linalg.norm(right), fwd


def camera_displacement(metadata: dict[str, Any], first: int, last: int) -> np.ndarray:
    """(2,) camera translation first -> last as (right, forward) metres in the first camera's frame."""
    p0, right, fwd = camera_axes(metadata, first)
    p1 = np.asarray(metadata["camera_path"][last]["position"], dtype=np.float64)
    d = p1 - p0
    return np.array([d @ right, d @ fwd])


def camera_motion_direction(metadata: dict[str, Any], first: int, last: int,
                            th: QAThresholds = QAThresholds()) -> str | None:
    """'left' | 'right' | 'forward' | 'backward', or None when the motion has no clear dominant axis."""
    dx, dz = camera_displacement(metadata, first, last)
    big, small = max(abs(dx), abs(dz)), min(abs(dx), abs(dz))
    if big < th.min_move_m or big < th.dominance * small:
        return None
    if abs(dx) > abs(dz):
        return "right" if dx > 0 else "left"
    return "forward" if dz > 0 else "backward"


def _boxes(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in metadata["objects"] if o["kind"] == "box"]


def _min_pixels(metadata: dict[str, Any], th: QAThresholds) -> float:
    cfg = metadata["config"]
    return th.min_visible_fraction * cfg["height"] * cfg["width"]


def visible_box_count(metadata: dict[str, Any], shown: Sequence[int], th: QAThresholds = QAThresholds()) -> int | None:
    """Boxes clearly seen in some shown frame, or None if a box is only glimpsed."""
    need = _min_pixels(metadata, th)
    seen = [max(o["visible_pixels"][t] for t in shown) for o in _boxes(metadata)]
    if any(0 < s < need for s in seen):
        return None
    return sum(s >= need for s in seen)


def box_corners(obj: dict[str, Any]) -> np.ndarray:
    """(8, 3) world corners of a metadata box (yaw about world y, as SceneObject.rotation)."""
    yaw = np.radians(obj["yaw_deg"])
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, 8).T
    return (signs * np.asarray(obj["size"]) / 2) @ rot.T + np.asarray(obj["center"])


def closer_pairs(metadata: dict[str, Any], t: int, th: QAThresholds = QAThresholds()) -> list[tuple[str, str]]:
    """(near name, far name) for every unambiguous pair of boxes clearly visible in frame t."""
    pos, _, fwd = camera_axes(metadata, t)
    need = _min_pixels(metadata, th)
    boxes = [o for o in _boxes(metadata) if o["visible_pixels"][t] >= need]
    depth = {o["name"]: float((np.asarray(o["center"]) - pos) @ fwd) for o in boxes}
    nearest = {o["name"]: float(((box_corners(o) - pos) @ fwd).min()) for o in boxes}
    pairs = []
    for a, b in combinations(sorted(depth), 2):
        near, far = (a, b) if depth[a] < depth[b] else (b, a)
        if (depth[far] - depth[near] >= th.min_depth_gap_m and depth[far] >= th.min_depth_ratio * depth[near]
                and nearest[near] < nearest[far]):
            pairs.append((near, far))
    return pairs


def questions_for_scene(metadata: dict[str, Any], rng: np.random.Generator, frames: Sequence[int] | None = None,
                        thresholds: QAThresholds = QAThresholds()) -> list[QAItem]:
    """Up to one question of each kind for the shown `frames` (default: all), in KINDS order.

    Option order is drawn from `rng`; a kind whose answer is ambiguous is left out.
    """
    shown = _shown(metadata, frames)
    items: list[QAItem] = []

    direction = camera_motion_direction(metadata, shown[0], shown[-1], thresholds)
    if direction is not None:
        opts = tuple(rng.permutation(MOTION_OPTIONS).tolist())
        items.append(QAItem("which way does the camera move?", opts, opts.index(direction), "camera_motion"))

    count = visible_box_count(metadata, shown, thresholds)
    if count is not None:
        low = int(rng.integers(max(0, count - 3), count + 1))  # four consecutive numbers around the truth
        opts = tuple(str(n) for n in range(low, low + 4))
        items.append(QAItem("how many boxes are in the video?", opts, opts.index(str(count)), "object_count"))

    pairs = closer_pairs(metadata, shown[0], thresholds)
    if pairs:
        near, far = pairs[int(rng.integers(len(pairs)))]
        opts = (f"the {near}", f"the {far}")
        if rng.random() < 0.5:
            opts = opts[::-1]
        items.append(QAItem("which object is closer to the camera in the first frame?", opts,
                            opts.index(f"the {near}"), "relative_depth"))
    return items
