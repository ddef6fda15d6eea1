"""What the actors of one pool share: immutable settings and thread-safe collaborators."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from vmpooler.lifecycle import Policy
from vmpooler.store.queue import QueueSettings
from vmpooler.textnum import whole_number

if TYPE_CHECKING:
    from vmpooler.actors.dispatch import Dispatcher
    from vmpooler.actors.ticker import Ticker
    from vmpooler.config import Config, PoolConfig
    from vmpooler.providers.base import Provider
    from vmpooler.store import Store

__all__ = ["PoolContext"]


@attrs.frozen(kw_only=True)
class PoolContext:
    """Dependencies of a ``PoolActor`` and its ``VMActor``s.

    Attributes:
        owner: the provider instance name; it owns the clone slots this process takes.
        provider: the plugin instance (thread-safe; called from many actor threads).
        pool_threads: the dispatcher the PoolActors (and the ProviderActor) run on.
        vm_threads: the dispatcher the VMActors run on; its size bounds the provider calls in flight.
        queue_settings: tenant weights and quotas for the queue dispatch after a VM turns ready.
    """

    config: Config
    pool: PoolConfig
    owner: str
    provider: Provider
    store: Store
    ticker: Ticker
    pool_threads: Dispatcher
    vm_threads: Dispatcher
    clock: Callable[[], float] = time.time
    rng: random.Random = attrs.field(factory=random.Random)
    queue_settings: QueueSettings = attrs.field(
        default=attrs.Factory(lambda self: QueueSettings.from_config(self.config), takes_self=True)
    )

    @property
    def name(self) -> str:
        return self.pool.name

    # Settings resolved pool → global → default (as the original, fixed), in seconds.
    @property
    def timeout(self) -> float:
        return float(self.pool.timeout if self.pool.timeout is not None else self.config.globals.timeout) * 60

    @property
    def timeout_notification(self) -> float:
        value = self.pool.timeout_notification
        return float(value if value is not None else self.config.globals.timeout_notification) * 60

    @property
    def ready_ttl(self) -> float:
        value = self.pool.ready_ttl if self.pool.ready_ttl is not None else self.config.globals.ready_ttl
        return float(value) * 60

    @property
    def policy(self) -> Policy:
        """The settings ``lifecycle.decide`` judges this pool's VMs by."""
        return Policy(
            timeout=self.timeout,
            timeout_notification=self.timeout_notification,
            ready_ttl=self.ready_ttl,
            vm_checktime=self.vm_checktime,
            check_hostname=self.pool.check_hostname_for_mismatch,
        )

    @property
    def vm_checktime(self) -> float:
        return float(self.config.globals.vm_checktime) * 60

    @property
    def data_ttl(self) -> int:
        return int(self.config.redis.data_ttl * 3600)

    def lifetime_hours(self, own: str | None) -> float:
        """A running VM's lifetime: its own field, else ``vm_lifetime``, else 12 (0 = never expires)."""
        hours = whole_number(own)
        if hours is not None:
            return float(hours)
        default = self.config.globals.vm_lifetime
        return float(default if default is not None else 12)
