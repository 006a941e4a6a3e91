"""Spatial-QA accuracy by option log-likelihood (issue 5's downstream check; paper Sec. 5.5 analogue).

Questions come from the held-out scenes' metadata (`gasp.data.spatial_qa`: camera motion,
object count, which object is closer), asked about `num_frames` frames sampled uniformly
over the scene (`gasp.data.instruct.sample_indices`, as the instruction data is written).
Each option is scored by the model's summed log-likelihood of the option text (and the
end-of-turn token) as the assistant answer, the same tokens the LM loss trains
(`adapter.prepare_inputs(..., answer=...)` labels); the prediction is the argmax. No
generation. The blind row replaces every frame by a constant grey frame of the same
size, so the visual token count and the prompt are unchanged and only the pixels are gone.

Shape vocabulary: T scene frames, F shown frames, H x W pixels, L sequence length.
"""
from __future__ import annotations

import inspect

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gasp.data.instruct import sample_indices
from gasp.data.spatial_qa import KINDS, QAItem, prompt_text, questions_for_scene
from tracks.io import TrackReader

log = logging.getLogger(__name__)
GREY = 128
SEQ_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")  # inputs with a sequence axis (dim 1)


@dataclass
class QAQuestion:
    scene: str
    item: QAItem
    frames: np.ndarray          # (F, H, W, 3) uint8


def build_questions(tracks_path, num_frames: int = 8, seed: int = 0,
                    max_scenes: int | None = None) -> list[QAQuestion]:
    """Every unambiguous question of the (first `max_scenes`) scenes of a tracks file (options ordered by `seed`)."""
    out = []
    with TrackReader(tracks_path) as reader:
        for i, name in enumerate(reader.scene_names[:max_scenes]):
            scene = reader.scene(name)
            idx = sample_indices(scene.num_frames, num_frames)
            for item in questions_for_scene(scene.metadata, np.random.default_rng([seed, i]), frames=idx.tolist()):
                out.append(QAQuestion(name, item, scene.frames[idx]))
    return out


def _run(model, cache, inputs: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
    """Crop `cache` to its first `keep` tokens, run `inputs` on top; (n, V) float logits of the new tokens."""
    extra = cache.get_seq_length() - keep
    if extra:
        cache.crop(-extra)                            # transformers 5: a negative count of tokens to drop
    return model(**inputs, **{_cache_kwarg(model): cache}, use_cache=True).logits[0].float()


def _cache_kwarg(model) -> str:
    """The forward's name for a KV cache: transformers 5.25 renamed Gemma3's ``past_key_values`` to ``cache``
    (the old name warns, and goes in 5.40); the other families and older versions take ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model     # peft's forward is (*a, **kw)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _full_loglik(model, inputs: dict[str, torch.Tensor]) -> float:
    """Summed log-likelihood of the labelled tokens in one full forward."""
    logits = model(**inputs).logits[0, :-1].float()
    labels = inputs["labels"][0, 1:]
    keep = labels != -100
    return float(torch.log_softmax(logits[keep], dim=-1).gather(1, labels[keep, None]).sum())


@torch.no_grad()
def scene_logliks(model, processor, adapter, frames: np.ndarray, questions: list[tuple[str, tuple[str, ...]]],
                  size: tuple[int, int] | None, fps: float) -> list[list[float]]:
    """Summed log-likelihood of each option (as the assistant answer) of each (prompt, options) about `frames`.

    Every sequence starts with the same tokens (chat header and the frames' visual block), so
    that common prefix runs once, with the vision tower, into a KV cache; each question's
    prompt then runs on top of it, and each option's few tokens on top of that (the cache is
    cropped back in between). Continuation positions come from the model's cached M-RoPE
    offsets, as in generation. Equal to one full forward per option (tested).
    """
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    seqs = [[adapter.prepare_inputs(frames, processor_or_tokenizer=processor, prompt=p, answer=o, fps=fps,
                                    size=size)[0] for o in opts] for p, opts in questions]
    if not adapter.prefix_cache_exact:
        # A bidirectional prefix (PaliGemma) is not causal, so a cached prefix plus a causal
        # continuation is not the full forward: one forward per option instead.
        return [[_full_loglik(model, {k: v.to(dev) for k, v in x.items()}) for x in row] for row in seqs]
    flat = [x["input_ids"][0] for row in seqs for x in row]                     # each (L,)
    common = min(len(x) for x in flat)
    for x in flat[1:]:
        diff = (x[:common] != flat[0][:common]).nonzero()
        common = min(common, int(diff[0])) if len(diff) else common
    vis = [k for k in seqs[0][0] if k not in SEQ_KEYS and k != "labels"]
    first = seqs[0][0]
    visual = (first["mm_token_type_ids"][0] != 0).nonzero() if "mm_token_type_ids" in first else None
    if visual is not None and common <= int(visual[-1]):
        raise ValueError("the questions do not share the visual block; cannot score them on one cache")
    cache = DynamicCache()
    prefix = {**{k: first[k][:, :common] for k in SEQ_KEYS if k in first}, **{k: first[k] for k in vis}}
    head_last = _run(model, cache, {k: v.to(dev) for k, v in prefix.items()}, 0)[-1]   # predicts token `common`
    out = []
    for row in seqs:
        start = int((row[0]["labels"][0] != -100).nonzero()[0])                # first answer token
        if any(not torch.equal(x["input_ids"][0, :start], row[0]["input_ids"][0, :start]) for x in row):
            raise ValueError("the options of a question do not share its prompt")
        ids = row[0]["input_ids"][:, common:start].to(dev)
        last = _run(model, cache, {"input_ids": ids}, common)[-1] if start > common else head_last
        lls = []
        for x in row:
            labels = x["labels"][0, start:].to(dev)                             # (A,)
            logits = _run(model, cache, {"input_ids": x["input_ids"][:, start:].to(dev)}, start)[:-1]
            logp = torch.log_softmax(torch.cat([last[None], logits]), dim=-1)  # (A, V): predicts tokens start..
            keep = labels != -100
            lls.append(float(logp[keep].gather(1, labels[keep, None]).sum()))
        out.append(lls)
    return out


def score(model, processor, adapter, questions: list[QAQuestion], *, blind: bool = False,
          size: tuple[int, int] | None = None, fps: float = 2.0) -> dict[str, Any]:
    """Accuracy per kind and overall, plus each question's prediction (questions of a scene share a cache)."""
    model.eval()
    rows = []
    by_scene: dict[str, list[QAQuestion]] = {}
    for q in questions:
        by_scene.setdefault(q.scene, []).append(q)
    for scene, qs in by_scene.items():
        frames = np.full_like(qs[0].frames, GREY) if blind else qs[0].frames
        lls = scene_logliks(model, processor, adapter, frames, [(prompt_text(q.item), q.item.options) for q in qs],
                            size, fps)
        for q, ll in zip(qs, lls):
            pred = int(np.argmax(ll))
            rows.append({"scene": scene, "kind": q.item.kind, "pred": pred, "answer": q.item.answer_index,
                         "correct": pred == q.item.answer_index, "num_options": len(q.item.options)})
    return summarize(rows)


def summarize(rows: list[dict]) -> dict[str, Any]:
    res: dict[str, Any] = {"per_question": rows}
    for kind in (*KINDS, "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        res[kind] = {"accuracy": float(np.mean([r["correct"] for r in sel])) if sel else None,
                     "chance": float(np.mean([1 / r["num_options"] for r in sel])) if sel else None,
                     "n": len(sel)}
    return res
