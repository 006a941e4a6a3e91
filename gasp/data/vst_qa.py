"""VST-style perception questions (seed 004, Sec. 3.1, Tables 15-17) from synthetic scene metadata and cameras.

Shape vocabulary: S shown frames of a scene (increasing indices into its T frames).

Beside ``spatial_qa`` (camera motion, counting, relative depth: choices) and ``metric_qa`` (depth, distance,
size: numbers), two kinds VST trains on:
- "appearance_order" (a choice): of two boxes, which is seen first in the shown frames (each clearly seen in some
  shown frame, first seen in different frames);
- "box3d" (VST's 3D detection, App. A.1): every box clearly visible in the first shown frame as a 9-DoF box in that
  camera's coordinates, "[x, y, z, x_l, y_l, z_l, pitch, yaw, roll]", metres and angles / 180, two decimals
  (``gasp.rl.box3d``), boxes in name order. The camera is the scene's own cam_from_world (OpenCV), so the box's
  rotation is R_cam R_y(yaw_world) and its Euler angles follow ``gasp.rl.box3d.rotation``.

Each item names the reward that scores it (``reward``: "choice", "numeric" or "box3d", ``gasp.rl.rewards``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gasp.data.spatial_qa import QAThresholds, _boxes, _min_pixels, _shown

VST_KINDS = ("appearance_order", "box3d")


@dataclass(frozen=True)
class VSTItem:
    question: str
    kind: str
    answer: str
    reward: str                              # the reward kind that scores it
    target: dict = field(default_factory=dict)   # what the reward reads: options/answer_index, value, or boxes

    def prompt(self) -> str:
        if self.reward == "choice":
            return f"{self.question}\noptions: {', '.join(self.target['options'])}."
        return self.question


def camera_box(obj: dict[str, Any], cam_from_world: np.ndarray) -> np.ndarray:
    """(9,) the metadata box in the camera's coordinates: centre, sizes, (pitch, yaw, roll) degrees."""
    from gasp.rl.box3d import euler

    yaw = np.radians(obj["yaw_deg"])
    c, s = np.cos(yaw), np.sin(yaw)
    world_from_local = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    T = np.asarray(cam_from_world, dtype=np.float64)
    center = T[:3, :3] @ np.asarray(obj["center"], dtype=np.float64) + T[:3, 3]
    return np.array([*center, *obj["size"], *euler(T[:3, :3] @ world_from_local)])


def vst_questions_for_scene(metadata: dict[str, Any], cam_from_world: np.ndarray, rng: np.random.Generator,
                            frames: Sequence[int] | None = None,
                            thresholds: QAThresholds = QAThresholds()) -> list[VSTItem]:
    """Up to one question of each VST kind about the shown ``frames``; ``cam_from_world`` (T, 4, 4) of the scene."""
    from gasp.rl.box3d import format_box

    shown = _shown(metadata, frames)
    need = _min_pixels(metadata, thresholds)
    items: list[VSTItem] = []
    first_seen = {}
    for o in _boxes(metadata):
        seen = [t for t in shown if o["visible_pixels"][t] >= need]
        glimpsed = [t for t in shown if 0 < o["visible_pixels"][t] < need]
        if seen and not (glimpsed and min(glimpsed) < seen[0]):       # its first sight is a clear one
            first_seen[o["name"]] = seen[0]
    pairs = [(a, b) for a in sorted(first_seen) for b in sorted(first_seen) if first_seen[a] < first_seen[b]]
    if pairs:
        early, late = pairs[int(rng.integers(len(pairs)))]
        opts = [f"the {early}", f"the {late}"]
        if rng.random() < 0.5:
            opts = opts[::-1]
        items.append(VSTItem("which object appears first in the video?", "appearance_order", f"the {early}", "choice",
                             {"options": opts, "answer_index": opts.index(f"the {early}")}))
    t0 = shown[0]
    visible = sorted((o for o in _boxes(metadata) if o["visible_pixels"][t0] >= need), key=lambda o: o["name"])
    if visible:
        boxes = [camera_box(o, cam_from_world[t0]) for o in visible]
        items.append(VSTItem("give the 3d boxes of the boxes in the first frame, in its camera coordinates.", "box3d",
                             " ".join(format_box(b) for b in boxes), "box3d",
                             {"boxes": [b.tolist() for b in boxes]}))
    return items


def correspondence_item(scene, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, VSTItem, list[int]] | None:
    """VST's multi-view correspondence as VQA (``gasp.data.correspondence_vqa``'s "choice" kind): a marked point in
    the first shown frame, four lettered candidates in another. Returns (the 2 images, the item, their positions in
    the scene), or None for a scene without depth and cameras (its tracks come from them) or no usable point."""
    from gasp.data.correspondence_vqa import LETTERS, make_samples
    from tracks.geometry import build_tracks
    from tracks.types import TrackSequence

    if scene.depth is None or scene.K is None or scene.cam_from_world is None:
        return None
    idx = np.asarray(idx)
    tracks, visible, track_depth = build_tracks(scene.depth[idx], scene.K[idx], scene.cam_from_world[idx],
                                                query_frame=0, grid=4)
    seq = TrackSequence(frames=scene.frames[idx], depth=scene.depth[idx], K=scene.K[idx],
                        cam_from_world=scene.cam_from_world[idx], frame_index=scene.frame_index[idx], tracks=tracks,
                        visible=visible, track_depth=track_depth, query_frame=0, scene=scene.name, key=scene.name)
    samples = make_samples(seq, rng, "choice", 1, name=f"{scene.name}_corr")
    if not samples:
        return None
    s = samples[0]
    b = int(np.flatnonzero(scene.frame_index[idx] == s.info["frames"][1])[0])
    item = VSTItem(s.question.split("\noptions:")[0], "correspondence", s.answer, "choice",
                   {"options": list(LETTERS), "answer_index": int(s.info["answer_index"])})
    return s.images, item, [int(idx[0]), int(idx[b])]
