"""The provider plugin contract: what the core calls on a provider, when, on which thread, what it expects.

A provider plugin is a subclass of :class:`Provider` plus an attrs settings class (a subclass of
:class:`ProviderSettings`) named by ``Provider.config_class``. The registry in ``vmpooler.providers``
finds the class. The config loader (``vmpooler.config``) and then the provider process do, once::

    settings = cls.config_class.from_options(options, ...)   # config load, before any process starts
    provider = cls(name, settings, pools)                    # provider process: worker.build_provider
    provider.start()                                         # worker.start_manager
    provider.purge_unconfigured(...); provider.prepare_template(pool)   # if configured
    provider.use_adaptive_timeout(adaptive)                  # providers.monitor.watch_connections
    ...                                                      # actors call the queries and actions
    provider.stop()                                          # worker.Manager.stop

Threads. ``__init__``, ``start``, ``purge_unconfigured``, ``prepare_template`` and
``use_adaptive_timeout`` run on the provider process's main thread, one at a time, before any actor
starts; ``stop`` runs there after the actors stopped taking work (``vmpooler.worker``);
``connection_stats`` runs on the ticker thread too. Every other method is called from PoolActor and
VMActor threads, **several at once** (one VMActor per VM), so a provider must be thread-safe: guard
shared state with a lock and never sleep or make a remote call while holding it.

Rules every provider follows (STYLE bullets 7 and 8):

* Never wait or retry in a loop. Waiting for a clone to boot is the VMActor's job: it calls
  :meth:`Provider.vm_ready` once per tick until its own deadline. A provider may block only for its own
  single remote operation, and every blocking SDK call takes an explicit timeout.
* Fail by raising a ``vmpooler.errors.ProviderError`` subclass, never by returning ``False`` or ``None``
  as an error signal: ``VMNotFound`` (the VM is not there), ``CloneFailed`` (a create failed; its
  ``transient`` says whether another try may work), ``ProviderTimeout`` (the backend did not answer in
  time) and ``ProviderUnavailable`` (the backend cannot be reached or the provider is stopped). Any
  other exception (beyond ``NotImplementedError`` and ``ValueError`` where a method documents them) is
  a bug in the provider.
* Every method that takes a pool raises a non-transient ``ProviderError`` (``CloneFailed`` from
  ``create_vm``) for a pool not in ``self.pools``: the core only asks about pools it configured, and an
  unknown pool must never look like an empty one.
* Return :class:`vmpooler.model.VMInfo` value objects, never SDK objects or dicts.
* Never touch Redis, the bus or the global config: everything a provider needs arrives in its settings and
  its :class:`PoolSpec` objects.
"""

from __future__ import annotations

import abc
import difflib
import logging
import math
import types
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

from vmpooler.errors import ConfigError, ProviderError
from vmpooler.textnum import truth

if TYPE_CHECKING:
    from vmpooler.model import VMInfo
    from vmpooler.providers.adaptive import AdaptiveTimeout

__all__ = [
    "CORE_PROVIDER_KEYS",
    "ConnectionStats",
    "PoolSpec",
    "Provider",
    "ProviderSettings",
    "non_negative",
    "percent",
    "string",
    "to_bool",
    "to_float",
    "to_int",
    "unknown_key",
    "unknown_pool",
]

log = logging.getLogger(__name__)

CORE_PROVIDER_KEYS = frozenset(
    {
        "provider_class",
        "purge_unconfigured_resources",
        "resources_allowlist",
        "folder_whitelist",
        "skip_dns_check_before_creating_vm",
        "domain",
        "circuit_breaker_enabled",
        "circuit_breaker_failure_threshold",
        "circuit_breaker_timeout",
        "circuit_breaker_half_open_attempts",
        "adaptive_timeout_enabled",
        "connection_pool_timeout_min",
        "connection_pool_timeout_max",
        "connection_pool_timeout_initial",
        "connection_pool_monitor_enabled",
        "connection_pool_monitor_interval",
    }
)
"""``:providers:`` keys read by the core (``vmpooler.config.pools.ProviderConfig``), not by the plugin.
``from_options`` skips them."""


# ---------------------------------------------------------------------------------------------------
# Option converters and validators for settings classes. They raise TypeError/ValueError with a short
# reason; ``ProviderSettings.from_options`` prefixes the key path.


