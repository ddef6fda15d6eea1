"""Typed, immutable configuration, loaded from real vmpooler.yaml files unchanged.

``load_config`` reads the YAML (see :mod:`vmpooler.config_env` for sources, ``EXTRA_CONFIG`` and the
env table), validates every section and returns a frozen :class:`Config`. Validation collects every
problem before it fails: :class:`~vmpooler.errors.ConfigError` carries them all, each written
``"<key path>: <reason>"`` (``":pools:[2].size: must be an integer >= 0, got 'ten'"``).

Differences from the original
-----------------------------
* ``:config: domain`` / env ``DOMAIN``, a provider-level ``domain`` and a pool-level ``domain`` are
  still accepted as the domain of pools without a ``dns_plugin`` (pool, then provider, then global),
  with a deprecation warning in :attr:`Config.warnings` and in the log. The original exits instead.
* Env booleans are parsed for real (``true/false/yes/no/on/off/1/0``): ``EXPERIMENTAL_FEATURES=false``
  is false. An env value that does not parse (``TASK_LIMIT=abc``) is an error naming the variable; the
  original silently used the default. An empty variable counts as unset.
* Unknown keys are errors in ``:config:``, ``:redis:``, ``:auth:`` (and its ``:ldap:``), the metrics
  sections, ``:rate_limits:`` and at the top level. Pool keys the core does not know become
  ``provider_options``; provider and DNS options are free-form.
* No Redis server configured (no ``:redis:``, no ``server``/``url``, or ``server: embedded``) means the
  embedded Redis the supervisor starts, not ``localhost``. ``logfile`` defaults to none (log to
  standard error) instead of ``/var/log/vmpooler.log``.
* Pool names may contain dots. A string ``alias`` works (split on commas) instead of crashing.
* Pools inherit ``check_loop_delay_*`` from ``:config:`` (then the defaults); a ``max`` below ``min``
  becomes ``min`` and a ``decay`` ≤ 1.0 becomes 2.0, each with a warning. A pool's
  ``check_hostname_for_mismatch`` defaults to ``:config: check_ready_vm_hostname_for_mismatch``.
* A pool without ``provider`` uses ``dummy`` (as the original's manager does), and ``dummy`` always
  exists: it is added to :attr:`Config.providers` when a pool uses it without configuring it.
* ``purge_unconfigured_folders`` (global key and env) still works, with a deprecation warning.
* A key given with no value (``task_limit:``) means the default.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import attrs

from vmpooler import config_env
from vmpooler.config_env import Kind, Tree, coerce
from vmpooler.errors import ConfigError

__all__ = [
    "DEFAULT_HEALTH_THRESHOLDS",
    "DEFAULT_RATE_LIMITS",
    "AuthConfig",
    "Config",
    "DnsConfig",
    "FrozenDict",
    "GlobalConfig",
    "MetricsConfig",
    "PoolConfig",
    "ProviderConfig",
    "RateLimit",
    "RedisConfig",
    "TracingConfig",
    "check_config",
    "freeze",
    "load_config",
    "load_config_text",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_SPEC = "vmpooler.config.spec"
_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CORE_SECTIONS = frozenset(
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
    }
)
_LEGACY_PROVIDERS = ("vsphere", "dummy")
_LOOP_DELAY_KEYS = ("check_loop_delay_min", "check_loop_delay_max", "check_loop_delay_decay")
_LOOP_DELAY_DEFAULTS = (5.0, 60.0, 2.0)  # seconds, seconds, factor


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change. Still a dict, so ``json.dumps`` and pickle work on it."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("configuration mappings are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


def freeze(value: Any) -> Any:
    """A deep read-only copy: mappings become :class:`FrozenDict`, lists become tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def _tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


def _symbol(value: str | None) -> str | None:
    """A name written as a Ruby symbol (``:vsphere``) means the plain name."""
    return value[1:] if value and value.startswith(":") else value


@attrs.define
class _Context:
    """Problems and warnings of one load, and the environment it runs in."""

    env: Mapping[str, str] = attrs.Factory(dict)
    problems: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("%s", message)


def _strict(parse: Callable[[_Context], _T | None], env: Mapping[str, str] | None = None) -> _T:
    """Run one section parser alone (the public ``from_dict``) and raise what it found."""
    ctx = _Context(env=env or {})
    result = parse(ctx)
    if ctx.problems or result is None:
        raise ConfigError(ctx.problems or ["invalid configuration"])
    return result


class _Reader:
    """Reads one mapping section, recording each problem with its key path."""

    def __init__(self, data: object, path: str, ctx: _Context) -> None:
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
        return {str(key): value for key, value in self.data.items() if key not in self.used}

    def reject_unknown(self) -> None:
        for key in self.rest():
            self.ctx.problem(self.at(key), "unknown key")


