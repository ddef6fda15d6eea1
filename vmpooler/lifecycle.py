"""The VM lifecycle as data and one pure function: what happens to a VM next.

Every rule the manager applies to a VM lives in :func:`decide`: pending timeout and its warning,
readiness, ready TTL, ``vm_checktime``, the hostname-mismatch check, running lifetime, user tagging,
discovered and completed VMs. It reads a :class:`Record` (what the manager knows about the VM), an
:class:`Observation` (what the store and the provider say right now) and the time, and returns an
:class:`Action`. It does no I/O and keeps no state, so it is tested table-driven without threads, Redis
or a provider (``tests/unit/test_lifecycle.py``); the actors only carry its actions out.

A decision that needs a provider answer first returns :class:`Probe` (check readiness, and the hostname
when the mismatch check is due; or only whether the VM exists); the caller asks the provider and calls
:func:`decide` again with the answer in the observation. A VM missing from one inventory listing is never
acted on from the listing alone: the provider is asked about that VM first (a listing can miss a VM for a
moment, e.g. while a vCenter task holds it).

A VM found in two state sets at once (a Redis written by a racing process, or by the original) is in the
later of them: :func:`settle_overlap`.
"""

from __future__ import annotations

import attrs

from vmpooler.model import VMState

__all__ = [
    "MISMATCH_GRACE",
    "Action",
    "Become",
    "Complete",
    "Destroy",
    "Forget",
    "Notify",
    "Observation",
    "Policy",
    "Probe",
    "Record",
    "Remove",
    "TagUser",
    "Wait",
    "decide",
    "settle_overlap",
]

MISMATCH_GRACE = 60.0
"""Seconds a VM spends in ready before the hostname-mismatch check applies (as the original)."""


@attrs.frozen(kw_only=True)
class Policy:
    """The pool's settings that rule its VMs, in seconds (``lifetime`` in hours, 0 = unlimited)."""

    timeout: float
    timeout_notification: float
    ready_ttl: float
    vm_checktime: float
    check_hostname: bool = True


@attrs.frozen(kw_only=True)
class Record:
    """What the manager knows about one VM.

    Attributes:
        name: the VM name.
        state: the set the store has it in; None when it is in none.
        clone_started: epoch seconds the clone started (the VM hash's ``clone``), None if unknown.
        cloned_here: True when this process ran the clone (False for a VM adopted from Redis).
        ready_at: epoch seconds it became ready.
        last_check: epoch seconds of the last health check of a ready VM (0 = never).
        checkout_at: epoch seconds of its checkout, None when unknown.
        lifetime: its running lifetime in hours (the VM's own, else the default); 0 = unlimited.
        user: the token user it was checked out by, if any.
        tagged: True once the provider recorded ``user``.
        notified: True once the impending-failure warning was given.
    """

    name: str
    state: VMState | None
    clone_started: float | None = None
    cloned_here: bool = False
    ready_at: float | None = None
    last_check: float = 0.0
    checkout_at: float | None = None
    lifetime: float = 0.0
    user: str | None = None
    tagged: bool = False
    notified: bool = False


@attrs.frozen(kw_only=True)
class Observation:
    """What the provider says about the VM now.

    Attributes:
        in_inventory: the VM is in the provider's inventory listing of the pool.
        ready: the answer of ``vm_ready`` (None: not asked yet).
        error: why ``vm_ready`` raised, or the VM's last recorded readiness error.
        hostname: the guest's hostname from ``get_vm`` (None: not asked, or not reported).
        exists: the provider's answer about this one VM (``get_vm``/``vm_ready``); None: not asked.
    """

    in_inventory: bool
    ready: bool | None = None
    error: str | None = None
    hostname: str | None = None
    exists: bool | None = None

    @property
    def gone(self) -> bool:
        """Missing from the listing and, asked about it, the provider confirmed it has no such VM."""
        return not self.in_inventory and self.exists is False

    @property
    def unconfirmed(self) -> bool:
        """Missing from the listing, and the provider has not been asked about this VM yet."""
        return not self.in_inventory and self.exists is None


@attrs.frozen
class Wait:
    """Nothing to do now; look again later (a pending VM: poll readiness again soon)."""


@attrs.frozen
class Probe:
    """Ask the provider first: ``vm_ready`` (unless not ``readiness``), and ``get_vm`` for the hostname
    when ``hostname``; ``Probe(readiness=False)`` only asks ``get_vm`` whether the VM exists."""

    hostname: bool = False
    readiness: bool = True


@attrs.frozen
class Become:
    """pending → ready: the VM answered; ``boot`` seconds after its clone started."""

    boot: float


@attrs.frozen
class Notify:
    """Warn once that a pending VM will time out: pending for ``age`` of ``timeout`` seconds."""

    age: float
    timeout: float


