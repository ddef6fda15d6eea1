"""Store against a real redis-server: atomic checkout, return, stats."""

from __future__ import annotations

import json

import pytest

from vmpooler import bus, keys
from vmpooler.errors import PoolEmpty, StoreUnavailable
from vmpooler.store import Pick, Store

pytestmark = pytest.mark.integration

NOW = "2026-11-21 10:00:00 +0000"


@pytest.fixture
def store(redis_url: str):
    s = Store.from_url(redis_url)
    yield s
    s.close()


def fill(redis, pool: str, *vms: str) -> None:
    redis.sadd(keys.ready_set(pool), *vms)


def test_checkout_moves_vm_and_writes_metadata(store, redis):
    fill(redis, "deb", "vm1")
    got = store.vms.checkout([Pick("deb", ("deb",))], now=NOW, token="tok", user="alice", lifetime=4)
    assert [(a.requested, a.pool, a.vm) for a in got] == [("deb", "deb", "vm1")]
    assert redis.smembers(keys.ready_set("deb")) == set()
    assert redis.smembers(keys.running_set("deb")) == {"vm1"}
    assert redis.smembers(keys.migrating_set("deb")) == {"vm1"}
    assert redis.hget(keys.active_hash("deb"), "vm1") == NOW
    assert redis.hgetall(keys.vm_hash("vm1")) == {
        "checkout": NOW,
        "token:token": "tok",
        "token:user": "alice",
        "lifetime": "4",
    }
    assert (
        redis.hget(keys.TENANT_HELD, "vm1") == ""
    )  # counted for the anonymous tenant until it leaves running
    assert redis.hget(keys.TENANT_RUNNING, "") == "1"


def test_checkout_without_token_writes_no_owner(store, redis):
    fill(redis, "deb", "vm1")
    store.vms.checkout([Pick("deb", ("deb",))], now=NOW)
    assert redis.hgetall(keys.vm_hash("vm1")) == {"checkout": NOW}


def test_multi_pool_checkout_is_all_or_nothing(store, redis):
    fill(redis, "a", "a1", "a2")
    fill(redis, "b", "b1")
    with pytest.raises(PoolEmpty) as err:
        store.vms.checkout(
            [Pick("a", ("a",)), Pick("a", ("a",)), Pick("b", ("b",)), Pick("b", ("b",))], now=NOW
        )
    assert err.value.requested == "b"
    assert redis.smembers(keys.ready_set("a")) == {"a1", "a2"}
    assert redis.smembers(keys.ready_set("b")) == {"b1"}
    assert not redis.exists(keys.running_set("a"), keys.running_set("b"), keys.active_hash("a"))
    assert not redis.exists(keys.vm_hash("a1"), keys.vm_hash("a2"), keys.vm_hash("b1"))


def test_candidates_are_tried_in_order(store, redis):
    fill(redis, "second", "s1")
    got = store.vms.checkout([Pick("alias", ("first", "second"))], now=NOW)
    assert [(a.requested, a.pool, a.vm) for a in got] == [("alias", "second", "s1")]


def test_checkout_publishes_event(store, redis):
    fill(redis, "deb", "vm1")
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.events_channel("deb"))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    store.vms.checkout([Pick("deb", ("deb",))], now=NOW)
    msg = pubsub.get_message(timeout=1)
    assert json.loads(msg["data"]) == {"event": "checkout", "pool": "deb", "vm": "vm1"}
    assert bus.decode(msg["data"]) == bus.CheckedOut(pool="deb", vm="vm1")
    pubsub.close()


def test_return_only_moves_running_vms(store, redis):
    redis.sadd(keys.running_set("deb"), "vm1")
    redis.sadd(keys.ready_set("deb"), "vm2")
    assert store.vms.return_vm("vm1", "deb") is True
    assert redis.smembers(keys.completed_set("deb")) == {"vm1"}
    assert store.vms.return_vm("vm1", "deb") is False
    assert store.vms.return_vm("vm2", "deb") is False
    assert redis.smembers(keys.ready_set("deb")) == {"vm2"}


