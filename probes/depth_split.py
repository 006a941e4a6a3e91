"""Which sequences train the depth probe (``probes/depth.py``) and which score it.

Either ``--depth-train TRACKS`` gives the probe-train sequences and every probed sequence is
held out, or the probed sequences' scenes are split: a seeded permutation
(``numpy.random.default_rng(seed)``) of the scenes in order of first appearance, the first
``max(1, floor(holdout * S + 0.5))`` held out (halves round up), the rest probe-train. Probe-train scenes go to the K
cross-validation folds round-robin in permuted order, so no scene straddles two folds and
no scene is both trained and scored on. Every sequence used must carry depth maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probes.config import ProbeConfig
from probes.depth import DepthProbeError
from tracks.io import TrackReader

DEPTH_SOURCES = ("scripts/build_tracks.py and scripts/make_synthetic.py (rendered), scripts/convert_dl3dv.py and "
                 "scripts/convert_colmap.py with the depth you bring (--align-depth for sparse models), "
                 "scripts/convert_vggt.py (VGGT's depth)")


@dataclass
class DepthSplit:
    train_reader: TrackReader
    train: list[tuple[int, int]]          # (sequence index into train_reader, fold)
    held_out: list[int]                   # sequence indices into the probed reader
    info: dict[str, Any]                  # recorded in results.json


def _scenes(reader: TrackReader, indices: list[int]) -> list[str]:
    return list(dict.fromkeys(reader.sequence_scene(i) for i in indices))


def _check_depth(reader: TrackReader, path: Path, scenes: list[str]) -> None:
    for s in scenes:
        if not reader.scene_has(s)["depth"]:
            raise DepthProbeError(f"{path}: scene {s!r} has no depth maps, and depth probing (--depth) needs them; "
                                  f"tracks with depth come from {DEPTH_SOURCES}. TAP-Vid and sparse COLMAP tracks "
                                  "carry none")


def _held(scenes: int, holdout: float) -> int:
    return max(1, int(np.floor(holdout * scenes + 0.5)))


def split_scenes(scenes: list[str], seed: int, holdout: float) -> tuple[list[str], list[str]]:
    """(held out, probe-train) scenes, each in the seeded permutation's order (the module docstring's rule)."""
    perm = [scenes[j] for j in np.random.default_rng(seed).permutation(len(scenes))]
    n_hold = _held(len(perm), holdout)
    return perm[:n_hold], perm[n_hold:]


def min_scenes(folds: int, holdout: float) -> int:
    """The fewest scenes a split of one tracks file needs: ``folds`` probe-train scenes and one held out."""
    s = folds + 1
    while s - _held(s, holdout) < folds:
        s += 1
    return s


def plan(cfg: ProbeConfig, reader: TrackReader, n: int, tracks_path: Path) -> DepthSplit:
    """The depth probe's split of the first ``n`` sequences of ``reader`` (see the module docstring)."""
    K = cfg.depth_folds
    if K < 2:
        raise DepthProbeError(f"--depth-folds must be at least 2 for cross-validation, got {K}")
    if not 0 < cfg.depth_holdout < 1:
        raise DepthProbeError(f"--depth-holdout must be in (0, 1), got {cfg.depth_holdout}")
    probed = list(range(n))
    probed_scenes = _scenes(reader, probed)
    _check_depth(reader, tracks_path, probed_scenes)
    if cfg.depth_train is None:
        train_reader, train_path = reader, tracks_path
        held, train_scenes = split_scenes(probed_scenes, cfg.seed, cfg.depth_holdout)
        if len(train_scenes) < K:
            raise DepthProbeError(
                f"--depth with {K}-fold cross-validation needs at least {min_scenes(K, cfg.depth_holdout)} scenes in "
                f"{tracks_path} ({K} probe-train, at --depth-holdout {cfg.depth_holdout:g}); it has "
                f"{len(probed_scenes)}. Probe more sequences, lower --depth-folds, or pass --depth-train TRACKS")
        train_idx = reader.indices_for_scenes(train_scenes)
        train_idx = [i for i in train_idx if i < n]
        held_idx = [i for i in probed if reader.sequence_scene(i) in set(held)]
    else:
        train_path = Path(cfg.depth_train)
        train_reader = TrackReader(train_path)
        ts = _scenes(train_reader, list(range(len(train_reader))))
        _check_depth(train_reader, train_path, ts)
        if len(ts) < K:
            raise DepthProbeError(f"--depth-train {train_path} has {len(ts)} scene(s); {K}-fold cross-validation "
                                  f"needs at least {K}. Lower --depth-folds or use more probe-train scenes")
        shared = sorted(set(ts) & set(probed_scenes))
        if shared:
            raise DepthProbeError(f"--depth-train {train_path} and --tracks {tracks_path} share scenes {shared[:5]}; "
                                  "the depth probe must be scored on scenes it was not fitted on")
        train_scenes = [ts[j] for j in np.random.default_rng(cfg.seed).permutation(len(ts))]
        held = probed_scenes
        train_idx, held_idx = list(range(len(train_reader))), probed
    fold_of = {s: j % K for j, s in enumerate(train_scenes)}
    train = [(i, fold_of[train_reader.sequence_scene(i)]) for i in train_idx]
    info = {"train": {"tracks": str(train_path), "scenes": train_scenes, "num_sequences": len(train),
                      "fold_of_scene": fold_of},
            "held_out": {"tracks": str(tracks_path), "scenes": list(held), "num_sequences": len(held_idx)},
            "seed": cfg.seed, "folds": K, "holdout": None if cfg.depth_train else cfg.depth_holdout}
    return DepthSplit(train_reader, train, held_idx, info)
