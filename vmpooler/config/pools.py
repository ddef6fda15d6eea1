"""``:pools:``, ``:providers:`` and ``:dns_configs:`` entries.

A provider entry is validated by its plugin's own settings class at load time (in the supervisor and
in ``vmpooler check-config``, before any process forks); a pool key is known when the core reads it or
when the pool's provider lists it in ``pool_option_keys``. Any other key is a warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from vmpooler.config.reader import (
    LOOP_DELAY_KEYS,
    Context,
    SectionReader,
    loop_delays,
    run_alone,
)
from vmpooler.config.schema import GlobalConfig
from vmpooler.config.values import FrozenDict, Kind, as_tuple, freeze, symbol
from vmpooler.errors import ConfigError
from vmpooler.providers import load_provider_class
from vmpooler.providers.adaptive import AdaptiveSettings, MonitorSettings
from vmpooler.providers.base import ProviderSettings
from vmpooler.providers.guard import BreakerSettings

__all__ = ["DnsConfig", "PoolConfig", "ProviderConfig"]

_S, _I, _N, _B, _L = Kind.STR, Kind.INT, Kind.NUMBER, Kind.BOOL, Kind.STR_LIST
_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


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
    max_size: int | None = None  # ours: the most VMs (ready + pending) waiting checkouts may grow it to
    alias: tuple[str, ...] = attrs.field(default=(), converter=as_tuple)
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
        return run_alone(lambda ctx: cls._parse(data, ":pools:[0]", ctx, globals_ or GlobalConfig()))

    @classmethod
    def _parse(
        cls,
        data: object,
        path: str,
        ctx: Context,
        globals_: GlobalConfig,
        providers: Mapping[str, ProviderConfig] | None = None,
        dns_configs: Mapping[str, DnsConfig] | None = None,
        *,
        published: bool = False,
    ) -> PoolConfig | None:
        """One pool entry; None when it has a problem (recorded in ``ctx``).

        ``published``: a pool a manager wrote to Redis (``vmpooler.config.published``), parsed with
        ``providers`` and ``dns_configs`` None: its provider may be configured only on that manager,
        so the keys nobody reads are that provider's (no warning), and ``domain`` is the domain the
        manager resolved (no deprecation warning).
        """
        if not isinstance(data, Mapping):
            ctx.problem(path, f"must be a mapping, got {data!r:.60}")
            return None
        before = len(ctx.problems)
        reader = SectionReader(data, path, ctx)
        name = reader.get("name", _S, required=True)
        if name is not None and not _POOL_NAME.fullmatch(name):
            ctx.problem(reader.at("name"), f"must match [A-Za-z0-9_.-]+, got {name!r}")
        template = reader.get("template", _S, "")
        if not template.strip():
            ctx.warn(f"{reader.at('template')}: missing or empty: the provider cannot clone for this pool")
        size = reader.get("size", _I, minimum=0, required=True)
        provider = symbol(reader.get("provider", _S)) or "dummy"
        if (
            providers is not None
            and provider not in providers
            and f":providers:.{provider}" not in ctx.broken
        ):
            ctx.problem(reader.at("provider"), f"no provider {provider!r} in :providers:")
        dns_plugin = symbol(reader.get("dns_plugin", _S))
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
        max_size = reader.get("max_size", _I, None, minimum=0)
        if max_size is not None and size is not None and max_size < size:
            ctx.problem(reader.at("max_size"), f"must be >= size ({size}), got {max_size}")
        alias = reader.get("alias", _L, ())
        reader.get("domain", _S)
        if reader.given("domain") and dns_plugin is None and not published:
            ctx.warn(f"{reader.at('domain')} is deprecated: set dns_plugin to a :dns_configs: entry")
        if len(ctx.problems) > before:
            return None
        inherited = (
            globals_.check_loop_delay_min,
            globals_.check_loop_delay_max,
            globals_.check_loop_delay_decay,
        )
        given = {key: value for key, value in values.items() if value is not None}
        values.update(zip(LOOP_DELAY_KEYS, loop_delays(given, inherited, reader), strict=True))
        provider_config = (providers or {}).get(provider)
        option_keys = provider_config.pool_option_keys if provider_config else frozenset()
        options = {key: value for key, value in reader.rest().items() if key in option_keys}
        reader.used.update(options)
        if not published:
            reader.warn_unknown(option_keys)
        if provider_config is not None and provider_config.pool_config_class is not None:
            try:  # the plugin's own checks of the pool's provider keys, before any process starts
                provider_config.pool_config_class.from_options(options, path=path, warnings=ctx.warnings)
            except ConfigError as err:
                ctx.problems.extend(err.problems)
                return None
        dns = (dns_configs or {}).get(dns_plugin) if dns_plugin else None
        return cls(
            name=name,
            template=template,
            size=size,
            max_size=max_size,
            alias=alias,
            provider=provider,
            dns_plugin=dns_plugin,
            domain=_resolve_pool_domain(data, provider_config, globals_, dns),
            provider_options=options,
            raw=data,
            **values,
        )


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """One ``:providers:`` entry; ``provider_class`` picks the plugin (several instances may share one).

    Attributes:
        name: the ``:providers:`` key of this instance.
        provider_class: the plugin's registry name.
        settings: the plugin's own settings object (its ``config_class``), validated at load time.
        pool_option_keys: the per-pool keys the plugin reads (copied into ``PoolConfig.provider_options``).
        pool_config_class: the plugin's settings class for those keys, run on every pool at load time.
        options: the section as written, minus ``provider_class``.
        purge_unconfigured_resources: this instance's override of the global key (None: the global).
        resources_allowlist: names purging never deletes (``folder_whitelist`` is the old spelling).
        skip_dns_check_before_creating_vm: the original's switch for its DNS check of new names.
        breaker: the circuit breaker around this instance (``circuit_breaker_*``: this entry's, else
            ``:config:``'s).
        adaptive: the adaptive timeout of its connection waits (``adaptive_timeout_enabled``,
            ``connection_pool_timeout_min``/``_max``/``_initial``: this entry's, else ``:config:``'s).
        monitor: the connection pool monitor (``connection_pool_monitor_enabled``/``_interval``: this
            entry's, else ``:config:``'s).
    """

    name: str
    provider_class: str
    settings: ProviderSettings
    pool_option_keys: frozenset[str] = frozenset()
    pool_config_class: type[ProviderSettings] | None = None
    options: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)
    purge_unconfigured_resources: bool | None = None
    resources_allowlist: tuple[str, ...] = ()
    skip_dns_check_before_creating_vm: bool = False
    breaker: BreakerSettings = attrs.Factory(BreakerSettings)
    adaptive: AdaptiveSettings = attrs.Factory(AdaptiveSettings)
    monitor: MonitorSettings = attrs.Factory(MonitorSettings)

    @classmethod
    def from_dict(
        cls, name: str, data: Mapping[str, Any] | None, globals_: GlobalConfig | None = None
    ) -> ProviderConfig:
        """Validate one provider entry alone (its plugin is loaded and parses its options).

        Raises:
            ConfigError: with every problem found.
        """
        path = f":providers:.{name}"
        return run_alone(lambda ctx: cls._parse(name, data, path, ctx, globals_ or GlobalConfig(), {}))

    @classmethod
    def _parse(
        cls,
        name: str,
        data: object,
        path: str,
        ctx: Context,
        globals_: GlobalConfig,
        given_globals: Mapping[str, Any],
    ) -> ProviderConfig | None:
        reader = SectionReader(data, path, ctx)
        provider_class = symbol(reader.get("provider_class", _S)) or name
        options = reader.rest()
        if reader.given("domain"):
            ctx.warn(
                f"{reader.at('domain')} is deprecated: move it to a :dns_configs: entry and set "
                "dns_plugin on the pools"
            )
        allowlist = reader.get("resources_allowlist", _L, ())
        if reader.given("folder_whitelist"):
            ctx.warn(f"{reader.at('folder_whitelist')} is deprecated: use resources_allowlist")
            allowlist += tuple(x for x in reader.get("folder_whitelist", _L, ()) if x not in allowlist)
        core = {
            "purge_unconfigured_resources": reader.get("purge_unconfigured_resources", _B),
            "skip_dns_check_before_creating_vm": reader.get("skip_dns_check_before_creating_vm", _B, False),
            "breaker": BreakerSettings(
                enabled=reader.get("circuit_breaker_enabled", _B, globals_.circuit_breaker_enabled),
                failure_threshold=reader.get(
                    "circuit_breaker_failure_threshold",
                    _I,
                    globals_.circuit_breaker_failure_threshold,
                    minimum=1,
                ),
                timeout=reader.get(
                    "circuit_breaker_timeout", _N, globals_.circuit_breaker_timeout, minimum=0
                ),
                half_open_attempts=reader.get(
                    "circuit_breaker_half_open_attempts",
                    _I,
                    globals_.circuit_breaker_half_open_attempts,
                    minimum=1,
                ),
            ),
            "adaptive": _adaptive_settings(reader, globals_),
            "monitor": MonitorSettings(
                enabled=reader.get(
                    "connection_pool_monitor_enabled", _B, globals_.connection_pool_monitor_enabled
                ),
                interval=reader.get(
                    "connection_pool_monitor_interval",
                    _N,
                    globals_.connection_pool_monitor_interval,
                    minimum=1,
                ),
            ),
        }
        try:
            plugin = load_provider_class(provider_class)
            inherited = {key: getattr(globals_, key) for key in given_globals if hasattr(globals_, key)}
            settings = plugin.config_class.from_options(
                options, instance=name, path=path, inherited=inherited, warnings=ctx.warnings
            )
        except ConfigError as err:
            ctx.broken.add(f":providers:.{name}")
            ctx.problems.extend(
                problem if problem.startswith(":") else f"{reader.at('provider_class')}: {problem}"
                for problem in err.problems
            )
            return None
        return cls(
            name=name,
            provider_class=provider_class,
            settings=settings,
            pool_option_keys=frozenset(plugin.pool_option_keys),
            pool_config_class=plugin.pool_config_class,
            options=options,
            resources_allowlist=allowlist,
            **core,
        )


def _adaptive_settings(reader: SectionReader, globals_: GlobalConfig) -> AdaptiveSettings:
    """The provider entry's adaptive timeout keys, else ``:config:``'s; a minimum above the maximum is a
    warning (the minimum wins), since the original starts with it."""

    def seconds(key: str, default: float) -> float:
        return float(reader.get(key, _N, default, minimum=0))

    minimum = seconds("connection_pool_timeout_min", globals_.connection_pool_timeout_min)
    maximum = seconds("connection_pool_timeout_max", globals_.connection_pool_timeout_max)
    initial = seconds("connection_pool_timeout_initial", globals_.connection_pool_timeout_initial)
    if minimum > maximum:
        reader.ctx.warn(
            f"{reader.path}: connection_pool_timeout_min ({minimum:g}) is above connection_pool_timeout_max "
            f"({maximum:g}) (this entry's, else :config:'s): the adaptive timeout stays at the minimum"
        )
    return AdaptiveSettings(
        enabled=reader.get("adaptive_timeout_enabled", _B, globals_.adaptive_timeout_enabled),
        minimum=minimum,
        maximum=maximum,
        initial=initial,
    )


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
        return run_alone(lambda ctx: cls._parse(name, data, f":dns_configs:.{name}", ctx))

    @classmethod
    def _parse(cls, name: str, data: object, path: str, ctx: Context) -> DnsConfig | None:
        reader = SectionReader(data, path, ctx)
        dns_class = symbol(reader.get("dns_class", _S, required=True))
        domain = reader.get("domain", _S)
        if dns_class is None:
            return None
        if dns_class != "dynamic-dns":
            ctx.warn(
                f"{reader.at('dns_class')}: {dns_class!r} read but not acted on: DNS records are not "
                "managed (only dynamic-dns is built in); the domain is used"
            )
        return cls(name=name, dns_class=dns_class, domain=domain, options=reader.rest())
