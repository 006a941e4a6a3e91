"""Training objectives, a registry keyed by name: one file per objective (``gasp.objectives.base``).

    cls = get("pgd_depth")                     # the class registered under that name
    names()                                    # every registered name

GASP's heads (``heads``, eq. 5-8 on the hidden states), arm D (``qk``, the same losses on post-RoPE Q/K)
and arm E (``qk_heads``, a head pair on Q and K) are objectives here beside PseudoGD's depth and structure
distillation on the vision encoder (``pgd_depth``, ``pgd_structure``). A module in this package that
defines an objective registers it on import; every module here is imported when the registry is first
read, so a new objective is one new file.
"""
from __future__ import annotations

import importlib
import pkgutil

from gasp.objectives.base import Objective, ObjectiveConfig, ObjectiveError

_REGISTRY: dict[str, type[Objective]] = {}
_NOT_OBJECTIVES = {"base", "pseudogd", "structure_teacher"}     # helpers, not objectives
_loaded = False


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: register an objective under its ``name``."""
    if not cls.name or cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"objective {cls.__name__}: name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name not in _NOT_OBJECTIVES:
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True


def names() -> tuple[str, ...]:
    _load()
    return tuple(sorted(_REGISTRY))


def get(name: str) -> type[Objective]:
    _load()
    if name not in _REGISTRY:
        raise ObjectiveError(f"unknown objective {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name]


__all__ = ["Objective", "ObjectiveConfig", "ObjectiveError", "get", "names", "register"]
