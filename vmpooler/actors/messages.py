"""The messages the actors of a provider process tell each other (the API's events are in
``vmpooler.bus``). Typed and immutable: a handler matches on the class, never on a string.

To a VMActor, from its PoolActor (counted: see :class:`VMIdle`):
    :class:`Clone`, :class:`Look`, :class:`DestroyNow`, :class:`Drain`, :class:`RunTask`, :class:`Migrate`,
    :class:`PurgePending`.
To a VMActor, from itself through the ticker: :class:`PollReady`, :class:`RetryDestroy`.
To a PoolActor: :class:`Check` (the ticker), the ``vmpooler.bus`` events (the ProviderActor),
:class:`CloneFor` (the OnDemandActor, through the ProviderActor), and from its VMActors :class:`VMIdle`,
:class:`VMGone`, :class:`VMCrashed`, :class:`SlotUnreleased`.
To the OnDemandActor: :class:`Check` (its ticker) and ``bus.OnDemandQueued`` (the ProviderActor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from vmpooler.model import VMState

if TYPE_CHECKING:
    from vmpooler.store import Task

__all__ = [
    "Check",
    "Clone",
    "CloneFor",
    "DestroyNow",
    "Drain",
    "Look",
    "Migrate",
    "PollReady",
    "PurgePending",
    "RetryDestroy",
    "RunTask",
    "SlotUnreleased",
    "VMCrashed",
    "VMGone",
    "VMIdle",
]


# -- to a VMActor ----------------------------------------------------------------------------------


@attrs.frozen
class Clone:
    """Create the VM (already reserved in ``pending``), then wait for it to be ready.

    Attributes:
        request_id: the on-demand request the VM is for ("" for a pool VM).
        alias: the name the request asked for ("" for a pool VM).
    """

    request_id: str = ""
    alias: str = ""


@attrs.frozen
class Look:
    """The pool's pass decided this VM needs work: decide again with what the pass read, and do it.

    Attributes:
        state: the set the VM was in; None when it is in none any more.
        in_inventory: the provider's inventory of the pool has it.
        fields: the VM's hash as the pass read it.
        checkout: its checkout time in the pool's active hash, if running.
    """

    state: VMState | None
    in_inventory: bool
    fields: Mapping[str, str] = attrs.field(factory=dict)
    checkout: str | None = None


@attrs.frozen
class DestroyNow:
    """A returned VM: destroy it now, not on the next pass."""


@attrs.frozen
class Drain:
    """pending or ready → completed, then destroy (pool reset, shrink)."""


@attrs.frozen
class PurgePending:
    """The stale-queue purge found this pending VM older than ``max_pending_age`` seconds: fail it."""

    age_limit: float


@attrs.frozen
class RunTask:
    """A disk, snapshot or revert request from the API."""

    task: Task


@attrs.frozen
class Migrate:
    """A just-checked-out VM: let the provider decide whether to move it."""


@attrs.frozen
class PollReady:
    """One readiness check of a pending VM (the VMActor's own, scheduled on the ticker)."""


@attrs.frozen
class RetryDestroy:
    """A failed destroy's retry (the VMActor's own, scheduled on the ticker)."""


# -- to a PoolActor --------------------------------------------------------------------------------


@attrs.frozen
class Check:
    """Run a pass now (the ticker's schedule, or a wake-up)."""


@attrs.frozen
class CloneFor:
    """Clone one VM of ``pool`` for an on-demand request; ``slot`` is its on-demand lane slot, claimed."""

    pool: str
    request_id: str
    alias: str
    slot: str


@attrs.frozen(eq=False)
class VMIdle:
    """A VMActor ran out of work after handling ``handled`` messages from its pool, and stopped; the
    pool tells what it sent after those to a new actor."""

    vm: str
    ref: Any  # pykka.ActorRef of the VMActor
    handled: int


@attrs.frozen(eq=False)
class VMGone:
    """The VM is out of vmpooler (destroyed, removed, forgotten); its actor stopped itself."""

    vm: str
    ref: Any


@attrs.frozen(eq=False)
class VMCrashed:
    """A VMActor died of an unexpected exception; the next pass looks at its VM afresh."""

    vm: str
    ref: Any


@attrs.frozen
class SlotUnreleased:
    """A clone slot the VMActor could not give back (Redis failed): the pool retries every pass."""

    slot: str
