"""``lifecycle.decide``, table-driven: every rule of the VM lifecycle without threads, Redis or a provider."""

from __future__ import annotations

import pytest

from vmpooler.lifecycle import (
    MISMATCH_GRACE,
    Action,
    Become,
    Complete,
    Destroy,
    Forget,
    Notify,
    Observation,
    Policy,
    Probe,
    Record,
    Remove,
    TagUser,
    Wait,
    decide,
    settle_overlap,
)
from vmpooler.model import VMState

NOW = 1_000_000.0
MIN, HOUR = 60.0, 3600.0
POLICY = Policy(timeout=15 * MIN, timeout_notification=5 * MIN, ready_ttl=60 * MIN, vm_checktime=MIN)
P, R, U = VMState.PENDING, VMState.READY, VMState.RUNNING

IN = Observation(in_inventory=True)
OUT = Observation(in_inventory=False)  # missing from one listing, the VM itself not asked yet
GONE = Observation(in_inventory=False, exists=False)  # missing, and the provider confirmed it


def pending(age: float, **fields: object) -> Record:
    return Record(name="vm1", state=P, clone_started=NOW - age, **fields)  # type: ignore[arg-type]


def ready(in_ready: float, last_check: float = 0.0, **fields: object) -> Record:
    return Record(name="vm1", state=R, ready_at=NOW - in_ready, last_check=last_check, **fields)  # type: ignore[arg-type]


def running(hours: float | None, lifetime: float = 12, **fields: object) -> Record:
    checkout = None if hours is None else NOW - hours * HOUR
    return Record(name="vm1", state=U, checkout_at=checkout, lifetime=lifetime, **fields)  # type: ignore[arg-type]


CASES: dict[str, tuple[Record, Observation, Action]] = {
    # -- no set, completed, discovered ------------------------------------------------------------
    "in no set: forget it": (Record(name="vm1", state=None), IN, Forget()),
    "completed: destroy": (Record(name="vm1", state=VMState.COMPLETED), IN, Destroy()),
    "completed and gone from the provider: destroy (idempotent)": (
        Record(name="vm1", state=VMState.COMPLETED),
        OUT,
        Destroy(),
    ),
    "discovered: destroy": (Record(name="vm1", state=VMState.DISCOVERED), IN, Destroy()),
    # -- pending -----------------------------------------------------------------------------------
    "pending, in the inventory, not asked yet: probe": (pending(10), IN, Probe()),
    "pending and ready: becomes ready with its boot time": (
        pending(42),
        Observation(in_inventory=True, ready=True),
        Become(boot=42),
    ),
    "pending, not ready, young: wait": (pending(10), Observation(in_inventory=True, ready=False), Wait()),
    "pending past the notification time: warn once": (
        pending(6 * MIN),
        Observation(in_inventory=True, ready=False),
        Notify(age=6 * MIN, timeout=15 * MIN),
    ),
    "pending past the notification time, already warned: wait": (
        pending(6 * MIN, notified=True),
        Observation(in_inventory=True, ready=False),
        Wait(),
    ),
    "pending past the timeout: failed, with the readiness error": (
        pending(16 * MIN),
        Observation(in_inventory=True, ready=False, error="connection refused"),
        Complete(
            "marked as 'failed' after 16.0 minutes with error: connection refused",
            failed=True,
            error="connection refused",
        ),
    ),
    "pending past the timeout without an error: 'not ready'": (
        pending(16 * MIN),
        Observation(in_inventory=True, ready=False),
        Complete(
            "marked as 'failed' after 16.0 minutes with error: not ready", failed=True, error="not ready"
        ),
    ),
    "pending past the timeout and gone from the provider: removed, nothing to destroy": (
        pending(16 * MIN, cloned_here=True),
        OUT,
        Remove("pending for 16.0 minutes and gone from the provider"),
    ),
    "adopted pending VM missing from one listing: ask the provider about it": (
        pending(10, cloned_here=False),
        OUT,
        Probe(),
    ),
    "adopted pending VM the provider does not have: removed at once": (
        pending(10, cloned_here=False),
        GONE,
        Remove(
            "pending, unknown to the provider and not being cloned (clone interrupted: not in the "
            "provider's inventory)",
            "clone interrupted: not in the provider's inventory",
        ),
    ),
    "own pending VM briefly missing from the inventory: wait": (pending(10, cloned_here=True), OUT, Wait()),
    "pending with no clone time: counted from now": (
        Record(name="vm1", state=P, clone_started=None),
        Observation(in_inventory=True, ready=True),
        Become(boot=0),
    ),
    "clock jumped back before the clone: not timed out": (
        pending(-HOUR),
        Observation(in_inventory=True, ready=False),
        Wait(),
    ),
    "clock jumped far ahead: timed out": (
        pending(30 * 24 * HOUR),
        Observation(in_inventory=True, ready=False),
        Complete(
            "marked as 'failed' after 43200.0 minutes with error: not ready", failed=True, error="not ready"
        ),
    ),
    # -- ready -------------------------------------------------------------------------------------
    "ready, missing from one listing: ask the VM itself, whatever vm_checktime says": (
        ready(10 * MIN, last_check=NOW - 1),
        OUT,
        Probe(hostname=True),
    ),
    "ready, missing from the listing but the VM answers: a listing glitch, fine": (
        ready(10 * MIN, last_check=NOW - 1),
        Observation(in_inventory=False, exists=True, ready=True),
        Wait(),
    ),
    "ready, missing and confirmed gone: completed": (
        ready(10 * MIN),
        GONE,
        Complete("missing from the provider's inventory"),
    ),
    "ready, checked less than vm_checktime ago: wait": (ready(10 * MIN, last_check=NOW - 30), IN, Wait()),
    "ready less than vm_checktime ago, never checked: becoming ready was the check": (
        ready(30),
        IN,
        Wait(),
    ),
    "ready longer than vm_checktime, checked before it became ready: due": (
        ready(61, last_check=NOW - 2 * MIN),
        IN,
        Probe(hostname=True),
    ),
    "ready past the mismatch grace: probe with the hostname": (
        ready(MISMATCH_GRACE + 1),
        IN,
        Probe(hostname=True),
    ),
    "ready past ready_ttl: completed without asking the provider": (
        ready(61 * MIN),
        IN,
        Complete("reached end of TTL after 61 minutes"),
    ),
    "ready with a mismatched hostname: completed": (
        ready(10 * MIN),
        Observation(in_inventory=True, ready=True, hostname="other"),
        Complete("has mismatched hostname other"),
    ),
    "ready, the guest reports no hostname: fine": (
        ready(10 * MIN),
        Observation(in_inventory=True, ready=True, hostname=None),
        Wait(),
    ),
    "ready, its own hostname: fine": (
        ready(10 * MIN),
        Observation(in_inventory=True, ready=True, hostname="vm1"),
        Wait(),
    ),
    "ready but unreachable: completed with the error": (
        ready(10 * MIN),
        Observation(in_inventory=True, ready=False, error="timed out"),
        Complete("is unreachable with error: timed out", error="timed out"),
    ),
    "ready, just probed although vm_checktime has not passed: act on the answer": (
        ready(10 * MIN, last_check=NOW),
        Observation(in_inventory=True, ready=False),
        Complete("is unreachable with error: not ready", error="not ready"),
    ),
    # -- running -----------------------------------------------------------------------------------
    "running without a checkout time: completed": (running(None), IN, Complete("has no checkout time")),
    "running past its lifetime: completed": (
        running(12.5),
        IN,
        Complete("reached end of TTL after 12.5 hours"),
    ),
    "running exactly at its lifetime: completed": (
        running(12),
        IN,
        Complete("reached end of TTL after 12.0 hours"),
    ),
    "running with lifetime 0: never expires": (running(1000, lifetime=0), IN, Wait()),
    "running, missing from one listing: ask whether it exists (never whether it is ready)": (
        running(1),
        OUT,
        Probe(readiness=False),
    ),
    "running, missing from the listing but it exists: fine": (
        running(1),
        Observation(in_inventory=False, exists=True),
        Wait(),
    ),
    "running, gone from the provider: completed": (
        running(1),
        GONE,
        Complete("is no longer in the provider's inventory"),
    ),
    "running with a user not yet tagged: tag": (running(1, user="alice"), IN, TagUser("alice")),
    "running with a user already tagged: wait": (running(1, user="alice", tagged=True), IN, Wait()),
    "running past its lifetime wins over tagging": (
        running(13, user="alice"),
        IN,
        Complete("reached end of TTL after 13.0 hours"),
    ),
}


