"""One typed config loader for every config gasp has: dataclass defaults, then a YAML file, then dotted
``key=value`` overrides (values parsed as YAML), with unknown keys and wrong types refused.

    cfg = load_typed(TrainConfig, "configs/tiny_synthetic.yaml", ["optim.max_steps=20"], validate=check)

The trainer's config (sections: ``model.name=...``) and the probe's (flat: ``delta=2``) both load this
way; an unknown key is an error that lists the valid keys where it was looked up. An int is accepted
where a float is expected, a list where a tuple is; nothing else is coerced. A field typed as a list of
dataclasses takes a list of mappings, each loaded as its own section (its keys checked the same way).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

RUN_BLOCK = "_run"  # what a saved config records about the run (version, git SHA); skipped when loading
T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config file or override, reported without a traceback."""


def _tuple_type(tp: Any) -> Any:
    """The tuple[...] type that ``tp`` is or has among its union members, else None."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return next((a for a in members if typing.get_origin(a) is tuple), None)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(tp)
        if dataclasses.is_dataclass(item):                # a list of sections: mappings (YAML) or the dataclass
            return isinstance(value, list) and all(isinstance(v, (dict, item)) for v in value)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is tuple:                                   # tuple[int, int] or tuple[float, ...]; YAML gives lists
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def _set(cfg: Any, dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        prefix = ".".join(parts[:i])
        if part not in fields:
            valid = ", ".join(f"{prefix + '.' if prefix else ''}{k}" for k in fields)
            raise ConfigError(f"{where}: unknown config key {dotted!r}; valid keys here: {valid}")
        if i < len(parts) - 1:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{where}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
            continue
        hints = typing.get_type_hints(type(obj))
        tp = hints[part]
        if dataclasses.is_dataclass(getattr(obj, part)):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted!r} is a section; give a mapping, got {value!r}")
            for k, v in value.items():
                _set(cfg, f"{dotted}.{k}", v, where)
            return
        if not _type_ok(value, tp):
            raise ConfigError(f"{where}: {dotted} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        if tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)):
            value = float(value) if isinstance(value, int) else value
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if item is not None and dataclasses.is_dataclass(item):       # each mapping becomes its typed section
            value = [v if isinstance(v, item) else _section(item, v, f"{where}: {dotted}[{i}]")
                     for i, v in enumerate(value)]
        if isinstance(value, list) and (tt := _tuple_type(tp)) is not None:       # YAML lists become the tuple
            floats = float in typing.get_args(tt)
            value = tuple(float(v) if floats and isinstance(v, int) else v for v in value)
        setattr(obj, part, value)


def _section(cls: type[T], mapping: dict, where: str) -> T:
    """One entry of a list of sections: ``cls()``'s defaults, then the mapping's keys (unknown ones refused)."""
    section = cls()
    apply_mapping(section, mapping, where)
    return section


def apply_mapping(cfg: Any, mapping: dict, where: str) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, got {type(mapping).__name__}")
    for key, value in mapping.items():
        _set(cfg, str(key), value, where)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse the value: {e}") from None
    return key.strip(), value


BASE_KEY = "_base"  # a config file may name another (relative to itself) that it overrides, section by section


def _read_yaml(p: Path) -> Any:
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None


def _apply_file(cfg: Any, p: Path, chain: list[Path]) -> None:
    """The file's ``_base`` first (recursively), then its own keys; a list (``objectives``) is replaced whole."""
    if p.resolve() in chain:
        raise ConfigError(f"{p}: {BASE_KEY} chain loops: {' -> '.join(map(str, [*chain, p]))}")
    data = _read_yaml(p)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != RUN_BLOCK}   # a run folder's saved config
        base = data.pop(BASE_KEY, None)
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError(f"{p}: {BASE_KEY} must be a path to another config file, got {base!r}")
            _apply_file(cfg, (p.parent / base), [*chain, p.resolve()])
    apply_mapping(cfg, data, str(p))


def load_typed(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
               validate: Callable[[T], None] | None = None) -> T:
    """``cls()``'s defaults, then the YAML file at ``path`` (if any; after the file its ``_base`` key names), then
    ``overrides`` ("a.b=value")."""
    cfg = cls()
    if path is not None:
        _apply_file(cfg, Path(path), [])
    for item in overrides:
        key, value = parse_override(item)
        _set(cfg, key, value, "override")
    if validate is not None:
        validate(cfg)
    return cfg
