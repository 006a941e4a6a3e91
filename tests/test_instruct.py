"""LLaVA-Video-format instruction loader: records, frame sampling, validation and missing videos."""
from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from PIL import Image

from gasp.data import InstructionDataError, InstructionDataset

LEVELS = [10 * k + 5 for k in range(12)]  # frame k is a flat grey of this level


def _write_folder(folder, n=12, size=(40, 56)):
    folder.mkdir(parents=True)
    for k in range(n):
        Image.fromarray(np.full(size + (3,), LEVELS[k], np.uint8)).save(folder / f"{k:03d}.png")


def _write_video(path, n=12, size=(48, 64)):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full(size + (3,), LEVELS[k] * 2, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _record(rid, video, question="<video>\nwhat moves", answer="the camera", more=()):
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    for h, g in more:
        conv += [{"from": "human", "value": h}, {"from": "gpt", "value": g}]
    return {"id": rid, "video": video, "conversations": conv}


def _write_json(path, records):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_frame_folder_record(tmp_path, suffix):
    _write_folder(tmp_path / "videos" / "s0")
    path = _write_json(tmp_path / f"data{suffix}", [
        _record("r0", "videos/s0", more=[("is it red", "no"), ("how many", "two")])])
    ds = InstructionDataset(path, tmp_path, num_frames=4)
    assert len(ds) == 1
    ex = ds[0]
    assert ex.id == "r0" and ex.prompt == "what moves" and ex.answer == "the camera"
    assert ex.turns == [("is it red", "no"), ("how many", "two")]
    assert ex.frames.shape == (4, 40, 56, 3) and ex.frames.dtype == np.uint8
    # Uniform over 12 frames: linspace(0, 11, 4) = 0, 3.67, 7.33, 11 -> 0, 4, 7, 11.
    assert ex.frame_indices.tolist() == [0, 4, 7, 11]
    assert ex.frames[:, 0, 0, 0].tolist() == [LEVELS[k] for k in (0, 4, 7, 11)]


def test_short_clip_repeats_frames(tmp_path):
    _write_folder(tmp_path / "v", n=3)
    ds = InstructionDataset(_write_json(tmp_path / "d.json", [_record("a", "v")]), tmp_path, num_frames=5)
    assert ds[0].frame_indices.tolist() == [0, 0, 1, 2, 2]


def test_video_file_record(tmp_path):
    _write_video(tmp_path / "clip.mp4")
    ds = InstructionDataset(_write_json(tmp_path / "d.json", [_record("v0", "clip.mp4")]), tmp_path, num_frames=3)
    ex = ds[0]
    assert ex.frames.shape == (3, 48, 64, 3) and ex.frames.dtype == np.uint8
    assert ex.frame_indices.tolist() == [0, 6, 11]
    means = ex.frames.reshape(3, -1).mean(1)
    assert np.allclose(means, [2 * LEVELS[k] for k in (0, 6, 11)], atol=6)  # lossy codec


def test_missing_pyav_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    ds = InstructionDataset(_write_json(tmp_path / "d.json", [_record("v0", "clip.mp4")]), tmp_path)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install gasp\[video\]"):
        ds[0]


def test_missing_video_is_logged_and_skipped(tmp_path, caplog):
    _write_folder(tmp_path / "ok")
    path = _write_json(tmp_path / "d.json", [_record("good", "ok"), _record("gone", "nowhere"),
                                             _record("gone2", "nowhere.mp4")])
    ds = InstructionDataset(path, tmp_path, num_frames=2)
    with caplog.at_level(logging.WARNING, logger="gasp.data.instruct"):
        assert ds[1] is None and ds[2] is None and ds[1] is None
    assert ds[0] is not None
    assert ds.missing == 3 and ds.skipped_ids == ["gone", "gone2"]
    assert "gone" in caplog.text and "nowhere" in caplog.text


def test_unreadable_video_is_skipped(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    ds = InstructionDataset(_write_json(tmp_path / "d.json", [_record("bad", "bad.mp4")]), tmp_path)
    pytest.importorskip("av")
    assert ds[0] is None and ds.unreadable == 1 and ds.skipped_ids == ["bad"]


@pytest.mark.parametrize("question,later,match", [
    ("what moves", (), "0 <video> placeholder"),
    ("<video>\n<video>\nwhat moves", (), "2 <video> placeholder"),
    ("what moves", [("<video> and now", "ok")], "1 <video> placeholder.*first human turn"),
    ("<video> what", [("again <video>", "ok")], "2 <video> placeholder"),
])
def test_placeholder_count_mismatch(tmp_path, question, later, match):
    path = _write_json(tmp_path / "d.json", [_record("fine", "v"), _record("bad-7", "v", question, more=later)])
    with pytest.raises(InstructionDataError, match=match) as err:
        InstructionDataset(path, tmp_path)
    assert "bad-7" in str(err.value) and "d.json" in str(err.value)


def test_placeholder_in_answer_is_rejected(tmp_path):
    path = _write_json(tmp_path / "d.json", [_record("x", "v", answer="see <video>")])
    with pytest.raises(InstructionDataError, match="2 <video> placeholder"):
        InstructionDataset(path, tmp_path)


def test_several_videos_rejected(tmp_path):
    rec = _record("multi", "a")
    rec["video"] = ["a", "b"]
    with pytest.raises(InstructionDataError, match="2 videos.*multi|multi.*2 videos"):
        InstructionDataset(_write_json(tmp_path / "d.json", [rec]), tmp_path)


@pytest.mark.parametrize("roles", [["gpt", "human"], ["human", "human", "gpt", "gpt"], ["human"],
                                   ["human", "gpt", "human"]])
def test_turns_must_alternate(tmp_path, roles):
    conv = [{"from": r, "value": ("<video> q" if k == 0 else "t")} for k, r in enumerate(roles)]
    path = _write_json(tmp_path / "d.json", [{"id": "alt", "video": "v", "conversations": conv}])
    with pytest.raises(InstructionDataError, match="alt") as err:
        InstructionDataset(path, tmp_path)
    assert any(w in str(err.value) for w in ("alternate", "at least", "ends with a human"))


def test_bad_files(tmp_path):
    with pytest.raises(InstructionDataError, match="does not exist"):
        InstructionDataset(tmp_path / "nope.json", tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InstructionDataError, match="not valid JSON"):
        InstructionDataset(tmp_path / "broken.json", tmp_path)
    (tmp_path / "obj.json").write_text('{"video": "v"}')
    with pytest.raises(InstructionDataError, match="list of record"):
        InstructionDataset(tmp_path / "obj.json", tmp_path)


def test_example_feeds_the_adapter(tmp_path):
    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

    _write_folder(tmp_path / "s", size=(56, 56))
    ds = InstructionDataset(_write_json(tmp_path / "d.json", [_record("e", "s", answer="the camera moves left")]),
                            tmp_path, num_frames=2)
    tok = build_tiny_tokenizer("tiny-qwen2-vl")
    inputs, layout = ds[0].adapter_inputs(get_adapter(build_tiny_config("tiny-qwen2-vl", tok)), tok)
    labels = inputs["labels"][0]
    assert tok.decode(labels[labels != -100][:-1]) == "the camera moves left"
    assert layout.num_grids == 2


# ---- synthetic scenes written in this format (the tiny default's LM data) ----------------------
def test_synthetic_instruct_roundtrip(tmp_path):
    from gasp.data.spatial_qa import QAItem, closer_pairs, prompt_text, questions_for_scene
    from gasp.data.synthetic_instruct import scenes_from_tracks, write_synthetic_instruct
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    tracks = tmp_path / "t.h5"
    make_synthetic_file(tracks, 2, seed=3, config=SyntheticSceneConfig(height=56, width=56, num_frames=12), grid=2)
    path = write_synthetic_instruct(scenes_from_tracks(tracks), tmp_path / "out", num_frames=4, seed=5)
    records = json.loads(path.read_text())
    scenes = {s.name: s for s in scenes_from_tracks(tracks)}
    assert {r["video"] for r in records} == {f"videos/{n}" for n in scenes}
    ds = InstructionDataset(path, tmp_path / "out", num_frames=4)
    assert len(ds) == len(records) >= 4
    for k, rec in enumerate(records):
        ex = ds[k]
        scene = scenes[rec["video"].split("/")[1]]
        shown = [0, 4, 7, 11]  # linspace(0, 11, 4) rounded
        np.testing.assert_array_equal(ex.frames, scene.frames[shown])  # PNG is lossless
        truth = {q.kind: q for q in questions_for_scene(scene.metadata, np.random.default_rng(0), frames=shown)}
        qa = rec["qa"]
        q = truth[qa["kind"]]
        assert ex.prompt == prompt_text(QAItem(q.question, tuple(qa["options"]), qa["answer_index"], q.kind))
        assert ex.answer == qa["options"][qa["answer_index"]]
        if q.kind == "relative_depth":  # the pair is drawn from the rng; it must be a valid (near, far) pair
            near = ex.answer[len("the "):]
            far = [o for o in qa["options"] if o != ex.answer][0][len("the "):]
            assert (near, far) in closer_pairs(scene.metadata, 0)
        else:
            assert ex.answer == q.answer
    assert ds.missing == 0


def test_make_synthetic_instruct_script(tmp_path):
    from gasp_cli import make_synthetic_instruct as mod
    out = tmp_path / "o"
    assert mod.main(["--scenes", "2", "--seed", "1", "--out", str(out), "--size", "56", "--scene-frames", "6",
                     "--frames", "3", "--multi-turn"]) == 0
    records = json.loads((out / "instruct.json").read_text())
    assert len(records) == 2 and all(len(r["conversations"]) == 2 * len(r["qa"]) for r in records)
    ds = InstructionDataset(out / "instruct.json", out, num_frames=3)
    ex = ds[0]
    assert ex.frames.shape == (3, 56, 56, 3) and len(ex.turns) == len(records[0]["qa"]) - 1
    made_by = json.loads((out / "made_by.json").read_text())
    assert made_by["args"]["scenes"] == 2 and "git_sha" in made_by
    assert mod.main(["--scenes", "1", "--out", str(tmp_path / "e"), "--scene-frames", "3", "--frames", "4"]) == 2
    # Rewriting with fewer frames leaves no stale frames behind.
    assert mod.main(["--scenes", "2", "--seed", "1", "--out", str(out), "--size", "56", "--scene-frames", "6",
                     "--frames", "2"]) == 0
    assert sorted(p.name for p in (out / records[0]["video"]).iterdir()) == ["000.png", "001.png"]
