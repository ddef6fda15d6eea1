"""Managers' registry and pool leases in the real Redis (``vmpooler.store.leases``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from vmpooler import keys
from vmpooler.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    opened = Store.from_url(redis_url)
    yield opened
    opened.close()


def claim(
    store: Store, pools: list[str], owner: str, instance: str = "i1", pid: int = 1, ttl: int = 1000
) -> dict[str, int | None]:
    return store.leases.claim(pools, owner=owner, instance=instance, pid=pid, ttl_ms=ttl)


def test_members_beat_and_expire(store: Store) -> None:
    assert store.leases.beat("dummy", "m-a", 300) == ["m-a"]
    assert sorted(store.leases.beat("dummy", "m-b", 5000)) == ["m-a", "m-b"]
    assert store.leases.beat("other", "m-c", 5000) == ["m-c"]  # per provider
    time.sleep(0.4)
    assert store.leases.beat("dummy", "m-b", 5000) == ["m-b"]  # m-a's beat lapsed
    store.leases.leave("dummy", "m-b")
    assert store.leases.beat("dummy", "m-c", 5000) == ["m-c"]


def test_a_lease_is_held_by_one_manager_until_it_expires(store: Store) -> None:
    first = claim(store, ["p1", "p2"], "m-a", ttl=300)
    assert first["p1"] is not None and first["p2"] is not None and first["p1"] != first["p2"]
    assert claim(store, ["p1", "p2", "p3"], "m-b") == {"p1": None, "p2": None, "p3": first["p2"] + 1}
    renewed = claim(store, ["p1"], "m-a", ttl=300)  # its own: renewed, same token
    assert renewed == {"p1": first["p1"]}
    time.sleep(0.4)
    taken = claim(store, ["p1"], "m-b")
    assert taken["p1"] is not None and taken["p1"] > first["p2"] + 1  # a new, larger fencing token
    assert claim(store, ["p1"], "m-a") == {"p1": None}  # the old holder cannot renew it back
    assert store.leases.holders(["p1"])["p1"]["owner"] == "m-b"


def test_another_instance_or_process_of_the_same_manager(store: Store) -> None:
    token = claim(store, ["p"], "m-a", instance="i1", pid=10)["p"]
    assert claim(store, ["p"], "m-a", instance="i1", pid=11)["p"] == token + 1  # a restarted process
    assert claim(store, ["p"], "m-a", instance="i2", pid=12) == {"p": None}  # a second supervisor


def test_release_frees_only_the_holders_leases(store: Store) -> None:
    claim(store, ["p1"], "m-a")
    claim(store, ["p2"], "m-b")
    assert store.leases.release(["p1", "p2"], owner="m-a", instance="i1") == 1
    assert store.leases.holders(["p1", "p2"]) == {"p1": {}, "p2": store.leases.holders(["p2"])["p2"]}
    assert claim(store, ["p1"], "m-b")["p1"] is not None
    assert store.client.exists(keys.lease("p2"))
