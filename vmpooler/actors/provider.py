"""ProviderActor: owns one provider plugin instance and the PoolActors of the pools it serves.

It starts a PoolActor per pool it owns and the process's OnDemandActor, routes the API's events to them (an
``ondemand`` event to the OnDemandActor, the others to their pool; the OnDemandActor's ``CloneFor`` to
its pool), and supervises them: an actor that died is started again (its state is rebuilt from the
store on its first pass: reconcile, not resurrect). Provider calls themselves are made by the pool and
VM actors on the dispatchers' threads; the plugin is thread-safe by contract.

Which pools it owns (``Ownership``, docs/architecture.md "Several managers"): every
``manager_lease_seconds / 3`` it beats the provider's member list, works out by rendezvous hashing the
pools this manager should own, stops the PoolActors of the others and releases their leases, then
claims or renews the leases of its own: a PoolActor runs exactly while its pool's lease is held.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import attrs
import pykka

from vmpooler.actors.dispatch import Dispatcher, PooledActor
from vmpooler.actors.messages import CloneFor
from vmpooler.actors.ondemand import OnDemandActor
from vmpooler.actors.pool import PoolActor
from vmpooler.bus import Event, OnDemandQueued
from vmpooler.errors import StoreError
from vmpooler.log import get_logger
from vmpooler.ownership import owned_by
from vmpooler.supervisor import being_replaced

if TYPE_CHECKING:
    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle

__all__ = ["Ownership", "ProviderActor"]

_SUPERVISE_EVERY = 5.0


@attrs.frozen
class Ownership:
    """Who this process is among the managers that share the Redis.

    Attributes:
        manager: the manager's id (``:config: manager_id``).
        instance: its supervisor's random id: the same for a provider process started again.
        pid: this process.
        lease_seconds: how long a lease lasts without renewal (renewed every third of it).
    """

    manager: str
    instance: str
    pid: int
    lease_seconds: float

    @property
    def ttl_ms(self) -> int:
        return int(self.lease_seconds * 1000)


class ProviderActor(PooledActor):
    """Args: contexts: one ``PoolContext`` per pool this provider instance serves; dispatcher: the
    PoolActors' dispatcher, which runs this actor too."""

    def __init__(
        self,
        name: str,
        contexts: list[PoolContext],
        dispatcher: Dispatcher,
        ownership: Ownership | None = None,
    ) -> None:
        super().__init__(dispatcher)
        self._name = name
        self._contexts = {ctx.name: ctx for ctx in contexts}
        self._store = contexts[0].store if contexts else None  # the process's (unfenced) store
        self._pools: dict[str, pykka.ActorRef[Any]] = {}
        self._log = get_logger(__name__, provider=name)
        self._timers: list[Handle] = []
        self._ondemand: pykka.ActorRef[Any] | None = None
        self._ownership = ownership
        self._tokens: dict[str, int] = {}  # pool -> the fencing token of the lease held
        self._renewed = time.monotonic()

    def on_start(self) -> None:
        first = next(iter(self._contexts.values()), None)
        if self._ownership is None:
            for pool in self._contexts:
                self._start_pool(pool)
            self._start_ondemand()
            self._log.info("serving %d pool(s)", len(self._pools))
        else:
            self.claim_pools()
        if first is not None:
            proxy = self.actor_ref.proxy()
            self._timers.append(first.ticker.call_every(_SUPERVISE_EVERY, proxy.supervise))
            if self._ownership is not None:
                self._timers.append(
                    first.ticker.call_every(self._ownership.lease_seconds / 3, proxy.claim_pools)
                )

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for ref in self._pools.values():
            ref.stop(block=False)
        if self._ondemand is not None:
            self._ondemand.stop(block=False)
        if self._ownership is not None and self._store is not None:
            store = self._store
            try:  # the others take these pools at their next beat instead of after the lease
                store.leases.release(
                    self._tokens, owner=self._ownership.manager, instance=self._ownership.instance
                )
                if not being_replaced():  # a successor beats in a moment: the pools stay this manager's
                    store.leases.leave(self._name, self._ownership.manager)
            except StoreError as exc:
                self._log.warning("could not release the pools' leases (%s): they expire by themselves", exc)

    def claim_pools(self) -> None:
        """Beat, take the pools this manager should own and give the others up (see the module's doc)."""
        own, store = self._ownership, self._store
        if own is None or store is None:
            return
        changed = False
        try:
            members = store.leases.beat(self._name, own.manager, own.ttl_ms)
            wanted = owned_by(own.manager, self._contexts, members)
            leaving = sorted(set(self._pools) - wanted)
            for pool in leaving:
                self._stop_pool(pool)
                changed = True
            if leaving:
                store.leases.release(leaving, owner=own.manager, instance=own.instance)
                self._log.info("gave up %d pool(s) to other managers: %s", len(leaving), ", ".join(leaving))
            tokens = store.leases.claim(
                sorted(wanted), owner=own.manager, instance=own.instance, pid=own.pid, ttl_ms=own.ttl_ms
            )
            self._renewed = time.monotonic()
        except StoreError as exc:
            if self._pools and time.monotonic() - self._renewed > own.lease_seconds:
                self._log.error(
                    "leases not renewed for %.0f s (%s): stopping every pool", own.lease_seconds, exc
                )
                for pool in list(self._pools):
                    self._stop_pool(pool)
                self._restart_ondemand()
            else:
                self._log.warning("could not renew the pools' leases: %s", exc)
            return
        for pool, token in tokens.items():
            if token is None:
                if pool in self._pools:  # taken over: this process was too slow to renew
                    self._log.warning("lost the lease of %s to another manager", pool)
                    self._stop_pool(pool)
                    changed = True
            elif pool not in self._pools or self._tokens.get(pool) != token:
                self._stop_pool(pool)  # a new token (the lease lapsed and was taken again): a new store
                self._tokens[pool] = token
                self._start_pool(pool)
                changed = True
        if changed:
            self._restart_ondemand()
            self._log.info(
                "serving %d pool(s) of %d, %d manager(s) live",
                len(self._pools),
                len(self._contexts),
                len(members),
            )

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

    def _stop_pool(self, pool: str) -> None:
        ref = self._pools.pop(pool, None)
        self._tokens.pop(pool, None)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)

    def _restart_ondemand(self) -> None:
        if self._ondemand is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._ondemand.stop(block=False)
            self._ondemand = None
        self._start_ondemand()

    def supervise(self) -> None:
        for pool, ref in list(self._pools.items()):
            if not ref.is_alive():
                self._log.error("pool actor of %s died; starting it again", pool)
                self._start_pool(pool)
        if self._ondemand is not None and not self._ondemand.is_alive():
            self._log.error("on-demand actor died; starting it again")
            self._start_ondemand()

    def _start_ondemand(self) -> None:
        if not self._pools:
            return
        first = next(iter(self._contexts.values()))
        me = self.actor_ref
        self._ondemand = OnDemandActor.start(
            owner=first.owner,
            pools=list(self._pools),
            config=first.config,
            store=first.store,
            ticker=first.ticker,
            dispatcher=self._dispatcher,  # PooledActor's: the one this actor runs on
            send=me.tell,
            lease_seconds=max(ctx.timeout for ctx in self._contexts.values()),
            clock=first.clock,
            tokens=self._tokens,
        )

    def _start_pool(self, pool: str) -> None:
        ctx = self._contexts[pool]
        token = self._tokens.get(pool)
        if token is not None:  # its actors write only while this lease is the current one
            ctx = attrs.evolve(ctx, store=ctx.store.fenced(pool, token))
        self._pools[pool] = PoolActor.start(ctx)
