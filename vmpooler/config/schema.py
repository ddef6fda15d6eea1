"""The ``:config:`` and ``:redis:`` sections: typed, frozen, with the original's defaults and units."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs

from vmpooler.config.compat import mark_ignored
from vmpooler.config.reader import (
    LOOP_DELAY_DEFAULTS,
    LOOP_DELAY_KEYS,
    Context,
    SectionReader,
    loop_delays,
    read_settings,
    run_alone,
    setting,
)
from vmpooler.config.values import FrozenDict, Kind

__all__ = ["DEFAULT_HEALTH_THRESHOLDS", "GlobalConfig", "RedisConfig"]

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


def _network_problem(text: str) -> str | None:
    """Why ``text`` is not an IP address or CIDR network (``10.0.0.0/8``, ``fd00::/8``); None if it is."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"must be IP addresses or CIDR networks, got {text!r}"
    return None


@attrs.frozen(kw_only=True)
class GlobalConfig:
    """The ``:config:`` section (as the original). Times are in the units the original uses."""

    site_name: str = setting("vmpooler", _S)
    logfile: str | None = setting(None, _S)
    prefix: str = setting("", _S)
    task_limit: int = setting(10, _I, 1)
    ondemand_clone_limit: int = setting(10, _I, 1)
    max_ondemand_instances_per_request: int = setting(10, _I, 1)
    ondemand_request_ttl: int = setting(5, _I, 1)  # minutes
    max_vm_retries: int = setting(3, _I, 0)
    migration_limit: int | None = setting(None, _I, 0)
    vm_checktime: float = setting(1, _N, 0)  # minutes
    vm_lifetime: int = setting(24, _I, 0)  # hours
    vm_lifetime_auth: int | None = setting(None, _I, 0)
    max_lifetime_upper_limit: int | None = setting(None, _I, 0)
    ready_ttl: float = setting(60, _N, 0)  # minutes (fractions allowed)
    timeout: float = setting(15, _N, 0)  # minutes (fractions allowed)
    timeout_notification: float = setting(5, _N, 0)  # minutes (fractions allowed)
    clone_target: str | None = setting(None, _S)
    max_tries: int = setting(3, _I, 1)
    retry_factor: int = setting(10, _I, 0)
    create_folders: bool = setting(False, _B)
    create_template_delta_disks: bool = setting(False, _B)
    create_linked_clones: bool = setting(True, _B)
    purge_unconfigured_resources: bool = setting(False, _B)
    experimental_features: bool = setting(False, _B)
    usage_stats: bool = setting(False, _B)
    request_logger: bool = setting(False, _B)
    extra_config: tuple[str, ...] = setting((), _L)
    allowed_tags: tuple[str, ...] | None = setting(None, _L)
    backend_weight: Mapping[str, int] = setting(FrozenDict(), Kind.INT_MAP, 0)
    check_loop_delay_min: float = setting(LOOP_DELAY_DEFAULTS[0], _N, 0)  # seconds
    check_loop_delay_max: float = setting(LOOP_DELAY_DEFAULTS[1], _N, 0)
    check_loop_delay_decay: float = setting(LOOP_DELAY_DEFAULTS[2], _N)
    check_ready_vm_hostname_for_mismatch: bool = setting(True, _B)
    manage_host_selection: bool = setting(False, _B)
    host_selection_max_age: int = setting(60, _I, 0)  # seconds
    utilization_limit: float = setting(90, _N, 0)  # percent
    vsphere_timeout: int = setting(60, _I, 1)  # seconds
    circuit_breaker_enabled: bool = setting(True, _B)
    circuit_breaker_failure_threshold: int = setting(5, _I, 1)
    circuit_breaker_timeout: int = setting(30, _I, 0)  # seconds
    circuit_breaker_half_open_attempts: int = setting(3, _I, 1)
    adaptive_timeout_enabled: bool = setting(True, _B)
    connection_pool_timeout_min: int = setting(5, _I, 0)  # seconds
    connection_pool_timeout_max: int = setting(60, _I, 0)
    connection_pool_timeout_initial: int = setting(30, _I, 0)
    connection_pool_monitor_enabled: bool = setting(True, _B)
    connection_pool_monitor_interval: int = setting(10, _I, 1)  # seconds
    dlq_enabled: bool = setting(False, _B)
    dlq_ttl: int = setting(168, _I, 0)  # hours
    dlq_max_entries: int = setting(10000, _I, 0)
    purge_enabled: bool = setting(False, _B)
    purge_dry_run: bool = setting(False, _B)
    purge_interval: int = setting(3600, _I, 1)  # seconds
    max_pending_age: int = setting(7200, _I, 0)  # seconds
    max_ready_age: int = setting(86400, _I, 0)
    max_completed_age: int = setting(3600, _I, 0)
    max_orphaned_age: int = setting(86400, _I, 0)
    health_check_enabled: bool = setting(False, _B)
    health_check_interval: int = setting(300, _I, 1)  # seconds
    health_thresholds: Mapping[str, float] = setting(DEFAULT_HEALTH_THRESHOLDS, Kind.NUMBER_MAP, 0)
    rate_limiting_enabled: bool = setting(False, _B)
    trusted_proxies: tuple[str, ...] = setting((), _L)  # ours: IPs/networks whose X-Forwarded-For counts
    max_request_age: int = setting(86400, _I, 0)  # seconds: stale on-demand requests
    domain: str | None = setting(None, _S)  # deprecated: use :dns_configs:
    status_cache_seconds: float = setting(0, _N, 0)  # ours: 0 = /status is not cached
    api_workers: int = setting(2, _I, 1)  # ours: API worker processes
    max_request_body: int = setting(1_048_576, _I, 1)  # ours: bytes; a larger request body is a 413
    log_format: str = setting("text", _S)  # ours: text, or json (one object per line); vmpooler.log
    manager_metrics_port: int | None = setting(None, _I, 1)  # ours: `vmpooler manager` alone serves metrics
    max_checkout_wait: int = setting(600, _I, 0)  # ours: seconds; the most a checkout may ask to wait
    queue_waiters: int = setting(500, _I, 1)  # ours: waiting checkouts one API worker holds at once
    default_tenant_max_running: int | None = setting(None, _I, 0)  # ours: quota of tenants not listed
    priority_users: tuple[str, ...] = setting((), _L)  # ours: with auth, who may ask for priority 1
    manager_id: str | None = setting(None, _S)  # ours: this manager's name among several (default: host name)
    manager_lease_seconds: float = setting(15, _N, 1)  # ours: a dead manager's pools move after this

    @trusted_proxies.validator
    def _check_proxies(self, attribute: object, value: tuple[str, ...]) -> None:
        for text in value:
            if (problem := _network_problem(text)) is not None:
                raise ValueError(f"trusted_proxies: {problem}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GlobalConfig:
        """Validate a ``:config:`` mapping alone.

        Raises:
            ConfigError: with every problem found.
        """
        return run_alone(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: Context) -> GlobalConfig:
        reader = SectionReader(data, ":config:", ctx)
        values = read_settings(cls, reader)
        legacy = reader.get("purge_unconfigured_folders", _B)
        if legacy is not None:
            ctx.warn(
                f"{reader.at('purge_unconfigured_folders')} is deprecated: use purge_unconfigured_resources"
            )
            values.setdefault("purge_unconfigured_resources", legacy)
        for text in values.get("trusted_proxies", ()):
            if (problem := _network_problem(text)) is not None:
                ctx.problem(reader.at("trusted_proxies"), problem)
                values.pop("trusted_proxies")
                break
        if "health_thresholds" in values:
            values["health_thresholds"] = {**DEFAULT_HEALTH_THRESHOLDS, **values["health_thresholds"]}
        if values.get("log_format", "text") not in ("text", "json"):
            ctx.problem(reader.at("log_format"), f"must be text or json, got {values.pop('log_format')!r}")
        if values.get("manager_metrics_port") is not None and values["manager_metrics_port"] > 65535:
            port = values.pop("manager_metrics_port")
            ctx.problem(reader.at("manager_metrics_port"), f"must be a port number (1-65535), got {port}")
        reader.warn_unknown()
        delays = loop_delays(values, LOOP_DELAY_DEFAULTS, reader)
        values.update(zip(LOOP_DELAY_KEYS, delays, strict=True))
        return cls(**values)


@attrs.frozen(kw_only=True)
class RedisConfig:
    """The ``:redis:`` section (as the original). ``embedded`` means the supervisor runs redis-server."""

    server: str | None = setting(None, _S)
    port: int = setting(6379, _I, 1)
    password: str | None = setting(None, _S, secret=True)
    username: str | None = setting(None, _S)
    db: int = setting(0, _I, 0)
    url: str | None = setting(None, _S)
    data_ttl: int = setting(168, _I, 0)  # hours
    connection_pool_size: int = setting(10, _I, 1)
    connection_pool_timeout: int = setting(5, _I, 0)  # seconds
    reconnect_attempts: int = setting(10, _I, 0)
    api_timeout: float = setting(0.5, _N, 0.01)  # ours: seconds an API request waits for one reply
    embedded_dir: str = setting(".vmpooler/redis", _S)
    # ours: the primary is found through Redis Sentinel (host:port of each sentinel, the name they
    # monitor it under, their own password); password/username/db still apply to the primary
    sentinels: tuple[str, ...] = setting((), _L)
    master_name: str | None = setting(None, _S)
    sentinel_password: str | None = setting(None, _S, secret=True)
    embedded: bool = attrs.field()

    @embedded.default
    def _no_server(self) -> bool:
        return not self.url and not self.sentinels and self.server in (None, "", "embedded")

    @property
    def client_url(self) -> str | None:
        """A ``redis://`` (or the given ``rediss://``/``unix://``) URL, or ``redis+sentinel://`` with
        sentinels (``vmpooler.store.connection``); None when embedded."""
        if self.url:
            return self.url
        auth = quote(self.username or "", safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        at = auth + "@" if auth else ""
        if self.sentinels:
            query = (
                f"?sentinel_password={quote(self.sentinel_password, safe='')}"
                if self.sentinel_password
                else ""
            )
            hosts = ",".join(self.sentinels)
            return f"redis+sentinel://{at}{hosts}/{quote(self.master_name or '', safe='')}/{self.db}{query}"
        if self.embedded or not self.server:
            return None
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"redis://{at}{host}:{self.port}/{self.db}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RedisConfig:
        """Validate a ``:redis:`` mapping alone (None: no section, so embedded).

        Raises:
            ConfigError: with every problem found.
        """
        return run_alone(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: Context) -> RedisConfig:
        reader = SectionReader(data, ":redis:", ctx)
        values = read_settings(cls, reader)
        if values.get("port", 1) > 65535:
            ctx.problem(reader.at("port"), f"must be a port number (1-65535), got {values.pop('port')}")
        url = values.get("url")
        if url and not url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            ctx.problem(
                reader.at("url"),
                f"must start with redis://, rediss://, unix:// or redis+sentinel://, got {url!r}",
            )
        for sentinel in values.get("sentinels", ()):
            host, _, port = sentinel.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                ctx.problem(reader.at("sentinels"), f"each sentinel must be host:port, got {sentinel!r}")
        if values.get("sentinels"):
            if not values.get("master_name"):
                ctx.problem(reader.at("master_name"), "must name the primary the sentinels monitor")
            for other in ("server", "url"):
                if values.get(other) not in (None, "", "embedded"):
                    ctx.problem(
                        reader.at(other), "cannot be given with sentinels: the sentinels name the primary"
                    )
        mark_ignored(reader, "redis")
        reader.warn_unknown()
        if values.get("server") == "embedded":
            del values["server"]
        return cls(**values)
