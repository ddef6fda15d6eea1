"""Value types of the configuration: how one YAML or environment value becomes a typed setting.

Shared by every section parser and by the env table, so a value means the same wherever it is written.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from vmpooler.textnum import truth

__all__ = ["FrozenDict", "Kind", "as_tuple", "coerce", "describe", "freeze", "symbol"]


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change. Still a dict, so ``json.dumps`` and pickle work on it."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("configuration mappings are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


def as_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    """Converter of the tuple fields of the config classes."""
    return tuple(items)


def freeze(value: Any) -> Any:
    """A deep read-only copy: mappings become :class:`FrozenDict`, lists become tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def symbol(value: str | None) -> str | None:
    """A name written as a Ruby symbol (``:vsphere``) means the plain name."""
    return value[1:] if value and value.startswith(":") else value


class Kind(enum.Enum):
    """The type of one setting, shared by YAML values and environment values."""

    STR = "a string"
    INT = "an integer"
    NUMBER = "a number"
    BOOL = "a boolean (true/false)"
    STR_LIST = "a string or a list of strings"
    MAPPING = "a mapping"
    INT_MAP = "a mapping of names to integers"
    NUMBER_MAP = "a mapping of names to numbers"


_INT_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def describe(kind: Kind, minimum: float | None = None) -> str:
    """What a value of ``kind`` must look like, for problem messages (``"an integer >= 0"``)."""
    return kind.value if minimum is None else f"{kind.value} >= {minimum:g}"


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError


def _to_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    raise TypeError


def _to_number(value: object) -> float:
    """A number; integers stay ``int`` (valid wherever a float is expected)."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, int):
        return value
    if not isinstance(value, float | str) or (
        isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value.strip())
    ):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _to_bool(value: object) -> bool:
    result = truth(value)
    if result is None:
        raise TypeError
    return result


def _to_str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[object] = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise TypeError
    return tuple(text for text in (_to_str(item).strip() for item in items) if text)


def _to_mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError
    return {str(key): item for key, item in value.items()}


_CONVERTERS: dict[Kind, Callable[[Any], Any]] = {
    Kind.STR: _to_str,
    Kind.INT: _to_int,
    Kind.NUMBER: _to_number,
    Kind.BOOL: _to_bool,
    Kind.STR_LIST: _to_str_list,
    Kind.MAPPING: _to_mapping,
    Kind.INT_MAP: lambda value: {key: _to_int(item) for key, item in _to_mapping(value).items()},
    Kind.NUMBER_MAP: lambda value: {key: _to_number(item) for key, item in _to_mapping(value).items()},
}


def coerce(value: object, kind: Kind, minimum: float | None = None) -> Any:
    """Convert one YAML or env value to ``kind``.

    Strings of digits count as numbers and ``"true"``/``"no"``/``"on"``/… (any case) as booleans; a
    comma-separated string counts as a list. ``minimum`` bounds numbers and the values of number maps.

    Raises:
        ValueError: the value does not fit, with a reason such as ``"must be an integer >= 0, got 'ten'"``.
    """
    try:
        result = _CONVERTERS[kind](value)
    except (TypeError, ValueError):
        raise ValueError(f"must be {describe(kind, minimum)}, got {value!r}") from None
    if minimum is not None:
        numbers: Iterable[float] = result.values() if isinstance(result, dict) else [result]
        if any(number < minimum for number in numbers):
            raise ValueError(f"must be {describe(kind, minimum)}, got {value!r}")
    return result
