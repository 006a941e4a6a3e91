"""Spatial QA with metric answers (HiSpatial, seed 002, Sec. 3.1), with and without frames and point map.

    python probes/metric_qa.py --model tiny-paligemma --adapter RUN/checkpoint-N/adapter --pointmap gt --out OUT

Questions (``gasp.data.metric_qa``: a box's depth, two boxes' distance, a box's height, which of two is closer)
come from held-out synthetic scenes' metadata (``--tracks``, gasp-rendered; default: ``--scenes`` scenes rendered
with seed 20000 + ``--seed``, never a training seed), asked about ``--frames`` frames sampled as the instruction
data samples them. No generation: a numeric answer is the model's most likely value of ``NUMBER_GRID`` (the
summed log-likelihood of the number as the answer, the tokens SFT trains), scored within 25 % (SpatialRGPT) and
50 % (QSpatial) relative error; a choice is the more likely option, scored by exact match (chance 0.5).

Conditions, so that "it reads the input" is measured: ``frames`` (the scene's frames) or ``grey`` (every frame
a constant grey, same size and token count), each with the point map (``--pointmap`` SOURCE) and, for an adapter
trained with one, without it (``none``: every pixel invalid). A model without a point-map branch has the frame
conditions only. OUT/metric_qa.json holds every answer, the summary per kind and condition, and the config.

Shape vocabulary: F shown frames, H x W pixels.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gasp.data.metric_qa import THRESHOLDS

log = logging.getLogger("probes.metric_qa")
GREY = 128


def answer_loglik(model, processor, adapter, frames: np.ndarray, prompt: str, answer: str, settings: dict,
                  pointmap: Callable | None, fusion) -> float:
    """Summed log-likelihood of ``answer`` as the assistant's answer (its labelled tokens); ``pointmap(layout)``
    gives the point map a model with a point-map branch (``fusion``) is fed."""
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=processor, prompt=prompt, answer=answer,
                                            **settings)
    dev = next(model.parameters()).device
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    n = int((inputs["labels"] != -100).sum())
    with torch.no_grad():
        if fusion is not None:
            with fusion.feeding(pointmap(layout), inputs):
                loss = model(**inputs).loss
        else:
            loss = model(**inputs).loss
    return -float(loss) * n


def evaluate(model, processor, adapter, scenes: list, settings: dict, num_frames: int, seed: int,
             pointmap: str | None, progress=None) -> dict[str, Any]:
    """Every question of ``scenes`` under every condition; returns {"rows": [...], "summary": {...}}."""
    from gasp.data import metric_qa
    from gasp.data.instruct import sample_indices
    from gasp.pointmap import batch_pointmap

    fusion = getattr(model, "gasp_pointmap", None)
    conds = [("frames", pointmap), ("grey", pointmap)]
    if fusion is not None and pointmap != "none":          # and without it (an H0 adapter's main condition is none)
        conds += [("frames", "none"), ("grey", "none")]
    rows = []
    items_all = []
    for i, scene in enumerate(scenes):
        idx = sample_indices(len(scene.frame_index), num_frames)
        seq = scene.without_points(idx)
        for it in metric_qa.metric_questions_for_scene(scene.metadata, np.random.default_rng([seed, i, 1]),
                                                       frames=idx.tolist()):
            items_all.append((scene, seq, it))
    it_iter = progress(items_all, desc="metric QA", unit="q") if progress else items_all
    for scene, seq, it in it_iter:
        cands = [f"{v:.1f}" for v in metric_qa.NUMBER_GRID] if it.numeric else list(it.options)
        for view, source in conds:
            frames = seq.frames if view == "frames" else np.full_like(seq.frames, GREY)

            def pm(layout, source=source):
                return batch_pointmap(source, seq, layout, adapter, seed=seed)

            scores = [answer_loglik(model, processor, adapter, frames, metric_qa.prompt_text(it), c, settings,
                                    pm if fusion is not None else None, fusion) for c in cands]
            pred = cands[int(np.argmax(scores))]
            rows.append({"scene": scene.name, "kind": it.kind, "question": it.question, "truth": it.answer,
                         "answer": pred, "view": view, "pointmap": source if fusion is not None else None,
                         **metric_qa.success(it, pred)})
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per condition and kind: n, success@0.25 / @0.5 (numbers) or accuracy with its chance 0.5 (choices), and the
    standard error of each rate. A numeric kind also gets its model-free reference, ``constant``: the success rates
    of answering every question of the kind with the median of their true values (an oracle constant: the best a
    model that ignores the input can hope for, roughly)."""
    out: dict[str, Any] = {}
    for r in rows:
        cond = r["view"] + ("" if r["pointmap"] is None else f"+pointmap:{r['pointmap']}")
        out.setdefault(cond, {}).setdefault(r["kind"], []).append(r)
    summary = {}
    for cond, kinds in out.items():
        summary[cond] = {}
        for kind, rs in kinds.items():
            keys = [k for k in ("@0.25", "@0.5", "exact") if k in rs[0]]
            entry = {"n": len(rs)}
            for k in keys:
                p = float(np.mean([r[k] for r in rs]))
                entry[k] = p
                entry[k + "_se"] = float(np.sqrt(p * (1 - p) / len(rs)))
            if "exact" in keys:
                entry["chance"] = 0.5
            else:
                truths = [float(r["truth"]) for r in rs]
                const = float(np.median(truths))
                entry["constant"] = {f"@{t:g}": float(np.mean([abs(const - v) <= t * abs(v) for v in truths]))
                                     for t in THRESHOLDS}
            summary[cond][kind] = entry
    return summary


