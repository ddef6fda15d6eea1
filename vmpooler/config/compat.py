"""The compatibility layer: what a file written for the original means here, said out loud.

A file the original vmpooler starts on, this service starts on, with the same meaning. Some keys the
original reads drive features this service does not have yet; they are parsed and validated like any
other, and a warning says they are not acted on (:data:`NOT_ACTED_ON`). Keys the original ignores in a
place where people write them anyway are known too (:data:`IGNORED_BY_THE_ORIGINAL`), so they do not
look like typos. Deprecated spellings are accepted with a warning where they are parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vmpooler.config.reader import Context, SectionReader
from vmpooler.config.values import Kind, coerce

__all__ = [
    "CORE_SECTIONS",
    "IGNORED_BY_THE_ORIGINAL",
    "LEGACY_PROVIDER_SECTIONS",
    "NOT_ACTED_ON",
    "mark_ignored",
    "warn_not_acted_on",
]

CORE_SECTIONS = frozenset(
    {
        "config",
        "redis",
        "pools",
        "providers",
        "dns_configs",
        "auth",
        "statsd",
        "graphite",
        "prometheus",
        "graphs",
        "tracing",
        "tagfilter",
        "rate_limits",
        "tenants",
    }
)
"""Top-level sections this service reads."""

LEGACY_PROVIDER_SECTIONS = ("vsphere", "dummy")
"""Top-level provider sections of old files; the original copies them into ``:providers:``."""


def _true(value: object) -> bool:
    try:
        return bool(coerce(value, Kind.BOOL))
    except ValueError:
        return False  # the section parser reports the bad value


def _given(value: object) -> bool:
    return True


def _not_vmpooler(value: object) -> bool:
    return value != "vmpooler"


NOT_ACTED_ON: Mapping[tuple[str, str], tuple[str, Callable[[object], bool]]] = {
    ("config", "max_request_age"): (
        "the original's example sets it, but no version ever acted on it",
        _given,
    ),
    ("config", "health_check_enabled"): (
        "the health verdict is always in /status (its health section); vmpooler__health is not written",
        _true,
    ),
    ("tracing", "enabled"): ("tracing is not supported", _true),
    ("redis", "reconnect_attempts"): (
        "processes reconnect to Redis with back-off for as long as it takes and never exit for it",
        _given,
    ),
    ("prometheus", "prefix"): ("the vmpooler_instance label is not emitted yet", _given),
    ("prometheus", "prometheus_prefix"): ("metric names always start with vmpooler_", _not_vmpooler),
}
"""``(section, key)`` → ``(reason, when)``: keys read and validated but not acted on yet.

The warning appears when ``when(value)`` holds for the given value: when the key turns the feature on,
whenever it is given, or when it differs from the only value we implement.
"""

IGNORED_BY_THE_ORIGINAL: Mapping[tuple[str, str], str] = {
    ("redis", "dlq_enabled"): "the original reads the dead-letter queue settings from :config: only",
    ("redis", "dlq_ttl"): "the original reads the dead-letter queue settings from :config: only",
    ("redis", "dlq_max_entries"): "the original reads the dead-letter queue settings from :config: only",
}
"""Keys the original's own example files write where the original never reads them: known, no effect."""


def warn_not_acted_on(tree: Mapping[str, Any], ctx: Context) -> None:
    """Warn about every key of :data:`NOT_ACTED_ON` that is given."""
    for (section, key), (reason, when) in NOT_ACTED_ON.items():
        data = tree.get(section)
        value = data.get(key) if isinstance(data, Mapping) else None
        if value is None or not when(value):
            continue
        ctx.warn(f":{section}:.{key}: read but not acted on: {reason}")


def mark_ignored(reader: SectionReader, section: str) -> None:
    """Read the keys of :data:`IGNORED_BY_THE_ORIGINAL` in ``section``, each with its warning."""
    for (where, key), reason in IGNORED_BY_THE_ORIGINAL.items():
        if where == section and key in reader.data:
            reader.used.add(key)
            reader.ctx.warn(f"{reader.at(key)}: has no effect: {reason}")
