"""The vSphere provider's settings: its ``:providers:`` section and the vSphere keys of a pool.

Field names are the option keys, as in the original. Two groups live in :class:`VSphereSettings`:

* provider keys: ``server`` (``host`` or ``host:port``), ``port``, ``username``, ``password``,
  ``insecure``, ``datacenter``, ``vsphere_timeout``, ``task_timeout``, ``connection_pool_size``,
  ``connection_pool_timeout``, ``ready_check`` and its ``ready_check_timeout``/``ready_check_port``;
* the original's global ``:config:`` keys that only the vSphere provider reads (``create_folders``,
  ``create_linked_clones``, ``create_template_delta_disks``, ``max_tries``, ``retry_factor``,
  ``task_limit``, ``manage_host_selection``, ``host_selection_max_age``, ``utilization_limit``,
  ``migration_limit``, ``vsphere_timeout``). The core fills them from ``:config:`` when a key is set
  there and not in the provider section; the defaults are the original's.

:class:`PoolSettings` is a pool's vSphere keys (``folder``, ``datastore``, ...), parsed at config load
(``VSphereProvider.pool_config_class``) and again from ``PoolSpec.options`` when the provider is built.
"""

from __future__ import annotations

from typing import Any

import attrs

from vmpooler.providers.base import (
    ProviderSettings,
    non_negative,
    percent,
    string,
    to_bool,
    to_float,
    to_int,
)

__all__ = ["DEFAULT_PORT", "POOL_KEYS", "READY_CHECKS", "PoolSettings", "VSphereSettings", "split_server"]

DEFAULT_PORT = 443
READY_CHECKS = frozenset({"ssh", "tools", "poweron"})


def _optional_int(value: object) -> int | None:
    return None if value is None else to_int(value)


def _optional_string(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"must be a string, got {value!r}")
    return value


