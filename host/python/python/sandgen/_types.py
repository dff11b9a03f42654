"""``item_type``: how bincode items become Python objects.

bincode carries no type tags, so the reader needs the item's shape. It is
given as a Python type: ``int`` (an unsigned integer: Rust ``u16`` to
``u64``, or ``u8`` below 251), ``float`` (``f64``), ``str``, ``bytes``
(``Vec<u8>`` or ``serde_bytes``), ``bool``, ``list[T]``, ``dict[str, T]``,
``tuple[...]``, ``T | None`` or a dataclass (its fields in order, like a
Rust struct). Three markers name the other Rust numbers: ``sandgen.i64``
(signed integers), ``sandgen.u8`` (a byte) and ``sandgen.f32``.

``numpy.ndarray`` (or ``numpy.typing.NDArray[...]``) reads an array item:
the record ``{dtype, shape, data}`` that ``sandgen_guest.array`` and Rust's
``sandgen_guest::Array`` write. It arrives as a writable numpy array of the
item's own dtype and shape.

JSON items can be read by an ``item_type`` too: an array from its record,
a dataclass from an object (by field name), a tuple from a list.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ._errors import InvalidInputError

__all__ = ["describe", "f32", "i64", "type_name", "u8"]


class i64(int):
    """``item_type`` marker: a signed integer (Rust ``i16`` to ``i64``, zigzag encoded)."""


class u8(int):
    """``item_type`` marker: one byte (Rust ``u8``)."""


class f32(float):
    """``item_type`` marker: a 32-bit float (Rust ``f32``)."""


_SCALARS: dict[Any, str] = {
    int: "int",
    i64: "i64",
    u8: "u8",
    float: "float",
    f32: "f32",
    bool: "bool",
    str: "str",
    bytes: "bytes",
}

_SUPPORTED = (
    "use int, float, str, bytes, bool, sandgen.i64, sandgen.u8, sandgen.f32, "
    "numpy.ndarray, list[T], dict[str, T], tuple[...], T | None or a dataclass"
)


def _is_ndarray(item_type: Any) -> bool:
    """``numpy.ndarray``, or a parametrised one (``numpy.typing.NDArray``),
    without importing numpy."""
    target = typing.get_origin(item_type) or item_type
    return (
        isinstance(target, type) and target.__name__ == "ndarray" and target.__module__ == "numpy"
    )


def type_name(item_type: Any) -> str:
    """How ``item_type`` is named in messages."""
    if isinstance(item_type, type) and not typing.get_args(item_type):
        return item_type.__qualname__
    return repr(item_type).replace("typing.", "")


def describe(item_type: Any, _seen: tuple[type, ...] = ()) -> object:
    """The shape of ``item_type`` for the native decoder; raises
    ``InvalidInputError`` for a type that cannot be decoded."""
    try:
        hash(item_type)
    except TypeError:
        item_type_hashable = False
    else:
        item_type_hashable = True
    if item_type_hashable and item_type in _SCALARS:
        return _SCALARS[item_type]
    if _is_ndarray(item_type):
        return "ndarray"
    origin = typing.get_origin(item_type)
    args = typing.get_args(item_type)
    if origin is list and len(args) == 1:
        return ("list", describe(args[0], _seen))
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise _cannot(item_type, "dict keys must be str")
        return ("dict", describe(args[1], _seen))
    if origin is tuple and args and Ellipsis not in args:
        return ("tuple", [describe(arg, _seen) for arg in args if arg != ()])
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return ("optional", describe(others[0], _seen))
        raise _cannot(item_type, "a union must be one type and None (T | None)")
    if isinstance(item_type, type) and dataclasses.is_dataclass(item_type):
        if item_type in _seen:
            raise _cannot(item_type, "a dataclass cannot contain itself")
        try:
            hints = typing.get_type_hints(item_type)
        except Exception as e:
            raise _cannot(item_type, f"its field types cannot be resolved ({e})") from e
        fields = dataclasses.fields(item_type)
        if any(not field.init for field in fields):
            raise _cannot(item_type, "every field must be an __init__ argument")
        return (
            "record",
            item_type,
            [describe(hints[field.name], (*_seen, item_type)) for field in fields],
            [field.name for field in fields],
        )
    raise _cannot(item_type, _SUPPORTED)


def _cannot(item_type: Any, why: str) -> InvalidInputError:
    return InvalidInputError(f"item_type {type_name(item_type)} cannot be decoded: {why}")
