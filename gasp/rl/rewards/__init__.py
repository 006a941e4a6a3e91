"""Rule rewards for the RL stage (VST, seed 004, eq. 2-3): R = R_acc + R_format, one file per reward, registered
by the task kind it scores.

    reward = get("box3d")                      # the class for task kind "box3d"
    r = reward().score(completion_text, item)  # {"acc": float, "format": float}

Task kinds: "choice" (multiple choice: exact match), "numeric" (success within 25 % relative error), "box3d"
(VST's R_3d = 0.5 R_IoU + 0.5 R_F1, Hungarian matching, a true positive at IoU > 0.25). R_format is 1 where the
answer parses as the kind's format, else 0; an answer that does not parse scores 0 on both, never raises.
"""
from __future__ import annotations

import importlib
import pkgutil

_REGISTRY: dict[str, type] = {}
_loaded = False


class RewardError(ValueError):
    """A reward asked for a task kind nobody scores, or the data lacks: one line, before any work."""


def register(cls):
    _REGISTRY[cls.kind] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True


def kinds() -> tuple[str, ...]:
    _load()
    return tuple(sorted(_REGISTRY))


def get(kind: str):
    _load()
    if kind not in _REGISTRY:
        raise RewardError(f"no reward scores task kind {kind!r}; registered: {', '.join(kinds())}")
    return _REGISTRY[kind]
