"""Reading one section: values with their key paths, problems and warnings collected, not raised.

Every section parser takes a :class:`Context` and reads its mapping through a :class:`SectionReader`,
which records each problem as ``"<key path>: <reason>"`` and, for a key nobody reads, a warning that
names the path and suggests the nearest known key (``":pools:[0].sise: unknown key (did you mean
'size'?)"``). Unknown keys warn instead of failing because real files carry keys we do not act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import attrs

from vmpooler.config.values import Kind, coerce, freeze
from vmpooler.errors import ConfigError
from vmpooler.providers.base import unknown_key

__all__ = [
    "LOOP_DELAY_DEFAULTS",
    "LOOP_DELAY_KEYS",
    "Context",
    "SectionReader",
    "loop_delays",
    "read_settings",
    "run_alone",
    "setting",
]

log = logging.getLogger("vmpooler.config")

_T = TypeVar("_T")
_SPEC = "vmpooler.config.spec"
LOOP_DELAY_KEYS = ("check_loop_delay_min", "check_loop_delay_max", "check_loop_delay_decay")
LOOP_DELAY_DEFAULTS = (5.0, 60.0, 2.0)  # seconds, seconds, factor


@attrs.define
class Context:
    """Problems and warnings of one load, and the environment it runs in."""

    env: Mapping[str, str] = attrs.Factory(dict)
    problems: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    broken: set[str] = attrs.Factory(set)  # key paths whose problems are reported already

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def run_alone(parse: Callable[[Context], _T | None], env: Mapping[str, str] | None = None) -> _T:
    """Run one section parser alone (the public ``from_dict``) and raise what it found."""
    ctx = Context(env=env or {})
    result = parse(ctx)
    if ctx.problems or result is None:
        raise ConfigError(ctx.problems or ["invalid configuration"])
    return result


class SectionReader:
    """Reads one mapping section, recording each problem with its key path."""

    def __init__(self, data: object, path: str, ctx: Context) -> None:
        self.path, self.ctx = path, ctx
        self.used: set[str] = set()
        if data is not None and not isinstance(data, Mapping):
            ctx.problem(path, f"must be a mapping, got {data!r:.60}")
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def given(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(
        self,
        key: str,
        kind: Kind,
        default: Any = None,
        *,
        minimum: float | None = None,
        required: bool = False,
    ) -> Any:
        """The value of ``key`` as ``kind``; ``default`` when absent, empty or invalid (recorded)."""
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.ctx.problem(self.at(key), "is required")
            return default
        try:
            return coerce(value, kind, minimum)
        except ValueError as err:
            self.ctx.problem(self.at(key), str(err))
            return default

    def port(self, key: str, default: int | None) -> int | None:
        value = self.get(key, Kind.INT, default, minimum=1)
        if value is not None and value > 65535:
            self.ctx.problem(self.at(key), f"must be a port number (1-65535), got {value}")
            return default
        return value

    def rest(self) -> dict[str, Any]:
        """The keys nobody has read yet."""
        return {str(key): value for key, value in self.data.items() if key not in self.used}

    def warn_unknown(self, also_known: Collection[str] = ()) -> None:
        """A warning for each key nobody read, suggesting the nearest of the keys that were read."""
        known = self.used | set(also_known)
        for key in self.rest():
            self.ctx.warn(unknown_key(self.path, key, known))


def setting(default: Any, kind: Kind, minimum: float | None = None, *, secret: bool = False) -> Any:
    """A settings field: read by :func:`read_settings` from the key of the same name, checked on init;
    a ``secret`` one stays out of the ``repr``."""

    def convert(value: Any) -> Any:
        if value is None and default is None:
            return None
        return freeze(coerce(value, kind, minimum))

    return attrs.field(default=default, converter=convert, metadata={_SPEC: (kind, minimum)}, repr=not secret)


def read_settings(cls: type[Any], reader: SectionReader) -> dict[str, Any]:
    """Every :func:`setting` field of ``cls`` that the section gives, by field name."""
    values = {}
    for field in attrs.fields(cls):
        if _SPEC in field.metadata:
            kind, minimum = field.metadata[_SPEC]
            value = reader.get(field.name, kind, minimum=minimum)
            if value is not None:
                values[field.name] = value
    return values


def loop_delays(
    values: Mapping[str, Any], inherited: tuple[float, float, float], reader: SectionReader
) -> tuple[float, float, float]:
    """``check_loop_delay_min/max/decay`` of a section, falling back to ``inherited``, made sane."""
    low, high, decay = (
        float(values[key]) if key in values else default
        for key, default in zip(LOOP_DELAY_KEYS, inherited, strict=True)
    )
    if high < low:
        if reader.given("check_loop_delay_max"):
            reader.ctx.warn(
                f"{reader.at('check_loop_delay_max')}: {high:g} is below check_loop_delay_min "
                f"{low:g}; using {low:g}"
            )
        high = low
    if decay <= 1.0:
        reader.ctx.warn(
            f"{reader.at('check_loop_delay_decay')}: must be greater than 1.0, got {decay:g}; using 2.0"
        )
        decay = 2.0
    return low, high, decay
