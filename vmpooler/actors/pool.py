"""PoolActor: keeps one pool at its size, and owns the records of its VMs.

Each pass (``Check``) reads the provider's inventory in one call and the pool's sets, the hashes of its
VMs and its checkout times in one script (``store.passes.read``); marks VMs the provider has but Redis
does not as discovered; decides every VM with ``lifecycle.decide`` on this actor's turn; starts a
VMActor only for the VMs that need work (a provider check, a destroy, a move), and starts the clones the
pool is short of. A VM whose actor is in flight is left to that actor: it alone drives it until it
reports itself idle. Passes are spaced by the dynamic loop delay (min, ×decay up to max while idle), and
API events start work at once: a checkout starts its replacement clone without waiting for the loop.

The pool's template and clone target follow the ``/config`` overrides: when either differs from what the
provider was last given, the pool gives the provider the new one, drains its ready and pending VMs,
prepares the template, and only then clones again (docs/architecture.md, "Runtime pool configuration").
On-demand VMs (``CloneFor``) are cloned here like any VM, but never count toward the pool's size and
are never drained: they belong to their request.

Messages (``actors.messages`` and ``vmpooler.bus``): ``Check``; the API's events; ``CloneFor`` from the
OnDemandActor; ``VMIdle``, ``VMGone``, ``VMCrashed`` and ``SlotUnreleased`` from its VMActors.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pykka

from vmpooler import metrics
from vmpooler.actors.dispatch import PooledActor
from vmpooler.actors.messages import (
    Check,
    Clone,
    CloneFor,
    DestroyNow,
    Drain,
    Look,
    Migrate,
    PurgePending,
    RunTask,
    SlotUnreleased,
    VMCrashed,
    VMGone,
    VMIdle,
)
from vmpooler.actors.vm import VMActor, observation_of, record_of
from vmpooler.bus import CheckedOut, ConfigChanged, QueueDemand, Returned, SlotFreed, TaskQueued
from vmpooler.errors import ProviderError, StoreError
from vmpooler.lifecycle import Forget, Probe, Wait, decide, settle_overlap
from vmpooler.log import get_logger
from vmpooler.model import VMState
from vmpooler.names import generate_name
from vmpooler.store.slots import lane_of
from vmpooler.textnum import whole_number
from vmpooler.timeutil import format_time, parse_time

if TYPE_CHECKING:
    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle
    from vmpooler.store import PassView, PoolSnapshot

__all__ = ["PoolActor"]

_NAME_ATTEMPTS = 10  # the original tried 3; at 10,000 VMs that failed now and then
_SWEEP_EVERY = 10.0  # seconds between the queue sweeps of a pool that waiting checkouts want


@attrs.define
class _Flight:
    """A VMActor at work, and the messages told to it that it has not yet reported handled.

    A VMActor stops itself when it runs out of work and reports how many messages it handled
    (``VMIdle``); mail that reached it after that point was refused, and is told to a new actor. Until
    that report, no second actor is started for the VM (``closing``: told mail waits here).
    """

    ref: pykka.ActorRef[Any]
    unacked: list[object] = attrs.Factory(list)
    closing: bool = False  # the actor refused mail: its final report is on its way


class PoolActor(PooledActor):
    """Owns one pool: its size, its VMs' records, the VMActors in flight, its clones."""

    def __init__(self, ctx: PoolContext) -> None:
        super().__init__(ctx.pool_threads)
        self._ctx = ctx
        self._log = get_logger(__name__, pool=ctx.name)
        self._flights: dict[str, _Flight] = {}  # name -> VMActor with work in flight
        self._delay = ctx.pool.check_loop_delay_min
        self._next: Handle | None = None
        self._size = ctx.pool.size
        self._unreleased: set[str] = set()  # clone slots whose release failed, retried each pass
        self._starved = False  # the last repopulation was refused a clone slot
        self._checked: dict[str, float] = {}  # ready VM -> when a pass last sent it to be checked
        self._empty: bool | None = None  # the empty flag as this actor last wrote it (None: unknown)
        self._ondemand: set[str] = set()  # pending VMs of on-demand requests: not the pool's buffer
        self._purged_at = 0.0  # when the last stale-queue purge ran (``purge_enabled``)
        self._first_pass = True
        self._swept = -_SWEEP_EVERY  # when this pool last swept the queue (see _dispatch_queue)

    # -- pykka hooks (a dispatcher thread, one message at a time) ---------------------------------

    def on_start(self) -> None:
        self._log.info("pool actor started (size %d)", self._size)
        self._schedule(0)

    def on_stop(self) -> None:
        if self._next is not None:
            self._next.cancel()
        for flight in self._flights.values():
            with contextlib.suppress(pykka.ActorDeadError):
                flight.ref.stop(block=False)
        self._flights.clear()

    def on_receive(self, message: Any) -> Any:
        """Every message is told; an unexpected error is logged with its traceback, never left in a
        future nobody reads (and never kills the pool)."""
        try:
            match message:
                case Check():
                    self.check()
                case CheckedOut() | SlotFreed() | QueueDemand():  # a VM left ready, a slot is free, or
                    # a checkout waits for this pool: clone
                    self._repopulate_now()
                case Returned(vm=vm):
                    self._tell(vm, DestroyNow())
                case ConfigChanged():
                    self._schedule(0)
                case CloneFor():
                    self._clone_for(message)
                case TaskQueued():
                    self._dispatch_tasks()
                case VMIdle(vm=vm, ref=ref, handled=handled):
                    self._idle(vm, ref, handled)
                case VMGone(vm=vm, ref=ref):
                    self._forget(vm, ref)
                case VMCrashed(vm=vm, ref=ref):
                    self._forget(vm, ref)
                    self._log.error("actor of %s crashed; its VM is looked at again on the next pass", vm)
                    self._schedule(self._ctx.pool.check_loop_delay_min)
                case SlotUnreleased(slot=slot):
                    self._unreleased.add(slot)
                case _:
                    return super().on_receive(message)
        except (StoreError, ProviderError) as exc:
            self._log.warning("handling %s failed: %s", type(message).__name__, exc)
        except Exception:
            metrics.ERRORS.labels("pool_actor_crashed", self._ctx.name).inc()
            self._log.exception("handling %s crashed", type(message).__name__)
        return None

    def check(self) -> None:
        """One reconcile pass; schedules the next one."""
        self._next = None
        started = self._ctx.clock()
        busy = False
        try:
            busy = self._pass()
        except (StoreError, ProviderError) as exc:
            metrics.ERRORS.labels("pool_check_failed", self._ctx.name).inc()
            self._log.warning("pool check failed: %s", exc)
        except Exception:
            metrics.ERRORS.labels("pool_actor_crashed", self._ctx.name).inc()
            self._log.exception("pool check crashed")
        finally:
            metrics.CHECK_POOL.labels(self._ctx.name).set(self._ctx.clock() - started)
            self._adjust_delay(busy)
            self._schedule(self._delay)

    def _idle(self, vm: str, ref: pykka.ActorRef[Any], handled: int) -> None:
        """The VMActor stopped itself after ``handled`` messages: mail it never handled goes to a new one."""
        flight = self._flights.get(vm)
        if flight is None or flight.ref is not ref:
            return
        del self._flights[vm]
        for message in flight.unacked[handled:]:
            self._tell(vm, message)

    def _forget(self, vm: str, ref: pykka.ActorRef[Any]) -> None:
        """The VMActor is gone (its VM is out of vmpooler, or it crashed): mail it never handled is moot."""
        flight = self._flights.get(vm)
        if flight is not None and flight.ref is ref:
            del self._flights[vm]

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
        view = ctx.store.passes.read(ctx.name)  # after the inventory: a new clone is in pending first
        self._apply_size(view.size_override)
        snap = self._settle_overlaps(view.snapshot)
        self._ondemand = {vm for vm in snap.pending if view.fields.get(vm, {}).get("request_id")}
        drained = self._apply_template(view, snap)
        self._first_pass = False
        if drained:  # their actors move them; the pass refills at once, from the new template
            snap = attrs.evolve(snap, ready=snap.ready - drained, pending=snap.pending - drained)
        known = snap.all()
        discovered = [vm for vm in inventory if vm not in known and vm not in self._flights]
        if discovered:
            ctx.store.vms.add_discovered(ctx.name, discovered)
            snap = attrs.evolve(snap, discovered=snap.discovered | frozenset(discovered))
        self._decide_all(snap, view, inventory)
        for vm in snap.migrating & snap.running:
            self._tell(vm, Migrate())
        if view.tasks_waiting:
            self._dispatch_tasks()
        if view.reset:
            self._drain(snap.ready | snap.pending, "pool reset")
            snap = attrs.evolve(snap, ready=frozenset(), pending=frozenset(self._ondemand))
        if ctx.config.globals.purge_enabled:
            snap = self._purge(snap, view, inventory)
        self._dispatch_queue(view, snap)
        cloned = self._repopulate(snap, view.demand)
        self._gauges(snap, view)
        # a pool refused a clone slot is not idle: it keeps the minimum delay (a released slot also
        # wakes it through a 'slot' event); nor is one that checkouts wait for, or while a served one
        # waits for its answer (the sweep of _dispatch_queue)
        return bool(cloned or discovered or snap.pending or self._starved or view.wanted or view.unanswered)

    def _dispatch_queue(self, view: PassView, snap: PoolSnapshot) -> None:
        """Checkouts wait for this pool: with ready VMs, a dispatch (a safety net: each VM that turns ready
        dispatches already); without, a sweep every 10 s drops the requests of dead API workers. While
        served checkouts wait for their answer (of any pool), the sweep also gives back the VMs of those
        whose API worker died before answering."""
        if not view.wanted and not view.unanswered:
            return
        ctx = self._ctx
        now = ctx.clock()
        sweep = not (view.wanted and snap.ready)
        if sweep and now - self._swept < _SWEEP_EVERY:
            return
        if sweep:
            self._swept = now
        ctx.store.queue.dispatch(ctx.queue_settings, now=format_time(now), sweep=sweep)

    def _settle_overlaps(self, snap: PoolSnapshot) -> PoolSnapshot:
        """A VM in two sets stays in the later one only (``lifecycle.settle_overlap``)."""
        sets = {state: getattr(snap, state.value) for state in VMState}
        if sum(map(len, sets.values())) == len(snap.all()):  # every VM in one set: nothing to settle
            return snap
        seen: dict[str, set[VMState]] = {}
        for state, members in sets.items():
            for vm in members:
                seen.setdefault(vm, set()).add(state)
        leaving = {}
        for vm, states in seen.items():
            if len(states) > 1:
                kept, leave = settle_overlap(frozenset(states))
                leaving[vm] = leave
                if leave != {VMState.DISCOVERED}:  # discovered, then known after all: routine
                    self._log.warning(
                        "%s was in %s at once: kept in %s",
                        vm,
                        " and ".join(sorted(s.value for s in states)),
                        kept.value,
                    )
        if not leaving:
            return snap
        self._ctx.store.vms.leave(self._ctx.name, leaving)
        for vm, leave in leaving.items():
            for state in leave:
                sets[state] = sets[state] - {vm}
        return attrs.evolve(snap, **{state.value: members for state, members in sets.items()})

    def _decide_all(self, snap: PoolSnapshot, view: PassView, inventory: set[str]) -> None:
        """Decide every VM without an actor in flight; start actors only where there is work."""
        ctx = self._ctx
        now = ctx.clock()
        policy = ctx.policy
        self._checked = {vm: at for vm, at in self._checked.items() if vm in snap.ready}
        looks: list[tuple[str, Look]] = []
        checks: list[str] = []
        known = snap.all()
        for vm in known:
            if vm in self._flights:
                continue
            state = snap.state_of(vm)
            fields = view.fields.get(vm, {})
            checkout = view.checkouts.get(vm)
            in_inventory = vm in inventory
            record = record_of(ctx, vm, state, fields, checkout)
            if vm in self._checked:  # the hash's check time has whole seconds; this one is exact
                record = attrs.evolve(record, last_check=max(record.last_check, self._checked[vm]))
            action = decide(record, observation_of(state, fields, in_inventory), now, policy)
            if isinstance(action, Wait | Forget):
                continue
            if isinstance(action, Probe) and state is VMState.READY:
                self._checked[vm] = now
                checks.append(vm)
            looks.append((vm, Look(state, in_inventory, fields, checkout)))
        if checks:  # the health checks of this pass, stamped in one round trip (the VM hash's 'check')
            ctx.store.vms.stamp(checks, {"check": format_time(now)})
        for vm, look in looks:
            self._tell(vm, look)
        for vm in list(self._flights):  # an actor whose VM left every set: it forgets it
            if vm not in known:
                self._tell(vm, Look(None, vm in inventory), create=False)

    def _target(self, demand: int) -> int:
        """VMs to keep ready or pending: the size, plus what waiting checkouts want (up to ``max_size``)."""
        target = self._size + max(0, demand)
        cap = self._ctx.pool.max_size
        return target if cap is None else min(target, max(cap, self._size))

    def _repopulate(self, snap: PoolSnapshot, demand: int) -> int:
        ready, pending = len(snap.ready), len(snap.pending - self._ondemand)
        target = self._target(demand)
        if ready > target:
            self._drain(sorted(snap.ready)[: ready - target], "pool above its size")
            if pending:
                self._drain(snap.pending, "pool above its size")
            return 0
        return self._clone_up_to(target - (ready + pending))

    def _repopulate_now(self) -> None:
        counts = self._ctx.store.stats.pool_counts([self._ctx.name])[self._ctx.name]
        demand = self._ctx.store.queue.demand_of(self._ctx.name)
        self._clone_up_to(self._target(demand) - (counts.ready + counts.pending - len(self._ondemand)))

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
        taken, in_use = ctx.store.slots.acquire(
            ctx.owner, slot, limit=limit, lease_seconds=ctx.timeout, pool=ctx.name
        )
        metrics.slots_in_use("clone", in_use)
        if not taken:
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

    def _reserve_and_clone(self, slot: str, request: CloneFor | None = None) -> bool:
        """Reserve a fresh name in ``pending`` and hand the clone (and the slot) to a new VMActor."""
        ctx = self._ctx
        for _ in range(_NAME_ATTEMPTS):
            name = generate_name(ctx.rng, ctx.config.globals.prefix)
            if name in self._flights:
                continue
            now = format_time(ctx.clock())
            fields = {
                "clone": now,
                "template": ctx.name,
                "pool": ctx.name,
                "clone_template": ctx.provider.pool_spec(ctx.name).template,
            }
            if ctx.pool.domain:
                fields["domain"] = ctx.pool.domain
            if request is not None:
                fields |= {"request_id": request.request_id, "pool_alias": request.alias}
            if ctx.store.vms.create_pending(ctx.name, name, fields):
                self._flights[name] = _Flight(VMActor.start(ctx, name, self.actor_ref, slot))
                if request is None:
                    self._tell(name, Clone())
                else:
                    self._ondemand.add(name)
                    self._tell(name, Clone(request.request_id, request.alias))
                return True
            metrics.ERRORS.labels("duplicatehostname", ctx.name).inc()
        return False

    def _clone_for(self, request: CloneFor) -> None:
        """Clone one VM for an on-demand request, on the lane slot the OnDemandActor claimed."""
        ctx = self._ctx
        try:
            started = self._reserve_and_clone(request.slot, request)
        except StoreError:
            self._release_slot_quietly(request.slot)
            raise
        if not started:
            self._release_slot_quietly(request.slot)
            ctx.store.provisioning.requeue(request.request_id, request.alias, ctx.name)
            self._log.error("unable to generate a unique hostname after %d attempts", _NAME_ATTEMPTS)

    def _release_slot_quietly(self, slot: str) -> None:
        """Give a slot back; if Redis fails now, keep it and retry on the next pass."""
        try:
            metrics.slots_in_use(lane_of(slot), self._ctx.store.slots.release(self._ctx.owner, slot))
        except StoreError as exc:
            self._unreleased.add(slot)
            self._log.warning("could not release clone slot %s, retrying next pass: %s", slot, exc)

    def _drain(self, vms: Any, reason: str) -> set[str]:
        """Send the pool's own ``vms`` to completed (on-demand VMs belong to their request: never)."""
        mine = {vm for vm in vms if vm not in self._ondemand}
        if mine:
            self._log.info("draining %d VM(s): %s", len(mine), reason)
        for vm in mine:
            self._tell(vm, Drain())
        return mine

    def _apply_template(self, view: PassView, snap: PoolSnapshot) -> frozenset[str]:
        """Follow the ``/config`` template and clone target overrides (else the file's values).

        When either differs from what the provider serves: the provider gets the new value, every ready
        and pending VM cloned from another template is drained (after a clone target change, every one),
        and the template is prepared, all before this pass clones again.

        Returns:
            The VMs drained.
        """
        ctx = self._ctx
        template = view.template_override or ctx.pool.template
        target = view.clone_target_override or ctx.pool.clone_target
        spec = ctx.provider.pool_spec(ctx.name)
        if template != spec.template or target != spec.clone_target:
            ctx.provider.update_pool(attrs.evolve(spec, template=template, clone_target=target))
            if template != spec.template:
                self._log.info("template updated from %s to %s", spec.template, template)
            if target != spec.clone_target:
                self._log.info("clone target updated from %s to %s", spec.clone_target, target)
        drained: set[str] = set()
        if target != spec.clone_target and not self._first_pass:
            drained |= self._drain(snap.ready | snap.pending, "clone target changed")
        old = view.prepared_template or ctx.pool.template
        stale = [
            vm
            for vm in snap.ready | snap.pending
            if vm not in drained and view.fields.get(vm, {}).get("clone_template", old) != template
        ]
        if stale:
            drained |= self._drain(stale, f"template changed to {template}")
        if view.prepared_template != template:
            self._prepare(template)
        return frozenset(drained)

    def _prepare(self, template: str) -> None:
        ctx = self._ctx
        deltas = ctx.config.globals.create_template_delta_disks
        if deltas:
            try:
                ctx.provider.prepare_template(ctx.name)
            except ProviderError as exc:  # as the original: logged, and clones go on
                self._log.warning("preparing template %s failed (clones go on): %s", template, exc)
                deltas = False
        ctx.store.pools.mark_prepared(ctx.name, template, deltas=deltas)
        self._log.info("template %s is ready for use", template)

    def _dispatch_tasks(self) -> None:
        for task in self._ctx.store.tasks.claim(self._ctx.name):
            self._tell(task.vm, RunTask(task))

    def _apply_size(self, override: str | None) -> None:
        size = whole_number(override or "")
        size = self._ctx.pool.size if size is None else size
        if size != self._size:
            self._log.info("pool size changed from %d to %d", self._size, size)
            self._size = size

    def _purge(self, snap: PoolSnapshot, view: PassView, inventory: set[str]) -> PoolSnapshot:
        """The stale-queue purge (``purge_enabled``, every ``purge_interval``; reference §4.11), a net
        under the lifecycle's own timeouts: pending VMs older than ``max_pending_age`` (by ``clone``) are
        marked failed (dead-lettered, then completed and destroyed); ready VMs older than
        ``max_ready_age`` (by ``ready``) are drained; completed VMs older than ``max_completed_age`` that
        the provider no longer has are forgotten. A completed VM the provider still has is never
        dropped (it would leak): its destroy keeps being retried. ``purge_dry_run`` only logs.
        """
        ctx = self._ctx
        g = ctx.config.globals
        now = ctx.clock()
        if now - self._purged_at < g.purge_interval:
            return snap
        self._purged_at = now

        def older(vm: str, field: str, limit: float) -> bool:  # told to the VM's actor, in flight or not
            at = parse_time(view.fields.get(vm, {}).get(field))
            return at is not None and now - at > limit

        stale_pending = {vm for vm in snap.pending if older(vm, "clone", g.max_pending_age)}
        stale_ready = {vm for vm in snap.ready if older(vm, "ready", g.max_ready_age)}
        gone = {vm for vm in snap.completed if vm not in inventory and vm not in self._flights}
        found = len(stale_pending) + len(stale_ready) + len(gone)
        if not found:
            return snap
        if g.purge_dry_run:
            self._log.info(
                "purge (dry run) would remove %d pending, %d ready and %d completed VM(s)",
                len(stale_pending),
                len(stale_ready),
                len(gone),
            )
            return snap
        self._log.warning(
            "purge: %d stale pending, %d stale ready, %d completed VM(s) gone from the provider",
            len(stale_pending),
            len(stale_ready),
            len(gone),
        )
        for vm in stale_pending:
            self._tell(vm, PurgePending(g.max_pending_age))
        self._drain(stale_ready, f"ready for more than {g.max_ready_age} seconds")
        for vm in gone:
            ctx.store.vms.retire(ctx.name, vm, ttl_seconds=ctx.data_ttl, src=VMState.COMPLETED)
        return attrs.evolve(snap, pending=snap.pending - stale_pending, ready=snap.ready - stale_ready)

    def _gauges(self, snap: PoolSnapshot, view: PassView) -> None:
        ctx = self._ctx
        metrics.READY.labels(ctx.name).set(len(snap.ready))
        metrics.RUNNING.labels(ctx.name).set(len(snap.running))
        metrics.PENDING.labels(ctx.name).set(len(snap.pending))
        metrics.POOL_SIZE.labels(ctx.name).set(self._size)
        now = ctx.clock()
        ages = [now - at for vm in snap.pending if (at := parse_time(view.fields.get(vm, {}).get("clone")))]
        stuck_after = ctx.config.globals.health_thresholds["stuck_vm_age_threshold"]
        metrics.PENDING_OLDEST.labels(ctx.name).set(max(ages, default=0.0))
        metrics.PENDING_STUCK.labels(ctx.name).set(sum(age > stuck_after for age in ages))
        empty = not snap.ready and self._size > 0
        if empty != self._empty:  # only this pool's actor writes the flag: write it when it changes
            if ctx.store.pools.set_empty_flag(ctx.name, empty) and empty:
                self._log.warning("pool is empty")
            self._empty = empty

    # -- helpers -------------------------------------------------------------------------------------

    def _tell(self, vm: str, message: object, *, create: bool = True) -> None:
        """Tell the VM's actor ``message`` (starting one first if ``create`` and none is in flight).

        Told, never asked: an unexpected exception in the VMActor kills it, and its ``on_failure``
        tells this pool, instead of vanishing into an unread future. The message is kept until the
        actor reports it handled (see ``_Flight``).
        """
        flight = self._flights.get(vm)
        if flight is None:
            if not create:
                return
            flight = self._flights[vm] = _Flight(VMActor.start(self._ctx, vm, self.actor_ref))
        flight.unacked.append(message)
        if flight.closing:
            return
        try:
            flight.ref.tell(message)
        except pykka.ActorDeadError:  # it stopped itself a moment ago: its VMIdle is on its way
            flight.closing = True

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
        ref = self.actor_ref
        self._next = self._ctx.ticker.call_later(delay, lambda: ref.tell(Check()))