def _setting(default: Any, kind: Kind, minimum: float | None = None) -> Any:
    """A settings field: read by ``_read_settings`` from the key of the same name, checked on init."""

    def convert(value: Any) -> Any:
        if value is None and default is None:
            return None
        return freeze(coerce(value, kind, minimum))

    return attrs.field(default=default, converter=convert, metadata={_SPEC: (kind, minimum)})


def _read_settings(cls: type[Any], reader: _Reader) -> dict[str, Any]:
    """Every ``_setting`` field of ``cls`` that the section gives, by field name."""
    values = {}
    for field in attrs.fields(cls):
        if _SPEC in field.metadata:
            kind, minimum = field.metadata[_SPEC]
            value = reader.get(field.name, kind, minimum=minimum)
            if value is not None:
                values[field.name] = value
    return values


def _loop_delays(
    values: dict[str, Any], inherited: tuple[float, float, float], reader: _Reader, ctx: _Context
) -> tuple[float, float, float]:
    """``check_loop_delay_min/max/decay`` of a section, falling back to ``inherited``, made sane."""
    low, high, decay = (
        float(values[key]) if key in values else default
        for key, default in zip(_LOOP_DELAY_KEYS, inherited, strict=True)
    )
    if high < low:
        if reader.given("check_loop_delay_max"):
            ctx.warn(
                f"{reader.at('check_loop_delay_max')}: {high:g} is below check_loop_delay_min "
                f"{low:g}; using {low:g}"
            )
        high = low
    if decay <= 1.0:
        ctx.warn(f"{reader.at('check_loop_delay_decay')}: must be greater than 1.0, got {decay:g}; using 2.0")
        decay = 2.0
    return low, high, decay


DEFAULT_HEALTH_THRESHOLDS = FrozenDict(
    pending_queue_max=100,
    ready_queue_max=500,
    dlq_max_warning=100,
    dlq_max_critical=1000,
    stuck_vm_age_threshold=7200,
    stuck_vm_max_warning=10,
    stuck_vm_max_critical=50,
)

_S, _I, _N, _B, _L = Kind.STR, Kind.INT, Kind.NUMBER, Kind.BOOL, Kind.STR_LIST


