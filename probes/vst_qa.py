"""Spatial QA per task kind, scored by VST's rule rewards, with frames and with grey frames (seed 004).

    python probes/vst_qa.py --model tiny-qwen2.5-vl --adapter RUN/checkpoint-N/adapter --out OUT

Every question gasp asks of held-out rendered scenes (``gasp.rl.loop.scene_prompts``: camera motion, counting,
relative depth, a box's depth, distance and height, depth order, appearance order, 3D boxes), answered greedily
(``model.generate``, at most ``--max-new-tokens``), scored by its task kind's reward's R_acc (``gasp.rl.rewards``:
exact match, within 25 %, 0.5 R_IoU + 0.5 R_F1). Each question is asked with its frames and with constant grey
frames of the same size. Per question kind: the mean R_acc, its standard error, and chance (1/#options for a
choice; for a number, the R_acc of answering every question of the kind with the median of their true values, a
model-free constant; 0 for boxes), so that a stage's gain can be read against chance
± 2 SE (a gain inside it is no gain). OUT/vst_qa.json holds every answer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

GREY = 128


def greedy(model, adapter, tok, inputs: dict, max_new_tokens: int) -> str:
    stop = adapter._end_of_turn(tok)
    banned = sorted(set(tok.all_special_ids) - set(stop))
    with torch.no_grad():
        seq = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop,
                             suppress_tokens=banned,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop[0])
    return tok.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(model, tok, adapter, prompts: list, settings: dict, max_new_tokens: int = 48,
             progress=None) -> dict[str, Any]:
    from gasp.rl import rewards

    rows = []
    for p in (progress(prompts, desc="vst qa", unit="q") if progress else prompts):
        for view in ("frames", "grey"):
            frames = p.frames if view == "frames" else np.full_like(p.frames, GREY)
            inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt=p.text, **settings)
            text = greedy(model, adapter, tok, inputs, max_new_tokens)
            score = rewards.get(p.reward)().score(text, p.target)
            rows.append({"kind": p.kind, "reward": p.reward, "view": view, "question": p.text, "answer": text,
                         "acc": score["acc"], "format": score["format"], "target": p.target,
                         "chance": 1 / len(p.target["options"]) if p.reward == "choice" else 0.0})
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per view and question kind: n, the mean R_acc, its SE, chance (or a number's constant reference), format."""
    from gasp.rl import rewards

    summary: dict[str, Any] = {}
    for view in ("frames", "grey"):
        for kind in sorted({r["kind"] for r in rows}):
            rs = [r for r in rows if r["view"] == view and r["kind"] == kind]
            if not rs:
                continue
            acc = np.array([r["acc"] for r in rs])
            if rs[0]["reward"] == "numeric":          # the reference: every question answered with the median truth
                const = float(np.median([r["target"]["value"] for r in rs]))
                for r in rs:
                    r["chance"] = rewards.get("numeric")().score(f"{const:.1f}", r["target"])["acc"]
            summary.setdefault(view, {})[kind] = {
                "n": len(rs), "acc": float(acc.mean()), "se": float(acc.std(ddof=1) / np.sqrt(len(rs))) if len(rs) > 1
                else None, "chance": float(np.mean([r["chance"] for r in rs])),
                "format": float(np.mean([r["format"] for r in rs]))}
    return summary


def main(argv: list[str] | None = None) -> int:
    from gasp.runinfo import run_info, write_text_atomic

    p = argparse.ArgumentParser(prog="vst_qa", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-qwen2.5-vl")
    p.add_argument("--adapter")
    p.add_argument("--tracks", help="gasp-rendered scenes (default: --scenes rendered here with seed 30000 + --seed)")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/vst_qa"))
    a = p.parse_args(argv)
    from gasp.models import load_model
    from gasp.models.loading import ModelNotFoundError, UnknownModelError, check_model
    from gasp.rl.loop import scene_prompts

    try:
        check_model(a.model, adapter=a.adapter)
    except (ModelNotFoundError, UnknownModelError) as e:
        p.error(str(e))
    from probes.metric_qa import adapter_settings, held_out_scenes

    try:
        tracks, scenes = held_out_scenes(a.tracks, a.out, a.scenes, 30_000 + a.seed)
    except ValueError as e:
        p.error(str(e))
    model, tok, adapter = load_model(a.model, adapter=a.adapter, seed=a.seed)
    settings = adapter_settings(a.adapter)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    res = evaluate(model, tok, adapter, scene_prompts(scenes, a.frames, a.seed), settings, a.max_new_tokens, tqdm)
    res["config"] = {**vars(a), "out": str(a.out), "tracks": str(tracks), "input_settings": settings}
    res.update(run_info())
    write_text_atomic(a.out / "vst_qa.json", json.dumps(res, indent=1, default=str) + "\n")
    for view, kinds in res["summary"].items():
        print(f"{view}: " + "; ".join(f"{k} {e['acc']:.2f} (chance {e['chance']:.2f}, n {e['n']})"
                                      for k, e in kinds.items()))
    print(f"results: {a.out / 'vst_qa.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
