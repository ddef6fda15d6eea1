"""The dummy provider's options: :class:`DummySettings`, one field per ``:providers:`` key.

Every key the original dummy reads is a field, with the original's default. A key set to null counts as
absent, as in the original (``value.nil?``). How times and failures are drawn is in the
``vmpooler.providers.dummy`` docstring; times keep their YAML type, since an integer and a float mean
different things there.

* ``filename``: the inventory file, shared safely by every process that names it, like one hypervisor:
  each call sees the VMs the others made, and each change is made under an ``flock`` of the file on its
  newest content and written back atomically before the call returns, so none is lost (a write error is
  logged and the change kept in memory). One written by the original dummy is read too.
* ``initial_state``: the inventory to start with when there is no inventory file (the original's spec-only
  option; shapes in ``vmpooler.providers.dummy_state``).
* ``connection_pool_size`` (1) / ``connection_pool_timeout`` (10 s): a semaphore around every call, its
  waits included; waiting longer raises ``ProviderTimeout``. One connection makes slow calls queue, as in
  the original. Fractional timeouts are honoured (the original truncated them to whole seconds). With
  ``adaptive_timeout_enabled`` (the default) the core's adaptive timeout replaces the timeout
  (``vmpooler.providers.adaptive``).
* ``is_ready_timeout`` (5 s): how long a VM may be cloning before ``vm_ready`` raises ``ProviderTimeout``.
* ``createvm_max_time`` / ``createvm_fail_percent``: how long ``create_vm`` blocks; the chance it fails.
* ``destroyvm_max_shutdown_time``: the wait before a powered-on VM is powered off by a destroy;
  ``destroyvm_max_time`` / ``destroyvm_fail_percent``: the wait that follows; the chance it fails.
* ``createdisk_*``, ``createsnapshot_*``, ``revertsnapshot_*``: ``max_time`` / ``fail_percent`` of those.
  A snapshot records the VM's disks; a revert restores them and powers the VM on. A snapshot name that
  exists, or a revert to one that does not, is a non-transient ``ProviderError``.
* ``migratevm_couldmove_percent``: the chance that ``migrate_vm`` moves the VM to another of
  HOST1..HOST10; unset it never moves, and then neither waits nor fails. ``migratevm_max_time`` /
  ``migratevm_fail_percent``: the move's wait and failure chance.
* ``getvm_poweroff_percent`` / ``getvm_rename_percent``: the chance that ``get_vm`` powers the VM off or
  renames its hostname to ``DUMMY<name>``, stored as a guest would.
* ``vmready_fail_percent``: the chance that a readiness check of a cloned VM raises ``ProviderError``.
* Ours: ``seed`` (reproducible chaos), ``ready_delay`` (seconds from a finished clone to ready, 0) and
  ``domain`` (``dummy.local``, when the pool has none).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from vmpooler.providers.base import ProviderSettings, non_negative, percent, string, to_float, to_int
from vmpooler.providers.dummy_state import InitialVM, to_initial_state

__all__ = ["DummySettings", "to_seconds"]


def to_seconds(value: object) -> int | float:
    """Converter of a time option: an int stays an int and a float a float; None (null) is 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def _percent_value(value: object) -> float:
    return 0.0 if value is None else to_float(value)


def _pool_size(value: object) -> int:
    return 1 if value is None else to_int(value)


def _pool_timeout(value: object) -> float:
    return 10.0 if value is None else to_float(value)


def _ready_timeout(value: object) -> int | float:
    return 5 if value is None else to_seconds(value)


def _optional_int(value: object) -> int | None:
    return None if value is None else to_int(value)


def _positive(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"must be >= 1, got {value!r}")


def _max_time() -> Any:
    return attrs.field(default=0, converter=to_seconds, validator=non_negative)


def _percent() -> Any:
    return attrs.field(default=0.0, converter=_percent_value, validator=percent)


@attrs.frozen(kw_only=True)
class DummySettings(ProviderSettings):
    """The dummy provider's options (see the ``vmpooler.providers.dummy`` docstring)."""

    filename: str | None = attrs.field(default=None, validator=attrs.validators.optional(string))
    initial_state: tuple[InitialVM, ...] = attrs.field(default=(), converter=to_initial_state)
    connection_pool_size: int = attrs.field(default=1, converter=_pool_size, validator=_positive)
    connection_pool_timeout: float = attrs.field(
        default=10.0, converter=_pool_timeout, validator=non_negative
    )
    is_ready_timeout: int | float = attrs.field(default=5, converter=_ready_timeout, validator=non_negative)
    migratevm_couldmove_percent: float = _percent()
    migratevm_max_time: int | float = _max_time()
    migratevm_fail_percent: float = _percent()
    getvm_poweroff_percent: float = _percent()
    getvm_rename_percent: float = _percent()
    createvm_max_time: int | float = _max_time()
    createvm_fail_percent: float = _percent()
    createdisk_max_time: int | float = _max_time()
    createdisk_fail_percent: float = _percent()
    createsnapshot_max_time: int | float = _max_time()
    createsnapshot_fail_percent: float = _percent()
    revertsnapshot_max_time: int | float = _max_time()
    revertsnapshot_fail_percent: float = _percent()
    destroyvm_max_shutdown_time: int | float = _max_time()
    destroyvm_max_time: int | float = _max_time()
    destroyvm_fail_percent: float = _percent()
    vmready_fail_percent: float = _percent()
    seed: int | None = attrs.field(default=None, converter=_optional_int)
    ready_delay: float = attrs.field(default=0.0, converter=to_float, validator=non_negative)
    domain: str = attrs.field(default="dummy.local", validator=string)