@attrs.frozen(kw_only=True)
class GlobalConfig:
    """The ``:config:`` section (reference §2.2). Times are in the units the original uses."""

    site_name: str = _setting("vmpooler", _S)
    logfile: str | None = _setting(None, _S)
    prefix: str = _setting("", _S)
    task_limit: int = _setting(10, _I, 1)
    ondemand_clone_limit: int = _setting(10, _I, 1)
    max_ondemand_instances_per_request: int = _setting(10, _I, 1)
    ondemand_request_ttl: int = _setting(5, _I, 1)  # minutes
    max_vm_retries: int = _setting(3, _I, 0)
    migration_limit: int | None = _setting(None, _I, 0)
    vm_checktime: float = _setting(1, _N, 0)  # minutes
    vm_lifetime: int = _setting(24, _I, 0)  # hours
    vm_lifetime_auth: int | None = _setting(None, _I, 0)
    max_lifetime_upper_limit: int | None = _setting(None, _I, 0)
    ready_ttl: float = _setting(60, _N, 0)  # minutes (fractions allowed)
    timeout: float = _setting(15, _N, 0)  # minutes (fractions allowed)
    timeout_notification: float = _setting(5, _N, 0)  # minutes (fractions allowed)
    clone_target: str | None = _setting(None, _S)
    max_tries: int = _setting(3, _I, 1)
    retry_factor: int = _setting(10, _I, 0)
    create_folders: bool = _setting(False, _B)
    create_template_delta_disks: bool = _setting(False, _B)
    create_linked_clones: bool = _setting(True, _B)
    purge_unconfigured_resources: bool = _setting(False, _B)
    experimental_features: bool = _setting(False, _B)
    usage_stats: bool = _setting(False, _B)
    request_logger: bool = _setting(False, _B)
    extra_config: tuple[str, ...] = _setting((), _L)
    allowed_tags: tuple[str, ...] | None = _setting(None, _L)
    backend_weight: Mapping[str, int] = _setting(FrozenDict(), Kind.INT_MAP, 0)
    check_loop_delay_min: float = _setting(_LOOP_DELAY_DEFAULTS[0], _N, 0)  # seconds
    check_loop_delay_max: float = _setting(_LOOP_DELAY_DEFAULTS[1], _N, 0)
    check_loop_delay_decay: float = _setting(_LOOP_DELAY_DEFAULTS[2], _N)
    check_ready_vm_hostname_for_mismatch: bool = _setting(True, _B)
    manage_host_selection: bool = _setting(False, _B)
    host_selection_max_age: int = _setting(60, _I, 0)  # seconds
    utilization_limit: float = _setting(90, _N, 0)  # percent
    vsphere_timeout: int = _setting(60, _I, 1)  # seconds
    circuit_breaker_enabled: bool = _setting(True, _B)
    circuit_breaker_failure_threshold: int = _setting(5, _I, 1)
    circuit_breaker_timeout: int = _setting(30, _I, 0)  # seconds
    circuit_breaker_half_open_attempts: int = _setting(3, _I, 1)
    adaptive_timeout_enabled: bool = _setting(True, _B)
    connection_pool_timeout_min: int = _setting(5, _I, 0)  # seconds
    connection_pool_timeout_max: int = _setting(60, _I, 0)
    connection_pool_timeout_initial: int = _setting(30, _I, 0)
    connection_pool_monitor_enabled: bool = _setting(True, _B)
    connection_pool_monitor_interval: int = _setting(10, _I, 1)  # seconds
    dlq_enabled: bool = _setting(False, _B)
    dlq_ttl: int = _setting(168, _I, 0)  # hours
    dlq_max_entries: int = _setting(10000, _I, 0)
    purge_enabled: bool = _setting(False, _B)
    purge_dry_run: bool = _setting(False, _B)
    purge_interval: int = _setting(3600, _I, 1)  # seconds
    max_pending_age: int = _setting(7200, _I, 0)  # seconds
    max_ready_age: int = _setting(86400, _I, 0)
    max_completed_age: int = _setting(3600, _I, 0)
    max_orphaned_age: int = _setting(86400, _I, 0)
    health_check_enabled: bool = _setting(False, _B)
    health_check_interval: int = _setting(300, _I, 1)  # seconds
    health_thresholds: Mapping[str, float] = _setting(DEFAULT_HEALTH_THRESHOLDS, Kind.NUMBER_MAP, 0)
    rate_limiting_enabled: bool = _setting(False, _B)
    domain: str | None = _setting(None, _S)  # deprecated: use :dns_configs:
    status_cache_seconds: float = _setting(0, _N, 0)  # ours: 0 = /status is not cached
    api_workers: int = _setting(2, _I, 1)  # ours: API worker processes

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GlobalConfig:
        """Validate a ``:config:`` mapping alone.

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: _Context) -> GlobalConfig:
        reader = _Reader(data, ":config:", ctx)
        values = _read_settings(cls, reader)
        legacy = reader.get("purge_unconfigured_folders", _B)
        if legacy is not None:
            ctx.warn(
                f"{reader.at('purge_unconfigured_folders')} is deprecated: use purge_unconfigured_resources"
            )
            values.setdefault("purge_unconfigured_resources", legacy)
        if "health_thresholds" in values:
            values["health_thresholds"] = {**DEFAULT_HEALTH_THRESHOLDS, **values["health_thresholds"]}
        reader.reject_unknown()
        delays = _loop_delays(values, _LOOP_DELAY_DEFAULTS, reader, ctx)
        values.update(zip(_LOOP_DELAY_KEYS, delays, strict=True))
        return cls(**values)


@attrs.frozen(kw_only=True)
class RedisConfig:
    """The ``:redis:`` section (reference §2.3). ``embedded`` means the supervisor runs redis-server."""

    server: str | None = _setting(None, _S)
    port: int = _setting(6379, _I, 1)
    password: str | None = _setting(None, _S)
    username: str | None = _setting(None, _S)
    db: int = _setting(0, _I, 0)
    url: str | None = _setting(None, _S)
    data_ttl: int = _setting(168, _I, 0)  # hours
    connection_pool_size: int = _setting(10, _I, 1)
    connection_pool_timeout: int = _setting(5, _I, 0)  # seconds
    reconnect_attempts: int = _setting(10, _I, 0)
    embedded_dir: str = _setting(".vmpooler/redis", _S)
    embedded: bool = attrs.field()

    @embedded.default
    def _no_server(self) -> bool:
        return not self.url and self.server in (None, "", "embedded")

    @property
    def client_url(self) -> str | None:
        """A ``redis://`` (or the given ``rediss://``/``unix://``) URL; None when embedded."""
        if self.url:
            return self.url
        if self.embedded or not self.server:
            return None
        auth = quote(self.username or "", safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"redis://{auth + '@' if auth else ''}{host}:{self.port}/{self.db}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RedisConfig:
        """Validate a ``:redis:`` mapping alone (None: no section, so embedded).

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: _Context) -> RedisConfig:
        reader = _Reader(data, ":redis:", ctx)
        values = _read_settings(cls, reader)
        if values.get("port", 1) > 65535:
            ctx.problem(reader.at("port"), f"must be a port number (1-65535), got {values.pop('port')}")
        url = values.get("url")
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            ctx.problem(reader.at("url"), f"must start with redis://, rediss:// or unix://, got {url!r}")
        reader.reject_unknown()
        if values.get("server") == "embedded":
            del values["server"]
        return cls(**values)


def _resolve_pool_domain(
    pool: Mapping[str, Any], provider: ProviderConfig | None, globals_: GlobalConfig, dns: DnsConfig | None
) -> str | None:
    if dns is not None:
        return dns.domain
    for domain in (pool.get("domain"), provider.options.get("domain") if provider else None, globals_.domain):
        if domain is not None:
            return str(domain)
    return None


@attrs.frozen(kw_only=True)
class PoolConfig:
    """One ``:pools:`` entry, with the global defaults it inherits already filled in."""

    name: str
    template: str
    size: int = attrs.field(validator=attrs.validators.ge(0))
    alias: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    provider: str = "dummy"
    dns_plugin: str | None = None
    domain: str | None = None
    clone_target: str | None = None
    timeout: float = 15
    timeout_notification: float = 5
    ready_ttl: float = 60
    check_loop_delay_min: float = 5.0
    check_loop_delay_max: float = 60.0
    check_loop_delay_decay: float = 2.0
    check_hostname_for_mismatch: bool = True
    provider_options: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)
    raw: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], globals_: GlobalConfig | None = None) -> PoolConfig:
        """Validate one pool alone (providers and DNS configs are not cross-checked).

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(data, ":pools:[0]", ctx, globals_ or GlobalConfig()))

    @classmethod
    def _parse(
        cls,
        data: object,
        path: str,
        ctx: _Context,
        globals_: GlobalConfig,
        providers: Mapping[str, ProviderConfig] | None = None,
        dns_configs: Mapping[str, DnsConfig] | None = None,
    ) -> PoolConfig | None:
        if not isinstance(data, Mapping):
            ctx.problem(path, f"must be a mapping, got {data!r:.60}")
            return None
        before = len(ctx.problems)
        reader = _Reader(data, path, ctx)
        name = reader.get("name", _S, required=True)
        if name is not None and not _POOL_NAME.fullmatch(name):
            ctx.problem(reader.at("name"), f"must match [A-Za-z0-9_.-]+, got {name!r}")
        template = reader.get("template", _S, required=True)
        if template is not None and not template.strip():
            ctx.problem(reader.at("template"), "must not be empty")
        size = reader.get("size", _I, minimum=0, required=True)
        provider = _symbol(reader.get("provider", _S)) or "dummy"
        if providers is not None and provider != "dummy" and provider not in providers:
            ctx.problem(reader.at("provider"), f"no provider {provider!r} in :providers:")
        dns_plugin = _symbol(reader.get("dns_plugin", _S))
        if dns_configs is not None and dns_plugin is not None and dns_plugin not in dns_configs:
            ctx.problem(reader.at("dns_plugin"), f"no DNS config {dns_plugin!r} in :dns_configs:")
        values = {
            key: reader.get(key, kind, default, minimum=minimum)
            for key, kind, default, minimum in (
                ("clone_target", _S, globals_.clone_target, None),
                ("timeout", _N, globals_.timeout, 0),
                ("timeout_notification", _N, globals_.timeout_notification, 0),
                ("ready_ttl", _N, globals_.ready_ttl, 0),
                ("check_loop_delay_min", _N, None, 0),
                ("check_loop_delay_max", _N, None, 0),
                ("check_loop_delay_decay", _N, None, None),
            )
        }
        values["check_hostname_for_mismatch"] = reader.get(
            "check_hostname_for_mismatch", _B, globals_.check_ready_vm_hostname_for_mismatch
        )
        alias = reader.get("alias", _L, ())
        reader.get("domain", _S)
        if reader.given("domain") and dns_plugin is None:
            ctx.warn(f"{reader.at('domain')} is deprecated: set dns_plugin to a :dns_configs: entry")
        if len(ctx.problems) > before:
            return None
        inherited = (
            globals_.check_loop_delay_min,
            globals_.check_loop_delay_max,
            globals_.check_loop_delay_decay,
        )
        given = {key: value for key, value in values.items() if value is not None}
        values.update(zip(_LOOP_DELAY_KEYS, _loop_delays(given, inherited, reader, ctx), strict=True))
        provider_config = (providers or {}).get(provider)
        dns = (dns_configs or {}).get(dns_plugin) if dns_plugin else None
        return cls(
            name=name,
            template=template,
            size=size,
            alias=alias,
            provider=provider,
            dns_plugin=dns_plugin,
            domain=_resolve_pool_domain(data, provider_config, globals_, dns),
            provider_options={k: v for k, v in reader.rest().items() if k != "domain"},
            raw=data,
            **values,
        )


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """One ``:providers:`` entry; ``provider_class`` picks the plugin (several instances may share one)."""

    name: str
    provider_class: str
    options: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any] | None) -> ProviderConfig:
        """Validate one provider entry alone.

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(name, data, f":providers:.{name}", ctx))

    @classmethod
    def _parse(cls, name: str, data: object, path: str, ctx: _Context) -> ProviderConfig:
        reader = _Reader(data, path, ctx)
        provider_class = _symbol(reader.get("provider_class", _S)) or name
        if reader.given("domain"):
            ctx.warn(
                f"{reader.at('domain')} is deprecated: move it to a :dns_configs: entry and set "
                "dns_plugin on the pools"
            )
        return cls(name=name, provider_class=provider_class, options=reader.rest())


@attrs.frozen(kw_only=True)
class DnsConfig:
    """One ``:dns_configs:`` entry. ``dns_class: dynamic-dns`` manages no records."""

    name: str
    dns_class: str
    domain: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> DnsConfig:
        """Validate one DNS config entry alone.

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(name, data, f":dns_configs:.{name}", ctx))

    @classmethod
    def _parse(cls, name: str, data: object, path: str, ctx: _Context) -> DnsConfig | None:
        reader = _Reader(data, path, ctx)
        dns_class = _symbol(reader.get("dns_class", _S, required=True))
        domain = reader.get("domain", _S)
        if dns_class is None:
            return None
        return cls(name=name, dns_class=dns_class, domain=domain, options=reader.rest())


