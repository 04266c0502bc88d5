"""Checking user-supplied values (YAML, ``key=value``) against type annotations, with readable messages."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal, Union

from .errors import I2IError


def describe(annotation: Any) -> str:
    """A short human name for a type annotation."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(annotation, "__name__", str(annotation))


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` checked (and int→float widened) against ``annotation``; raise I2IError naming ``key``."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if value in args:
            return value
        raise I2IError(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(key, value, option)
            except I2IError:
                continue
        raise I2IError(f"{key}: expected {describe(annotation)}, got {type(value).__name__} {value!r}")
    if annotation is type(None):
        if value is None:
            return None
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is bool or annotation is str:
        if isinstance(value, annotation):
            return value
    elif origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, (list, tuple)):
            item = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else None
            if item is not None:
                value = [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
            elif args and len(args) == len(value):
                value = [coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))]
            return list(value) if (origin or annotation) is list else tuple(value)
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
    elif isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
    else:
        return value
    raise I2IError(f"{key}: expected {describe(annotation)}, got {type(value).__name__} {value!r}")


def hints(obj: Any) -> dict[str, Any]:
    """Resolved type hints of a function, class constructor or dataclass; {} when they cannot be resolved."""
    target = obj.__init__ if inspect.isclass(obj) and not hasattr(obj, "__dataclass_fields__") else obj
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}