def lines(summary: dict[str, Any]) -> list[str]:
    out = []
    for cond, kinds in summary.items():
        parts = []
        for kind, e in kinds.items():
            if "exact" in e:
                parts.append(f"{kind} {e['exact']:.2f} (chance 0.5, n {e['n']})")
            else:
                c = e["constant"]
                parts.append(f"{kind} {e['@0.25']:.2f}@25% {e['@0.5']:.2f}@50% (constant answer "
                             f"{c['@0.25']:.2f}/{c['@0.5']:.2f}, n {e['n']})")
        out.append(f"{cond}: " + "; ".join(parts))
    return out


def held_out_scenes(tracks: str | None, out: Path, n: int, seed: int) -> tuple[Path, list]:
    """The question scenes: ``tracks`` (gasp-rendered), or ``n`` scenes rendered once into OUT/scenes.h5 with
    ``seed`` (never a training seed). ValueError for a scene gasp did not render (its questions need the metadata)."""
    from tracks.io import TrackReader

    out.mkdir(parents=True, exist_ok=True)
    path = Path(tracks) if tracks else out / "scenes.h5"
    if not tracks and not path.exists():
        from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

        make_synthetic_file(path, n, seed=seed, grid=4, split="eval",
                            config=SyntheticSceneConfig(height=112, width=112, num_frames=26))
    with TrackReader(path) as reader:
        scenes = [reader.scene(name) for name in reader.scene_names]
    foreign = [s.name for s in scenes if s.metadata.get("generator") != "gasp.synthetic"]
    if foreign:
        raise ValueError(f"--tracks {path}: scene {foreign[0]!r} was not rendered by gasp; its questions need the "
                         "renderer's metadata")
    return path, scenes


def adapter_settings(adapter: str | None) -> dict:
    """The input settings an adapter was trained with (its gasp_input.json; the prompt is the question's)."""
    if not adapter:
        return {}
    from gasp.train.checkpoint import input_settings

    return {k: tuple(v) if isinstance(v, list) else v for k, v in (input_settings(adapter) or {}).items()
            if k not in ("model", "prompt")}


def main(argv: list[str] | None = None) -> int:
    from gasp.runinfo import run_info, write_text_atomic

    p = argparse.ArgumentParser(prog="metric_qa", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-paligemma")
    p.add_argument("--adapter")
    p.add_argument("--pointmap", choices=("gt", "reldepth", "noisy", "none"),
                   help="the point map of the main conditions (required for an adapter trained with one)")
    p.add_argument("--tracks", help="gasp-rendered scenes (default: --scenes rendered here, held out)")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames", type=int, default=4, help="frames shown per question")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/metric_qa"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gasp.models import load_model
    from gasp.models.loading import ModelNotFoundError, UnknownModelError, check_model
    from gasp.pointmap import pairing_error

    try:
        check_model(a.model, adapter=a.adapter)
    except (ModelNotFoundError, UnknownModelError) as e:
        p.error(str(e))
    if (why := pairing_error(a.adapter, a.pointmap)) is not None:
        p.error(why)
    try:
        tracks, scenes = held_out_scenes(a.tracks, a.out, a.scenes, 20_000 + a.seed)
    except ValueError as e:
        p.error(str(e))
    model, processor, adapter = load_model(a.model, adapter=a.adapter, seed=a.seed)
    settings = adapter_settings(a.adapter)
    try:
        from tqdm.auto import tqdm
    except ImportError:                                  # progress is optional
        tqdm = None
    res = evaluate(model, processor, adapter, scenes, settings, a.frames, a.seed, a.pointmap, tqdm)
    res["config"] = {**vars(a), "out": str(a.out), "tracks": str(tracks), "input_settings": settings}
    res.update(run_info())
    write_text_atomic(a.out / "metric_qa.json", json.dumps(res, indent=1, default=str) + "\n")
    for ln in lines(res["summary"]):
        print(ln)
    print(f"results: {a.out / 'metric_qa.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
