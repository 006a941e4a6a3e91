"""Which frames of a scene make up a sequence (paper Sec. 5.2), and splits by scene.

Training (paper Sec. 5.2): pick an anchor t_a uniformly, then draw F - 1 further
frames uniformly without replacement from [t_a - R, t_a + R] (clipped to the video),
with F uniform in [min_frames, max_frames]. The anchor is returned first, so it is
the sequence's query frame (index 0); the rest follow in time order.

Evaluation (paper Sec. 5.3): F = 8 frames whose offsets Δt from the query frame are
drawn so that a set of sequences has support at every Δt in 1..max_dt. Every
sequence contains Δt = 1 (the normaliser of Y(Δt)) and Δt = max_dt; the other
F - 3 offsets walk through a seeded permutation of 2..max_dt-1, advancing by F - 3
per sequence, so consecutive sequences cover all of 2..max_dt-1 before any offset
repeats (every ceil((max_dt - 2) / (F - 3)) sequences; 5 for the defaults). Offsets
go forward in time when the video has room after the query frame, else backward.
"""
from __future__ import annotations

import zlib

import numpy as np


class SamplingError(ValueError):
    """A scene too short for the requested sequence."""


def sample_train_frames(num_frames: int, rng: np.random.Generator, min_frames: int = 8,
                        max_frames: int = 24, radius: int = 48) -> np.ndarray:
    """(F,) int64 frame ids, anchor first; F ~ U[min_frames, max_frames] capped by the window."""
    if not 2 <= min_frames <= max_frames:
        raise ValueError(f"need 2 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    if num_frames < min_frames:
        raise SamplingError(f"scene has {num_frames} frames, fewer than min_frames={min_frames}")
    t_a = int(rng.integers(num_frames))
    lo, hi = max(0, t_a - radius), min(num_frames - 1, t_a + radius)
    window = np.setdiff1d(np.arange(lo, hi + 1), [t_a])
    if len(window) + 1 < min_frames:          # anchor near a short video's edge: fall back to the widest window
        t_a = num_frames // 2
        lo, hi = max(0, t_a - radius), min(num_frames - 1, t_a + radius)
        window = np.setdiff1d(np.arange(lo, hi + 1), [t_a])
        if len(window) + 1 < min_frames:
            raise SamplingError(f"scene has {num_frames} frames but a window of radius {radius} holds only "
                                f"{len(window) + 1}; need min_frames={min_frames}")
    F = int(rng.integers(min_frames, min(max_frames, len(window) + 1) + 1))
    rest = np.sort(rng.choice(window, size=F - 1, replace=False))
    return np.concatenate([[t_a], rest]).astype(np.int64)


def eval_offsets(sequence_index: int, n_frames: int = 8, max_dt: int = 24, seed: int = 0) -> np.ndarray:
    """(n_frames - 1,) sorted Δt offsets for evaluation sequence ``sequence_index``."""
    if n_frames < 3 or max_dt < n_frames - 1:
        raise ValueError(f"need n_frames >= 3 and max_dt >= n_frames - 1, got {n_frames}, {max_dt}")
    middle = np.random.default_rng(seed).permutation(np.arange(2, max_dt))   # (max_dt - 2,)
    k = n_frames - 3
    if k == 0 or len(middle) == 0:
        picked = np.array([], dtype=np.int64)
    else:
        picked = middle[(sequence_index * k + np.arange(k)) % len(middle)]
    return np.sort(np.unique(np.concatenate([[1, max_dt], picked]))).astype(np.int64)


def eval_frames(num_frames: int, rng: np.random.Generator, n_frames: int = 8, max_dt: int = 24,
                sequence_index: int = 0, seed: int = 0) -> np.ndarray:
    """(n_frames,) int64 frame ids, query frame first, offsets from :func:`eval_offsets`."""
    if num_frames < max_dt + 1:
        raise SamplingError(f"scene has {num_frames} frames; evaluation sequences need at least "
                            f"max_dt + 1 = {max_dt + 1}")
    offsets = eval_offsets(sequence_index, n_frames, max_dt, seed)
    t_q = int(rng.integers(num_frames))
    sign = 1 if t_q + max_dt < num_frames else -1
    if sign < 0 and t_q - max_dt < 0:
        t_q = num_frames - 1
    return np.concatenate([[t_q], t_q + sign * offsets]).astype(np.int64)


def plan_sequences(num_frames: int, scene_name: str, frames: str = "sampled", split: str = "train",
                   n_sequences: int = 1, seed: int = 0, first_index: int = 0) -> list[np.ndarray]:
    """Frame ids (query frame first) of each sequence to cut from one scene.

    ``frames="all"``: one sequence over every frame, query frame 0. ``"sampled"``: the
    train or eval sampler, drawn from a per-scene random stream that depends only on
    ``seed`` and the scene name, so reruns and reorderings give the same sequences.
    ``first_index`` is the dataset-wide number of this scene's first sequence: eval
    offsets advance with it, so Δt coverage holds across scenes, not just within one.
    """
    if frames == "all":
        if num_frames < 2:
            raise SamplingError(f"scene {scene_name!r} has {num_frames} frame(s); a sequence needs at least 2")
        return [np.arange(num_frames, dtype=np.int64)]
    if frames != "sampled" or split not in ("train", "eval"):
        raise ValueError(f"frames must be 'all' or 'sampled' and split 'train' or 'eval', got {frames!r}, {split!r}")
    rng = np.random.default_rng([seed, zlib.crc32(scene_name.encode())])
    try:
        if split == "train":
            return [sample_train_frames(num_frames, rng) for _ in range(n_sequences)]
        return [eval_frames(num_frames, rng, sequence_index=first_index + i, seed=seed)
                for i in range(n_sequences)]
    except SamplingError as e:
        raise SamplingError(f"scene {scene_name!r}: cannot sample {split} sequences: {e}") from None
