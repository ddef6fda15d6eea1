"""Typed, immutable configuration, loaded from real vmpooler.yaml files unchanged.

The modules, in the order a load runs through them:

* :mod:`~vmpooler.config.sources`: the YAML document, ``VMPOOLER_CONFIG``, ``EXTRA_CONFIG`` merging;
* :mod:`~vmpooler.config.env`: the one table of environment overrides;
* :mod:`~vmpooler.config.values` and :mod:`~vmpooler.config.reader`: typed values, key paths, problems
  and warnings;
* the schema: :mod:`~vmpooler.config.schema` (``:config:``, ``:redis:``), :mod:`~vmpooler.config.pools`
  (pools, providers with their plugins' own settings, DNS), :mod:`~vmpooler.config.auth`,
  :mod:`~vmpooler.config.sinks`;
* :mod:`~vmpooler.config.compat`: what the original's keys mean here, and which are not acted on yet;
* :mod:`~vmpooler.config.loading`: :class:`Config` and :func:`load_config`;
* :mod:`~vmpooler.config.published`: the pools a manager published in Redis, for an API node whose
  configuration has no ``:pools:`` (:meth:`Config.with_published_pools`).

Differences from the original
-----------------------------
* A key nobody reads is a warning naming its path, with the nearest known key ("did you mean"), never
  a refusal; ``vmpooler check-config --strict`` makes warnings fail. A value of the wrong type or range
  is an error naming key and reason. Keys the original reads for features not built yet are parsed and
  validated, and a warning says they are not acted on.
* Provider options are validated by the plugin's settings class at load time, so ``check-config`` and the
  supervisor report a bad option or an unloadable plugin before any process starts.
* ``:config: domain`` / env ``DOMAIN``, a provider-level ``domain`` and a pool-level ``domain`` are
  still accepted as the domain of pools without a ``dns_plugin`` (pool, then provider, then global),
  with a deprecation warning. The original exits instead.
* Env booleans are parsed for real (``true/false/yes/no/on/off/1/0``): ``EXPERIMENTAL_FEATURES=false``
  is false, and so is ``VMPOOLER_DEBUG=0``. An env value that does not parse (``TASK_LIMIT=abc``) is an
  error naming the variable; the original silently used the default. An empty variable counts as unset.
* No Redis server configured (no ``:redis:``, no ``server``/``url``, or ``server: embedded``) means the
  embedded Redis the supervisor starts, not ``localhost``. ``logfile`` defaults to none (log to
  standard error) instead of ``/var/log/vmpooler.log``.
* Pool names may contain dots. A string ``alias`` works (split on commas) instead of crashing. A pool
  without ``template`` is accepted with a warning (the original starts on it too).
* Pools inherit ``check_loop_delay_*`` from ``:config:`` (then the defaults); a ``max`` below ``min``
  becomes ``min`` and a ``decay`` ≤ 1.0 becomes 2.0, each with a warning. A pool's
  ``check_hostname_for_mismatch`` defaults to ``:config: check_ready_vm_hostname_for_mismatch``.
* A pool without ``provider`` uses ``dummy`` (as the original's manager does), and ``dummy`` always
  exists: it is added to :attr:`Config.providers` when a pool uses it without configuring it.
* ``purge_unconfigured_folders`` (global key and env) and ``folder_whitelist`` still work, with a
  deprecation warning.
* A key given with no value (``task_limit:``) means the default.
* Pools read back from Redis (no ``:pools:`` in the file) are parsed like a file's: a pool with a bad
  value is skipped with a warning instead of failing the load, and a pool without ``alias`` works (the
  original's loader crashes on it).
"""

from __future__ import annotations

from vmpooler.config.auth import AuthConfig, LdapSettings
from vmpooler.config.env import env_flag, env_value
from vmpooler.config.loading import CheckResult, Config, check_config, load_config, load_config_text
from vmpooler.config.pools import DnsConfig, PoolConfig, ProviderConfig
from vmpooler.config.schema import DEFAULT_HEALTH_THRESHOLDS, GlobalConfig, RedisConfig
from vmpooler.config.sinks import DEFAULT_RATE_LIMITS, MetricsConfig, RateLimit, TracingConfig
from vmpooler.config.values import FrozenDict, freeze

__all__ = [
    "DEFAULT_HEALTH_THRESHOLDS",
    "DEFAULT_RATE_LIMITS",
    "AuthConfig",
    "CheckResult",
    "Config",
    "DnsConfig",
    "FrozenDict",
    "GlobalConfig",
    "LdapSettings",
    "MetricsConfig",
    "PoolConfig",
    "ProviderConfig",
    "RateLimit",
    "RedisConfig",
    "TracingConfig",
    "check_config",
    "env_flag",
    "env_value",
    "freeze",
    "load_config",
    "load_config_text",
]
