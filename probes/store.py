"""Per-sequence probe results on disk: written as they finish, read back to resume, kill-safe.

Each finished sequence goes to its own small file ``OUT/parts/<key>.h5``, written under a
temporary name and renamed into place, so a process killed at any moment (SIGKILL included)
leaves only whole files: at most the sequence being probed is lost. Under ``accelerate
launch`` every process writes its own sequences' parts. At the end process 0 folds every
part into ``OUT/results.h5`` (again written aside and renamed) and removes the parts. HDF5
files are not safe to kill mid-write, which is why no file is ever appended to in place.

A results file holds one group per sequence (named by the sequence key, ``/`` escaped),
each a handful of arrays (large ones gzip-compressed) and attributes.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np

log = logging.getLogger(__name__)

MAIN = "results.h5"
PARTS = "parts"


def _group_name(key: str) -> str:
    return key.replace("/", "|")


def _key(group_name: str) -> str:
    return group_name.replace("|", "/")


def _write(path: Path, records: dict[str, dict]) -> None:
    """Write ``{key: {"arrays", "attrs"}}`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for key, rec in records.items():
                g = f.create_group(_group_name(key))
                for k, v in rec["arrays"].items():
                    v = np.asarray(v)
                    big = v.size >= 4096                 # predictions and similarity maps: compress
                    g.create_dataset(k, data=v, **({"compression": "gzip", "compression_opts": 4, "shuffle": True}
                                                   if big else {}))
                g.attrs.update(rec.get("attrs") or {})
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write probe results ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def part_file(out: Path, key: str) -> Path:
    return out / PARTS / f"{quote(key, safe='')}.h5"


def append(out: Path, key: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Record one finished sequence in ``out`` (its own part file; replaces an earlier try)."""
    append_records(out, key, {key: (arrays, attrs or {})})


def append_records(out: Path, sequence_key: str, records: dict[str, tuple[dict[str, np.ndarray], dict]]) -> None:
    """Record one finished sequence's results, ``{record key: (arrays, attrs)}``, in one part file.

    A sequence probed in query-frame groups has several records; one file holds them all, so
    a killed run leaves either all of a sequence's records or none.
    """
    path = part_file(out, sequence_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, {k: {"arrays": a, "attrs": attrs} for k, (a, attrs) in records.items()})


def read_all(path: Path) -> dict[str, dict]:
    """key -> {"arrays": {...}, "attrs": {...}} for every sequence in ``path``."""
    if not path.exists():
        return {}
    out: dict[str, dict] = {}
    try:
        with h5py.File(path, "r") as f:
            for name, g in f.items():
                out[_key(name)] = {"arrays": {k: g[k][()] for k in g.keys()},
                                   "attrs": {k: v for k, v in g.attrs.items() if k != "complete"}}
    except OSError as e:
        raise OSError(f"{path}: cannot read earlier probe results ({e}); delete it to start over") from None
    return out


def read_finished(out: Path) -> dict[str, dict]:
    """Everything finished so far in ``out``: the merged file plus any parts not yet merged."""
    done = read_all(out / MAIN)
    for p in sorted((out / PARTS).glob("*.h5")):
        done.update(read_all(p))
    return done


def merge_parts(out: Path) -> None:
    """Fold every part into ``results.h5`` (process 0, after every process has finished)."""
    parts = out / PARTS
    if not parts.is_dir():
        return
    _write(out / MAIN, read_finished(out))
    shutil.rmtree(parts)                # also any temporary file a killed process left
