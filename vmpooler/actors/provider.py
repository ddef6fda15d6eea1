"""ProviderActor: owns one provider plugin instance and the PoolActors of the pools it serves.

It starts a PoolActor per pool and the process's OnDemandActor, routes the API's events to them (an
``ondemand`` event to the OnDemandActor, the others to their pool; the OnDemandActor's ``CloneFor`` to
its pool), and supervises them: an actor that died is started again (its state is rebuilt from the
store on its first pass: reconcile, not resurrect). Provider calls themselves are made by the pool and
VM actors on the dispatchers' threads; the plugin is thread-safe by contract.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pykka

from vmpooler.actors.dispatch import Dispatcher, PooledActor
from vmpooler.actors.messages import CloneFor
from vmpooler.actors.ondemand import OnDemandActor
from vmpooler.actors.pool import PoolActor
from vmpooler.bus import Event, OnDemandQueued
from vmpooler.errors import StoreError
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
        self._ondemand: pykka.ActorRef[Any] | None = None

    def on_start(self) -> None:
        for pool in self._contexts:
            self._start_pool(pool)
        self._start_ondemand()
        ticker = next(iter(self._contexts.values())).ticker if self._contexts else None
        if ticker is not None:
            self._supervision = ticker.call_every(_SUPERVISE_EVERY, self.actor_ref.proxy().supervise)
        self._log.info("serving %d pool(s)", len(self._pools))

    def on_stop(self) -> None:
        if self._supervision is not None:
            self._supervision.cancel()
        for ref in self._pools.values():
            ref.stop(block=False)
        if self._ondemand is not None:
            self._ondemand.stop(block=False)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, CloneFor):
            self.route(message)
            return None
        return super().on_receive(message)

    def route(self, event: Event | CloneFor) -> None:
        """Hand an event (``vmpooler.bus``) to the actor it is for; told, so nothing waits."""
        if isinstance(event, OnDemandQueued):
            if self._ondemand is not None:
                self._ondemand.tell(event)
            return
        ref = self._pools.get(event.pool)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(event)
                return
        ctx = self._contexts.get(event.pool)
        if isinstance(event, CloneFor) and ctx is not None:  # its pool actor is restarting
            self._log.warning("on-demand clone for %s put back in line: its pool actor is down", event.pool)
            try:
                ctx.store.slots.release(ctx.owner, event.slot)
                ctx.store.provisioning.requeue(event.request_id, event.alias, event.pool)
            except StoreError as exc:  # the lease expires; the request's TTL ends it at worst
                self._log.error("could not put the on-demand clone back: %s", exc)

    def supervise(self) -> None:
        for pool, ref in list(self._pools.items()):
            if not ref.is_alive():
                self._log.error("pool actor of %s died; starting it again", pool)
                self._start_pool(pool)
        if self._ondemand is not None and not self._ondemand.is_alive():
            self._log.error("on-demand actor died; starting it again")
            self._start_ondemand()

    def _start_ondemand(self) -> None:
        if not self._contexts:
            return
        first = next(iter(self._contexts.values()))
        me = self.actor_ref
        self._ondemand = OnDemandActor.start(
            owner=first.owner,
            pools=list(self._contexts),
            config=first.config,
            store=first.store,
            ticker=first.ticker,
            dispatcher=self._dispatcher,  # PooledActor's: the one this actor runs on
            send=me.tell,
            lease_seconds=max(ctx.timeout for ctx in self._contexts.values()),
            clock=first.clock,
        )

    def _start_pool(self, pool: str) -> None:
        self._pools[pool] = PoolActor.start(self._contexts[pool])
