"""The whole configuration: :class:`Config`, and loading it from YAML, ``EXTRA_CONFIG`` and the env.

``load_config`` reads the YAML (:mod:`vmpooler.config.sources`), applies the env table
(:mod:`vmpooler.config.env`), validates every section, loads every provider plugin named in
``:providers:`` and lets it parse its own options, and returns a frozen :class:`Config`. Validation
collects every problem before it fails: :class:`~vmpooler.errors.ConfigError` carries them all, each
written ``"<key path>: <reason>"`` (``":pools:[2].size: must be an integer >= 0, got 'ten'"``). Unknown
keys, deprecations and keys not acted on yet are warnings (:attr:`Config.warnings`), never refusals.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from vmpooler.config.auth import AuthConfig
from vmpooler.config.compat import CORE_SECTIONS, LEGACY_PROVIDER_SECTIONS, warn_not_acted_on
from vmpooler.config.env import apply_env
from vmpooler.config.pools import DnsConfig, PoolConfig, ProviderConfig
from vmpooler.config.published import parse_published_pools
from vmpooler.config.reader import Context, SectionReader
from vmpooler.config.schema import GlobalConfig, RedisConfig
from vmpooler.config.sinks import (
    DEFAULT_RATE_LIMITS,
    MetricsConfig,
    RateLimit,
    TracingConfig,
    parse_rate_limits,
    parse_tagfilter,
)
from vmpooler.config.sources import Tree, normalize_keys, parse_yaml, read_extra_files, read_main
from vmpooler.config.tenants import TenantConfig
from vmpooler.config.values import FrozenDict, as_tuple, freeze
from vmpooler.errors import ConfigError
from vmpooler.providers.base import unknown_key

__all__ = ["CheckResult", "Config", "check_config", "load_config", "load_config_text"]

_T = TypeVar("_T")


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
    pools: tuple[PoolConfig, ...] = attrs.field(default=(), converter=as_tuple)
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    dns_configs: Mapping[str, DnsConfig] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    auth: AuthConfig | None = None
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    tracing: TracingConfig = attrs.Factory(TracingConfig)
    tagfilter: Mapping[str, re.Pattern[str]] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    rate_limits: Mapping[str, RateLimit] = attrs.field(default=DEFAULT_RATE_LIMITS, converter=FrozenDict)
    tenants: Mapping[str, TenantConfig] = attrs.field(factory=FrozenDict, converter=FrozenDict)
    raw: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)
    loaded_at: float = attrs.Factory(time.time)
    source: str = "<built>"
    warnings: tuple[str, ...] = attrs.field(default=(), converter=as_tuple)
    _by_name: Mapping[str, PoolConfig] = attrs.field(init=False, repr=False, eq=False)
    _aliases: Mapping[str, tuple[str, ...]] = attrs.field(init=False, repr=False, eq=False)
    _names: frozenset[str] = attrs.field(init=False, repr=False, eq=False)

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
        # every checkout asks whether its names are known: built once, not per request (O(pools) each)
        object.__setattr__(self, "_names", frozenset(by_name) | frozenset(self._aliases))

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
        tree = normalize_keys(dict(data), problems)
        if problems:
            raise ConfigError(problems)
        ctx = Context(env=os.environ if env is None else env)
        return _raise(_build(tree, source, ctx), ctx)

    @property
    def pools_given(self) -> bool:
        """False when the configuration has no ``:pools:`` at all (or only ``:pools:`` with no value):
        an API node then serves the pools a manager published in Redis (:meth:`with_published_pools`),
        and a manager has nothing to manage. An empty list is given: no pools."""
        return self.raw.get("pools") is not None

    def with_published_pools(self, published: Mapping[str, Mapping[str, str]]) -> Config:
        """This configuration with the pools a manager published in Redis as its pools.

        The pools' providers need not be in this node's ``:providers:``. Nothing raises: a pool with a
        bad value is left out, with a warning naming its hash and the key.

        Args:
            published: pool name → its published hash of strings (``Store.pools.published()``).

        Returns:
            A copy whose ``pools`` are the published ones (in name order) and whose ``warnings`` end
            with those of their parse.
        """
        pools, warnings = parse_published_pools(published, self.globals)
        return attrs.evolve(self, pools=pools, warnings=(*self.warnings, *warnings))

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
        return self._names

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


def _referenced_providers(pools: object, default: str | None = None) -> set[str]:
    """The provider names the pools give (``default`` for a pool that gives none)."""
    if not isinstance(pools, list):
        return set()
    names = (pool.get("provider", default) for pool in pools if isinstance(pool, Mapping))
    return {name.removeprefix(":") for name in names if isinstance(name, str)}


def _parse_named(
    data: object, path: str, parse: Callable[[str, object, str, Context], _T | None], ctx: Context
) -> dict[str, _T]:
    section = SectionReader(data, path, ctx)
    parsed = {
        str(name): parse(str(name), item, section.at(str(name)), ctx) for name, item in section.data.items()
    }
    return {name: item for name, item in parsed.items() if item is not None}


def _parse_providers(tree: Tree, globals_: GlobalConfig, ctx: Context) -> dict[str, ProviderConfig]:
    section = tree.get("config")
    given: Mapping[str, Any] = section if isinstance(section, Mapping) else {}

    def parse(name: str, data: object, path: str, ctx: Context) -> ProviderConfig | None:
        return ProviderConfig._parse(name, data, path, ctx, globals_, given)

    providers = _parse_named(tree.get("providers"), ":providers:", parse, ctx)
    referenced = _referenced_providers(tree.get("pools"))
    for name in (
        *LEGACY_PROVIDER_SECTIONS,
        *sorted(referenced - {*LEGACY_PROVIDER_SECTIONS, *CORE_SECTIONS}),
    ):
        if name not in tree:
            continue
        if name in providers:
            ctx.warn(f":{name}: is ignored: :providers: already has an entry {name!r}")
        else:
            provider = parse(name, tree[name], f":{name}:", ctx)
            if provider is not None:
                providers[name] = provider
    pools = tree.get("pools")
    if "dummy" not in providers and "dummy" not in tree and "dummy" in _referenced_providers(pools, "dummy"):
        dummy = parse("dummy", {}, ":providers:.dummy", ctx)  # the original's default provider
        if dummy is not None:
            providers["dummy"] = dummy
    return providers


def _parse_pools(
    data: object,
    ctx: Context,
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


def _parse_tree(tree: Tree, source: str, ctx: Context, origins: Mapping[str, str]) -> Config | None:
    referenced = _referenced_providers(tree.get("pools"))
    for key in tree:
        if key not in CORE_SECTIONS and key not in LEGACY_PROVIDER_SECTIONS and key not in referenced:
            ctx.warn(unknown_key("top level", f":{key}:", [f":{name}:" for name in CORE_SECTIONS]))
    globals_ = GlobalConfig._parse(tree.get("config"), ctx)
    if globals_.domain is not None:
        given = "env DOMAIN" if origins.get(":config:.domain") else ":config:.domain"
        ctx.warn(
            f"{given} is deprecated: move the domain to a :dns_configs: entry and set dns_plugin "
            "on the pools; it is used for pools without dns_plugin until then"
        )
    warn_not_acted_on(tree, ctx)
    providers = _parse_providers(tree, globals_, ctx)
    dns_configs = _parse_named(tree.get("dns_configs"), ":dns_configs:", DnsConfig._parse, ctx)
    pools = _parse_pools(tree.get("pools"), ctx, globals_, providers, dns_configs)
    config = Config(
        globals=globals_,
        redis=RedisConfig._parse(tree.get("redis"), ctx),
        pools=pools,
        providers=providers,
        dns_configs=dns_configs,
        auth=AuthConfig._parse(tree["auth"], ctx) if "auth" in tree else None,
        metrics=MetricsConfig._parse(tree, ctx),
        tracing=TracingConfig._parse(tree.get("tracing"), ctx),
        tagfilter=parse_tagfilter(tree.get("tagfilter"), ctx),
        rate_limits=parse_rate_limits(tree.get("rate_limits"), ctx),
        tenants=_parse_named(tree.get("tenants"), ":tenants:", TenantConfig._parse, ctx),
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


def _build(tree: Tree, source: str, ctx: Context) -> Config | None:
    origins, problems, warnings = apply_env(tree, ctx.env)
    ctx.problems.extend(problems)
    for warning in warnings:
        ctx.warn(warning)
    config = _parse_tree(tree, source, ctx, origins)
    ctx.problems[:] = [_blame(problem, origins) for problem in ctx.problems]
    return None if ctx.problems else config


def _warn_extra_ignored(tree: Tree, ctx: Context) -> None:
    section = tree.get("config")
    wanted = isinstance(section, Mapping) and section.get("extra_config")
    if wanted or ctx.env.get("EXTRA_CONFIG", "").strip():
        ctx.warn(
            "extra config files are not read when the whole configuration is given inline "
            "(env VMPOOLER_CONFIG or a string)"
        )


def _load(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None
) -> tuple[Config | None, Context]:
    env = os.environ if env is None else env
    tree, source, extra_allowed = read_main(path, env)
    ctx = Context(env=env)
    if extra_allowed:
        tree = read_extra_files(tree, env)
    else:
        _warn_extra_ignored(tree, ctx)
    return _build(tree, source, ctx), ctx


def _raise(config: Config | None, ctx: Context) -> Config:
    if config is None:
        raise ConfigError(ctx.problems or ["invalid configuration"])
    return config


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, merge, override and validate the configuration, the plugins' options included.

    Args:
        path: the main YAML file; None to use env ``VMPOOLER_CONFIG``, then ``VMPOOLER_CONFIG_FILE``,
            then ``./vmpooler.yaml``.
        env: the environment to read (``os.environ`` when None).

    Returns:
        The validated configuration; its ``warnings`` hold unknown keys, deprecations, corrected values
        and keys not acted on.

    Raises:
        ConfigError: a missing file, invalid YAML, any invalid value, or a provider that cannot be loaded,
            with every problem found.
    """
    return _raise(*_load(path, env))


def load_config_text(text: str, env: Mapping[str, str] | None = None, *, source: str = "<string>") -> Config:
    """Like :func:`load_config` for YAML text (as env ``VMPOOLER_CONFIG``: no extra files are read).

    Raises:
        ConfigError: invalid YAML or any invalid value, with every problem found.
    """
    ctx = Context(env=os.environ if env is None else env)
    tree = parse_yaml(text, source)
    _warn_extra_ignored(tree, ctx)
    return _raise(_build(tree, source, ctx), ctx)


@attrs.frozen
class CheckResult:
    """What ``vmpooler check-config`` reports: problems (the service would not start) and warnings."""

    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    def ok(self, *, strict: bool = False) -> bool:
        """True when the service would start on the file (and, with ``strict``, nothing was warned)."""
        return not self.problems and not (strict and self.warnings)


def check_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> CheckResult:
    """Every problem and warning of a configuration, each as ``"<key path>: <reason>"``."""
    try:
        _config, ctx = _load(path, env)
    except ConfigError as err:
        return CheckResult(tuple(err.problems), ())
    return CheckResult(tuple(ctx.problems), tuple(ctx.warnings))
