"""The instruction (L_LM) training stream and the geo/LM interleaving schedule (paper Sec. 4-5.2).

Like `gasp.train.geo_stream`, every draw is a pure function of (seed, index), so a resumed run
sees the same data with no sampler state to save: sample `index` reads record
`perm_epoch[index % R]` of a fresh seeded permutation of the R records per epoch. A
record whose video is missing is skipped (logged, counted in `dataset.missing`) and the
next record of the permutation is used instead.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def batch_kind(micro: int, lm_ratio: float, lm_on: bool, geo_on: bool) -> str:
    """'lm' or 'geo' for global micro-batch `micro`: a fraction `lm_ratio` of them are LM, evenly spread."""
    if not geo_on:
        return "lm"
    if not lm_on or lm_ratio <= 0:
        return "geo"
    return "lm" if math.floor((micro + 1) * lm_ratio) > math.floor(micro * lm_ratio) else "geo"


class LMStream:
    """Indexable stream of InstructionExamples (never None: missing videos are skipped)."""

    def __init__(self, path: str | Path, video_root: str | Path | None, *, num_frames: int = 8, seed: int = 0):
        from gasp.data.instruct import InstructionDataset

        root = video_root if video_root is not None else Path(path).parent
        self.dataset = InstructionDataset(path, root, num_frames=num_frames)
        if len(self.dataset) == 0:
            raise ValueError(f"{path} holds no instruction records")
        self.seed = seed

    def __getitem__(self, index: int):
        n = len(self.dataset)
        perm = np.random.default_rng([self.seed, index // n, 11]).permutation(n)
        for k in range(n):
            ex = self.dataset[int(perm[(index % n + k) % n])]
            if ex is not None:
                return ex
        raise RuntimeError(f"every one of the {n} instruction records has a missing or unreadable video "
                           f"({self.dataset.missing} missing so far)")
