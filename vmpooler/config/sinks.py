"""The metrics sinks, ``:tracing:``, ``:rate_limits:`` and ``:tagfilter:`` sections."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from vmpooler.config.reader import Context, SectionReader, read_settings, run_alone, setting
from vmpooler.config.values import FrozenDict, Kind
from vmpooler.providers.base import unknown_key

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "MetricsConfig",
    "RateLimit",
    "TracingConfig",
    "parse_rate_limits",
    "parse_tagfilter",
]

_S, _I, _B = Kind.STR, Kind.INT, Kind.BOOL


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
        return run_alone(lambda ctx: cls._parse(tree, ctx))

    @classmethod
    def _parse(cls, tree: Mapping[str, Any], ctx: Context) -> MetricsConfig:
        sinks: dict[str, dict[str, Any]] = {}
        for kind, port in (("statsd", 8125), ("graphite", 2003)):
            if kind in tree:
                reader = SectionReader(tree[kind], f":{kind}:", ctx)
                sinks[kind] = {
                    "server": reader.get("server", _S, required=True),
                    "prefix": reader.get("prefix", _S, "vmpooler"),
                    "port": reader.port("port", port),
                }
                reader.warn_unknown()
        if "prometheus" in tree:
            reader = SectionReader(tree["prometheus"], ":prometheus:", ctx)
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
            reader.warn_unknown()
        graphs = SectionReader(tree.get("graphs"), ":graphs:", ctx)
        graphite = sinks.get("graphite", {})
        values: dict[str, Any] = {
            "graphs_server": graphs.get("server", _S, graphite.get("server")),
            "graphs_prefix": graphs.get("prefix", _S, graphite.get("prefix", "vmpooler")),
        }
        graphs.warn_unknown()
        if sinks:
            kind = next(iter(sinks))
            if len(sinks) > 1:
                ctx.warn(f"several metrics sinks configured ({', '.join(sinks)}): using {kind}")
            values.update(sinks[kind], kind=kind)
        return cls(**values)


@attrs.frozen(kw_only=True)
class TracingConfig:
    """The ``:tracing:`` section."""

    enabled: bool = setting(False, _B)
    jaeger_host: str = setting("http://localhost:14268/api/traces", _S)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TracingConfig:
        """Validate a ``:tracing:`` mapping alone.

        Raises:
            ConfigError: with every problem found.
        """
        return run_alone(lambda ctx: cls._parse(data, ctx))

    @classmethod
    def _parse(cls, data: object, ctx: Context) -> TracingConfig:
        reader = SectionReader(data, ":tracing:", ctx)
        values = read_settings(cls, reader)
        reader.warn_unknown()
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


def parse_rate_limits(data: object, ctx: Context) -> dict[str, RateLimit]:
    limits = dict(DEFAULT_RATE_LIMITS)
    section = SectionReader(data, ":rate_limits:", ctx)
    for name in section.data:
        if name not in limits:
            ctx.warn(unknown_key(section.path, str(name), limits))
            continue
        reader = SectionReader(section.data[name], section.at(name), ctx)
        limit = reader.get("limit", _I, limits[name].limit, minimum=1)
        period = reader.get("period", _I, limits[name].period, minimum=1)
        reader.warn_unknown()
        limits[name] = RateLimit(limit=limit, period=period)
    return limits


def parse_tagfilter(data: object, ctx: Context) -> dict[str, re.Pattern[str]]:
    reader = SectionReader(data, ":tagfilter:", ctx)
    patterns = {}
    for tag in reader.data:
        text = reader.get(tag, _S)
        try:
            patterns[tag] = re.compile(text)
        except (re.error, TypeError) as err:
            ctx.problem(reader.at(tag), f"invalid regular expression {text!r}: {err}")
    return patterns
