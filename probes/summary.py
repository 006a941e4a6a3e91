"""results.json from a probe's stored records (paper Fig. 3 numbers, references, TAP-Vid's δ metrics).

A record is one sequence, or one query-frame group of a sequence whose points were queried in
different frames (``attrs["parent"]`` names the sequence). Groups are pooled into their
sequence before anything is averaged over sequences.

Shapes: L layers, F' frames other than the query frame, Q points of a sequence, S sequences.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from gasp.runinfo import run_info
from probes import metrics
from probes.config import DTS, ProbeConfig, ProbeError, layer_kind_fields
from probes.results import peak_layer_index


def delta_key(d: float) -> str:
    """results.h5 array name of the per-point correctness at an extra threshold, e.g. correct_d4."""
    return f"correct_d{float(d):g}".replace(".", "p")


def _layer_results(arrays: dict[str, np.ndarray], key: str = "correct") -> list[metrics.LayerResult]:
    valid, dt = torch.from_numpy(arrays["valid"]), torch.from_numpy(arrays["dt"])
    correct, conf = torch.from_numpy(arrays[key]), torch.from_numpy(arrays["conf"])
    return [metrics.LayerResult(correct=correct[i], conf=conf[i], valid=valid, pred_rc=torch.empty(0), dt=dt)
            for i in range(correct.shape[0])]


def by_sequence(done: dict[str, dict], keys: list[str]) -> dict[str, list[str]]:
    """Record keys grouped by the sequence they belong to (a record's ``parent``, else itself), in key order."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(str(done[k]["attrs"].get("parent", k)), []).append(k)
    return groups


def _sequence_results(done: dict[str, dict], records: list[str], key: str = "correct") -> list[metrics.LayerResult]:
    """One sequence's per-layer results, its query-frame groups' records pooled (``metrics.merge_results``)."""
    per = [_layer_results(done[r]["arrays"], key) for r in records]
    return [metrics.merge_results([p[i] for p in per]) for i in range(len(per[0]))]


def tapvid_block(cfg: ProbeConfig, done: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, Any] | None:
    """results.json's TAP-Vid δ metrics: per layer, each video's fraction averaged over videos."""
    from probes import tapvid_metrics as tv

    if not all("within_px" in done[r]["arrays"] for recs in groups.values() for r in recs):
        return None
    per_video = []
    for recs in groups.values():
        within = np.concatenate([done[r]["arrays"]["within_px"] for r in recs], -1)      # (L, F', Q)
        valid = np.concatenate([done[r]["arrays"]["valid"] for r in recs], -1)           # (F', Q)
        per_video.append(tv.video_fractions(within, valid))
    res = tv.summarize_videos(per_video)
    res["occlusion"] = occlusion_block(cfg, done, groups)
    res.update(refine=cfg.refine, refine_radius_tokens=tv.REFINE_RADIUS if cfg.refine == "softargmax" else 0,
               convention="DiffTrack zero-shot: every point predicted visible; positions scaled to 256x256, "
                          "strict <, per video then mean over videos (tapnet compute_tapvid_metrics)")
    return res


def selection_block(res: dict[str, Any], done: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, Any]:
    """DiffTrack's layer (and head) choice: the harmonic mean of matching accuracy (PCK), confidence (eq. 13's
    max softmax) and attention score (cross-frame attention mass), each min-max normalised across layers
    (with ``--heads per-head``, also across layer x head: ``per_head``).

    Confidence and attention score are means over each sequence's valid predictions, then over
    sequences, as PCK is. A score equal everywhere normalises to 1; the harmonic mean floors each
    normalised score at 1e-8, so an entry that is worst on any one of them scores about 0.
    """
    if not all("mass" in done[r]["arrays"] for rs in groups.values() for r in rs):
        return {"reason": "records written before the selection scores existed; probe into a fresh --out"}

    def per_entry(name: str) -> np.ndarray:
        seqs = []
        for rs in groups.values():
            x = np.concatenate([done[r]["arrays"][name] for r in rs], -1)            # (L, [H,] F', Q)
            v = np.concatenate([done[r]["arrays"]["valid"] for r in rs], -1)         # (F', Q)
            if v.any():
                seqs.append((x * v).sum((-2, -1)) / v.sum())
        return np.mean(seqs, 0) if seqs else np.full(x.shape[:-2], np.nan)

    out: dict[str, Any] = {"rule": "harmonic mean of accuracy (PCK), confidence and attention score, each min-max "
                                   "normalised across layers (DiffTrack)"}
    acc = np.array([np.nan if v is None else v for v in res["pck_mean"]], dtype=float)
    chosen = _harmonic_choice({"accuracy": acc, "confidence": per_entry("conf"), "attention_score": per_entry("mass")})
    if chosen is None:
        return {**out, "reason": "a layer has no valid prediction"}
    out.update(chosen, layer=res["layers"][chosen["index"]], layer_index=chosen.pop("index"))
    if "pck_head" in res and all("mass_head" in done[r]["arrays"] for rs in groups.values() for r in rs):
        acc_h = np.array([[np.nan if v is None else v for v in row] for row in res["pck_head"]], dtype=float)
        ph = _harmonic_choice({"accuracy": acc_h, "confidence": per_entry("conf_head"),
                               "attention_score": per_entry("mass_head")})
        if ph is not None:
            li, hi = np.unravel_index(ph.pop("index"), acc_h.shape)
            out["per_head"] = {**ph, "layer": res["layers"][int(li)], "layer_index": int(li), "head": int(hi)}
    return out


def _harmonic_choice(scores: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Min-max normalise each score over all its entries, take the harmonic mean, and the best flat index."""
    if not all(np.isfinite(s).all() for s in scores.values()):
        return None
    norm = {}
    for name, x in scores.items():
        span = x.max() - x.min()
        norm[name] = (x - x.min()) / span if span > 0 else np.ones_like(x)
    hm = 3.0 / sum(1.0 / np.maximum(n, 1e-8) for n in norm.values())
    return {**{k: v.tolist() for k, v in scores.items()}, "normalised": {k: v.tolist() for k, v in norm.items()},
            "harmonic_mean": hm.tolist(), "index": int(np.argmax(hm))}


def viewpoint_block(cfg: ProbeConfig, done: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, Any]:
    """results.json's PCK by camera rotation (probes/viewpoint.py), or why no sequence could be binned."""
    from probes import viewpoint

    recs = [{"correct": done[r]["arrays"]["correct"], "valid": done[r]["arrays"]["valid"],
             "angles": done[r]["arrays"].get("view_angle"), "key": seq,
             "why": done[r]["attrs"].get("view_why", "its record was written before viewpoint bins existed")}
            for seq, rs in groups.items() for r in rs]
    return viewpoint.summarize(recs, cfg.viewpoint_bins)


def occlusion_block(cfg: ProbeConfig, done: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, Any]:
    """AJ and OA per layer under DiffTrack's all-visible rule (every video) and under the model's confidence
    (threshold per layer chosen on probe-train scenes, scored on held-out ones; probes/tapvid_metrics.py)."""
    from probes import tapvid_metrics as tv
    from probes.depth_split import split_scenes

    if not all("occluded" in done[r]["arrays"] for recs in groups.values() for r in recs):
        return {"reason": "records written before occlusion metrics existed; probe into a fresh --out"}
    videos = []
    for seq, recs in groups.items():
        cat = lambda name: np.concatenate([done[r]["arrays"][name] for r in recs], -1)  # noqa: E731
        videos.append({"scene": str(done[recs[0]]["attrs"].get("scene", seq)), "within": cat("within_px"),
                       "visible": cat("valid"), "occluded": cat("occluded"), "conf": cat("conf")})

    def score(vs, pred):
        return tv.summarize_occlusion([tv.video_occlusion(v["within"], v["visible"], v["occluded"], p)
                                       for v, p in zip(vs, pred)])

    every = [np.ones_like(v["within"], dtype=bool) for v in videos]
    out: dict[str, Any] = {"all_visible": score(videos, every)}
    scenes = list(dict.fromkeys(v["scene"] for v in videos))         # order of first appearance
    held_scenes, train_scenes = split_scenes(scenes, cfg.seed, cfg.depth_holdout)
    held = set(held_scenes)
    train = [v for v in videos if v["scene"] not in held]
    test = [v for v in videos if v["scene"] in held]
    split = {"rule": "the depth probe's: a seeded permutation of the scenes, the first depth_holdout held out",
             "seed": cfg.seed, "holdout": cfg.depth_holdout, "train_scenes": train_scenes,
             "held_out_scenes": held_scenes}
    if not train:
        out["confidence"] = {"reason": f"{len(scenes)} scene(s): none left to choose the threshold on", "split": split}
        return out
    thr = tv.choose_thresholds([v["conf"] for v in train], [v["visible"] for v in train],
                               [v["occluded"] for v in train])
    pred = [v["conf"] >= thr[:, None, None] for v in test]
    out["confidence"] = {**score(test, pred), "threshold": [None if not np.isfinite(t) else float(t) for t in thr],
                         "split": split}
    out["all_visible_held_out"] = score(test, [np.ones_like(v["within"], dtype=bool) for v in test])
    return out


def summarize(cfg: ProbeConfig, layers: list[int], done: dict[str, dict], skipped: list[str],
              layer_kinds: list[str] | None = None) -> dict[str, Any]:
    """results.json content from every finished record (sorted by key, so order-independent).

    Records of one sequence's query-frame groups (TAP-Vid) are pooled into that sequence
    before anything is averaged over sequences.
    """
    keys = sorted(k for k, r in done.items() if not r["attrs"].get("skipped", False))
    if not keys:
        raise ProbeError("no sequence had a point visible in two frames; nothing to report")
    groups = by_sequence(done, keys)
    s = metrics.summarize([_sequence_results(done, recs) for recs in groups.values()], DTS)
    nn = metrics.nan_to_none
    res: dict[str, Any] = {
        "model": cfg.model, "adapter": cfg.adapter, "layers": layers, "delta": cfg.delta, "rope": cfg.rope,
        "heads": cfg.heads, "match": cfg.match, "bidirectional": cfg.bidirectional, "frames_mode": cfg.frames_mode,
        "pck_mean": nn(s["pck_mean"]), "pck_std": nn(s["pck_std"]), "rho": nn(s["rho"]),
        "dt": list(DTS), "dt_pck": nn(s["dt_pck"]), "dt_norm": nn(s["dt_norm"]),
        "num_sequences": s["num_sequences"], "num_points": s["num_points"],
        "num_predictions": s["num_predictions"], "sequences": keys, "skipped_sequences": sorted(skipped),
        "per_sequence": {"pck": nn(s["pck_seq"]), "rho": nn(s["rho_seq"])},
        **layer_kind_fields(layers, layer_kinds),
    }
    if len(groups) != len(keys):
        res["sequence_groups"] = groups              # sequence -> its query-frame records (per-point query frames)
    if cfg.extra_deltas:                     # one curve per threshold, the first (delta) included
        res["pck_at"] = {f"{float(cfg.delta):g}": {"pck_mean": res["pck_mean"], "pck_std": res["pck_std"],
                                                   "dt_pck": res["dt_pck"]}}
    for d in cfg.extra_deltas:
        sd = metrics.summarize([_sequence_results(done, recs, delta_key(d)) for recs in groups.values()], DTS)
        res.setdefault("pck_at", {})[f"{float(d):g}"] = {"pck_mean": nn(sd["pck_mean"]), "pck_std": nn(sd["pck_std"]),
                                                        "dt_pck": nn(sd["dt_pck"])}
    if cfg.pck_px and all("correct_px" in done[k]["arrays"] for k in keys):
        sp = metrics.summarize([_sequence_results(done, recs, "correct_px") for recs in groups.values()], DTS)
        res["pck_px"] = {"threshold_px": cfg.pck_px, "eval_size_hw": list(cfg.pck_px_size), "positions": cfg.refine,
                         "rule": "strict <, on points visible in the query frame and in frame k",
                         "pck_mean": nn(sp["pck_mean"]), "pck_std": nn(sp["pck_std"])}
    if all("correct_feat" in done[k]["arrays"] for k in keys):
        sf = metrics.summarize([_sequence_results(done, recs, "correct_feat") for recs in groups.values()], DTS)
        res["feature_pck"] = {"layers": done[keys[0]]["arrays"]["feat_layers"].tolist(),
                              "matching": "cosine of the features themselves (eq. 10 with one head), argmax token",
                              "pck_mean": nn(sf["pck_mean"]), "pck_std": nn(sf["pck_std"])}
    if all("correct_head" in done[k]["arrays"] for k in keys):
        sh = metrics.summarize([_sequence_results(done, recs, "correct_head") for recs in groups.values()], DTS)
        res["pck_head"] = nn(sh["pck_mean"])                                  # (L, H)
    if all("reference" in done[k]["arrays"] for k in keys):
        ref = np.stack([_pooled_reference(done, recs) for recs in groups.values()])      # (S, 2)
        if np.isfinite(ref).all(1).any():
            # model-free PCK@delta, mean over sequences like pck_mean (figure 3's reference lines)
            res["references"] = dict(zip(("uniform", "same_position"), np.nanmean(ref, 0).tolist()))
    res["viewpoint"] = viewpoint_block(cfg, done, groups)
    res["selection"] = selection_block(res, done, groups)
    tapvid = tapvid_block(cfg, done, groups)
    if tapvid is not None:
        res["tapvid"] = tapvid
    res["peak_layer"] = layers[peak_layer_index(res)] if any(v is not None for v in res["pck_mean"]) else None
    res["config"] = dataclasses.asdict(cfg)
    res.update(run_info())
    return res


def _pooled_reference(done: dict[str, dict], records: list[str]) -> np.ndarray:
    """(2,) uniform and same-position PCK of one sequence, its groups weighted by their valid predictions."""
    if len(records) == 1:
        return done[records[0]]["arrays"]["reference"]
    n = np.array([done[r]["arrays"]["valid"].sum() for r in records], dtype=np.float64)
    ref = np.stack([done[r]["arrays"]["reference"] for r in records])                   # (G, 2)
    ok = np.isfinite(ref).all(1) & (n > 0)
    return (ref[ok] * n[ok, None]).sum(0) / n[ok].sum() if ok.any() else np.full(2, np.nan)
