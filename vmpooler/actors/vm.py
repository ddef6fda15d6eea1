"""VMActor: the single owner of one VM while work on it is in flight.

A VMActor exists only while its VM has work in flight: a clone and the readiness wait after it, a
readiness or health check that calls the provider, a destroy and its retries, a disk, snapshot or revert
task, a migration. Its PoolActor starts it when a pass (or an API event) finds such work, and stops it
once it reports itself idle (``VMIdle``) with nothing more on its way; a VM with nothing to do has no
actor at all. Its messages run one at a time on a shared dispatcher thread (``actors.dispatch``), so work
on one VM is never concurrent, and a blocking provider call holds one of a bounded number of threads.

Every state change is one atomic ``store.vms.move``/``retire`` from the state this actor believes the
VM is in; if the API moved the VM first (checkout, return), the move finds nothing and changes nothing.

Messages: ``actors.messages`` (Clone, Look, DestroyNow, Drain, RunTask, Migrate from the pool; PollReady
and RetryDestroy from itself through the ticker). An unexpected exception kills the actor; its
``on_failure`` gives the clone slot back and tells the pool (``VMCrashed``), whose next pass looks at
the VM afresh.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pykka

from vmpooler import metrics
from vmpooler.actors.dispatch import PooledActor
from vmpooler.actors.messages import (
    Clone,
    DestroyNow,
    Drain,
    Look,
    Migrate,
    PollReady,
    PurgePending,
    RetryDestroy,
    RunTask,
    SlotUnreleased,
    VMCrashed,
    VMGone,
    VMIdle,
)
from vmpooler.errors import ConnectionWaitTimeout, ProviderError, StoreError, VMNotFound, permanent_reason
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
from vmpooler.store.slots import lane_of
from vmpooler.timeutil import format_time, parse_time, today

if TYPE_CHECKING:
    import pykka

    from vmpooler.actors.context import PoolContext
    from vmpooler.actors.ticker import Handle
    from vmpooler.store import Task

__all__ = ["VMActor", "observation_of", "record_of"]

_READY_POLL = 1.0  # seconds between readiness checks of a pending VM
_FROM_POOL = (Clone, Look, DestroyNow, Drain, RunTask, Migrate, PurgePending)


def record_of(
    ctx: PoolContext,
    name: str,
    state: VMState | None,
    fields: Mapping[str, str],
    checkout: str | None,
    *,
    cloned_here: bool = False,
) -> Record:
    """The lifecycle record of a VM from its hash (and its checkout time when running)."""
    return Record(
        name=name,
        state=state,
        clone_started=parse_time(fields.get("clone")),
        cloned_here=cloned_here,
        ready_at=parse_time(fields.get("ready")),
        last_check=parse_time(fields.get("check")) or 0.0,
        checkout_at=parse_time(checkout or fields.get("checkout")) if state is VMState.RUNNING else None,
        lifetime=ctx.lifetime_hours(fields.get("lifetime")),
        user=fields.get("token:user"),
        tagged=fields.get("user_tagged") == "true",
        notified=bool(fields.get("timeout_notification")),
    )


def observation_of(state: VMState | None, fields: Mapping[str, str], in_inventory: bool) -> Observation:
    """What is known before asking the provider: the inventory, and the last recorded readiness error."""
    error = fields.get("open_socket_error")
    if state is VMState.PENDING:
        error = error or fields.get("clone_error")
    return Observation(in_inventory=in_inventory, error=error)


class VMActor(PooledActor):
    """Owns one VM while work on it is in flight; stops itself when it has none (``VMIdle``), and
    stays out of pykka's registry (its PoolActor keeps track of it).

    Args:
        ctx: the pool's shared context (its ``vm_threads`` dispatcher runs this actor).
        name: the VM name.
        pool: the PoolActor's ref, told ``VMIdle``/``VMGone``/``VMCrashed``/``SlotUnreleased``.
        slot: the clone slot this VM holds while cloning (None for any other work).
    """

    registered = False

    def __init__(
        self, ctx: PoolContext, name: str, pool: pykka.ActorRef[Any] | None, slot: str | None = None
    ) -> None:
        super().__init__(ctx.vm_threads)
        self._ctx = ctx
        self._name = name
        self._pool = pool
        self._slot = slot
        self._log = get_logger(__name__, pool=ctx.name, vm=name)
        self._cloned_at: float | None = None  # set once this actor ran the clone
        self._poll: Handle | None = None
        self._destroy_backoff = 1.0
        self._destroy_retry: Handle | None = None
        self._handled = 0  # messages from the pool handled: the VMIdle handshake
        self._done = False
        self._request: tuple[str, str] | None = None  # (request id, alias) of an on-demand VM

    # -- pykka hooks (a dispatcher thread, one message at a time) ---------------------------------

    def on_receive(self, message: Any) -> None:
        match message:
            case Clone(request_id=request_id, alias=alias):
                if request_id:
                    self._for_request(request_id, alias)
                self.clone()
            case Look(state=state, in_inventory=seen, fields=fields, checkout=checkout):
                self.look(state, seen, fields, checkout)
            case PollReady():
                self.poll_ready()
            case DestroyNow():
                self.destroy()
            case RetryDestroy():
                self.retry_destroy()
            case Drain():
                self.drain()
            case RunTask(task=task):
                self.run_task(task)
            case Migrate():
                self.migrate()
            case PurgePending(age_limit=limit):
                self.purge_pending(limit)
            case _:
                raise TypeError(f"VMActor got an unknown message {message!r}")
        if isinstance(message, _FROM_POOL):
            self._handled += 1
        self._report_if_idle()

    def on_stop(self) -> None:
        for handle in (self._poll, self._destroy_retry):
            if handle is not None:
                handle.cancel()
        if self._slot is not None:  # stopped before its clone ran: nothing exists in the provider
            self._guard(
                self._ctx.store.vms.retire, self._ctx.name, self._name, ttl_seconds=0, src=VMState.PENDING
            )
            self._release_slot()
            self._log.info("clone not started before the stop: pending entry and clone slot given back")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._log.error("actor crashed: %s", exception_value)
        metrics.ERRORS.labels("actor_crashed", self._ctx.name).inc()
        self._release_slot()
        self._tell_pool(VMCrashed(self._name, self.actor_ref))

    def _for_request(self, request_id: str, alias: str) -> None:
        """This VM is for an on-demand request: remember it, and name it on every log line."""
        if self._request is None:
            self._log = self._log.bind(request=request_id)
        self._request = (request_id, alias)

    def _report_if_idle(self) -> None:
        """No work in flight: tell the pool how many of its messages were handled, and stop now (mail
        already queued is refused; the pool tells it to a new actor)."""
        if not self._done and self._poll is None and self._destroy_retry is None and self._slot is None:
            self._tell_pool(VMIdle(self._name, self.actor_ref, self._handled))
            self.stop_now()

    def _tell_pool(self, message: object) -> None:
        """Tell the pool; a pool actor already stopped (its process stopping, or its lease handed over)
        needs no news: whichever actor runs the pool next rebuilds it from Redis."""
        if self._pool is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._pool.tell(message)

    def _tell_self_later(self, delay: float, message: object) -> Handle:
        ref = self.actor_ref
        return self._ctx.ticker.call_later(delay, lambda: ref.tell(message))

    # -- messages ----------------------------------------------------------------------------------

    def clone(self) -> None:
        """Create the VM (it is already in ``pending``), then start polling it for readiness."""
        ctx = self._ctx
        started = ctx.clock()
        try:
            info = ctx.provider.create_vm(ctx.name, self._name)
        except Exception as exc:
            self._release_slot()
            self._clone_failed(exc)
            return
        self._release_slot()
        seconds = ctx.clock() - started
        self._cloned_at = started
        metrics.CLONE.labels(ctx.name).observe(seconds)
        self._log.info("cloned in %.2f seconds", seconds)
        self._guard(
            ctx.store.stats.record_clone,
            ctx.name,
            self._name,
            date=today(ctx.clock()),
            seconds=seconds,
            ip=info.ip,
        )
        self.poll_ready()

    def look(
        self, state: VMState | None, in_inventory: bool, fields: Mapping[str, str], checkout: str | None
    ) -> None:
        """The pool's pass found work for this VM: decide with what it read, and carry it out."""
        if self._done:
            return
        try:
            self._advance(state, in_inventory, fields, checkout)
        except (StoreError, ProviderError) as exc:
            self._log.warning("check of %s VM failed: %s", state.value if state else "unknown", exc)

    def poll_ready(self) -> None:
        """One readiness check of a pending VM; reschedules itself until ready or timed out."""
        self._poll = None
        if self._done:
            return
        try:
            self._advance(VMState.PENDING, True, self._ctx.store.vms.fields(self._name), None)
        except (StoreError, ProviderError) as exc:
            self._log.warning("readiness check failed: %s", exc)
            self._schedule_poll()

    def destroy(self) -> None:
        """A return event: destroy the completed VM now instead of on the next pool pass."""
        if not self._done:
            try:
                self._destroy(VMState.COMPLETED, in_inventory=True)
            except (StoreError, ProviderError) as exc:
                self._log.warning("destroy failed: %s", exc)

    def drain(self) -> None:
        """Move a pending or ready VM to completed (its replacement comes from a fresh clone)."""
        if self._done:
            return
        for src in (VMState.READY, VMState.PENDING):
            if self._guard(self._ctx.store.vms.move, self._ctx.name, self._name, src, VMState.COMPLETED):
                self._log.info("moved from '%s' to 'completed': pool drained", src.value)
                if self._poll is not None:  # a readiness wait ends here
                    self._poll.cancel()
                    self._poll = None
                self.destroy()
                return

    def purge_pending(self, limit: float) -> None:
        """The purge's verdict on a pending VM stuck past ``max_pending_age``: failed, dead-lettered,
        completed and destroyed (its request, if any, retries or fails)."""
        if self._done:
            return
        reason = f"pending for more than {limit:.0f} seconds (stale-queue purge)"
        self._complete(VMState.PENDING, reason, failed=True, dead_letter=("StalePending", reason))

    def run_task(self, task: Task) -> None:
        """Carry out a disk, snapshot or revert request; the result shows in the VM's metadata."""
        ctx = self._ctx
        if self._done:
            self._log.info("%s %s dropped: the VM is gone", task.kind, task.argument)
            return
        try:
            if task.kind == "disk":
                ctx.provider.create_disk(ctx.name, self._name, int(task.argument))
                ctx.store.vms.append_disk(self._name, f"+{task.argument}gb")
            elif task.kind == "snapshot":
                ctx.provider.create_snapshot(ctx.name, self._name, task.argument)
                ctx.store.vms.set_fields(self._name, {f"snapshot:{task.argument}": format_time(ctx.clock())})
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
        if not self._guard(ctx.store.vms.remove_from_migrating, ctx.name, self._name):
            return
        try:
            host = ctx.provider.migrate_vm(ctx.name, self._name)
        except (ProviderError, NotImplementedError) as exc:
            self._log.warning("migration failed: %s", exc)
            return
        if host:
            self._guard(
                ctx.store.vms.set_fields,
                self._name,
                {"host": host, "migrated": "true", "migration_time": format_time(ctx.clock())},
            )

    # -- the lifecycle: decide, then carry out ------------------------------------------------------

    def _advance(
        self, state: VMState | None, in_inventory: bool, fields: Mapping[str, str], checkout: str | None
    ) -> None:
        """Ask ``lifecycle.decide`` what happens next (probing the provider when it says so), then do it."""
        ctx = self._ctx
        now = ctx.clock()
        if fields.get("request_id"):
            self._for_request(fields["request_id"], fields.get("pool_alias", ""))
        record = record_of(ctx, self._name, state, fields, checkout, cloned_here=self._cloned_at is not None)
        if self._cloned_at is not None and record.clone_started is None:
            record = attrs.evolve(record, clone_started=self._cloned_at)
        seen = observation_of(state, fields, in_inventory)
        action = decide(record, seen, now, ctx.policy)
        if isinstance(action, Probe):
            seen = self._probe(seen, action)
            action = decide(record, seen, now, ctx.policy)
        self._carry_out(state, action, seen.in_inventory, now)

    def _probe(self, seen: Observation, probe: Probe) -> Observation:
        """The provider's answers ``decide`` asked for: readiness, the guest's hostname, or only whether
        the VM exists (``get_vm``)."""
        ctx = self._ctx
        guest = exists = None
        if probe.hostname or not probe.readiness:
            info = ctx.provider.get_vm(ctx.name, self._name)
            exists, guest = info is not None, (info.hostname if info is not None else None)
        if exists is False:  # the provider says it has no such VM: whatever the listing said
            return attrs.evolve(seen, in_inventory=False, exists=False, ready=False, hostname=None)
        if not probe.readiness:
            return attrs.evolve(seen, exists=exists, hostname=guest)
        try:
            ready = ctx.provider.vm_ready(ctx.name, self._name)
        except VMNotFound:
            return attrs.evolve(seen, in_inventory=False, exists=False, ready=False, hostname=guest)
        except ConnectionWaitTimeout:  # no connection came free: this check did not happen, try later
            raise
        except ProviderError as exc:  # raising counts as not ready (README: deliberate differences)
            return attrs.evolve(seen, exists=exists, ready=False, error=str(exc), hostname=guest)
        return attrs.evolve(seen, exists=True if exists is None else exists, ready=ready, hostname=guest)

    def _carry_out(self, state: VMState | None, action: Action, in_inventory: bool, now: float) -> None:
        ctx = self._ctx
        match action:
            case Forget():
                self._finish("no longer in any set")
            case Destroy():
                self._destroy(state or VMState.COMPLETED, in_inventory)
            case Become(boot=boot):
                self._become_ready(boot, now)
            case Notify(age=age, timeout=timeout):
                ctx.store.vms.set_fields(self._name, {"timeout_notification": "1"})
                self._log.warning(
                    "has been pending for %.1f minutes, impending failure in %.1f minutes",
                    age / 60,
                    (timeout - age) / 60,
                )
                self._schedule_poll()
            case Complete(reason=reason, failed=failed, error=error) if state is not None:
                letter = ("VMFailed", error) if error is not None else None
                self._complete(state, reason, failed=failed, dead_letter=letter)
            case Remove(reason=reason, clone_error=error):
                fields = {"clone_error": error} if error else None
                if ctx.store.vms.retire(
                    ctx.name, self._name, ttl_seconds=ctx.data_ttl, fields=fields, src=VMState.PENDING
                ):
                    self._log.warning("%s: removed", reason)
                self._finish(None)
            case TagUser(user=user):
                try:
                    done = ctx.provider.tag_vm_user(ctx.name, self._name, user)
                except NotImplementedError:  # the contract allows it: nothing to record, ever
                    done = True
                if done:
                    ctx.store.vms.set_fields(self._name, {"user_tagged": "true"})
            case _:  # Wait: a pending VM is polled again soon; the others on the next pass
                if state is VMState.PENDING:
                    self._schedule_poll()

    def _become_ready(self, boot: float, now: float) -> None:
        """pending → ready; an on-demand VM → running for its request. Either may find the VM no longer
        wanted (a template changed meanwhile; the request is over): then it goes to completed."""
        ctx = self._ctx
        at = format_time(now)
        boot_writes = ctx.store.stats.boot_writes(ctx.name, self._name, date=today(now), now=at, seconds=boot)
        if self._request is not None:
            request_id, alias = self._request
            lifetime = ctx.config.globals.vm_lifetime_auth
            moved = ctx.store.provisioning.vm_ready(
                request_id, alias, ctx.name, self._name, now=at, lifetime=lifetime, other=boot_writes
            )
            done = f"moved from 'pending' to 'running' for request {request_id}"
            unwanted = f"request {request_id} is over or has its VMs"
        else:
            moved = ctx.store.vms.become_ready(
                ctx.name,
                self._name,
                template=ctx.pool.template,
                fields={"ready": at},
                other=boot_writes,
                # a waiting checkout gets the VM in the same MULTI, before any other checkout sees it
                after=lambda pipe: ctx.store.queue.dispatch_after(pipe, ctx.queue_settings, now=at),
            )
            done = "moved from 'pending' to 'ready' queue"
            unwanted = "cloned from a template the pool no longer uses"
        if moved is VMState.COMPLETED:
            self._log.info("moved from 'pending' to 'completed': %s", unwanted)
            self._destroy(VMState.COMPLETED, in_inventory=True)
        elif moved is not None:
            metrics.TIME_TO_READY.labels(ctx.name).observe(boot)
            self._log.info("%s after %.2f seconds", done, boot)

    def _schedule_poll(self) -> None:
        if self._poll is None and not self._done:
            self._poll = self._tell_self_later(_READY_POLL, PollReady())

    # -- completed / destroy -------------------------------------------------------------------------

    def _complete(
        self, src: VMState, reason: str, *, failed: bool = False, dead_letter: tuple[str, str] | None = None
    ) -> None:
        """``src`` → completed, then destroy; nothing if someone moved the VM first. ``dead_letter``:
        (error class, message) for the ``src`` dead-letter queue, recorded before the destroy."""
        if not self._ctx.store.vms.move(self._ctx.name, self._name, src, VMState.COMPLETED):
            return
        if dead_letter is not None:
            self._dead_letter(src.value, *dead_letter)
        if failed:
            metrics.ERRORS.labels("markedasfailed", self._ctx.name).inc()
            self._log.error("%s", reason)
            if src is VMState.PENDING:
                self._request_failed(None)
        else:
            self._log.info("moved from '%s' to 'completed': %s", src.value, reason)
        self._destroy(VMState.COMPLETED, in_inventory=True)

    def _destroy(self, state: VMState, in_inventory: bool) -> None:
        ctx = self._ctx
        if state is VMState.DISCOVERED:
            if not ctx.store.vms.move(ctx.name, self._name, VMState.DISCOVERED, VMState.COMPLETED):
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
                self._destroy_retry = self._tell_self_later(self._destroy_backoff, RetryDestroy())
                # retried at least as often as the pool's slowest pass, as the original does
                self._destroy_backoff = min(self._destroy_backoff * 2, ctx.pool.check_loop_delay_max)
                return
        seconds = ctx.clock() - started
        ctx.store.vms.retire(
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
            ctx.store.vms.retire,
            ctx.name,
            self._name,
            ttl_seconds=ctx.data_ttl,
            fields={"clone_error": str(exc), "clone_error_class": type(exc).__name__},
        )
        self._dead_letter("clone", type(exc).__name__, str(exc))
        self._request_failed(permanent_reason(exc))
        self._finish(None)

    def _dead_letter(self, queue: str, error_class: str, message: str) -> None:
        """A failed VM goes to the ``queue`` dead-letter queue, when ``dlq_enabled`` (reference §4.11)."""
        ctx = self._ctx
        globals_ = ctx.config.globals
        if not globals_.dlq_enabled:
            return
        request_id, alias = self._request or ("", "")
        now = ctx.clock()
        entry = {
            "vm": self._name,
            "pool": ctx.name,
            "queue_from": queue,
            "error_class": error_class,
            "error_message": message,
            "failed_at": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
            "retry_count": 0,
            "request_id": request_id or None,
            "pool_alias": alias or None,
        }
        size = self._guard(
            ctx.store.health.dead_letter,
            queue,
            self._name,
            entry,
            at=now,
            max_entries=globals_.dlq_max_entries,
            ttl_hours=globals_.dlq_ttl,
        )
        if size is not None:
            metrics.DLQ_ENTRIES.labels(queue).set(size)

    def _request_failed(self, permanent: str | None) -> None:
        """An on-demand VM failed (its clone, or its boot in time): its request retries or fails."""
        if self._request is None:
            return
        ctx = self._ctx
        request_id, alias = self._request
        outcome = self._guard(
            ctx.store.provisioning.vm_failed,
            request_id,
            alias,
            ctx.name,
            permanent=permanent,
            max_retries=ctx.config.globals.max_vm_retries,
            data_ttl=ctx.data_ttl,
        )
        if outcome == "retry":
            self._log.info("request %s: another clone queued", request_id)
        elif outcome == "failed":
            metrics.ERRORS.labels("permanently_failed", ctx.name).inc()
            self._log.error(
                "request %s failed: %s",
                request_id,
                f"configuration error: {permanent}" if permanent else "max retry attempts exceeded",
            )

    def _release_slot(self) -> None:
        """Give the clone slot back; if Redis fails, the PoolActor keeps it and retries each pass."""
        if self._slot is None:
            return
        slot, self._slot = self._slot, None
        try:
            metrics.slots_in_use(lane_of(slot), self._ctx.store.slots.release(self._ctx.owner, slot))
        except StoreError as exc:
            self._log.warning("releasing the clone slot failed; the pool retries it: %s", exc)
            self._tell_pool(SlotUnreleased(slot))

    def _finish(self, reason: str | None) -> None:
        """This VM is gone from vmpooler: tell the pool and stop."""
        if reason:
            self._log.info("%s: forgetting it", reason)
        self._done = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._tell_pool(VMGone(self._name, self.actor_ref))
        self.stop()

    def _guard(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a store operation, logging (not raising) a Redis failure; the next pass retries."""
        try:
            return func(*args, **kwargs)
        except StoreError as exc:
            self._log.warning("redis operation %s failed: %s", getattr(func, "__name__", func), exc)
            return None