@attrs.frozen
class Complete:
    """``state`` → completed for ``reason``; then destroy it."""

    reason: str
    failed: bool = False  # a pending VM that timed out: counted as marked-as-failed
    error: str | None = None  # a failure of the VM itself (timed out, unreachable): dead-letter worthy


@attrs.frozen
class Remove:
    """Forget a VM the provider does not have: out of every set, no destroy call; ``clone_error`` is
    recorded on the VM when set."""

    reason: str
    clone_error: str | None = None


@attrs.frozen
class Destroy:
    """Destroy the VM in the provider (a discovered VM first moves to completed)."""


@attrs.frozen
class TagUser:
    """Record in the provider which user holds the VM."""

    user: str


@attrs.frozen
class Forget:
    """The VM is in no set any more: nothing of it is left to manage."""


Action = Wait | Probe | Become | Notify | Complete | Remove | Destroy | TagUser | Forget


def decide(record: Record, seen: Observation, now: float, policy: Policy) -> Action:
    """What happens to ``record``'s VM next. Pure: same inputs, same action."""
    state = record.state
    if state is None:
        return Forget()
    if state is VMState.PENDING:
        return _pending(record, seen, now, policy)
    if state is VMState.READY:
        return _ready(record, seen, now, policy)
    if state is VMState.RUNNING:
        return _running(record, seen, now)
    return Destroy()  # completed or discovered


def _pending(record: Record, seen: Observation, now: float, policy: Policy) -> Action:
    started = record.clone_started if record.clone_started is not None else now
    age = now - started
    if seen.in_inventory and seen.ready is None:
        return Probe()
    if seen.ready:
        return Become(boot=age)
    if not seen.in_inventory and not record.cloned_here:
        if seen.unconfirmed:
            return Probe()
        # Adopted from an earlier process whose clone died with it: waiting for the timeout would keep
        # the pool short. Should the clone still finish in the provider, it is discovered and destroyed.
        interrupted = "clone interrupted: not in the provider's inventory"
        return Remove(f"pending, unknown to the provider and not being cloned ({interrupted})", interrupted)
    if age > policy.timeout:
        if not seen.in_inventory:
            return Remove(f"pending for {age / 60:.1f} minutes and gone from the provider")
        error = seen.error or "not ready"
        return Complete(
            f"marked as 'failed' after {age / 60:.1f} minutes with error: {error}", failed=True, error=error
        )
    if age > policy.timeout_notification and not record.notified:
        return Notify(age=age, timeout=policy.timeout)
    return Wait()


def _ready(record: Record, seen: Observation, now: float, policy: Policy) -> Action:
    if seen.gone:
        return Complete("missing from the provider's inventory")
    # becoming ready was a successful check: the next one is due vm_checktime after it
    last_check = max(record.last_check, record.ready_at or 0.0)
    if seen.ready is None and seen.in_inventory and now - last_check < policy.vm_checktime:
        return Wait()
    in_ready = now - (record.ready_at or 0.0)
    if in_ready > policy.ready_ttl:
        return Complete(f"reached end of TTL after {in_ready / 60:.0f} minutes")
    mismatch_due = policy.check_hostname and in_ready > MISMATCH_GRACE
    if seen.ready is None:  # due, or missing from the listing: ask the VM itself
        return Probe(hostname=mismatch_due)
    if mismatch_due and seen.hostname and seen.hostname != record.name:
        return Complete(f"has mismatched hostname {seen.hostname}")
    if not seen.ready:
        return Complete(
            f"is unreachable with error: {seen.error or 'not ready'}", error=seen.error or "not ready"
        )
    return Wait()


def _running(record: Record, seen: Observation, now: float) -> Action:
    if record.checkout_at is None:
        return Complete("has no checkout time")
    hours = (now - record.checkout_at) / 3600
    if record.lifetime > 0 and hours >= record.lifetime:
        return Complete(f"reached end of TTL after {hours:.1f} hours")
    if seen.unconfirmed:  # in use: ask only whether it exists, never whether it is "ready"
        return Probe(readiness=False)
    if seen.gone:
        return Complete("is no longer in the provider's inventory")
    if record.user and not record.tagged:
        return TagUser(record.user)
    return Wait()


# The lifecycle order of the sets: a VM in two of them is in the later one.
_ORDER = (VMState.DISCOVERED, VMState.PENDING, VMState.READY, VMState.RUNNING, VMState.COMPLETED)


def settle_overlap(states: frozenset[VMState]) -> tuple[VMState, frozenset[VMState]]:
    """The state of a VM found in several sets, and the sets it must leave.

    The later stage wins: a VM in ``ready`` and ``running`` is running (handing it out again would give
    one VM to two users), one in ``running`` and ``completed`` is being returned, and a VM in
    ``discovered`` and any other set is known after all.

    Raises:
        ValueError: ``states`` is empty.
    """
    if not states:
        raise ValueError("a VM in no set has no overlap to settle")
    keep = max(states, key=_ORDER.index)
    return keep, frozenset(states - {keep})