def _positive(_inst: object, _attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")


def _port(_inst: object, _attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"must be a TCP port from 1 to 65535, got {value!r}")


def _ready_check(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if value not in READY_CHECKS:
        raise ValueError(f"must be one of {', '.join(sorted(READY_CHECKS))}, got {value!r}")


def _server(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    string(_inst, _attr, value)
    split_server(str(value), None)  # raises ValueError for an empty host or a bad port


def split_server(server: str, port: int | None) -> tuple[str, int]:
    """``server`` (``host``, ``host:port``, ``[v6]`` or ``[v6]:port``) and the ``port`` key → (host, port).

    Raises:
        ValueError: empty host, a port that is not a number from 1 to 65535, or a port in ``server``
            that differs from the ``port`` key.
    """
    host, embedded = server.strip(), None
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host, embedded = inner, rest.removeprefix(":") or None
    elif host.count(":") == 1:
        host, embedded = host.split(":")
    if not host:
        raise ValueError(f"needs a host name, got {server!r}")
    if embedded is None:
        return host, DEFAULT_PORT if port is None else port
    if not embedded.isdigit() or not 0 < int(embedded) < 65536:
        raise ValueError(f"has a bad port in {server!r}")
    if port is not None and port != int(embedded):
        raise ValueError(f"{server!r} names port {embedded} but the port key says {port}")
    return host, int(embedded)


def _seconds(default: float) -> Any:
    return attrs.field(default=default, converter=to_float, validator=non_negative)


def _flag(default: bool) -> Any:
    return attrs.field(default=default, converter=to_bool)


@attrs.frozen(kw_only=True)
class VSphereSettings(ProviderSettings):
    """A ``:providers:`` section with ``provider_class: vsphere`` (see the module docstring).

    Attributes:
        server: the vCenter host name, optionally with ``:port``.
        port: the HTTPS port when ``server`` names none (default 443).
        username: the vCenter user; also the annotation's ``created_by``.
        password: its password.
        insecure: accept any TLS certificate (default false: the system's CA store is used).
        datacenter: the default datacenter of the pools (a pool's ``datacenter`` wins); None = the
            first datacenter vCenter lists.
        vsphere_timeout: seconds every single vCenter call (and each connect) may take.
        task_timeout: seconds to wait for one vCenter task (clone, power, destroy, disk, snapshot,
            relocate) before giving up with ProviderTimeout; the task itself goes on in vCenter.
        connection_pool_size: vCenter sessions kept open; None = max(#pools, task_limit, 2).
        connection_pool_timeout: seconds a call waits for a free session before ProviderTimeout.
        ready_check: ``ssh`` (one TCP connect to port 22 of ``<vm>.<domain>`` or its IP), ``tools``
            (VMware Tools running) or ``poweron`` (powered on is enough).
        ready_check_timeout: the ssh check's connect timeout, seconds (the original's 5).
        ready_check_port: the port the ssh check connects to.
        create_folders: create every missing level of a pool's ``folder`` at clone time.
        create_linked_clones: linked clones unless a pool's ``create_linked_clone`` says otherwise.
        create_template_delta_disks: add a delta-disk layer to templates (``prepare_template``).
        max_tries: connect attempts before a connect error is raised.
        retry_factor: seconds slept between connect attempts is ``attempt × retry_factor``.
        task_limit: the core's clone concurrency; only used for the default pool size here.
        manage_host_selection: place clones on the least used hosts of the cluster, round-robin.
        host_selection_max_age: seconds a host ranking is reused before it is recomputed.
        utilization_limit: hosts with CPU or memory above this percentage are never chosen.
        migration_limit: None or 0 = no migration at checkout; > 0 enables ``migrate_vm``.
    """

    server: str = attrs.field(validator=_server)
    port: int | None = attrs.field(default=None, converter=_optional_int, validator=_port)
    username: str = attrs.field(validator=string)
    password: str = attrs.field(validator=string, repr=False)
    insecure: bool = _flag(False)
    datacenter: str | None = attrs.field(default=None, converter=_optional_string)
    vsphere_timeout: float = attrs.field(default=60.0, converter=to_float, validator=_positive)
    task_timeout: float = attrs.field(default=900.0, converter=to_float, validator=_positive)
    connection_pool_size: int | None = attrs.field(default=None, converter=_optional_int, validator=_positive)
    connection_pool_timeout: float = _seconds(60.0)
    ready_check: str = attrs.field(default="ssh", validator=_ready_check)
    ready_check_timeout: float = attrs.field(default=5.0, converter=to_float, validator=_positive)
    ready_check_port: int = attrs.field(default=22, converter=to_int, validator=_port)
    create_folders: bool = _flag(False)
    create_linked_clones: bool = _flag(True)
    create_template_delta_disks: bool = _flag(False)
    max_tries: int = attrs.field(default=3, converter=to_int, validator=_positive)
    retry_factor: float = _seconds(10.0)
    task_limit: int = attrs.field(default=10, converter=to_int, validator=_positive)
    manage_host_selection: bool = _flag(False)
    host_selection_max_age: float = _seconds(60.0)
    utilization_limit: float = attrs.field(default=90.0, converter=to_float, validator=percent)
    migration_limit: int | None = attrs.field(default=None, converter=_optional_int, validator=non_negative)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of vCenter, from ``server`` and ``port``."""
        return split_server(self.server, self.port)

    def pool_size(self, pools: int) -> int:
        """Sessions to keep for ``pools`` served pools: the option, else max(pools, task_limit, 2)."""
        if self.connection_pool_size is not None:
            return self.connection_pool_size
        return max(pools, self.task_limit, 2)

    @property
    def migration_enabled(self) -> bool:
        """Whether ``migrate_vm`` may move VMs (``migration_limit`` > 0)."""
        return bool(self.migration_limit)


def _extra_config_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"must be a string or an integer, got {value!r}")
    return str(value)


@attrs.frozen(kw_only=True)
class PoolSettings(ProviderSettings):
    """One pool's vSphere keys (``PoolSpec.options``), parsed by ``ProviderSettings.from_options`` at
    config load (``VSphereProvider.pool_config_class``), so ``check-config`` reports them.

    Attributes:
        folder: the VM folder of the pool's VMs, relative to ``<datacenter>/vm``; without one the pool has
            no VMs and every clone fails (non-transient), as in the original.
        datastore: the datastore of clones and new disks; None = the template's.
        datacenter: overrides the provider's ``datacenter``.
        network: a port group that replaces the first NIC's network of clones.
        create_linked_clone: overrides the provider's ``create_linked_clones``.
        snapshot_mainMem_ioBlockPages: extraConfig ``mainMem.ioBlockPages`` of clones.
        snapshot_mainMem_iowait: extraConfig ``mainMem.iowait`` of clones.
    """

    # Optional as in the original, which started on a vSphere pool without one and failed each clone.
    folder: str | None = attrs.field(default=None, validator=attrs.validators.optional(string))
    datastore: str | None = attrs.field(default=None, converter=_optional_string)
    datacenter: str | None = attrs.field(default=None, converter=_optional_string)
    network: str | None = attrs.field(default=None, converter=_optional_string)
    create_linked_clone: bool | None = attrs.field(
        default=None, converter=lambda v: None if v is None else to_bool(v)
    )
    snapshot_mainMem_ioBlockPages: str | None = attrs.field(
        default=None, converter=lambda v: None if v is None else _extra_config_value(v)
    )
    snapshot_mainMem_iowait: str | None = attrs.field(
        default=None, converter=lambda v: None if v is None else _extra_config_value(v)
    )


POOL_KEYS = frozenset(field.name for field in attrs.fields(PoolSettings))
"""A pool's vSphere keys: the fields of :class:`PoolSettings`."""
