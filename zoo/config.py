"""JSON-serialisable dataclass configs, validated on load (unknown keys and wrong types are errors)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

__all__ = ["Config", "ConfigError", "flatten"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config that does not match its dataclass: names the field and what was wrong."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value, where=where)
    return value


@dataclasses.dataclass
class Config:
    """Base of every config. Subclasses add fields and override :meth:`validate` for ranges."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value is out of range."""

    def check(self, ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{type(self).__name__}.{field}: {message} (got {getattr(self, field)!r})")

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, Config):
                return v.to_dict()
            return v
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str | None = None) -> C:
        where = where or cls.__name__
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__} {data!r}")
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            obj = cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from None
        try:
            obj.validate()
        except ZeroDivisionError:              # e.g. ``dim % heads`` with heads 0: name the divisor
            raise ConfigError(f"{where}: {' or '.join(obj._zero_divisors()) or 'a field'} must not be 0 "
                              "(it divides another setting)") from None
        return obj

    def _zero_divisors(self) -> list[str]:
        """The integer fields equal to 0 whose replacement by 1 or 2 makes :meth:`validate` pass."""
        found = []
        for f in dataclasses.fields(self):
            if type(getattr(self, f.name)) is int and getattr(self, f.name) == 0:
                for value in (1, 2):
                    try:
                        dataclasses.replace(self, **{f.name: value}).validate()
                    except (ZeroDivisionError, ConfigError):
                        continue
                    found.append(f.name)
                    break
        return found


def flatten(tree: Any, sep: str = ".", prefix: str = "", *, lists: bool = False) -> dict[str, Any]:
    """A nested dict as one level, keys joined with ``sep``: ``{"train": {"lr": 1}}`` → ``{"train.lr": 1}``; a
    list is one value (with ``lists``: indexed, ``layers.0``, ``layers.1``, …)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, sep, f"{prefix}{sep}{k}" if prefix else str(k), lists=lists))
    elif isinstance(tree, (list, tuple)) and lists:
        for i, v in enumerate(tree):
            out.update(flatten(v, sep, f"{prefix}{sep}{i}" if prefix else str(i), lists=lists))
    elif prefix:
        out[prefix] = tree
    return out
