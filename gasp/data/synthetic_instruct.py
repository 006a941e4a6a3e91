"""The tiny default's LM data: synthetic scenes written as LLaVA-Video-178K instruction data.

Shape vocabulary: T frames of a scene, F written frames.

Each scene becomes a frame folder `videos/<scene>/000.png ...` holding F frames sampled
uniformly in time (`np.linspace(0, T - 1, F)` rounded, as the loader samples), and its
spatial questions (`gasp.data.spatial_qa`, asked about exactly those frames) become records
of `instruct.json`:

    {"id": "<scene>/<kind>", "video": "videos/<scene>",
     "conversations": [{"from": "human", "value": "<video>\\n<question>\\noptions: a, b, c."},
                       {"from": "gpt", "value": "<option text>"}],
     "qa": {"kind": ..., "options": [...], "answer_index": ...},
     "geometry": {"scene": "<scene>", "frames": [the written frames' numbers in the scene]}}

One record per question (or, with `multi_turn`, one per scene with the questions as rounds).
The extra "qa" key is ignored by LLaVA-format loaders; option log-likelihood scoring reads it. "geometry"
ties the record to its scene in the tracks file it was made from, so the trainer can attach that scene's
depth and cameras to an instruction batch (PseudoGD's one-forward joint step).
The loader's uniform sampling keeps the first and the last frame for any frame count, so the
camera-motion (first -> last) and first-frame questions stay correct if it reads fewer frames.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from gasp.data.instruct import VIDEO_TOKEN, sample_indices, write_frame_folder
from gasp.data.spatial_qa import prompt_text, questions_for_scene
from tracks.types import Scene

logger = logging.getLogger(__name__)


def scenes_from_tracks(path: str | os.PathLike) -> Iterator[Scene]:
    """Every scene of a tracks file or folder of shards, in stored order."""
    from tracks.io import TrackReader

    with TrackReader(path) as reader:
        for name in reader.scene_names:
            yield reader.scene(name)


def render_scenes(num_scenes: int, seed: int, config=None) -> Iterator[Scene]:
    """Freshly rendered synthetic scenes, seeded as `make_synthetic_file` seeds them."""
    from tracks.synthetic import render_scene

    seeds = np.random.SeedSequence(seed).generate_state(num_scenes) if num_scenes > 0 else []
    for i in range(num_scenes):
        yield render_scene(int(seeds[i]), config, name=f"synth_{seed}_{i:05d}")


def _turn(human: str, gpt: str, first: bool) -> list[dict[str, str]]:
    return [{"from": "human", "value": (VIDEO_TOKEN + "\n" if first else "") + human},
            {"from": "gpt", "value": gpt}]


def write_synthetic_instruct(scenes: Iterable[Scene], out_dir: str | os.PathLike, num_frames: int = 8,
                             seed: int = 0, multi_turn: bool = False, metric: bool = False, vst: bool = False,
                             progress: Callable[[Iterable], Iterable] | None = None) -> Path:
    """Write frame folders and `out_dir/instruct.json`; returns the JSON path.

    Option order comes from `np.random.default_rng([seed, scene number])`, so it is
    reproducible and independent of how many scenes come before. ``metric`` adds the questions with metric
    answers (``gasp.data.metric_qa``, HiSpatial's Levels 0-2), one record each (their rng: [seed, scene, 1]);
    ``vst`` adds VST's appearance order and 3D boxes (``gasp.data.vst_qa``; rng [seed, scene, 2]). Every record's
    "qa" names the reward kind that scores it ("reward", ``gasp.rl.rewards``) and what it reads ("target").
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (the motion question needs two frames), got {num_frames}")
    out = Path(out_dir)
    records: list[dict] = []
    n_scenes = 0
    for i, scene in enumerate((progress or iter)(scenes)):
        if "camera_path" not in scene.metadata or "objects" not in scene.metadata:
            raise ValueError(f"scene {scene.name!r} has no synthetic metadata (camera_path, objects); "
                             "spatial questions need a scene made by tracks.synthetic")
        idx = sample_indices(scene.num_frames, num_frames)
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"scene {scene.name!r} has {scene.num_frames} frames, fewer than --frames {num_frames}")
        rel = f"videos/{scene.name}"
        write_frame_folder(scene.frames[idx], out / rel)
        items = questions_for_scene(scene.metadata, np.random.default_rng([seed, i]), frames=idx.tolist())
        geometry = {"scene": scene.name, "frames": [int(f) for f in idx]}
        n_scenes += 1
        if multi_turn and items:
            conv = [t for k, it in enumerate(items) for t in _turn(prompt_text(it), it.answer, k == 0)]
            records.append({"id": scene.name, "video": rel, "conversations": conv,
                            "qa": [_qa(it) for it in items], "geometry": geometry})
            continue
        for it in items:
            records.append({"id": f"{scene.name}/{it.kind}", "video": rel,
                            "conversations": _turn(prompt_text(it), it.answer, True), "qa": _qa(it),
                            "geometry": geometry})
        if metric:
            from gasp.data import metric_qa

            for it in metric_qa.metric_questions_for_scene(scene.metadata, np.random.default_rng([seed, i, 1]),
                                                           frames=idx.tolist()):
                qa = {"kind": it.kind, "question": it.question, "value": it.value, "options": list(it.options),
                      "answer_index": it.answer_index}
                qa.update(reward="numeric" if it.numeric else "choice",
                          target={"value": it.value} if it.numeric else
                          {"options": list(it.options), "answer_index": it.answer_index})
                records.append({"id": f"{scene.name}/{it.kind}", "video": rel,
                                "conversations": _turn(metric_qa.prompt_text(it), it.answer, True), "qa": qa,
                                "geometry": geometry})
        if vst:
            from gasp.data.vst_qa import vst_questions_for_scene

            for it in vst_questions_for_scene(scene.metadata, scene.cam_from_world, np.random.default_rng([seed, i, 2]),
                                              frames=idx.tolist()):
                records.append({"id": f"{scene.name}/{it.kind}", "video": rel,
                                "conversations": _turn(it.prompt(), it.answer, True),
                                "qa": {"kind": it.kind, "question": it.question, "reward": it.reward,
                                       "target": it.target}, "geometry": geometry})
            from gasp.data.vst_qa import correspondence_item

            corr = correspondence_item(scene, idx, np.random.default_rng([seed, i, 3]))
            if corr is not None:                        # a 2-image "video" of its own, drawn on
                images, it, pair = corr
                crel = f"videos/{scene.name}_corr"
                write_frame_folder(images, out / crel)
                records.append({"id": f"{scene.name}/{it.kind}", "video": crel,
                                "conversations": _turn(it.prompt(), it.answer, True),
                                "qa": {"kind": it.kind, "question": it.question, "reward": it.reward,
                                       "target": it.target}, "geometry": {"scene": scene.name, "frames": pair}})
    path = out / "instruct.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    logger.info("wrote %d records from %d scenes to %s", len(records), n_scenes, path)
    return path


def _qa(item) -> dict:
    return {"kind": item.kind, "question": item.question, "options": list(item.options),
            "answer_index": item.answer_index, "reward": "choice",
            "target": {"options": list(item.options), "answer_index": item.answer_index}}
