"""Typed configuration: dataclasses, overrides cast to the declared type, JSON round trip.

Every component declares its own config dataclass next to its code (``VAEConfig`` in
``models/vae.py``, ``DiTConfig`` in ``models/dit.py``, ...), the way nanoGPT keeps
``GPTConfig`` beside ``GPT``; this file holds the machinery they share, so a key is
declared exactly once, with its default and a comment, where it is used.

Overrides use dotted paths, ``"dit.depth=4"``, ``"train.lr=3e-4"``; the value is cast to
the declared field type and an unknown key is an error that lists the known keys.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from worldreel.errors import UserError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A config dataclass (nested) as a plain JSON-able dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict, *, where: str = "") -> T:
    """Build ``cls`` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; known: {sorted(names)}",
            param=where.rstrip(".") or "config",
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _cast(hints[name], value, where + name)
    return cls(**kwargs)


def parse_wxh(text: str, param: str = "size") -> tuple[int, int]:
    """'WxH' (or 'W×H') -> (W, H), two positive whole numbers; a UserError naming ``param`` otherwise.
    The one reader of sizes: callers add their own rules (multiples, limits)."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"{param} must look like 64x64 (WxH), got {text!r}", param=param)
    return int(parts[0]), int(parts[1])


def save_json(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_json(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied and type-cast."""
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value", param="override")
        key, raw = item.split("=", 1)
        cfg = _set_path(cfg, key.strip().split("."), raw.strip(), key.strip())
    return cfg


def _set_path(cfg: Any, parts: list[str], raw: str, full: str) -> Any:
    if not dataclasses.is_dataclass(cfg):
        raise UserError(f"override {full!r}: {parts[0]!r} is not a config section", param=full)
    names = [f.name for f in dataclasses.fields(cfg)]
    head = parts[0]
    if head not in names:
        raise UserError(f"unknown config key {full!r}; known here: {names}", param=full)
    current = getattr(cfg, head)
    if len(parts) > 1:
        value = _set_path(current, parts[1:], raw, full)
    else:
        hint = typing.get_type_hints(type(cfg))[head]
        value = _cast(hint, _parse_literal(raw), full)
    return dataclasses.replace(cfg, **{head: value})


def _parse_literal(raw: str) -> Any:
    """'3' -> 3, '1e-4' -> 1e-4, 'true' -> True, '[1,2]' -> [1, 2], other text stays text."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _cast(hint: Any, value: Any, where: str) -> Any:
    """Cast ``value`` to the type ``hint``; raise a UserError naming ``where`` if it cannot be."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _cast(arg, value, where)
            except UserError as err:
                errors.append(str(err))
        raise UserError(f"{where}: {value!r} fits none of {args}", param=where)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where} must be one of {list(args)}, got {value!r}", param=where)
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}", param=where)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise UserError(f"{where} needs {len(args)} values, got {len(value)}", param=where)
            return tuple(_cast(a, v, where) for a, v in zip(args, value))
        inner = args[0] if args else Any
        return origin(_cast(inner, v, where) for v in value)
    if dataclasses.is_dataclass(hint):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}", param=where)
        return from_dict(hint, value, where=where + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, got {value!r}", param=where)
    if hint in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{where} must be a number, got {value!r}", param=where)
        try:
            cast = hint(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} must be {hint.__name__}, got {value!r}", param=where) from None
        if hint is int and isinstance(value, float) and cast != value:
            raise UserError(f"{where} must be a whole number, got {value!r}", param=where)
        return cast
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be text, got {value!r}", param=where)
        return value
    return value
