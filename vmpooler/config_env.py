"""The input side of the configuration: YAML sources, ``EXTRA_CONFIG`` merging and the env table.

:mod:`vmpooler.config` turns a plain tree into typed objects; this module produces that tree. It is the
only place that reads the process environment for configuration (and only when a caller passes no
``env`` mapping of its own).

Order, as in the original:

1. The main document: an explicit path, else env ``VMPOOLER_CONFIG`` (inline YAML, the whole config,
   no extra files), else the file named by env ``VMPOOLER_CONFIG_FILE``, else ``./vmpooler.yaml``.
2. Extra files (env ``EXTRA_CONFIG``, else ``:config: extra_config``), comma separated, each deep-merged
   on top: mappings merge key by key, lists are concatenated without duplicates, anything else is
   replaced by the later file.
3. Overrides from :data:`ENV_OVERRIDES`, one row per environment variable.

One leading colon is stripped from every mapping key (``:config:`` is the Ruby symbol ``:config``).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from vmpooler.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_OVERRIDES",
    "EnvOverride",
    "Kind",
    "Tree",
    "apply_env",
    "coerce",
    "deep_merge",
    "describe",
    "format_path",
    "normalize_keys",
    "parse_yaml",
    "read_extra_files",
    "read_main",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "vmpooler.yaml"

Tree = dict[str, Any]
"""A configuration document after :func:`normalize_keys`: plain dicts, lists and scalars."""


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


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
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
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TypeError


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


@attrs.frozen(kw_only=True)
class EnvOverride:
    """One row of the env table: the variable, the key it sets and how its text is read.

    Attributes:
        name: the environment variable.
        path: section and key(s) in the tree, e.g. ``("config", "task_limit")``.
        kind: how the text is parsed; a value that does not parse is a ConfigError naming ``name``.
        replaced_by: set on deprecated variables: the variable to use instead.
    """

    name: str
    path: tuple[str, ...]
    kind: Kind = Kind.STR
    replaced_by: str | None = None


def _rows(section: str, kind: Kind, pairs: Iterable[tuple[str, str]]) -> tuple[EnvOverride, ...]:
    return tuple(EnvOverride(name=name, path=(section, *key.split(".")), kind=kind) for name, key in pairs)


_S, _I, _N, _B = Kind.STR, Kind.INT, Kind.NUMBER, Kind.BOOL

ENV_OVERRIDES: tuple[EnvOverride, ...] = (
    *_rows(
        "config",
        _S,
        [
            ("SITE_NAME", "site_name"),
            ("LOGFILE", "logfile"),
            ("PREFIX", "prefix"),
            ("CLONE_TARGET", "clone_target"),
            ("EXTRA_CONFIG", "extra_config"),
            ("DOMAIN", "domain"),
        ],
    ),
    *_rows(
        "config",
        _I,
        [
            ("TASK_LIMIT", "task_limit"),
            ("ONDEMAND_CLONE_LIMIT", "ondemand_clone_limit"),
            ("MAX_ONDEMAND_INSTANCES_PER_REQUEST", "max_ondemand_instances_per_request"),
            ("ONDEMAND_REQUEST_TTL", "ondemand_request_ttl"),
            ("MIGRATION_LIMIT", "migration_limit"),
            ("VM_LIFETIME", "vm_lifetime"),
            ("VM_LIFETIME_AUTH", "vm_lifetime_auth"),
            ("MAX_LIFETIME_UPPER_LIMIT", "max_lifetime_upper_limit"),
            ("MAX_TRIES", "max_tries"),
            ("RETRY_FACTOR", "retry_factor"),
        ],
    ),
    *_rows(
        "config",
        _N,
        [
            ("VM_CHECKTIME", "vm_checktime"),
            ("READY_TTL", "ready_ttl"),
            ("TIMEOUT", "timeout"),
            ("TIMEOUT_NOTIFICATION", "timeout_notification"),
        ],
    ),
    EnvOverride(
        name="PURGE_UNCONFIGURED_FOLDERS",
        path=("config", "purge_unconfigured_resources"),
        kind=_B,
        replaced_by="PURGE_UNCONFIGURED_RESOURCES",
    ),
    *_rows(
        "config",
        _B,
        [
            ("CREATE_FOLDERS", "create_folders"),
            ("CREATE_TEMPLATE_DELTA_DISKS", "create_template_delta_disks"),
            ("CREATE_LINKED_CLONES", "create_linked_clones"),
            ("PURGE_UNCONFIGURED_RESOURCES", "purge_unconfigured_resources"),
            ("EXPERIMENTAL_FEATURES", "experimental_features"),
            ("USAGE_STATS", "usage_stats"),
            ("REQUEST_LOGGER", "request_logger"),
        ],
    ),
    *_rows(
        "redis",
        _S,
        [("REDIS_SERVER", "server"), ("REDIS_PASSWORD", "password"), ("VMPOOLER_REDIS_URL", "url")],
    ),
    *_rows(
        "redis",
        _I,
        [
            ("REDIS_PORT", "port"),
            ("REDIS_DATA_TTL", "data_ttl"),
            ("REDIS_CONNECTION_POOL_SIZE", "connection_pool_size"),
            ("REDIS_CONNECTION_POOL_TIMEOUT", "connection_pool_timeout"),
            ("REDIS_RECONNECT_ATTEMPTS", "reconnect_attempts"),
        ],
    ),
    *_rows(
        "auth",
        _S,
        [
            ("AUTH_PROVIDER", "provider"),
            ("LDAP_HOST", "ldap.host"),
            ("LDAP_BASE", "ldap.base"),
            ("LDAP_USER_OBJECT", "ldap.user_object"),
        ],
    ),
    *_rows("auth", _I, [("LDAP_PORT", "ldap.port")]),
    *_rows("statsd", _S, [("STATSD_SERVER", "server"), ("STATSD_PREFIX", "prefix")]),
    *_rows("statsd", _I, [("STATSD_PORT", "port")]),
    *_rows("graphite", _S, [("GRAPHITE_SERVER", "server"), ("GRAPHITE_PREFIX", "prefix")]),
    *_rows("graphite", _I, [("GRAPHITE_PORT", "port")]),
    *_rows("tracing", _B, [("VMPOOLER_TRACING_ENABLED", "enabled")]),
    *_rows("tracing", _S, [("VMPOOLER_TRACING_JAEGER_HOST", "jaeger_host")]),
)
"""Every environment override, applied in this order (so a later row wins over an earlier one)."""


def format_path(path: tuple[str, ...]) -> str:
    """``("config", "task_limit")`` → ``":config:.task_limit"``, the form problems are reported in."""
    return ".".join((f":{path[0]}:", *path[1:]))


def apply_env(tree: Tree, env: Mapping[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Apply :data:`ENV_OVERRIDES` to ``tree`` in place. Empty variables count as unset.

    Returns:
        ``(origins, problems, warnings)``: origins maps each key path set (as :func:`format_path`
        writes it) to the variable that set it; problems name the variable whose text did not parse.
    """
    origins: dict[str, str] = {}
    problems: list[str] = []
    warnings: list[str] = []
    for row in ENV_OVERRIDES:
        text = env.get(row.name, "")
        if not text.strip():
            continue
        if row.replaced_by:
            warnings.append(f"env {row.name} is deprecated: use {row.replaced_by}")
        if row.kind is Kind.STR:
            value: object = text
        else:
            try:
                value = coerce(text, row.kind)
            except ValueError as err:
                problems.append(f"{row.name}: {err}")
                continue
        node = tree
        for key in row.path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[row.path[-1]] = value
        origins[format_path(row.path)] = row.name
    return origins, problems, warnings