@attrs.frozen(kw_only=True)
class AuthConfig:
    """The ``:auth:`` section: ``provider`` is ``dummy`` or ``ldap``; ``ldap`` holds its settings."""

    provider: str = attrs.field(validator=attrs.validators.in_(("dummy", "ldap")))
    ldap: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> AuthConfig:
        """Validate an ``:auth:`` mapping alone (``env`` is consulted for ``VMPOOLER_DEBUG``).

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(data, ctx), env)

    @classmethod
    def _parse(cls, data: object, ctx: _Context) -> AuthConfig | None:
        reader = _Reader(data, ":auth:", ctx)
        provider = _symbol(reader.get("provider", _S, required=True))
        if provider not in (None, "dummy", "ldap"):
            ctx.problem(reader.at("provider"), f"must be 'dummy' or 'ldap', got {provider!r}")
        if provider == "dummy" and not ctx.env.get("VMPOOLER_DEBUG"):
            ctx.problem(
                reader.at("provider"),
                "'dummy' accepts any password: only allowed when env VMPOOLER_DEBUG is set",
            )
        reader.used.add("ldap")
        ldap = cls._parse_ldap(reader.data.get("ldap"), reader.at("ldap"), ctx, provider == "ldap")
        reader.reject_unknown()
        if provider not in ("dummy", "ldap"):
            return None
        return cls(provider=provider, ldap=ldap)

    @staticmethod
    def _parse_ldap(data: object, path: str, ctx: _Context, needed: bool) -> dict[str, Any]:
        if data is None and not needed:
            return {}
        reader = _Reader(data, path, ctx)
        ldap = {"host": reader.get("host", _S, required=needed), "port": reader.port("port", 389)}
        for key in ("base", "user_object"):
            given = reader.data.get(key) if isinstance(reader.data, dict) else None
            # A DN holds commas: a string is split on whitespace only, as the original does.
            ldap[key] = (
                tuple(given.split()) if isinstance(given, str) else reader.get(key, _L, (), required=needed)
            )
            reader.used.add(key)
        ldap["encryption"] = reader.get("encryption", Kind.MAPPING, {})
        ldap["service_account_hash"] = reader.get("service_account_hash", Kind.MAPPING)
        reader.reject_unknown()
        return ldap


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """The metrics sink: exactly one of statsd > graphite > prometheus, or none (``kind`` None)."""

    kind: str | None = attrs.field(
        default=None, validator=attrs.validators.in_((None, "statsd", "graphite", "prometheus"))
    )
    server: str | None = None
    port: int | None = None
    prefix: str = "vmpooler"
    prometheus_prefix: str = "vmpooler"
    prometheus_endpoint: str = "/prometheus"
    graphs_server: str | None = None  # dashboard graphs (:graphs:, else :graphite:)
    graphs_prefix: str = "vmpooler"

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> MetricsConfig:
        """Validate the metrics sections of a whole (colon-free) document.

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(tree, ctx))

    @classmethod
    def _parse(cls, tree: Mapping[str, Any], ctx: _Context) -> MetricsConfig:
        sinks: dict[str, dict[str, Any]] = {}
        for kind, port in (("statsd", 8125), ("graphite", 2003)):
            if kind in tree:
                reader = _Reader(tree[kind], f":{kind}:", ctx)
                sinks[kind] = {
                    "server": reader.get("server", _S, required=True),
                    "prefix": reader.get("prefix", _S, "vmpooler"),
                    "port": reader.port("port", port),
                }
                reader.reject_unknown()
        if "prometheus" in tree:
            reader = _Reader(tree["prometheus"], ":prometheus:", ctx)
            sinks["prometheus"] = {
                key: reader.get(key, _S, default)
                for key, default in (
                    ("prefix", "vmpooler"),
                    ("prometheus_prefix", "vmpooler"),
                    ("prometheus_endpoint", "/prometheus"),
                )
            }
            if not sinks["prometheus"]["prometheus_endpoint"].startswith("/"):
                ctx.problem(reader.at("prometheus_endpoint"), "must start with '/'")
            reader.reject_unknown()
        graphs = _Reader(tree.get("graphs"), ":graphs:", ctx)
        graphite = sinks.get("graphite", {})
        values: dict[str, Any] = {
            "graphs_server": graphs.get("server", _S, graphite.get("server")),
            "graphs_prefix": graphs.get("prefix", _S, graphite.get("prefix", "vmpooler")),
        }
        graphs.reject_unknown()
        if sinks:
            kind = next(iter(sinks))
            if len(sinks) > 1:
                ctx.warn(f"several metrics sinks configured ({', '.join(sinks)}): using {kind}")
            values.update(sinks[kind], kind=kind)
        return cls(**values)


