"""Chaos run: the real service on a dummy provider that fails 20 % of everything, under random load.

The service (API + manager) runs with one dummy provider instance whose every operation fails 20 % of
the time (``getvm_poweroff``/``getvm_rename`` 5 %) after a random delay, serving three pools of sizes 5,
4 and 3 by default (:class:`Layout` scales that up). Client threads check out VMs at random (one pool,
several pools by path and by JSON body, an alias), return them, tag them, and ask for disks, snapshots
and reverts, for the given time, while a sampler reads every set of every pool atomically five times a
second. At the end the clients return what they hold and the run checks:

* every pool is back at its size (ready = size, nothing pending, running or discovered) within 30 s,
  and every returned VM is destroyed (``completed`` empty) within 30 s too, or later (up to
  ``MAX_DESTROY_WAIT``) only while the service's ``destroy_failed`` counter keeps rising in each pool
  that still has completed VMs: it is retrying a failing destroy;
* no VM was ever in two sets; the provider's inventory and Redis agree (no VM lost or leaked); no clone
  slot, checkout time or migration entry is left behind;
* no hostname was handed out twice; the API never answered 500 nor anything unexpected;
* the supervisor still runs and has the same children as when the load started (none died or was
  restarted), and the service counted no ``actor_crashed`` or ``pool_actor_crashed`` error.

Only public interfaces are read: Redis (the ``vmpooler__`` keys, named by ``vmpooler.keys``), the
provider (a ``DummyProvider`` built in this process on the service's options, asked ``list_vms``), the
service's metrics (``GET /prometheus``) and the supervisor's children in ``/proc``; never its log.

``python scripts/chaos.py`` (this package's ``__main__``) runs it by hand; ``tests/acceptance/test_chaos.py``
runs :func:`run` for a bounded time against the test suite's Redis.
"""

from tests.support.chaos.clients import ChaosClient, Outcomes
from tests.support.chaos.inventory import consistency_problems, quiet_inventory, read_inventory
from tests.support.chaos.metrics import Metrics, MetricsError, scrape
from tests.support.chaos.plan import SEED, ChaosPlan, Layout
from tests.support.chaos.run import MAX_DESTROY_WAIT, Report, run
from tests.support.chaos.sets import Sampler, at_size, leak_problems, pool_state, settled

__all__ = [
    "MAX_DESTROY_WAIT",
    "SEED",
    "ChaosClient",
    "ChaosPlan",
    "Layout",
    "Metrics",
    "MetricsError",
    "Outcomes",
    "Report",
    "Sampler",
    "at_size",
    "consistency_problems",
    "leak_problems",
    "pool_state",
    "quiet_inventory",
    "read_inventory",
    "run",
    "scrape",
    "settled",
]