@pytest.mark.parametrize("with_hash", [True, False])
def test_return_named_finds_the_pool_with_or_without_the_hash(store, redis, with_hash):
    redis.hset(keys.vm_hash("vm1"), mapping={"pool": "deb", "template": "t/deb", "checkout": NOW})
    redis.sadd(keys.running_set("deb"), "vm1")
    redis.hset(keys.vm_hash("vm2"), mapping={"template": "deb"})  # no pool field: the template names it
    redis.sadd(keys.running_set("deb"), "vm2")
    redis.hset(keys.vm_hash("vm3"), mapping={"pool": "deb"})  # not running
    redis.hset(keys.vm_hash("vm4"), mapping={"checkout": NOW})  # names no pool
    whole = {"pool": "deb", "template": "t/deb", "checkout": NOW} if with_hash else {}
    assert store.vms.return_named("vm1", with_hash=with_hash) == ("returned", "deb", whole)
    assert store.vms.return_named("vm2", with_hash=with_hash)[:2] == ("returned", "deb")
    assert redis.smembers(keys.completed_set("deb")) == {"vm1", "vm2"}
    assert store.vms.return_named("vm3", with_hash=with_hash)[:2] == ("not-running", "deb")
    assert store.vms.return_named("vm4", with_hash=with_hash) == (
        "no-pool",
        None,
        {"checkout": NOW} if with_hash else {},
    )
    assert store.vms.return_named("vm5", with_hash=with_hash) == ("missing", None, {})
    assert redis.smembers(keys.running_set("deb")) == set()


def test_modify_and_task_queue(store, redis):
    store.vms.modify("vm1", lifetime=12, tags={"project": "x"}, date="2026-11-21")
    assert redis.hgetall(keys.vm_hash("vm1")) == {"lifetime": "12", "tag:project": "x"}
    assert redis.hgetall(keys.tag_stats("2026-11-21")) == {"vm1:project": "x"}
    store.tasks.queue("disk", "vm1", "deb", "8")
    assert redis.smembers(keys.TASKS_DISK) == {"vm1:8"}


def test_pool_counts(store, redis):
    fill(redis, "a", "1", "2")
    redis.sadd(keys.running_set("a"), "3")
    redis.sadd(keys.pending_set("b"), "4")
    counts = store.stats.pool_counts(["a", "b"])
    assert (counts["a"].ready, counts["a"].running, counts["b"].pending) == (2, 1, 1)
    assert store.stats.running_total(["a", "b"]) == 1


def test_unreachable_redis_raises_store_unavailable():
    store = Store.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        store.ping()


def test_a_pass_reads_its_pool_in_one_script_and_claims_its_reset(store, redis):
    fill(redis, "p", "r1", "r2")
    redis.sadd(keys.running_set("p"), "u1")
    redis.hset(keys.active_hash("p"), "u1", "2026-11-30 06:00:00 +0000")
    redis.hset(keys.vm_hash("u1"), mapping={"lifetime": "2", "token:user": "bob"})
    redis.sadd(keys.completed_set("p"), "c1")
    redis.hset(keys.vm_hash("c1"), "destroy", "x")  # not a live VM: its hash is not read
    redis.hset(keys.config_override("poolsize"), mapping={"p": "7", "other": "3"})
    redis.sadd(keys.POOLRESET, "p", "other")

    view = store.passes.read("p")
    assert view.snapshot.ready == {"r1", "r2"} and view.snapshot.running == {"u1"}
    assert view.snapshot.completed == {"c1"} and view.snapshot.pending == frozenset()
    assert view.fields["u1"] == {"lifetime": "2", "token:user": "bob"}
    assert set(view.fields) == {"r1", "r2", "u1"}
    assert view.checkouts == {"u1": "2026-11-30 06:00:00 +0000"}
    assert view.size_override == "7" and view.reset is True and view.tasks_waiting is False
    assert redis.smembers(keys.POOLRESET) == {"other"}  # only its own reset is claimed

    redis.sadd(keys.TASKS_SNAPSHOT, "u1:snap1")
    again = store.passes.read("p")
    assert again.reset is False and again.tasks_waiting is True
    assert store.passes.read("nosuch").size_override is None