@attrs.frozen(kw_only=True)
class TracingConfig:
    """The ``:tracing:`` section."""

    enabled: bool = _setting(False, _B)
    jaeger_host: str = _setting("http://localhost:14268/api/traces", _S)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TracingConfig:
        """Validate a ``:tracing:`` mapping alone.

        Raises:
            ConfigError: with every problem found.
        """
        return _strict(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: _Context) -> TracingConfig:
        reader = _Reader(data, ":tracing:", ctx)
        values = _read_settings(cls, reader)
        reader.reject_unknown()
        return cls(**values)


@attrs.frozen(kw_only=True)
class RateLimit:
    """At most ``limit`` requests per ``period`` seconds."""

    limit: int = attrs.field(validator=attrs.validators.ge(1))
    period: int = attrs.field(validator=attrs.validators.ge(1))


DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = FrozenDict(
    vm_creation=RateLimit(limit=20, period=60),
    vm_deletion=RateLimit(limit=50, period=60),
    authenticated=RateLimit(limit=500, period=60),
    global_per_ip=RateLimit(limit=100, period=60),
)


def _parse_rate_limits(data: object, ctx: _Context) -> dict[str, RateLimit]:
    limits = dict(DEFAULT_RATE_LIMITS)
    section = _Reader(data, ":rate_limits:", ctx)
    for name in section.data:
        if name not in limits:
            ctx.problem(section.at(name), f"unknown rate limit class (one of {', '.join(limits)})")
            continue
        reader = _Reader(section.data[name], section.at(name), ctx)
        limit = reader.get("limit", _I, limits[name].limit, minimum=1)
        period = reader.get("period", _I, limits[name].period, minimum=1)
        reader.reject_unknown()
        limits[name] = RateLimit(limit=limit, period=period)
    return limits