@pytest.mark.parametrize(("record", "seen", "expected"), CASES.values(), ids=CASES.keys())
def test_decide(record: Record, seen: Observation, expected: Action) -> None:
    assert decide(record, seen, NOW, POLICY) == expected


def test_a_young_ready_vm_due_for_its_check_is_probed_for_readiness_only() -> None:
    policy = Policy(timeout=900, timeout_notification=300, ready_ttl=3600, vm_checktime=10)
    assert decide(ready(30, last_check=NOW - 20), IN, NOW, policy) == Probe()
    assert decide(ready(30, last_check=NOW - 5), IN, NOW, policy) == Wait()


OVERLAPS: dict[str, tuple[set[VMState], VMState]] = {
    "ready and running: running (never handed out twice)": ({R, U}, U),
    "running and completed: being returned": ({U, VMState.COMPLETED}, VMState.COMPLETED),
    "pending and ready: ready": ({P, R}, R),
    "discovered and pending: known after all": ({VMState.DISCOVERED, P}, P),
    "in one set only: nothing to leave": ({R}, R),
    "in every set: completed": (set(VMState), VMState.COMPLETED),
}


@pytest.mark.parametrize(("states", "kept"), OVERLAPS.values(), ids=OVERLAPS.keys())
def test_a_vm_in_two_sets_is_in_the_later_one(states: set[VMState], kept: VMState) -> None:
    assert settle_overlap(frozenset(states)) == (kept, frozenset(states - {kept}))


def test_settle_overlap_of_no_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="no set"):
        settle_overlap(frozenset())


def test_the_hostname_check_can_be_switched_off() -> None:
    policy = Policy(
        timeout=900, timeout_notification=300, ready_ttl=3600, vm_checktime=60, check_hostname=False
    )
    assert decide(ready(10 * MIN), IN, NOW, policy) == Probe(hostname=False)
    seen = Observation(in_inventory=True, ready=True, hostname="other")
    assert decide(ready(10 * MIN), seen, NOW, policy) == Wait()


def test_decide_is_pure() -> None:
    record, seen = pending(6 * MIN), Observation(in_inventory=True, ready=False)
    assert decide(record, seen, NOW, POLICY) == decide(record, seen, NOW, POLICY)
    assert record == pending(6 * MIN)
