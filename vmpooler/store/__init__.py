"""Redis data access: every read and write of vmpooler state goes through a ``Store``.

The store is split by what it stores, one part per module; each part takes the store's client and
registers only its own Lua scripts, and no part knows another:

* ``store.vms`` (``vms.py``): the VM sets and every transition between them, each VM's hash;
* ``store.slots`` (``slots.py``): the clone slots shared by every provider process;
* ``store.tasks`` (``tasks.py``): the disk, snapshot and revert requests, the clone counters;
* ``store.tokens`` (``tokens.py``): API tokens and the per-user index;
* ``store.stats`` (``stats.py``): counts and statistics;
* ``store.ondemand`` (``ondemand.py``): on-demand requests, the API's side (create, status, delete);
* ``store.pools`` (``pools.py``): published pool configs, overrides, reset requests, empty flags, events;
* ``store.passes`` (``passes.py``): what one pool pass reads of all these, in one script;
* ``store.health`` (``health.py``): the providers' circuit breakers and the dead-letter queues;
* ``store.provisioning`` (``provisioning.py``): on-demand requests, the manager's steps;
* ``store.ratelimit`` (``ratelimit.py``): the API's rate limit counters;
* ``store.leases`` (``leases.py``): the managers' registry and the pools' leases (several managers).

The API and the manager both use a ``Store`` (each with its own connection settings). Multi-key
transitions are Lua scripts (Redis runs a script alone, so no other client ever sees half of one) or
MULTI/EXEC. Key names come from ``vmpooler.keys`` only; the scripts receive them as KEYS or as prefixes
in ARGV so that no key is spelled here.

Every public method raises ``StoreUnavailable`` when Redis cannot be reached (``translated``); redis-py
reconnects by itself on the next call, so callers recover without doing anything.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

from vmpooler import keys
from vmpooler.store.connection import connect, translated
from vmpooler.store.fencing import FencedRedis
from vmpooler.store.health import Health
from vmpooler.store.leases import Leases
from vmpooler.store.ondemand import OnDemand
from vmpooler.store.passes import Passes, PassView
from vmpooler.store.pools import Pools
from vmpooler.store.provisioning import Claim, Provisioning
from vmpooler.store.queue import Queues
from vmpooler.store.ratelimit import RateLimits
from vmpooler.store.slots import Slots
from vmpooler.store.stats import PoolCounts, Stats
from vmpooler.store.tasks import Task, Tasks
from vmpooler.store.tokens import Tokens
from vmpooler.store.vms import Allocation, Pick, PoolSnapshot, VMs

__all__ = [
    "Allocation",
    "Claim",
    "PassView",
    "Pick",
    "PoolCounts",
    "PoolSnapshot",
    "Store",
    "Task",
    "connect",
    "translated",
]


class Store:
    """All Redis access of the API and the manager, one part per kind of data.

    Args:
        client: a redis-py client decoding responses to ``str`` (see ``connect``).
    """

    def __init__(self, client: redis_lib.Redis) -> None:
        # redis-py types replies as bytes | str; ``connect`` decodes them, so they are all str.
        self._redis: Any = client
        self.vms = VMs(client)
        self.slots = Slots(client)
        self.tasks = Tasks(client)
        self.tokens = Tokens(client)
        self.stats = Stats(client)
        self.pools = Pools(client)
        self.passes = Passes(client)
        self.health = Health(client)
        self.ondemand = OnDemand(client)
        self.provisioning = Provisioning(client)
        self.ratelimit = RateLimits(client)
        self.queue = Queues(client)
        self.leases = Leases(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int = 10,
        pool_timeout: float = 5.0,
        socket_timeout: float = 10.0,
        lean: bool = False,
    ) -> Store:
        return cls(
            connect(
                url,
                max_connections=max_connections,
                pool_timeout=pool_timeout,
                socket_timeout=socket_timeout,
                lean=lean,
            )
        )

    def fenced(self, pool: str, token: int) -> Store:
        """A store on the same connections whose writes land only while ``pool``'s lease has ``token``
        (``vmpooler.store.fencing``): the store of the pool's actors while this process holds it."""
        return Store(FencedRedis(self._redis.connection_pool, keys.lease(pool), token))

    @property
    def client(self) -> redis_lib.Redis:
        """The underlying client, for the pub/sub bus and for tests."""
        return self._redis

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()

    @translated
    def ping(self) -> bool:
        return bool(self._redis.ping())
