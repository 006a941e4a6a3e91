"""Correspondence VQA (paper Sec. 5.4 fairness baseline): marks, labels and answers against the tracks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gasp.data import InstructionDataset
from gasp.data.correspondence_vqa import (
    LABEL_COLOR, LETTERS, OUTLINE_COLOR, QUERY_COLOR, DrawStyle, label_box, make_samples, pixel_of, render_label,
    write_correspondence_vqa,
)
from tracks.types import TrackSequence

H, W, F, N = 96, 128, 4, 60


def _sequence(seed=0, visible_fraction=0.6):
    rng = np.random.default_rng(seed)
    # Dark noise frames: no pixel is ever exactly the marker or label colour by chance.
    frames = rng.integers(0, 200, (F, H, W, 3), dtype=np.uint8)
    tracks = np.stack([rng.uniform(-0.5, W - 0.5, (F, N)), rng.uniform(-0.5, H - 0.5, (F, N))], -1).astype(np.float32)
    visible = rng.random((F, N)) < visible_fraction
    return TrackSequence(frames=frames, depth=np.ones((F, H, W), np.float32), K=np.tile(np.eye(3), (F, 1, 1)),
                         cam_from_world=np.tile(np.eye(4), (F, 1, 1)), frame_index=np.arange(F) * 5 + 100,
                         tracks=tracks, visible=visible, track_depth=np.ones((F, N), np.float32), query_frame=0,
                         scene="s", key="t:seq", grid=0)


def _disk_ok(image, xy, style, color):
    cx, cy = pixel_of(xy)
    assert tuple(image[cy, cx]) == tuple(color)
    for dx in (-style.radius, style.radius):  # disk edge, then the 1-px outline ring (never under a tile)
        if 0 <= cx + dx < W:
            assert tuple(image[cy, cx + dx]) == tuple(color)
        ring = cx + dx + int(np.sign(dx))
        if 0 <= ring < W:
            assert tuple(image[cy, ring]) == tuple(OUTLINE_COLOR)


def test_pixel_convention():
    # (0, 0) is the centre of the top-left pixel, which covers [-0.5, 0.5).
    assert pixel_of([[-0.5, 0.49], [0.5, 12.7], [3.49, 3.5]]).tolist() == [[0, 0], [1, 13], [3, 4]]


def test_choice_samples_mark_the_right_pixels():
    seq = _sequence()
    samples = make_samples(seq, np.random.default_rng(1), "choice", count=12)
    assert len(samples) == 12
    style = DrawStyle.for_image(H, W)
    answers = set()
    for s in samples:
        info = s.info
        i = info["point"]
        a, b = 0, int(np.flatnonzero(seq.frame_index == info["frames"][1])[0])
        assert b != a and seq.visible[a, i] and seq.visible[b, i]  # only points seen in both frames are asked
        img1, img2 = s.images
        # Image 1: the query marker on the query point, nothing else changed.
        _disk_ok(img1, seq.tracks[a, i], style, QUERY_COLOR)
        cx, cy = pixel_of(seq.tracks[a, i])
        far = np.hypot(*np.meshgrid(np.arange(W) - cx, np.arange(H) - cy)) > style.radius + 1.5
        np.testing.assert_array_equal(img1[far], seq.frames[a][far])
        # Image 2: the answer's label disk sits on the ground-truth track position.
        assert s.answer == LETTERS[info["answer_index"]] and s.kind == "choice"
        assert info["option_points"][info["answer_index"]] == i
        np.testing.assert_allclose(info["option_xy"][info["answer_index"]], seq.tracks[b, i])
        untouched = np.ones((H, W), bool)
        for o, (p, xy, box) in enumerate(zip(info["option_points"], info["option_xy"], info["label_boxes"])):
            assert seq.visible[b, p]  # distractors are visible points too
            np.testing.assert_allclose(xy, seq.tracks[b, p])
            _disk_ok(img2, xy, style, LABEL_COLOR)
            if p != i:
                assert np.linalg.norm(np.subtract(xy, seq.tracks[b, i])) >= style.min_distance
            # The tile next to the disk shows this option's letter and no other.
            assert tuple(box) == label_box(xy, style, H, W)
            x0, y0, x1, y1 = box
            crop = img2[y0:y1, x0:x1]
            matches = [L for L in LETTERS if np.array_equal(crop, render_label(L, style.label))]
            assert matches == [LETTERS[o]]
            untouched[y0:y1, x0:x1] = False
            qx, qy = pixel_of(xy)
            r = style.radius + 1
            untouched[max(qy - r, 0):qy + r + 1, max(qx - r, 0):qx + r + 1] = False
        np.testing.assert_array_equal(img2[untouched], seq.frames[b][untouched])
        answers.add(s.answer)
    assert len(answers) > 1  # the answer letter is shuffled


def test_letter_tiles_differ():
    tiles = [render_label(L, 11) for L in LETTERS]
    assert all(not np.array_equal(tiles[p], tiles[q]) for p in range(4) for q in range(p + 1, 4))


def test_coords_answer_is_rounded_track():
    seq = _sequence(2)
    samples = make_samples(seq, np.random.default_rng(3), "coords", count=10)
    assert len(samples) == 10
    style = DrawStyle.for_image(H, W)
    for s in samples:
        i = s.info["point"]
        b = int(np.flatnonzero(seq.frame_index == s.info["frames"][1])[0])
        assert seq.visible[0, i] and seq.visible[b, i]
        x, y = np.floor(seq.tracks[b, i] + 0.5).astype(int)
        assert s.answer == f"[{x}, {y}]"
        assert 0 <= x < W and 0 <= y < H
        _disk_ok(s.images[0], seq.tracks[0, i], style, QUERY_COLOR)
        np.testing.assert_array_equal(s.images[1], seq.frames[b])  # image 2 is left unmarked


def test_too_few_visible_points_gives_no_sample():
    seq = _sequence(4)
    seq.visible[:] = False
    seq.visible[:, :2] = True  # two points: a question needs the truth and three distractors
    assert make_samples(seq, np.random.default_rng(0), "choice", count=2) == []
    assert len(make_samples(seq, np.random.default_rng(0), "coords", count=2)) == 2
    with pytest.raises(ValueError, match="kind"):
        make_samples(seq, np.random.default_rng(0), "xy")


def test_written_records_load(tmp_path):
    seqs = [_sequence(5), _sequence(6)]
    path = write_correspondence_vqa(seqs, tmp_path, kind="both", per_sequence=2, seed=0)
    records = json.loads(path.read_text())
    assert [r["vqa"]["kind"] for r in records] == ["choice"] * 2 + ["coords"] * 2 + ["choice"] * 2 + ["coords"] * 2
    ds = InstructionDataset(path, tmp_path, num_frames=None)
    for k, rec in enumerate(records):
        ex = ds[k]
        assert ex.frames.shape == (2, H, W, 3) and ex.answer == rec["conversations"][1]["value"]
        assert ex.prompt.startswith("which labeled point" if rec["vqa"]["kind"] == "choice" else "give the pixel")
        if rec["vqa"]["kind"] == "choice":
            x, y = pixel_of(rec["vqa"]["option_xy"][rec["vqa"]["answer_index"]])
            assert tuple(ex.frames[1, y, x]) == LABEL_COLOR
    # Reproducible from the seed.
    again = write_correspondence_vqa(seqs, tmp_path / "again", kind="both", per_sequence=2, seed=0)
    assert json.loads(again.read_text()) == records


def test_vqa_text_is_in_the_tiny_vocabulary():
    from gasp.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer("tiny-qwen2.5-vl")
    for kind in ("choice", "coords"):
        s = make_samples(_sequence(7), np.random.default_rng(0), kind)[0]
        ids = tok(s.question + " " + s.answer, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, s.question


def test_script_on_synthetic_tracks(tmp_path):
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    tracks = tmp_path / "t.h5"
    make_synthetic_file(tracks, 1, seed=0, config=SyntheticSceneConfig(height=80, width=80, num_frames=10), grid=8)
    from gasp_cli import make_correspondence_vqa as mod
    out = tmp_path / "o"
    assert mod.main(["--tracks", str(tracks), "--out", str(out), "--kind", "coords", "--per-sequence", "3"]) == 0
    records = json.loads((out / "instruct.json").read_text())
    assert len(records) == 3 and all(r["vqa"]["kind"] == "coords" for r in records)
    made_by = json.loads((out / "made_by.json").read_text())
    assert made_by["args"]["kind"] == "coords" and "git_sha" in made_by
    assert mod.main(["--tracks", str(tmp_path / "none.h5"), "--out", str(out)]) == 2
