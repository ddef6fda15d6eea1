"""The events on Redis pub/sub: their types, their one wire format, and the one decoder.

Events only shorten waits: the durable truth is in Redis keys, and every pool also reconciles from them
on its own loop, so a lost event delays work and never loses it. Each event is a JSON object
``{"event": <kind>, "pool": <pool>, ...}`` published on the pool's channel
(``keys.events_channel(pool)``); every provider process subscribes to the channels of its pools.

* ``checkout`` (:class:`CheckedOut`): by the API, inside the checkout script (``store.vms.checkout``);
  the pool clones a replacement at once.
* ``return`` (:class:`Returned`): by the API (``store.vms.return_vm``); the VM is destroyed at once.
* ``task`` (:class:`TaskQueued`): by the API (``store.tasks.queue``); the task is claimed and run at once.
* ``slot`` (:class:`SlotFreed`): by the manager, inside the slot release script; the pool, which waited
  for a clone slot, clones at once.
* ``config`` (:class:`ConfigChanged`): by the API's pool configuration endpoints (size, template, clone
  target, reset, undo); the pool runs a pass at once.
* ``demand`` (:class:`QueueDemand`): by the API, inside the enqueue script of a waiting checkout (once
  per pool it wants first); the pool clones for it at once.
* ``ondemand`` (:class:`OnDemandQueued`): by the API for a new on-demand request (once per pool it
  names), and by the manager when an on-demand clone is queued again or an on-demand clone slot is
  freed; the provider process's on-demand actor takes the request in and starts its clones at once.

Events made in Python are written by :func:`encode`; the ones made inside Lua scripts write the same
fields with ``cjson.encode`` (``tests/unit/test_bus.py`` decodes what the scripts publish).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs

__all__ = [
    "CheckedOut",
    "ConfigChanged",
    "Event",
    "OnDemandQueued",
    "QueueDemand",
    "Returned",
    "SlotFreed",
    "TaskQueued",
    "decode",
    "encode",
]

log = logging.getLogger(__name__)


@attrs.frozen
class CheckedOut:
    """A ready VM of ``pool`` was handed out: its replacement can be cloned at once."""

    pool: str
    vm: str


@attrs.frozen
class Returned:
    """A running VM of ``pool`` was returned (it is in ``completed``): destroy it now."""

    pool: str
    vm: str


@attrs.frozen
class TaskQueued:
    """A disk, snapshot or revert request (``task``) for ``vm`` was queued."""

    pool: str
    vm: str
    task: str
    argument: str


@attrs.frozen
class SlotFreed:
    """A clone slot was released while ``pool`` waited for one."""

    pool: str


@attrs.frozen
class ConfigChanged:
    """The pool's size, template or clone target override changed, or a reset was requested."""

    pool: str


@attrs.frozen
class OnDemandQueued:
    """On-demand clones for ``pool`` wait (``request_id`` is empty when a freed slot is the news)."""

    pool: str
    request_id: str


@attrs.frozen
class QueueDemand:
    """A checkout waits for a VM of ``pool``: clone for it."""

    pool: str


Event = CheckedOut | Returned | TaskQueued | SlotFreed | ConfigChanged | OnDemandQueued | QueueDemand

_KINDS: dict[str, type[Event]] = {
    "checkout": CheckedOut,
    "return": Returned,
    "task": TaskQueued,
    "slot": SlotFreed,
    "config": ConfigChanged,
    "ondemand": OnDemandQueued,
    "demand": QueueDemand,
}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}


def encode(event: Event) -> str:
    """The wire form of ``event``."""
    return json.dumps({"event": _NAMES[type(event)], **attrs.asdict(event)})


def decode(data: str | bytes) -> Event | None:
    """The event in a pub/sub message; None (logged) for anything that is not one of ours."""
    try:
        fields: Any = json.loads(data)
        kind = _KINDS[fields.pop("event")]
        return kind(**{field.name: str(fields[field.name]) for field in attrs.fields(kind)})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring a message that is no event (%s): %.200r", type(exc).__name__, data)
        return None
