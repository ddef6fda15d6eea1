"""VMActor: the single owner of one VM's lifecycle.

Every message runs on this actor's own thread, one at a time, so work on one VM is never concurrent:
no mutex map, no "skip if locked". Every state change is one atomic ``ManagerStore.move``/``retire``
from the state this actor believes the VM is in; if the API moved the VM first (checkout, return),
the move finds nothing and changes nothing.

Messages (told as ``(name, args)`` tuples, so an unexpected exception kills the actor and its
``on_failure`` makes the pool recreate it; nothing ever waits on a VMActor):
    clone()          create the VM in the provider, then poll until ready
    check(state, in_inventory)   the pool's periodic look at this VM
    poll_ready()     one readiness check of a pending VM (scheduled on the ticker)
    destroy()        destroy a completed VM now (a return event)
    run_task(task)   a disk / snapshot / revert request from the API
    drain()          pending or ready → completed (pool reset, shrink, template change)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pykka

from vmpooler import keys, metrics
from vmpooler.errors import ProviderError, StoreError, VMNotFound
from vmpooler.lifecycle import (
    Action,
    Become,
    Complete,
    Destroy,
    Forget,
    Notify,
    Observation,
    Probe,
    Record,
    Remove,
    TagUser,
    decide,
)
from vmpooler.log import get_logger
from vmpooler.model import VMState
from vmpooler.timeutil import format_time, parse_time, today

if TYPE_CHECKING:
    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle
    from vmpooler.manager_store import Task

__all__ = ["MESSAGES", "VMActor"]

# The messages a VMActor accepts, told as (name, args) tuples.
MESSAGES = frozenset(
    {"clone", "check", "poll_ready", "destroy", "retry_destroy", "drain", "run_task", "migrate"}
)
_READY_POLL = 1.0  # seconds between readiness checks of a pending VM


class VMActor(pykka.ThreadingActor):
    """Owns one VM. ``pool_proxy`` is told when this actor is done (``vm_gone``).

    Args:
        ctx: the pool's shared context.
        name: the VM name.
        pool_proxy: the PoolActor's proxy, for ``vm_gone``/``vm_actor_failed`` notices.
        slot: the clone slot this VM holds while cloning (None for an adopted VM).
    """

    def __init__(self, ctx: PoolContext, name: str, pool_proxy: Any, slot: str | None = None) -> None:
        super().__init__()
        self._ctx = ctx
        self._name = name
        self._pool_proxy = pool_proxy
        self._slot = slot
        self._log = get_logger(__name__, pool=ctx.name, vm=name)
        self._cloning = False
        self._cloned_at: float | None = None
        self._last_ready_check = 0.0
        self._poll: Handle | None = None
        self._destroy_backoff = 1.0
        self._destroy_retry: Handle | None = None
        self._notified = False
        self._tagged = False
        self._done = False

    # -- pykka hooks (this actor's thread) -----------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        """Messages are told as ``(name, args)`` tuples, not through a proxy: a pykka proxy costs a
        few KB of introspection per actor, which adds up at 10,000 VMs (docs/performance.md)."""
        name, args = message
        if name not in MESSAGES:
            raise TypeError(f"VMActor has no message {name!r}")
        getattr(self, name)(*args)

    def _tell_self_later(self, delay: float, name: str) -> Handle:
        ref = self.actor_ref
        return self._ctx.ticker.call_later(delay, lambda: ref.tell((name, ())))

    def on_stop(self) -> None:
        for handle in (self._poll, self._destroy_retry):
            if handle is not None:
                handle.cancel()
        if self._slot is not None:  # stopped before its clone ran: nothing exists in the provider
            self._guard(self._ctx.store.retire, self._ctx.name, self._name, ttl_seconds=0, src="pending")
            self._release_slot()
            self._log.info("clone not started before the stop: pending entry and clone slot given back")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._log.error("actor crashed: %s", exception_value)
        self._release_slot()
        self._pool_proxy.vm_actor_failed(self._name, self.actor_ref)

    # -- messages ----------------------------------------------------------------------------------

    def clone(self) -> None:
        """Create the VM (it is already in ``pending``), then start polling it for readiness."""
        ctx = self._ctx
        self._cloning = True
        started = ctx.clock()
        try:
            info = ctx.provider.create_vm(ctx.name, self._name)
        except Exception as exc:
            self._clone_failed(exc)
            return
        finally:
            self._cloning = False
            self._release_slot()
        seconds = ctx.clock() - started
        self._cloned_at = started
        metrics.CLONE.labels(ctx.name).observe(seconds)
        self._log.info("cloned in %.2f seconds", seconds)
        self._guard(
            ctx.store.record_clone, ctx.name, self._name, date=today(ctx.clock()), seconds=seconds, ip=info.ip
        )
        self.poll_ready()

    def check(self, state: str | None, in_inventory: bool) -> None:
        """The pool's periodic look: act on the state the store says the VM is in."""
        if self._done or self._cloning:
            return
        try:
            self._advance(VMState(state) if state else None, in_inventory)
        except (StoreError, ProviderError) as exc:
            self._log.warning("check of %s VM failed: %s", state, exc)

    def poll_ready(self) -> None:
        """One readiness check of a pending VM; reschedules itself until ready or timed out."""
        self._poll = None
        if self._done or self._cloning:
            return
        try:
            self._advance(VMState.PENDING, in_inventory=True)
        except (StoreError, ProviderError) as exc:
            self._log.warning("readiness check failed: %s", exc)
            self._schedule_poll()

    def destroy(self) -> None:
        """A return event: destroy the completed VM now instead of on the next pool pass."""
        if not self._done and not self._cloning:
            try:
                self._destroy("completed", in_inventory=True)
            except (StoreError, ProviderError) as exc:
                self._log.warning("destroy failed: %s", exc)

    def drain(self) -> None:
        """Move a pending or ready VM to completed (its replacement comes from a fresh clone)."""
        if self._done or self._cloning:
            return
        for src in ("ready", "pending"):
            if self._guard(self._ctx.store.move, self._ctx.name, self._name, src, "completed"):
                self._log.info("moved from '%s' to 'completed': pool drained", src)
                self.destroy()
                return

    def run_task(self, task: Task) -> None:
        """Carry out a disk, snapshot or revert request; the result shows in the VM's metadata."""
        ctx = self._ctx
        if self._done:
            self._log.info("%s %s dropped: the VM is gone", task.kind, task.argument)
            return
        try:
            if task.kind == "disk":
                ctx.provider.create_disk(ctx.name, self._name, int(task.argument))
                ctx.store.append_disk(self._name, f"+{task.argument}gb")
            elif task.kind == "snapshot":
                ctx.provider.create_snapshot(ctx.name, self._name, task.argument)
                ctx.store.set_vm_fields(self._name, {f"snapshot:{task.argument}": format_time(ctx.clock())})
            else:
                ctx.provider.revert_snapshot(ctx.name, self._name, task.argument)
            self._log.info("%s %s done", task.kind, task.argument)
        except NotImplementedError:
            self._log.warning("the provider cannot do %s", task.kind)
        except (ProviderError, StoreError, ValueError) as exc:
            metrics.ERRORS.labels(f"{task.kind}_failed", ctx.name).inc()
            self._log.error("%s %s failed: %s", task.kind, task.argument, exc)

    def migrate(self) -> None:
        """A just-checked-out VM: let the provider decide whether to move it (vSphere)."""
        ctx = self._ctx
        if not self._guard(ctx.store.remove_from_migrating, ctx.name, self._name):
            return
        try:
            host = ctx.provider.migrate_vm(ctx.name, self._name)
        except (ProviderError, NotImplementedError) as exc:
            self._log.warning("migration failed: %s", exc)
            return
        if host:
            self._guard(
                ctx.store.set_vm_fields,
                self._name,
                {"host": host, "migrated": "true", "migration_time": format_time(ctx.clock())},
            )

    # -- the lifecycle: decide, then carry out ------------------------------------------------------

    def _advance(self, state: VMState | None, in_inventory: bool) -> None:
        """Ask ``lifecycle.decide`` what happens next (probing the provider when it says so), then do it."""
        ctx = self._ctx
        now = ctx.clock()
        live = state in (VMState.PENDING, VMState.READY, VMState.RUNNING)
        fields = ctx.store.vm_fields(self._name) if live else {}
        record = self._record(state, fields)
        fallback = fields.get("open_socket_error")
        if state is VMState.PENDING:
            fallback = fallback or fields.get("clone_error")
        seen = Observation(in_inventory=in_inventory, error=fallback)
        action = decide(record, seen, now, ctx.policy)
        if isinstance(action, Probe):
            seen = self._probe(state, seen, action.hostname, now)
            action = decide(record, seen, now, ctx.policy)
        self._carry_out(state, action, seen.in_inventory, now)

    def _record(self, state: VMState | None, fields: dict[str, str]) -> Record:
        ctx = self._ctx
        if not self._last_ready_check:  # a new actor: respect the check an earlier one made
            self._last_ready_check = parse_time(fields.get("check")) or 0.0
        checkout = None
        if state is VMState.RUNNING:
            checkout = parse_time(ctx.store.checkout_time(ctx.name, self._name) or fields.get("checkout"))
        return Record(
            name=self._name,
            state=state,
            clone_started=parse_time(fields.get("clone")) or self._cloned_at,
            cloned_here=self._cloned_at is not None,
            ready_at=parse_time(fields.get("ready")),
            last_check=self._last_ready_check,
            checkout_at=checkout,
            lifetime=ctx.lifetime_hours(fields.get("lifetime")),
            user=fields.get("token:user"),
            tagged=self._tagged or fields.get("user_tagged") == "true",
            notified=self._notified or bool(fields.get("timeout_notification")),
        )

    def _probe(self, state: VMState | None, seen: Observation, hostname: bool, now: float) -> Observation:
        """The provider's answers ``decide`` asked for: readiness, and the guest's hostname."""
        ctx = self._ctx
        if state is VMState.READY:
            self._last_ready_check = now
            ctx.store.set_vm_fields(self._name, {"check": format_time(now)})
        guest = None
        if hostname:
            info = ctx.provider.get_vm(ctx.name, self._name)
            guest = info.hostname if info is not None else None
        try:
            return attrs.evolve(seen, ready=ctx.provider.vm_ready(ctx.name, self._name), hostname=guest)
        except VMNotFound:
            return attrs.evolve(seen, in_inventory=False, ready=False, hostname=guest)
        except ProviderError as exc:  # raising counts as not ready (README: deliberate differences)
            return attrs.evolve(seen, ready=False, error=str(exc), hostname=guest)

    def _carry_out(self, state: VMState | None, action: Action, in_inventory: bool, now: float) -> None:
        ctx = self._ctx
        match action:
            case Forget():
                self._finish("no longer in any set")
            case Destroy():
                self._destroy(state.value if state else "completed", in_inventory)
            case Become(boot=boot):
                self._become_ready(boot, now)
            case Notify(age=age, timeout=timeout):
                self._notified = True
                ctx.store.set_vm_fields(self._name, {"timeout_notification": "1"})
                self._log.warning(
                    "has been pending for %.1f minutes, impending failure in %.1f minutes",
                    age / 60,
                    (timeout - age) / 60,
                )
                self._schedule_poll()
            case Complete(reason=reason, failed=failed) if state is not None:
                self._complete(state.value, reason, failed=failed)
            case Remove(reason=reason, clone_error=error):
                fields = {"clone_error": error} if error else None
                if ctx.store.retire(
                    ctx.name, self._name, ttl_seconds=ctx.data_ttl, fields=fields, src="pending"
                ):
                    self._log.warning("%s: removed", reason)
                self._finish(None)
            case TagUser(user=user):
                try:
                    done = ctx.provider.tag_vm_user(ctx.name, self._name, user)
                except NotImplementedError:  # the contract allows it: nothing to record, ever
                    done = True
                if done:
                    self._tagged = True
                    ctx.store.set_vm_fields(self._name, {"user_tagged": "true"})
            case _:  # Wait: a pending VM is polled again soon; the others on the next pass
                if state is VMState.PENDING:
                    self._schedule_poll()

    def _become_ready(self, boot: float, now: float) -> None:
        ctx = self._ctx
        moved = ctx.store.move(
            ctx.name,
            self._name,
            "pending",
            "ready",
            {"ready": format_time(now)},
            other=[
                (keys.boot_stats(today(now)), f"{ctx.name}:{self._name}", f"{boot:.2f}"),
                (keys.LASTBOOT, ctx.name, format_time(now)),
            ],
        )
        if moved:
            metrics.TIME_TO_READY.labels(ctx.name).observe(boot)
            self._last_ready_check = now
            self._log.info("moved from 'pending' to 'ready' queue after %.2f seconds", boot)

    def _schedule_poll(self) -> None:
        if self._poll is None and not self._done:
            self._poll = self._tell_self_later(_READY_POLL, "poll_ready")

    # -- completed / destroy -------------------------------------------------------------------------

    def _complete(self, src: str, reason: str, *, failed: bool = False) -> None:
        if self._ctx.store.move(self._ctx.name, self._name, src, "completed"):
            if failed:
                metrics.ERRORS.labels("markedasfailed", self._ctx.name).inc()
                self._log.error("%s", reason)
            else:
                self._log.info("moved from '%s' to 'completed': %s", src, reason)
            self._destroy("completed", in_inventory=True)

    def _destroy(self, state: str, in_inventory: bool) -> None:
        ctx = self._ctx
        if state == "discovered":
            if not ctx.store.move(ctx.name, self._name, "discovered", "completed"):
                return
            self._log.info("discovered in the provider but unknown to vmpooler: destroying")
        if self._destroy_retry is not None:
            return
        started = ctx.clock()
        if in_inventory:
            try:
                ctx.provider.destroy_vm(ctx.name, self._name)
            except ProviderError as exc:
                metrics.ERRORS.labels("destroy_failed", ctx.name).inc()
                self._log.error("destroy failed, retrying in %.0f seconds: %s", self._destroy_backoff, exc)
                self._destroy_retry = self._tell_self_later(self._destroy_backoff, "retry_destroy")
                # retried at least as often as the pool's slowest pass, as the original does
                self._destroy_backoff = min(self._destroy_backoff * 2, ctx.pool.check_loop_delay_max)
                return
        seconds = ctx.clock() - started
        ctx.store.retire(
            ctx.name, self._name, ttl_seconds=ctx.data_ttl, fields={"destroy": format_time(ctx.clock())}
        )
        metrics.DESTROY.labels(ctx.name).observe(seconds)
        self._log.info("destroyed in %.2f seconds", seconds)
        self._finish(None)

    def retry_destroy(self) -> None:
        self._destroy_retry = None
        self.destroy()

    # -- helpers -------------------------------------------------------------------------------------

    def _clone_failed(self, exc: BaseException) -> None:
        ctx = self._ctx
        metrics.ERRORS.labels("clone_failed", ctx.name).inc()
        self._log.error("clone failed: %s: %s", type(exc).__name__, exc)
        self._guard(
            ctx.store.retire,
            ctx.name,
            self._name,
            ttl_seconds=ctx.data_ttl,
            fields={"clone_error": str(exc), "clone_error_class": type(exc).__name__},
        )
        self._finish(None)

    def _release_slot(self) -> None:
        """Give the clone slot back; if Redis fails, the PoolActor keeps it and retries each pass."""
        if self._slot is None:
            return
        slot, self._slot = self._slot, None
        try:
            self._ctx.store.release_clone_slot(self._ctx.owner, slot)
        except StoreError as exc:
            self._log.warning("releasing the clone slot failed; the pool retries it: %s", exc)
            self._pool_proxy.slot_unreleased(slot)

    def _finish(self, reason: str | None) -> None:
        """This VM is gone from vmpooler: tell the pool and stop."""
        if reason:
            self._log.info("%s: forgetting it", reason)
        self._done = True
        self._pool_proxy.vm_gone(self._name, self.actor_ref)
        self.stop()

    def _guard(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a store operation, logging (not raising) a Redis failure; the next pass retries."""
        try:
            return func(*args, **kwargs)
        except StoreError as exc:
            self._log.warning("redis operation %s failed: %s", getattr(func, "__name__", func), exc)
            return None
