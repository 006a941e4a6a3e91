"""Per-sequence probe results on disk: appended as they finish, read back to resume.

``DIR/results.h5`` holds one group per finished sequence (named by the sequence key,
with ``/`` and ``:`` escaped), each a handful of small arrays. Under
``accelerate launch`` every process appends to its own ``results.rank<r>.h5`` and
process 0 merges them into ``results.h5`` at the end. Each sequence is written in
its own open-write-close cycle and its group is marked complete last, so a crash
loses at most the sequence being written.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger(__name__)

MAIN = "results.h5"


def _group_name(key: str) -> str:
    return key.replace("/", "|")


def _key(group_name: str) -> str:
    return group_name.replace("|", "/")


def part_path(out: Path, rank: int, world: int) -> Path:
    return out / (MAIN if world == 1 else f"results.rank{rank}.h5")


def append(path: Path, key: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Add one finished sequence's arrays to ``path``; replaces an incomplete earlier try."""
    try:
        with h5py.File(path, "a") as f:
            name = _group_name(key)
            if name in f:
                del f[name]
            g = f.create_group(name)
            for k, v in arrays.items():
                v = np.asarray(v)
                big = v.size >= 4096                 # predictions and similarity maps: compress
                g.create_dataset(k, data=v, **({"compression": "gzip", "compression_opts": 4, "shuffle": True}
                                               if big else {}))
            for k, v in (attrs or {}).items():
                g.attrs[k] = v
            g.attrs["complete"] = True          # written last: a torn group is not complete
            f.flush()
    except OSError as e:
        raise OSError(f"{path}: cannot append probe results ({e}); if the file is damaged, delete it to start over") from None


def read_all(path: Path) -> dict[str, dict]:
    """key -> {"arrays": {...}, "attrs": {...}} for every complete sequence in ``path``."""
    if not path.exists():
        return {}
    out: dict[str, dict] = {}
    try:
        with h5py.File(path, "r") as f:
            for name, g in f.items():
                if not g.attrs.get("complete", False):
                    continue
                out[_key(name)] = {"arrays": {k: g[k][()] for k in g.keys()},
                                   "attrs": {k: v for k, v in g.attrs.items() if k != "complete"}}
    except OSError as e:
        raise OSError(f"{path}: cannot read earlier probe results ({e}); delete it to start over") from None
    return out


def read_finished(out: Path) -> dict[str, dict]:
    """Everything finished so far in ``out``: the main file plus any per-process parts."""
    done: dict[str, dict] = {}
    for p in [out / MAIN, *sorted(out.glob("results.rank*.h5"))]:
        done.update(read_all(p))
    return done


def merge_parts(out: Path) -> None:
    """Fold per-process part files into ``results.h5`` (called on process 0 after a barrier)."""
    for p in sorted(out.glob("results.rank*.h5")):
        for key, rec in read_all(p).items():
            append(out / MAIN, key, rec["arrays"], rec["attrs"])
        os.remove(p)
