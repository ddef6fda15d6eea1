"""Value objects shared by the API, the store and the actors.

``VMState`` names the Redis set a VM lives in (the one vocabulary of states: ``keys.STATES`` and the
store derive theirs from it); ``TRANSITIONS`` is the one table of allowed moves (the original's VM
lifecycle). Every writer checks it right before its atomic write (``vmpooler.store.vms``): the API's
checkout and return and every manager transition. Providers return ``VMInfo``, never SDK objects.
"""

from __future__ import annotations

import enum

import attrs

from vmpooler.errors import TransitionError

__all__ = ["TRANSITIONS", "VMInfo", "VMState", "check_transition"]


class VMState(enum.Enum):
    """The set a VM is in. The value is the set's name in ``keys.state_set``."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    DISCOVERED = "discovered"

    # members are singletons compared by identity; Enum's own __hash__ is Python code (the name's hash)
    __hash__ = object.__hash__


TRANSITIONS: dict[VMState | None, frozenset[VMState | None]] = {
    # None = not in any set (not yet created, or gone for good).
    None: frozenset({VMState.PENDING, VMState.DISCOVERED}),
    VMState.PENDING: frozenset({VMState.READY, VMState.COMPLETED, None}),
    VMState.READY: frozenset({VMState.RUNNING, VMState.COMPLETED, None}),
    VMState.RUNNING: frozenset({VMState.COMPLETED, None}),
    VMState.COMPLETED: frozenset({None}),
    VMState.DISCOVERED: frozenset({VMState.COMPLETED, None}),
}


def check_transition(src: VMState | None, dst: VMState | None) -> None:
    """Raise ``TransitionError`` unless ``src → dst`` is in ``TRANSITIONS``."""
    if dst not in TRANSITIONS[src]:
        raise TransitionError(f"illegal VM transition {src} -> {dst}")


@attrs.frozen(kw_only=True)
class VMInfo:
    """What a provider knows about one VM.

    Attributes:
        name: the VM name (short hostname) vmpooler gave it.
        pool: the pool it belongs to.
        hostname: the hostname the guest reports, or None when unknown.
        template: the template it was cloned from.
        powerstate: ``"PoweredOn"`` or ``"PoweredOff"`` (or None when unknown).
        ip: the guest IP address, when known.
        host: the hypervisor host it runs on, when known.
        boottime: epoch of its power-on, when known.
    """

    name: str
    pool: str
    hostname: str | None = None
    template: str | None = None
    powerstate: str | None = None
    ip: str | None = None
    host: str | None = None
    boottime: float | None = None
