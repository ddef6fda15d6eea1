"""PoolActor: keeps one pool at its size.

Each pass (``check``) reads the provider's inventory and the pool's sets, gives every VM an actor
(adopting VMs an earlier process or the original vmpooler left in Redis), marks VMs the provider has
but Redis does not as discovered, tells each VMActor to look at its VM, and starts the clones the pool
is short of. Passes are spaced by the dynamic loop delay (min, ×decay up to max while idle), and API
events start one at once: a checkout starts its replacement clone without waiting for the loop.

Messages: ``check()``, ``on_event(event)``, ``vm_gone(name, ref)``, ``vm_actor_failed(name, ref)``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pykka

from vmpooler import metrics
from vmpooler.actors.vm import VMActor
from vmpooler.bus import CheckedOut, Event, Returned, SlotFreed, TaskQueued
from vmpooler.errors import ProviderError, StoreError
from vmpooler.log import get_logger
from vmpooler.names import generate_name
from vmpooler.textnum import whole_number
from vmpooler.timeutil import format_time

if TYPE_CHECKING:
    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle
    from vmpooler.manager_store import PoolSnapshot

__all__ = ["PoolActor"]

_NAME_ATTEMPTS = 10  # the original tried 3; at 10,000 VMs that failed now and then


class PoolActor(pykka.ThreadingActor):
    """Owns one pool: its size, its VMActors, its clones."""

    def __init__(self, ctx: PoolContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._log = get_logger(__name__, pool=ctx.name)
        self._proxy: Any = None
        self._vms: dict[str, pykka.ActorRef[Any]] = {}  # name -> VMActor
        self._delay = ctx.pool.check_loop_delay_min
        self._next: Handle | None = None
        self._size = ctx.pool.size
        self._unreleased: set[str] = set()  # clone slots whose release failed, retried each pass
        self._starved = False  # the last repopulation was refused a clone slot

    # -- pykka hooks (this actor's thread) -----------------------------------------------------------

    def on_start(self) -> None:
        self._proxy = self.actor_ref.proxy()
        self._log.info("pool actor started (size %d)", self._size)
        self._schedule(0)

    def on_stop(self) -> None:
        if self._next is not None:
            self._next.cancel()
        for ref in self._vms.values():
            ref.stop(block=False)
        self._vms.clear()

    # -- messages ----------------------------------------------------------------------------------

    def check(self) -> None:
        """One reconcile pass; schedules the next one."""
        self._next = None
        started = self._ctx.clock()
        busy = False
        try:
            busy = self._pass()
        except (StoreError, ProviderError) as exc:
            self._log.warning("pool check failed: %s", exc)
        except Exception:
            self._log.exception("pool check crashed")
        finally:
            metrics.CHECK_POOL.labels(self._ctx.name).set(self._ctx.clock() - started)
            self._adjust_delay(busy)
            self._schedule(self._delay)

    def on_receive(self, message: Any) -> Any:
        """Events (``vmpooler.bus``) arrive told; anything else is pykka's own (proxy calls)."""
        if isinstance(message, CheckedOut | Returned | TaskQueued | SlotFreed):
            self.on_event(message)
            return None
        return super().on_receive(message)

    def on_event(self, event: Event) -> None:
        """An event about this pool, on this actor's thread; every error is logged here, with its
        traceback when unexpected, never left in a future nobody reads."""
        try:
            match event:
                case CheckedOut() | SlotFreed():  # a VM left ready, or a clone slot is free: clone
                    self._repopulate_now()
                case Returned(vm=vm):
                    self._tell(vm, "destroy")
                case TaskQueued():
                    self._dispatch_tasks()
        except (StoreError, ProviderError) as exc:
            self._log.warning("handling %s failed: %s", type(event).__name__, exc)
        except Exception:
            self._log.exception("handling %s crashed", type(event).__name__)

    def vm_gone(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        if self._vms.get(name) is ref:
            del self._vms[name]

    def vm_actor_failed(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """A VMActor crashed: forget it; the next pass recreates it from the store (reconcile)."""
        self.vm_gone(name, ref)
        self._log.error("actor of %s crashed; it is recreated on the next pass", name)
        self._schedule(self._ctx.pool.check_loop_delay_min)

    def slot_unreleased(self, slot: str) -> None:
        """A VMActor could not give its clone slot back: keep it and retry on every pass."""
        self._unreleased.add(slot)

    # -- the pass ------------------------------------------------------------------------------------

    def _pass(self) -> bool:
        ctx = self._ctx
        for slot in list(self._unreleased):
            self._unreleased.discard(slot)
            self._release_slot_quietly(slot)
        try:
            inventory = {info.name for info in ctx.provider.list_vms(ctx.name)}
        except ProviderError as exc:
            self._log.warning("inventory failed, skipping this pass: %s", exc)
            return False
        snap = ctx.store.snapshot(ctx.name)  # after the inventory: a new clone is in pending first
        self._apply_overrides()
        known = snap.pending | snap.ready | snap.running | snap.completed
        if snap.discovered & known:  # found in another set after all: not discovered
            ctx.store.forget_discovered(ctx.name, snap.discovered & known)
        discovered = [vm for vm in inventory if vm not in snap.all() and vm not in self._vms]
        if discovered:
            ctx.store.add_discovered(ctx.name, discovered)
            snap = ctx.store.snapshot(ctx.name)
        for vm in snap.all():
            self._tell(vm, "check", snap.state_of(vm), vm in inventory)
        for vm in list(self._vms):
            if vm not in snap.all():
                self._tell(vm, "check", None, vm in inventory, create=False)
        for vm in snap.migrating & snap.running:
            self._tell(vm, "migrate")
        self._dispatch_tasks()
        if ctx.store.claim_pool_reset(ctx.name):
            self._drain(snap.ready | snap.pending, "pool reset")
        cloned = self._repopulate(snap)
        self._gauges(snap)
        # a pool refused a clone slot is not idle: it keeps the minimum delay (a released slot also
        # wakes it through a 'slot' event)
        return bool(cloned or discovered or snap.pending or self._starved)

    def _repopulate(self, snap: PoolSnapshot) -> int:
        ready, pending = len(snap.ready), len(snap.pending)
        if ready > self._size:
            self._drain(sorted(snap.ready)[: ready - self._size], "pool above its size")
            if pending:
                self._drain(snap.pending, "pool above its size")
            return 0
        return self._clone_up_to(self._size - (ready + pending))

    def _repopulate_now(self) -> None:
        counts = self._ctx.store.pool_counts([self._ctx.name])[self._ctx.name]
        self._clone_up_to(self._size - (counts.ready + counts.pending))

    def _clone_up_to(self, wanted: int) -> int:
        self._starved = False
        started = 0
        for _ in range(max(0, wanted)):
            if not self._start_clone():
                break
            started += 1
        return started

    def _start_clone(self) -> bool:
        """Take a clone slot, reserve a fresh name in ``pending`` and hand the clone to a new VMActor."""
        ctx = self._ctx
        slot = uuid.uuid4().hex
        limit = ctx.config.globals.task_limit
        if not ctx.store.acquire_clone_slot(
            ctx.owner, slot, limit=limit, lease_seconds=ctx.timeout, pool=ctx.name
        ):
            self._starved = True
            self._log.debug("task_limit %d reached; clone deferred", limit)
            return False
        try:
            if self._reserve_and_clone(slot):
                return True
        except StoreError:
            self._release_slot_quietly(slot)
            raise
        self._release_slot_quietly(slot)
        self._log.error("unable to generate a unique hostname after %d attempts", _NAME_ATTEMPTS)
        return False

    def _reserve_and_clone(self, slot: str) -> bool:
        """Reserve a fresh name in ``pending`` and hand the clone (and the slot) to a new VMActor."""
        ctx = self._ctx
        for _ in range(_NAME_ATTEMPTS):
            name = generate_name(ctx.rng, ctx.config.globals.prefix)
            if name in self._vms:
                continue
            now = format_time(ctx.clock())
            fields = {"clone": now, "template": ctx.name, "pool": ctx.name}
            if ctx.pool.domain:
                fields["domain"] = ctx.pool.domain
            if ctx.store.create_pending(ctx.name, name, fields):
                self._vms[name] = VMActor.start(ctx, name, self._proxy, slot)
                self._tell(name, "clone")
                return True
            metrics.ERRORS.labels("duplicatehostname", ctx.name).inc()
        return False

    def _release_slot_quietly(self, slot: str) -> None:
        """Give a slot back; if Redis fails now, keep it and retry on the next pass."""
        try:
            self._ctx.store.release_clone_slot(self._ctx.owner, slot)
        except StoreError as exc:
            self._unreleased.add(slot)
            self._log.warning("could not release clone slot %s, retrying next pass: %s", slot, exc)

    def _drain(self, vms: Any, reason: str) -> None:
        self._log.info("draining %d VM(s): %s", len(vms), reason)
        for vm in vms:
            self._tell(vm, "drain")

    def _dispatch_tasks(self) -> None:
        for task in self._ctx.store.claim_tasks(self._vms):
            self._tell(task.vm, "run_task", task)

    def _apply_overrides(self) -> None:
        override = self._ctx.store.overrides("poolsize").get(self._ctx.name, "")
        size = whole_number(override)
        size = self._ctx.pool.size if size is None else size
        if size != self._size:
            self._log.info("pool size changed from %d to %d", self._size, size)
            self._size = size

    def _gauges(self, snap: PoolSnapshot) -> None:
        ctx = self._ctx
        metrics.READY.labels(ctx.name).set(len(snap.ready))
        metrics.RUNNING.labels(ctx.name).set(len(snap.running))
        empty = not snap.ready and self._size > 0
        if ctx.store.set_empty_flag(ctx.name, empty) and empty:
            self._log.warning("pool is empty")

    # -- helpers -------------------------------------------------------------------------------------

    def _tell(self, vm: str, message: str, *args: Any, create: bool = True) -> None:
        """Send a fire-and-forget message to the VM's actor (started first if ``create``).

        A ``tell``, not an ``ask``: an unexpected exception in the VMActor must kill it so that its
        ``on_failure`` runs and the next pass recreates it, instead of vanishing into an unread future.
        """
        ref = self._actor_for(vm) if create else self._vms.get(vm)
        if ref is None:
            return
        try:
            ref.tell((message, args))
        except pykka.ActorDeadError:
            self._log.debug("actor of %s stopped before %s; the next pass sees to it", vm, message)
            if self._vms.get(vm) is ref:
                del self._vms[vm]

    def _actor_for(self, vm: str) -> pykka.ActorRef[Any]:
        ref = self._vms.get(vm)
        if ref is None or not ref.is_alive():
            ref = VMActor.start(self._ctx, vm, self._proxy)
            self._vms[vm] = ref
        return ref

    def _adjust_delay(self, busy: bool) -> None:
        pool = self._ctx.pool
        if busy:
            self._delay = pool.check_loop_delay_min
        else:
            self._delay = min(self._delay * pool.check_loop_delay_decay, pool.check_loop_delay_max)

    def _schedule(self, delay: float) -> None:
        """Run ``check`` after ``delay`` seconds; an earlier request replaces a later one."""
        if self._next is not None:
            if delay > 0:
                return
            self._next.cancel()
        self._next = self._ctx.ticker.call_later(delay, self._proxy.check)