def _parse_tagfilter(data: object, ctx: _Context) -> dict[str, re.Pattern[str]]:
    reader = _Reader(data, ":tagfilter:", ctx)
    patterns = {}
    for tag in reader.data:
        text = reader.get(tag, _S)
        try:
            patterns[tag] = re.compile(text)
        except (re.error, TypeError) as err:
            ctx.problem(reader.at(tag), f"invalid regular expression {text!r}: {err}")
    return patterns


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration of one deployment, as :func:`load_config` builds it.

    Attributes:
        raw: the merged tree after env overrides, with colon-free keys (for ``GET /config``; it holds
            secrets, so redact before serving it).
        loaded_at: ``time.time()`` of the load.
        source: where the main document came from (a path or ``"env VMPOOLER_CONFIG"``).
        warnings: deprecations and values that were corrected, also logged at load time.
    """

    globals: GlobalConfig = attrs.Factory(GlobalConfig)
    redis: RedisConfig = attrs.Factory(RedisConfig)
    pools: tuple[PoolConfig, ...] = attrs.field(default=(), converter=_tuple)
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    dns_configs: Mapping[str, DnsConfig] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    auth: AuthConfig | None = None
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    tracing: TracingConfig = attrs.Factory(TracingConfig)
    tagfilter: Mapping[str, re.Pattern[str]] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    rate_limits: Mapping[str, RateLimit] = attrs.field(default=DEFAULT_RATE_LIMITS, converter=FrozenDict)
    raw: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)
    loaded_at: float = attrs.Factory(time.time)
    source: str = "<built>"
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    _by_name: Mapping[str, PoolConfig] = attrs.field(init=False, repr=False, eq=False)
    _aliases: Mapping[str, tuple[str, ...]] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        by_name: dict[str, PoolConfig] = {}
        aliases: dict[str, list[str]] = {}
        for pool in self.pools:
            if pool.name in by_name:
                raise ValueError(f"pool {pool.name!r} is configured twice")
            by_name[pool.name] = pool
            for alias in pool.alias:
                targets = aliases.setdefault(alias, [])
                if alias != pool.name and pool.name not in targets:
                    targets.append(pool.name)
        object.__setattr__(self, "_by_name", FrozenDict(by_name))
        object.__setattr__(self, "_aliases", FrozenDict({k: tuple(v) for k, v in aliases.items() if v}))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "<dict>"
    ) -> Config:
        """Validate an already parsed document (keys may keep their leading colons).

        Env overrides apply as in :func:`load_config`; extra files are not read.

        Raises:
            ConfigError: with every problem found.
        """
        problems: list[str] = []
        tree = config_env.normalize_keys(dict(data), problems)
        if problems:
            raise ConfigError(problems)
        return _build(tree, source, _Context(env=os.environ if env is None else env))

    def pool(self, name: str) -> PoolConfig:
        """The pool called ``name`` (aliases are not pools).

        Raises:
            KeyError: no such pool.
        """
        return self._by_name[name]

    @property
    def pools_by_name(self) -> Mapping[str, PoolConfig]:
        """Every pool by its name, in config order."""
        return self._by_name

    @property
    def pool_names(self) -> frozenset[str]:
        """Every name a client may request: pool names and aliases."""
        return frozenset(self._by_name) | frozenset(self._aliases)

    def alias_pools(self, name: str) -> tuple[str, ...]:
        """The pools that list ``name`` as an alias, in config order (a pool never aliases itself)."""
        return self._aliases.get(name, ())

    def candidates(self, name: str) -> tuple[str, ...]:
        """Pools that may serve a request for ``name``: itself if it is a pool, then its alias pools."""
        own = (name,) if name in self._by_name else ()
        return own + tuple(pool for pool in self.alias_pools(name) if pool != name)

    def pools_for_provider(self, provider_name: str) -> tuple[PoolConfig, ...]:
        """The pools served by the provider instance ``provider_name``, in config order."""
        return tuple(pool for pool in self.pools if pool.provider == provider_name)

    def backend_weight(self, pool_name: str) -> int | None:
        """``:config: backend_weight`` of the pool's clone target (its own, else the global one).

        Raises:
            KeyError: no such pool.
        """
        target = self.pool(pool_name).clone_target
        return None if target is None else self.globals.backend_weight.get(target)


def _referenced_providers(pools: object) -> set[str]:
    if not isinstance(pools, list):
        return set()
    names = (pool.get("provider") for pool in pools if isinstance(pool, Mapping))
    return {name.removeprefix(":") for name in names if isinstance(name, str)}


def _parse_named(
    data: object, path: str, parse: Callable[[str, object, str, _Context], _T | None], ctx: _Context
) -> dict[str, _T]:
    section = _Reader(data, path, ctx)
    parsed = {
        str(name): parse(str(name), item, section.at(str(name)), ctx) for name, item in section.data.items()
    }
    return {name: item for name, item in parsed.items() if item is not None}


def _parse_providers(tree: Tree, referenced: set[str], ctx: _Context) -> dict[str, ProviderConfig]:
    providers = _parse_named(tree.get("providers"), ":providers:", ProviderConfig._parse, ctx)
    for name in (*_LEGACY_PROVIDERS, *sorted(referenced - set(_LEGACY_PROVIDERS) - _CORE_SECTIONS)):
        if name not in tree:
            continue
        if name in providers:
            ctx.warn(f":{name}: is ignored: :providers: already has an entry {name!r}")
        else:
            providers[name] = ProviderConfig._parse(name, tree[name], f":{name}:", ctx)
    return providers


def _parse_pools(
    data: object,
    ctx: _Context,
    globals_: GlobalConfig,
    providers: Mapping[str, ProviderConfig],
    dns_configs: Mapping[str, DnsConfig],
) -> list[PoolConfig]:
    if data is None:
        return []
    if not isinstance(data, list):
        ctx.problem(":pools:", f"must be a list of pools, got {data!r:.60}")
        return []
    pools: list[PoolConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in seen:
            ctx.problem(
                f":pools:[{index}].name", f"duplicate pool name {name!r} (also :pools:[{seen[name]}])"
            )
        elif isinstance(name, str):
            seen[name] = index
        pool = PoolConfig._parse(item, f":pools:[{index}]", ctx, globals_, providers, dns_configs)
        if pool is not None and seen.get(pool.name) == index:
            pools.append(pool)
    return pools


def _parse_tree(tree: Tree, source: str, ctx: _Context, origins: Mapping[str, str]) -> Config | None:
    referenced = _referenced_providers(tree.get("pools"))
    for key in tree:
        if key not in _CORE_SECTIONS and key not in _LEGACY_PROVIDERS and key not in referenced:
            ctx.problem(f":{key}:", "unknown top-level section")
    globals_ = GlobalConfig._parse(tree.get("config"), ctx)
    if globals_.domain is not None:
        given = "env DOMAIN" if origins.get(":config:.domain") else ":config:.domain"
        ctx.warn(
            f"{given} is deprecated: move the domain to a :dns_configs: entry and set dns_plugin "
            "on the pools; it is used for pools without dns_plugin until then"
        )
    providers = _parse_providers(tree, referenced, ctx)
    dns_configs = _parse_named(tree.get("dns_configs"), ":dns_configs:", DnsConfig._parse, ctx)
    pools = _parse_pools(tree.get("pools"), ctx, globals_, providers, dns_configs)
    if "dummy" not in providers and any(pool.provider == "dummy" for pool in pools):
        providers["dummy"] = ProviderConfig(name="dummy", provider_class="dummy")
    config = Config(
        globals=globals_,
        redis=RedisConfig._parse(tree.get("redis"), ctx),
        pools=pools,
        providers=providers,
        dns_configs=dns_configs,
        auth=AuthConfig._parse(tree["auth"], ctx) if "auth" in tree else None,
        metrics=MetricsConfig._parse(tree, ctx),
        tracing=TracingConfig._parse(tree.get("tracing"), ctx),
        tagfilter=_parse_tagfilter(tree.get("tagfilter"), ctx),
        rate_limits=_parse_rate_limits(tree.get("rate_limits"), ctx),
        raw=tree,
        source=source,
        warnings=ctx.warnings,
    )
    return None if ctx.problems else config


def _blame(problem: str, origins: Mapping[str, str]) -> str:
    """Name the env variable behind a bad value: ``"… (set by env TASK_LIMIT)"``."""
    for path, name in origins.items():
        if problem.startswith(f"{path}: "):
            return f"{problem} (set by env {name})"
    return problem


def _build(tree: Tree, source: str, ctx: _Context) -> Config:
    origins, problems, warnings = config_env.apply_env(tree, ctx.env)
    ctx.problems.extend(problems)
    for warning in warnings:
        ctx.warn(warning)
    config = _parse_tree(tree, source, ctx, origins)
    if config is None or ctx.problems:
        raise ConfigError([_blame(problem, origins) for problem in ctx.problems])
    return config


def _warn_extra_ignored(tree: Tree, ctx: _Context) -> None:
    section = tree.get("config")
    wanted = isinstance(section, Mapping) and section.get("extra_config")
    if wanted or ctx.env.get("EXTRA_CONFIG", "").strip():
        ctx.warn(
            "extra config files are not read when the whole configuration is given inline "
            "(env VMPOOLER_CONFIG or a string)"
        )


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, merge, override and validate the configuration.

    Args:
        path: the main YAML file; None to use env ``VMPOOLER_CONFIG``, then ``VMPOOLER_CONFIG_FILE``,
            then ``./vmpooler.yaml``.
        env: the environment to read (``os.environ`` when None).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: a missing file, invalid YAML or any invalid value, with every problem found.
    """
    env = os.environ if env is None else env
    tree, source, extra_allowed = config_env.read_main(path, env)
    ctx = _Context(env=env)
    if extra_allowed:
        tree = config_env.read_extra_files(tree, env)
    else:
        _warn_extra_ignored(tree, ctx)
    return _build(tree, source, ctx)


def load_config_text(text: str, env: Mapping[str, str] | None = None, *, source: str = "<string>") -> Config:
    """Like :func:`load_config` for YAML text (as env ``VMPOOLER_CONFIG``: no extra files are read).

    Raises:
        ConfigError: invalid YAML or any invalid value, with every problem found.
    """
    ctx = _Context(env=os.environ if env is None else env)
    tree = config_env.parse_yaml(text, source)
    _warn_extra_ignored(tree, ctx)
    return _build(tree, source, ctx)


def check_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem of a configuration, as ``"<key path>: <reason>"``; an empty list when it is valid."""
    try:
        load_config(path, env)
    except ConfigError as err:
        return list(err.problems)
    return []
