"""The environment table: one row per variable that overrides a configuration key.

This is the only place that maps environment variables to settings (STYLE bullet 6). Values are parsed
with the same :func:`~vmpooler.config.values.coerce` as YAML values, so ``EXPERIMENTAL_FEATURES=false``
is false and ``TASK_LIMIT=abc`` is an error naming the variable. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from vmpooler.config.values import Kind, coerce
from vmpooler.errors import ConfigError

__all__ = [
    "ENV_OVERRIDES",
    "PROCESS_VARIABLES",
    "EnvOverride",
    "apply_env",
    "env_flag",
    "env_value",
    "format_path",
]

PROCESS_VARIABLES: Mapping[str, tuple[Kind, str]] = {
    "VMPOOLER_DEBUG": (Kind.BOOL, "debug logging; allows :auth: provider 'dummy'"),
    "VMPOOLER_LOG_LEVEL": (Kind.STR, "DEBUG, INFO, WARNING or ERROR"),
    "VMPOOLER_LOG_FORMAT": (Kind.STR, "text or json (the supervisor sets it for its children: log_format)"),
    "VMPOOLER_BIND": (Kind.STR, "the address the API listens on (default 0.0.0.0)"),
    "VMPOOLER_PORT": (Kind.INT, "the port the API listens on (default 4567)"),
    "VMPOOLER_API_THREADS": (Kind.INT, "threads per API worker process (default 4)"),
    "VMPOOLER_SWITCH_INTERVAL": (Kind.NUMBER, "the API workers' GIL switch interval in seconds (0.0005)"),
}
"""Variables that set how the processes run rather than a config key; read with :func:`env_value`."""


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
        [
            ("REDIS_SERVER", "server"),
            ("REDIS_PASSWORD", "password"),
            ("VMPOOLER_REDIS_URL", "url"),
            ("REDIS_MASTER_NAME", "master_name"),
            ("REDIS_SENTINEL_PASSWORD", "sentinel_password"),
        ],
    ),
    *_rows("redis", Kind.STR_LIST, [("REDIS_SENTINELS", "sentinels")]),
    *_rows("config", _S, [("VMPOOLER_MANAGER_ID", "manager_id")]),
    *_rows("config", _N, [("VMPOOLER_MANAGER_LEASE_SECONDS", "manager_lease_seconds")]),
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


def env_value(
    name: str,
    default: Any,
    env: Mapping[str, str] | None = None,
    *,
    minimum: float | None = None,
) -> Any:
    """The value of process variable ``name`` (:data:`PROCESS_VARIABLES`), ``default`` when unset or empty.

    Raises:
        ConfigError: the text does not parse, naming the variable.
    """
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    kind = PROCESS_VARIABLES[name][0]
    if kind is Kind.STR:
        return text
    try:
        return coerce(text, kind, minimum)
    except ValueError as err:
        raise ConfigError(f"env {name}: {err}") from None


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """A boolean process variable: ``1/true/yes/on`` or ``0/false/no/off`` (any case); unset is False.

    Raises:
        ConfigError: any other text, naming the variable.
    """
    return bool(env_value(name, False, env))


def format_path(path: tuple[str, ...]) -> str:
    """``("config", "task_limit")`` → ``":config:.task_limit"``, the form problems are reported in."""
    return ".".join((f":{path[0]}:", *path[1:]))


def apply_env(tree: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
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
