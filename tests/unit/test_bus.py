"""``vmpooler.bus``: one wire format, one decoder, for every event kind."""

from __future__ import annotations

import json

import pytest

from vmpooler import bus

EVENTS = [
    bus.CheckedOut(pool="deb", vm="vm1"),
    bus.Returned(pool="deb", vm="vm1"),
    bus.TaskQueued(pool="deb", vm="vm1", task="disk", argument="8"),
    bus.SlotFreed(pool="deb"),
    bus.ConfigChanged(pool="deb"),
    bus.OnDemandQueued(pool="deb", request_id="r1"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_every_event_survives_the_wire(event: bus.Event) -> None:
    assert bus.decode(bus.encode(event)) == event
    assert bus.decode(bus.encode(event).encode()) == event  # redis-py may hand over bytes


def test_the_wire_format_is_the_one_the_lua_scripts_write() -> None:
    # the checkout script (store/vms.py) and the slot release script (store/slots.py) build these with cjson
    assert bus.decode('{"event": "checkout", "pool": "deb", "vm": "vm1"}') == bus.CheckedOut("deb", "vm1")
    assert bus.decode('{"pool": "deb", "event": "slot"}') == bus.SlotFreed("deb")
    # the on-demand create script (store/ondemand.py)
    ondemand = '{"request_id": "r1", "event": "ondemand", "pool": "deb"}'
    assert bus.decode(ondemand) == bus.OnDemandQueued("deb", "r1")
    assert json.loads(bus.encode(bus.Returned("deb", "vm1"))) == {
        "event": "return",
        "pool": "deb",
        "vm": "vm1",
    }


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1, 2]",
        '{"pool": "deb"}',
        '{"event": "tilt", "pool": "deb"}',  # no such kind
        '{"event": "return", "pool": "deb"}',
        b"\xff\xfe",
    ],
)
def test_anything_else_is_no_event(data: str | bytes) -> None:
    assert bus.decode(data) is None
