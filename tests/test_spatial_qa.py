"""Spatial QA from scene metadata, checked against the rendered poses, depth and object ids."""
from __future__ import annotations

import numpy as np
import pytest

from gasp.data.spatial_qa import (
    MOTION_OPTIONS, QAThresholds, camera_displacement, camera_motion_direction, closer_pairs, prompt_text,
    questions_for_scene, visible_box_count,
)
from tracks.synthetic import (
    SyntheticSceneConfig, intrinsics, look_at, render_views, sample_camera_path, sample_layout, scene_metadata,
)

CFG = SyntheticSceneConfig(height=64, width=64, num_frames=8)


def _render(seed, motion=None):
    """(metadata, cam_from_world (T,4,4), depth (T,H,W), ids (T,H,W)) of one small scene."""
    cfg = SyntheticSceneConfig(height=CFG.height, width=CFG.width, num_frames=CFG.num_frames, motion=motion)
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, cfg)
    pos, targets, pattern = sample_camera_path(rng, cfg)
    cams = look_at(pos, targets)
    _, depth, ids = render_views(layout, intrinsics(cfg), cams, cfg.height, cfg.width)
    return scene_metadata(seed, cfg, layout, cams, ids, pattern), cams, depth, ids


SCENES = {(seed, motion): _render(seed, motion) for seed in range(4) for motion in ("orbit", "dolly", "truck")}


def _centre(cam_from_world):
    return -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]


@pytest.mark.parametrize("key", sorted(SCENES))
def test_camera_motion_matches_poses(key):
    meta, cams, _, _ = SCENES[key]
    for first, last in [(0, 7), (0, 3), (2, 6)]:
        # Independent: the last camera centre in the first camera's OpenCV frame (x right, z forward).
        rel = cams[first, :3, :3] @ (_centre(cams[last]) - _centre(cams[first]))
        np.testing.assert_allclose(camera_displacement(meta, first, last), rel[[0, 2]], atol=2e-3)
        direction = camera_motion_direction(meta, first, last)
        if direction is None:
            continue
        axis = 0 if direction in ("left", "right") else 2
        assert abs(rel[axis]) >= 1.5 * abs(rel[2 - axis])
        assert (rel[axis] > 0) == (direction in ("right", "forward"))
    if camera_motion_direction(meta, 0, 7) is not None:
        assert camera_motion_direction(meta, 0, 7) == meta["motion"]["direction"]


def test_camera_motion_sign_convention():
    """Hand-made paths: a camera looking along world -x has its right along world +z (y is down)."""
    def meta(p1, fwd):
        return {"camera_path": [{"position": [0, 0, 0], "forward": fwd}, {"position": p1, "forward": fwd}]}

    assert camera_motion_direction(meta([1, 0, 0], [0, 0, 1]), 0, 1) == "right"
    assert camera_motion_direction(meta([0, 0, -1], [0, 0, 1]), 0, 1) == "backward"
    assert camera_motion_direction(meta([0, 0, 1], [-1, 0, 0]), 0, 1) == "right"
    assert camera_motion_direction(meta([-1, 0, 0], [-1, 0, 0]), 0, 1) == "forward"
    assert camera_motion_direction(meta([1, 0, 0.9], [0, 0, 1]), 0, 1) is None  # diagonal: no clear answer
    assert camera_motion_direction(meta([0.05, 0, 0], [0, 0, 1]), 0, 1) is None  # too small


@pytest.mark.parametrize("key", sorted(SCENES))
def test_object_count_matches_rendered_ids(key):
    meta, _, _, ids = SCENES[key]
    th = QAThresholds()
    need = th.min_visible_fraction * CFG.height * CFG.width
    box_ids = [m + 1 for m, o in enumerate(meta["objects"]) if o["kind"] == "box"]
    for shown in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 7], [2, 3]):
        seen = [max(int((ids[t] == b).sum()) for t in shown) for b in box_ids]
        count = visible_box_count(meta, shown, th)
        if any(0 < s < need for s in seen):
            assert count is None
        else:
            assert count == sum(s > 0 for s in seen)


def test_object_count_glimpsed_box_skips():
    def meta(pixels):
        objs = [{"kind": "box", "visible_pixels": p} for p in pixels]
        objs.append({"kind": "plane", "visible_pixels": [500, 500]})
        return {"objects": objs, "config": {"height": 100, "width": 100}}

    assert visible_box_count(meta([[30, 0], [0, 0], [0, 25]]), [0, 1]) == 2  # panel not counted
    assert visible_box_count(meta([[30, 0], [3, 0]]), [0, 1]) is None


@pytest.mark.parametrize("key", sorted(SCENES))
def test_relative_depth_matches_depth_map(key):
    meta, cams, depth, ids = SCENES[key]
    names = [o["name"] for o in meta["objects"]]
    for t in (0, 4):
        for near, far in closer_pairs(meta, t):
            # Independent: box centres through the real pose, and the rendered depth of the boxes' pixels.
            z = {n: (cams[t] @ np.append(meta["objects"][names.index(n)]["center"], 1.0))[2] for n in (near, far)}
            assert z[far] - z[near] >= 0.5
            med = {n: np.median(depth[t][ids[t] == names.index(n) + 1]) for n in (near, far)}
            assert med[near] < med[far], (key, t, near, far, med)


def test_questions_for_scene_items():
    kinds_seen = set()
    for meta, *_ in SCENES.values():
        items = questions_for_scene(meta, np.random.default_rng(0))
        for item in items:
            kinds_seen.add(item.kind)
            assert 0 <= item.answer_index < len(item.options) and len(set(item.options)) == len(item.options)
            assert prompt_text(item).startswith(item.question) and all(o in prompt_text(item) for o in item.options)
            if item.kind == "camera_motion":
                assert sorted(item.options) == sorted(MOTION_OPTIONS)
                assert item.answer == camera_motion_direction(meta, 0, 7)
            elif item.kind == "object_count":
                assert item.answer == str(visible_box_count(meta, range(8)))
            else:
                assert item.answer in [f"the {near}" for near, _ in closer_pairs(meta, 0)]
    assert kinds_seen == {"camera_motion", "object_count", "relative_depth"}
    # Option order comes from the rng, so answer positions vary.
    meta = SCENES[(0, "truck")][0]
    positions = {questions_for_scene(meta, np.random.default_rng(s))[0].answer_index for s in range(20)}
    assert len(positions) > 1
    with pytest.raises(ValueError, match="increasing"):
        questions_for_scene(meta, np.random.default_rng(0), frames=[3, 1])


def test_question_words_are_in_the_tiny_vocabulary():
    from gasp.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer("tiny-qwen2.5-vl")
    for meta, *_ in SCENES.values():
        for item in questions_for_scene(meta, np.random.default_rng(1)):
            ids = tok(prompt_text(item) + " " + item.answer, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, prompt_text(item)
