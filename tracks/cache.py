"""A cache for rendered synthetic tracks, outside any results folder.

The probe's embedded default renders the same evaluation scenes on every run: about 85 MB
(depth maps dominate) and 13 s. They live once in ``GASP_CACHE`` (default
``$XDG_CACHE_HOME/gasp`` or ``~/.cache/gasp``), under a name that hashes every argument of
the render and the renderer's own source, so a change to either renders afresh and a stale
file is never read. Files are written to a temporary name and renamed (``TrackWriter``), so
a killed render leaves nothing that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# modules whose code decides the pixels and tracks of a synthetic scene
_RENDERER = ("synthetic", "camera_path", "textures", "geometry", "sampling", "io", "writer", "format", "types")


def cache_root() -> Path:
    """``GASP_CACHE``, else ``$XDG_CACHE_HOME/gasp``, else ``~/.cache/gasp``."""
    if os.environ.get("GASP_CACHE"):
        return Path(os.environ["GASP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gasp"


def renderer_digest() -> str:
    """sha256 of the renderer's source files (first 12 hex digits)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _RENDERER:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


def cached_synthetic_file(num_scenes: int, seed: int, config, *, grid: int, split: str,
                          progress: Callable | None = None, **kwargs: Any) -> Path:
    """Path of ``make_synthetic_file(path, num_scenes, seed, config, grid=grid, split=split, **kwargs)``'s
    output, rendered into the cache the first time it is asked for (``progress`` wraps its scene loop)."""
    from tracks.synthetic import make_synthetic_file

    key = json.dumps({"num_scenes": num_scenes, "seed": seed, "config": asdict(config), "grid": grid,
                      "split": split, **kwargs, "renderer": renderer_digest()}, sort_keys=True, default=str)
    path = cache_root() / "synthetic" / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.h5"
    if path.is_file():
        log.info("synthetic tracks from the cache: %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("rendering %d synthetic %s scenes into the cache: %s (once; set GASP_CACHE to move it)",
             num_scenes, split, path)
    make_synthetic_file(path, num_scenes, seed=seed, config=config, grid=grid, split=split, progress=progress,
                        **kwargs)
    return path