def normalize_keys(value: Any, problems: list[str], where: str = "") -> Any:
    """Copy a parsed YAML value, stripping one leading colon from every string mapping key.

    A key written both with and without the colon in one mapping is reported in ``problems``.
    """
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            name = key[1:] if isinstance(key, str) and key.startswith(":") else key
            if name in result:
                problems.append(f"{where or 'top level'}: key {name!r} is written twice")
            result[name] = normalize_keys(item, problems, f"{where}.{name}" if where else f":{name}:")
        return result
    if isinstance(value, list):
        return [normalize_keys(item, problems, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def parse_yaml(text: str, source: str) -> Tree:
    """Parse one document with ``yaml.safe_load`` and :func:`normalize_keys` it.

    Raises:
        ConfigError: invalid YAML (with the source and line), a top level that is not a mapping, or a
            key written twice.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}:{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    problems: list[str] = []
    tree = normalize_keys(data, problems)
    if problems:
        raise ConfigError([f"{source}: {problem}" for problem in problems])
    return {str(key): item for key, item in tree.items()}


def _read_file(path: str | os.PathLike[str]) -> Tree:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{os.fspath(path)}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{os.fspath(path)}: cannot read config file: {err}") from None
    return parse_yaml(text, os.fspath(path))


def read_main(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Tree, str, bool]:
    """Read the main document (step 1 of the module docstring).

    Returns:
        ``(tree, source, extra_allowed)``; ``extra_allowed`` is False for ``VMPOOLER_CONFIG``.

    Raises:
        ConfigError: the file is missing or unreadable, or its YAML is invalid.
    """
    if path is not None:
        return _read_file(path), os.fspath(path), True
    if env.get("VMPOOLER_CONFIG", "").strip():
        return parse_yaml(env["VMPOOLER_CONFIG"], "env VMPOOLER_CONFIG"), "env VMPOOLER_CONFIG", False
    chosen = env.get("VMPOOLER_CONFIG_FILE", "").strip() or DEFAULT_CONFIG_FILE
    return _read_file(chosen), chosen, True


def _extra_names(tree: Tree, env: Mapping[str, str]) -> tuple[str, ...]:
    if env.get("EXTRA_CONFIG", "").strip():
        return coerce(env["EXTRA_CONFIG"], Kind.STR_LIST)
    section = tree.get("config")
    value = section.get("extra_config") if isinstance(section, dict) else None
    try:
        return () if value is None else coerce(value, Kind.STR_LIST)
    except ValueError:
        return ()  # reported with its key path when :config: is validated


def read_extra_files(tree: Tree, env: Mapping[str, str]) -> Tree:
    """Deep-merge every extra file (step 2 of the module docstring) on top of ``tree``.

    Raises:
        ConfigError: an extra file is missing or its YAML is invalid.
    """
    for name in _extra_names(tree, env):
        tree = deep_merge(tree, _read_file(name))
    return tree


def deep_merge(base: Any, extra: Any) -> Any:
    """Merge ``extra`` on top of ``base`` without changing either.

    Mappings merge key by key, lists are concatenated and then lose their duplicates (first one kept),
    and any other value of ``extra`` replaces the one in ``base``.
    """
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(extra, list):
        unique: list[Any] = []
        for item in (*base, *extra):
            if item not in unique:
                unique.append(item)
        return unique
    return extra
