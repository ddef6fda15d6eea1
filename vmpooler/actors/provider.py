"""ProviderActor: owns one provider plugin instance and the PoolActors of the pools it serves.

It starts a PoolActor per pool, routes the API's events to them, and supervises them: a PoolActor
that died is started again (its state is rebuilt from the store on its first pass: reconcile, not
resurrect). Provider calls themselves are made by the pool and VM actors on the dispatchers' threads;
the plugin is thread-safe by contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pykka

from vmpooler.actors.dispatch import Dispatcher, PooledActor
from vmpooler.actors.pool import PoolActor
from vmpooler.bus import Event
from vmpooler.log import get_logger

if TYPE_CHECKING:
    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle

__all__ = ["ProviderActor"]

_SUPERVISE_EVERY = 5.0


class ProviderActor(PooledActor):
    """Args: contexts: one ``PoolContext`` per pool this provider instance serves; dispatcher: the
    PoolActors' dispatcher, which runs this actor too."""

    def __init__(self, name: str, contexts: list[PoolContext], dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher)
        self._name = name
        self._contexts = {ctx.name: ctx for ctx in contexts}
        self._pools: dict[str, pykka.ActorRef[Any]] = {}
        self._log = get_logger(__name__, provider=name)
        self._supervision: Handle | None = None

    def on_start(self) -> None:
        for pool in self._contexts:
            self._start_pool(pool)
        ticker = next(iter(self._contexts.values())).ticker if self._contexts else None
        if ticker is not None:
            self._supervision = ticker.call_every(_SUPERVISE_EVERY, self.actor_ref.proxy().supervise)
        self._log.info("serving %d pool(s)", len(self._pools))

    def on_stop(self) -> None:
        if self._supervision is not None:
            self._supervision.cancel()
        for ref in self._pools.values():
            ref.stop(block=False)

    def route(self, event: Event) -> None:
        """Hand an event (``vmpooler.bus``) to the PoolActor of its pool; told, so nothing waits."""
        ref = self._pools.get(event.pool)
        if ref is not None:
            ref.tell(event)

    def supervise(self) -> None:
        for pool, ref in list(self._pools.items()):
            if not ref.is_alive():
                self._log.error("pool actor of %s died; starting it again", pool)
                self._start_pool(pool)

    def _start_pool(self, pool: str) -> None:
        self._pools[pool] = PoolActor.start(self._contexts[pool])