def to_float(value: object) -> float:
    """Converter: an int or float YAML value to float (bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"must be a finite number, got {value!r}")
    return result


def to_bool(value: object) -> bool:
    """Converter: a YAML boolean, or the text the core reads as one (``'true'``, ``'no'``, ``'1'``,
    any case), so a quoted ``'false'`` means false here as in ``:config:`` (in the original any string
    was true)."""
    result = truth(value)
    if result is None:
        raise TypeError(f"must be true or false, got {value!r}")
    return result


def to_int(value: object) -> int:
    """Converter: an int YAML value (bools, floats and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be an integer, got {value!r}")
    return value


def non_negative(_inst: object, _attr: attrs.Attribute[Any], value: float | None) -> None:
    """Validator: the value is ``>= 0`` (None passes, for optional fields)."""
    if value is not None and value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def string(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    """Validator: the value is a string (wrap in ``attrs.validators.optional`` to allow None)."""
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {value!r}")


def percent(_inst: object, _attr: attrs.Attribute[Any], value: float) -> None:
    """Validator: the value is a percentage from 0 to 100."""
    if not 0 <= value <= 100:
        raise ValueError(f"must be a number from 0 to 100, got {value!r}")


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """Base of every provider's settings class (its ``:providers:.<instance>`` section).

    Subclasses are ``@attrs.frozen(kw_only=True)`` classes whose field names are the option keys. Field
    converters must be plain callables and validators plain ``(inst, attribute, value)`` callables:
    ``from_options`` runs them one field at a time to report every bad key at once.
    """

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        *,
        instance: str = "<instance>",
        path: str | None = None,
        inherited: Mapping[str, Any] | None = None,
        warnings: list[str] | None = None,
    ) -> Self:
        """Validate a ``:providers:`` section and build the settings object.

        Called by the config loader (``vmpooler.config``) for every provider instance, in the supervisor
        and in ``vmpooler check-config`` before any process forks, so a bad option fails fast. Keys in
        ``CORE_PROVIDER_KEYS`` are skipped (the core reads them). A key that is no field is a warning,
        never an error: real files carry keys nobody reads.

        Args:
            options: the raw mapping from YAML.
            instance: the ``:providers:`` key of this instance.
            path: the key path to report problems under (default ``":providers:.<instance>"``).
            inherited: values for fields the section does not set, taken from the same-named keys of
                ``:config:`` (the original's providers read some global keys, e.g. ``create_folders``,
                with a provider-level key winning).
            warnings: where to append the unknown-key warnings; None logs them.

        Returns:
            The validated, frozen settings.

        Raises:
            ConfigError: listing every problem as ``"<path>.<key>: <reason>"``, for missing required
                keys, wrong types and out-of-range values.
        """
        where = path or f":providers:.{instance}"
        fields = {field.name: field for field in attrs.fields(cls)}
        problems: list[str] = []
        found: list[str] = []
        raw = {str(key).removeprefix(":"): value for key, value in options.items()}  # Ruby symbol keys
        given = {key: value for key, value in (inherited or {}).items() if key in fields}
        given.update((key, value) for key, value in raw.items() if key not in CORE_PROVIDER_KEYS)
        values: dict[str, Any] = {}
        for key, value in given.items():
            field = fields.get(key)
            if field is None:
                found.append(unknown_key(where, key, {*fields, *CORE_PROVIDER_KEYS}))
                continue
            try:
                values[key] = _checked(field, value)
            except (TypeError, ValueError) as exc:
                reason = exc.args[0] if exc.args else type(exc).__name__  # attrs validators add args
                origin = where if key in raw else ":config:"
                problems.append(f"{origin}.{key}: {reason}")
        for name, field in fields.items():
            if field.default is attrs.NOTHING and name not in given:
                problems.append(f"{where}.{name}: required key missing")
        if problems:
            raise ConfigError(problems)
        if warnings is None:
            for warning in found:
                log.warning("%s", warning)
        else:
            warnings.extend(found)
        return cls(**values)


def unknown_key(path: str, key: str, known: Collection[str]) -> str:
    """The warning for a key nobody reads, with the nearest known key when one is close enough."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}.{key}: unknown key, ignored{hint}"


def _checked(field: attrs.Attribute[Any], raw: object) -> object:
    value = _convert(field, raw)
    if field.validator is not None:
        field.validator(None, field, value)
    return value


def _convert(field: attrs.Attribute[Any], raw: object) -> object:
    converter = field.converter
    if converter is None:
        return raw
    if not callable(converter):  # pragma: no cover - attrs.Converter objects are not supported here
        raise TypeError(f"field {field.name!r} uses an unsupported converter")
    return converter(raw)


def _readonly(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(options))


@attrs.frozen(kw_only=True)
class PoolSpec:
    """One pool as a provider sees it; built by the core from the pool's config and live overrides.

    Attributes:
        name: the pool name (the API's "template" name).
        template: the source template (provider-specific path, e.g. ``folder/name`` on vSphere).
        size: the number of ready VMs the core keeps.
        domain: the DNS domain of the pool's VMs, or None when none is configured.
        clone_target: a cluster or placement override, or None.
        options: the pool's provider-specific keys (those in ``Provider.pool_option_keys``), read-only.
    """

    name: str
    template: str
    size: int = 0
    domain: str | None = None
    clone_target: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_readonly, hash=False)


@attrs.frozen(kw_only=True)
class ConnectionStats:
    """A provider's backend connections right now (``Provider.connection_stats``).

    Attributes:
        size: how many connections the provider may hold at once.
        in_use: how many are lent to a call.
        waiting: how many calls wait for one to come free.
    """

    size: int
    in_use: int
    waiting: int = 0

    @property
    def available(self) -> int:
        return max(self.size - self.in_use, 0)

    @property
    def utilization(self) -> float:
        """Percent of the connections in use (0 to 100, two decimals)."""
        return round(100.0 * self.in_use / self.size, 2) if self.size > 0 else 0.0


def unknown_pool(pool: str, *, error: Callable[[str], ProviderError] = ProviderError) -> ProviderError:
    """Build the non-transient error a provider raises when asked about a pool it was not given."""
    exc = error(f"pool {pool!r} is not served by this provider")
    exc.transient = False
    return exc


class Provider(abc.ABC):
    """A source of VMs (a hypervisor, a cloud, or the dummy). One instance per ``:providers:`` entry.

    Attributes:
        config_class: the attrs settings class that parses this provider's ``:providers:`` section.
        pool_config_class: an optional settings class for a pool's provider keys (``PoolSpec.options``):
            the config loader runs its ``from_options`` on every pool of the provider at load time, so
            a bad or missing pool option stops ``vmpooler`` and shows in ``check-config``.
        pool_option_keys: the per-pool keys this provider reads beyond the core's pool keys; the core
            copies them into ``PoolSpec.options`` and warns about any other unknown pool key.
        name: the ``:providers:`` key of this instance.
        settings: the validated settings (an instance of ``config_class``).
        pools: the pools this instance serves, by name (read-only).
        log: a logger named after the provider module and instance.
    """

    config_class: ClassVar[type[ProviderSettings]] = ProviderSettings
    pool_config_class: ClassVar[type[ProviderSettings] | None] = None
    pool_option_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, settings: ProviderSettings, pools: Mapping[str, PoolSpec]) -> None:
        """Store the collaborators. No I/O here: connecting belongs in :meth:`start`.

        Called once, on the provider process's main thread, when the provider worker starts.

        Args:
            name: the ``:providers:`` key of this instance.
            settings: this instance's settings, an instance of ``config_class``.
            pools: every pool whose ``provider`` is this instance, by name.

        Raises:
            TypeError: ``settings`` is not an instance of ``config_class`` (a core bug).
        """
        if not isinstance(settings, self.config_class):
            raise TypeError(f"{type(self).__name__} needs {self.config_class.__name__} settings")
        self.name = name
        self.settings = settings
        self.pools: Mapping[str, PoolSpec] = types.MappingProxyType(dict(pools))
        self.log = logging.getLogger(f"{type(self).__module__}.{name}")
        self.adaptive_timeout: AdaptiveTimeout | None = None

    def pool_spec(self, pool: str) -> PoolSpec:
        """The :class:`PoolSpec` of ``pool``.

        Raises:
            ProviderError: non-transient, when this instance does not serve ``pool``.
        """
        try:
            return self.pools[pool]
        except KeyError:
            raise unknown_pool(pool) from None

    def update_pool(self, spec: PoolSpec) -> None:
        """Serve ``spec`` from now on: a template or clone target changed at runtime (``/config``).

        Called by the pool's actor before it clones again; clones already running keep what they read.
        The default replaces the pool's entry in ``pools`` (one assignment: readers on other threads see
        the old mapping or the new one). A provider that caches per-pool state derived from the template
        or clone target overrides this and calls ``super().update_pool(spec)``.

        Raises:
            ProviderError: non-transient, when this instance does not serve ``spec.name``.
        """
        self.pool_spec(spec.name)
        self.pools = types.MappingProxyType({**self.pools, spec.name: spec})

    # -- connections --------------------------------------------------------------------------------

    def use_adaptive_timeout(self, adaptive: AdaptiveTimeout | None) -> None:
        """Wait for a free backend connection at most ``adaptive.current`` seconds from now on, and tell
        it how each wait went (``vmpooler.providers.adaptive``); None: keep the provider's own timeout.

        Called once by the core on the provider process's main thread, after :meth:`start` and before
        any actor starts (``vmpooler.providers.monitor.watch_connections``), with None when the provider
        entry's ``adaptive_timeout_enabled`` (else ``:config:``'s) is false. The default stores it in
        ``self.adaptive_timeout``; a provider with a connection pool overrides this to hand it to the
        pool (``ConnectionSlots.adaptive``) and calls ``super()``.
        """
        self.adaptive_timeout = adaptive

    def connection_stats(self) -> ConnectionStats | None:
        """How many backend connections exist, are in use and are waited for, right now.

        Called by the core's connection pool monitor (``vmpooler.providers.monitor``) once at start on
        the main thread, then on the ticker thread every ``connection_pool_monitor_interval`` seconds,
        so it must be quick and never block on the backend. Default: None (no connection pool, no
        gauges).
        """
        return None

    # -- lifecycle ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> None:
        """Connect to the backend and load whatever state the provider keeps.

        Called once per instance, on the provider process's main thread, after ``__init__`` and before
        any other method. It should not block for long (the process has a 30 s boot deadline); a provider
        may also return at once and connect in the background, raising from its calls until connected.

        Raises:
            ProviderUnavailable: the backend cannot be reached: the worker builds a new instance and
                tries again, 1 s after the first failure and up to 30 s apart, without exiting.
            ProviderError: any other failure to start (the process exits and is restarted).
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Release connections and interrupt any simulated or interruptible wait at once.

        Called once, on the provider process's main thread, when the worker shuts down; VMActor threads
        may still be inside other methods. Must not raise; afterwards every other method raises
        ``ProviderUnavailable``.
        """

    # -- queries ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def list_vms(self, pool: str) -> list[VMInfo]:
        """The inventory: every VM that exists in the backend for ``pool``, whatever its state.

        Called by the PoolActor on its thread at the start of every reconcile pass. A VM absent from the
        list is treated as gone, so never return a partial list: raise instead, and the core skips the pass.

        Args:
            pool: a pool name from ``self.pools``.

        Returns:
            One ``VMInfo`` per VM, in any order.

        Raises:
            ProviderError: the inventory could not be read completely, or the pool is not served here
                (non-transient; an unknown pool is never answered with an empty list).
        """

    @abc.abstractmethod
    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        """What the backend knows about one VM right now.

        Called by a VMActor on its thread (hostname-mismatch check of a ready VM, running-VM check).

        Args:
            pool: a pool name from ``self.pools``.
            name: the VM name.

        Returns:
            The VM's info, or None when no VM of that name exists in ``pool``.

        Raises:
            ProviderError: the backend could not be asked, or the pool is not served here.
        """

    # -- actions ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_vm(self, pool: str, name: str) -> VMInfo:
        """Clone the pool's template into a new VM called ``name`` and power it on.

        Called by the VMActor of ``name`` on its thread, once, after it recorded the VM as pending. It may
        block for the backend's single clone operation, with an explicit timeout, but never sleeps in a
        loop: readiness is polled later through :meth:`vm_ready`. On return the VM is in the inventory;
        ``ip`` is filled when the provider already knows it.

        Args:
            pool: a pool name from ``self.pools``.
            name: the new VM's name, unique across pools.

        Returns:
            The new VM's info.

        Raises:
            CloneFailed: the clone failed and left no VM behind (the provider cleans up). ``transient=False``
                for a cause another try cannot fix: unknown pool, missing template, name already taken.
            ProviderTimeout: the backend did not answer in time; a VM may exist and is found by inventory.
            ProviderUnavailable: the backend cannot be reached.
        """

    @abc.abstractmethod
    def vm_ready(self, pool: str, name: str) -> bool:
        """One quick check whether the VM is up and reachable (e.g. one TCP connect to port 22).

        Called by a VMActor on its thread on each tick while the VM is pending, and when checking ready
        and running VMs. It never sleeps or loops and sets nothing anywhere: the caller holds the deadline
        and records any reason.

        Args:
            pool: a pool name from ``self.pools``.
            name: the VM name.

        Returns:
            True when the VM is ready; False when it is not ready *yet* (still booting, powered off).

        Raises:
            VMNotFound: the VM does not exist.
            ProviderError: the check itself failed (the message is the reason the caller records).
        """

    @abc.abstractmethod
    def destroy_vm(self, pool: str, name: str) -> None:
        """Power off and delete the VM. Idempotent: a VM that does not exist counts as destroyed.

        Called by the VMActor on its thread when the VM is completed. On return the VM is gone from
        the inventory. A VM of that name in another pool is not touched.

        Args:
            pool: a pool name from ``self.pools``.
            name: the VM name.

        Raises:
            ProviderError: the VM exists and could not be deleted; the core retries later.
        """

    # -- optional -----------------------------------------------------------------------------------

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        """Attach a new empty disk of ``size_gb`` GB to the VM.

        Called by the VMActor on its thread to run a queued disk task. Default: not supported.

        Raises:
            NotImplementedError: the provider has no disk support.
            ValueError: ``size_gb`` is not positive (the API validates this, so it is a core bug).
            VMNotFound: the VM does not exist.
            ProviderError: the disk could not be added.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support create_disk")

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        """Take a snapshot called ``snapshot`` of the VM.

        Called by the VMActor on its thread to run a queued snapshot task. Default: not supported.

        Raises:
            NotImplementedError: the provider has no snapshot support.
            VMNotFound: the VM does not exist.
            ProviderError: the snapshot failed, or one of that name exists (non-transient).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support create_snapshot")

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        """Revert the VM to its snapshot called ``snapshot``.

        Called by the VMActor on its thread to run a queued revert task. Default: not supported.

        Raises:
            NotImplementedError: the provider has no snapshot support.
            VMNotFound: the VM does not exist.
            ProviderError: the revert failed, or no snapshot of that name exists (non-transient).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support revert_snapshot")

    def migrate_vm(self, pool: str, name: str) -> str | None:
        """Move a just-checked-out VM to a less loaded host, if the provider thinks it should.

        Called by the VMActor on its thread once after checkout. Default: no-op.

        Returns:
            The new host's name, or None when the VM stayed where it was.

        Raises:
            VMNotFound: the VM does not exist.
            ProviderError: the migration failed (the core only logs it).
        """
        return None

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        """Record in the backend which user checked the VM out (an annotation or tag).

        Called by the VMActor on its thread while the VM is running, until it returns True. Default: no-op.

        Returns:
            True when done (or nothing to do); False when it cannot be done yet and should be tried again.

        Raises:
            VMNotFound: the VM does not exist.
            ProviderError: tagging failed.
        """
        return True

    def prepare_template(self, pool: str) -> None:
        """Prepare the pool's template for fast clones (e.g. vSphere delta disks).

        Called once per pool on the provider process's main thread at start, before any clone, when
        ``:config: create_template_delta_disks`` is true (``vmpooler.worker.prepare_provider``). Must be
        idempotent: it runs again at every start. A provider may also consult its own settings and do
        nothing (the vSphere provider does, unless its ``create_template_delta_disks`` is on). Default:
        no-op.

        Raises:
            ProviderError: preparing failed (the core logs it and clones anyway).
        """
        return None

    def purge_unconfigured(self, allowlist: Collection[str]) -> list[str]:
        """Delete VMs and containers this provider manages that belong to no configured pool.

        Called once on the provider process's main thread at start, before any pool runs, when the
        provider entry's ``purge_unconfigured_resources`` (else the ``:config:`` key) is true
        (``vmpooler.worker.prepare_provider``). Default: not supported.

        Args:
            allowlist: names (pools, folders or VMs) never to delete.

        Returns:
            The names of what was deleted.

        Raises:
            NotImplementedError: the provider cannot purge.
            ProviderError: purging failed part-way.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support purge_unconfigured")
