"""The queue of waiting checkouts (``vmpooler.store.queue``) against a real redis-server: enqueue,
dispatch (priority, fair share, weights, quotas, all-or-nothing, blocking), cancel, dropped requests,
the tenant counts, and what the queue shows. Oracles: the Redis keys and the methods' return values."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from vmpooler import bus, keys
from vmpooler.errors import OverQuota
from vmpooler.model import VMState
from vmpooler.store import Pick, Store
from vmpooler.store.queue import QueueRequest, QueueSettings
from vmpooler.store.vms import Allocation

pytestmark = pytest.mark.integration

NOW = "2026-11-21 10:00:00 +0000"
WORKER = "w1"
NO_LIMITS = QueueSettings()


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    s = Store.from_url(redis_url)
    s.queue.beat(WORKER, ttl_seconds=60)
    yield s
    s.close()


def rq(
    request_id: str, *pools: str, priority: int = 2, tenant: str = "", worker: str = WORKER, **kw
) -> QueueRequest:
    """A request for one VM of each of ``pools`` (each pick's only candidate)."""
    return QueueRequest(
        request_id=request_id,
        picks=tuple(Pick(p, (p,)) for p in pools),
        priority=priority,
        tenant=tenant,
        wait_seconds=60,
        worker=worker,
        **kw,
    )


def wait(store: Store, *requests: QueueRequest, settings: QueueSettings = NO_LIMITS) -> None:
    """Enqueue each in turn, each left waiting, each in a later millisecond (a distinct score)."""
    for request in requests:
        time.sleep(0.002)
        assert store.queue.enqueue(request, settings, now=NOW) is None
        assert store.queue.status(request.request_id)["status"] == "waiting"
    time.sleep(0.002)


def ready(redis, pool: str, *vms: str) -> None:
    redis.sadd(keys.ready_set(pool), *vms)


def hold(store: Store, redis, tenant: str, n: int, pool: str = "held") -> list[str]:
    """``tenant`` checks out ``n`` VMs of ``pool`` at once (immediate checkout): they count as running."""
    vms = [f"{pool}-{tenant or 'anon'}-{i}" for i in range(n)]
    if vms:
        ready(redis, pool, *vms)
        store.vms.checkout([Pick(pool, (pool,))] * n, now=NOW, tenant=tenant)
    return vms


def subscribe(redis, channel: str):
    pubsub = redis.pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    return pubsub


def status(store: Store, request_id: str) -> str | None:
    return store.queue.status(request_id).get("status")


# -- 1. enqueue --------------------------------------------------------------------------------------


def test_enqueue_on_an_empty_pool_waits_counts_demand_and_announces_it(store, redis):
    pubsub = subscribe(redis, keys.events_channel("a"))
    request = QueueRequest(
        request_id="r1",
        picks=(Pick("a", ("a",)), Pick("a", ("a",)), Pick("alias", ("a", "b"))),
        tenant="t",
        wait_seconds=60,
        worker=WORKER,
    )
    assert store.queue.enqueue(request, NO_LIMITS, now=NOW) is None
    assert redis.zrange(keys.QUEUE, 0, -1) == ["r1"]
    assert store.queue.status("r1")["status"] == "waiting"
    assert store.queue.position("r1") == 1
    # demand: each pick's first candidate; wanted: every candidate of each pick
    assert store.queue.demand() == {"a": 3}
    assert store.queue.demand_of("a") == 3 and store.queue.demand_of("b") == 0
    assert redis.hgetall(keys.QUEUE_WANTED) == {"a": "3", "b": "1"}
    msg = pubsub.get_message(timeout=1)
    assert msg["channel"] == keys.events_channel("a")
    assert bus.decode(msg["data"]) == bus.QueueDemand(pool="a")
    assert pubsub.get_message(timeout=0.1) is None  # once per pool, not per pick
    pubsub.close()


def test_enqueue_with_a_ready_vm_is_served_at_once(store, redis):
    ready(redis, "a", "a1")
    got = store.queue.enqueue(rq("r1", "a"), NO_LIMITS, now=NOW)
    assert got == [Allocation("a", "a", "a1")]
    assert redis.zcard(keys.QUEUE) == 0 and store.queue.demand() == {}
    assert not redis.exists(keys.QUEUE_WANTED)
    assert status(store, "r1") == "served"


def test_an_id_in_use_is_refused(store, redis):
    wait(store, rq("r1", "a"))
    with pytest.raises(ValueError, match="r1"):
        store.queue.enqueue(rq("r1", "b"), NO_LIMITS, now=NOW)
    assert store.queue.demand() == {"a": 1}  # the first request is untouched
    assert redis.zcard(keys.QUEUE) == 1


def test_a_later_candidate_serves_a_pick(store, redis):
    request = QueueRequest("r1", (Pick("alias", ("a", "b")),), wait_seconds=60, worker=WORKER)
    wait(store, request)
    ready(redis, "b", "b1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]
    assert store.queue.served(["r1"]) == {"r1": [Allocation("alias", "b", "b1")]}
    assert store.queue.demand() == {} and not redis.exists(keys.QUEUE_WANTED)


# -- 2. dispatch order and what a served request gets -----------------------------------------------


def test_dispatch_serves_by_priority_regardless_of_arrival(store, redis):
    wait(store, rq("p3", "a", priority=3), rq("p2", "a", priority=2), rq("p1", "a", priority=1))
    served = []
    for vm in ("a1", "a2", "a3"):
        ready(redis, "a", vm)  # one VM turns ready at a time
        served += store.queue.dispatch(NO_LIMITS, now=NOW)
    assert served == ["p1", "p2", "p3"]


def test_one_dispatch_serves_in_priority_order(store, redis):
    wait(store, rq("p3", "a", priority=3), rq("p1", "a", priority=1), rq("p2", "a", priority=2))
    ready(redis, "a", "a1", "a2", "a3")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["p1", "p2", "p3"]


def test_dispatch_is_fifo_within_a_tenant_and_priority(store, redis):
    # ids sort against arrival: the order is the enqueue time, not the id
    wait(
        store, rq("z-first", "a", tenant="t"), rq("m-second", "a", tenant="t"), rq("a-third", "a", tenant="t")
    )
    served = []
    for vm in ("a1", "a2", "a3"):
        ready(redis, "a", vm)
        served += store.queue.dispatch(NO_LIMITS, now=NOW)
    assert served == ["z-first", "m-second", "a-third"]


def test_a_served_request_gets_its_vms_as_a_checkout_would(store, redis):
    wait(store, rq("r1", "a", "b", tenant="t", token="tok", user="alice", lifetime=4), rq("r2", "a"))
    ready(redis, "a", "a1")
    ready(redis, "b", "b1")
    pubsub = subscribe(redis, keys.QUEUE_CHANNEL)
    assert store.queue.dispatch(NO_LIMITS, now="later") == ["r1"]

    h = store.queue.status("r1")
    assert h["status"] == "served" and h["vms"] == "a\ta\ta1\nb\tb\tb1" and int(h["served"]) > 0
    assert 0 < redis.ttl(keys.queue_request("r1")) <= 300
    assert store.queue.served(["r1", "r2", "nope"]) == {
        "r1": [Allocation("a", "a", "a1"), Allocation("b", "b", "b1")]
    }
    assert store.queue.position("r1") is None and store.queue.position("r2") == 1
    for pool, vm in (("a", "a1"), ("b", "b1")):
        assert redis.smembers(keys.ready_set(pool)) == set()
        assert redis.smembers(keys.running_set(pool)) == {vm}
        assert redis.smembers(keys.migrating_set(pool)) == {vm}
        assert redis.hgetall(keys.active_hash(pool)) == {vm: "later"}
        assert redis.hgetall(keys.vm_hash(vm)) == {
            "checkout": "later",
            "token:token": "tok",
            "token:user": "alice",
            "lifetime": "4",
        }
        assert redis.hget(keys.TENANT_HELD, vm) == "t"
    assert redis.hgetall(keys.TENANT_RUNNING) == {"t": "2"}
    assert store.queue.demand() == {"a": 1}  # r2's
    msg = pubsub.get_message(timeout=1)
    assert (msg["channel"], msg["data"]) == (keys.QUEUE_CHANNEL, "r1")
    pubsub.close()


def test_the_queue_channel_carries_every_id_served_by_one_dispatch(store, redis):
    wait(store, rq("r1", "a"), rq("r2", "a"))
    ready(redis, "a", "a1", "a2")
    pubsub = subscribe(redis, keys.QUEUE_CHANNEL)
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1", "r2"]
    assert pubsub.get_message(timeout=1)["data"] == "r1,r2"
    pubsub.close()


def test_dispatch_without_a_ready_vm_changes_nothing(store, redis):
    wait(store, rq("r1", "a"))
    ready(redis, "other", "o1")  # not a pool anyone waits for
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == []
    assert store.queue.position("r1") == 1 and redis.smembers(keys.ready_set("other")) == {"o1"}


# -- 3. fair share and weights ------------------------------------------------------------------------


def test_the_tenant_holding_fewest_running_vms_goes_first(store, redis):
    hold(store, redis, "A", 3)
    wait(store, rq("ra", "a", tenant="A"), rq("rb", "a", tenant="B"))  # A arrived first
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["rb"]
    assert status(store, "ra") == "waiting"
    assert redis.hgetall(keys.TENANT_RUNNING) == {"A": "3", "B": "1"}


def test_fair_share_interleaves_tenants_within_one_dispatch(store, redis):
    wait(store, rq("a1", "p", tenant="A"), rq("a2", "p", tenant="A"), rq("b1", "p", tenant="B"))
    ready(redis, "p", "v1", "v2")
    # A's first is served; then A holds 1 and B 0: B's goes before A's second
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["a1", "b1"]
    assert status(store, "a2") == "waiting"


@pytest.mark.parametrize("first", ["W", "U"])
def test_weight_2_holding_2_ranks_as_weight_1_holding_1(store, redis, first):
    settings = QueueSettings(tenants=(("U", 1.0, None), ("W", 2.0, None)))
    hold(store, redis, "W", 2)
    hold(store, redis, "U", 1)
    second = "U" if first == "W" else "W"
    wait(store, rq(f"r{first}", "a", tenant=first), rq(f"r{second}", "a", tenant=second))
    ready(redis, "a", "a1")
    # equal keys (2/2 == 1/1): the earlier request wins, whichever tenant it is
    assert store.queue.dispatch(settings, now=NOW) == [f"r{first}"]


@pytest.mark.parametrize("weighted", [True, False])
def test_weight_lets_a_later_tenant_with_as_many_vms_go_first(store, redis, weighted):
    hold(store, redis, "U", 2)
    hold(store, redis, "W", 2)
    wait(store, rq("rU", "a", tenant="U"), rq("rW", "a", tenant="W"))
    ready(redis, "a", "a1")
    # W's weight 2 halves its share (2/2 < 2/1); unweighted, the tie goes to the earlier request
    settings = QueueSettings(tenants=(("U", 1.0, None), ("W", 2.0 if weighted else 1.0, None)))
    assert store.queue.dispatch(settings, now=NOW) == (["rW"] if weighted else ["rU"])


# -- 4. quotas ----------------------------------------------------------------------------------------


def test_a_tenant_at_its_quota_waits_and_blocks_nobody(store, redis):
    settings = QueueSettings(default_quota=10, tenants=(("t", 1.0, 1),))
    (held,) = hold(store, redis, "t", 1)
    wait(store, rq("rt", "a", tenant="t"), rq("ru", "a", tenant="u"), settings=settings)
    ready(redis, "a", "a1", "a2")  # room for both: only the quota holds rt back
    assert store.queue.dispatch(settings, now=NOW) == ["ru"]
    assert status(store, "rt") == "waiting" and redis.scard(keys.ready_set("a")) == 1
    assert store.queue.dispatch(settings, now=NOW) == []

    # t's VM comes back: checkouts wait, so the return dispatches, and t has room again
    dispatched: list[list[str]] = []
    assert store.vms.return_vm(
        held, "held", then=lambda: dispatched.append(store.queue.dispatch(settings, now=NOW))
    )
    assert dispatched == [["rt"]]
    assert status(store, "rt") == "served"
    assert redis.scard(keys.ready_set("a")) == 0
    assert redis.hgetall(keys.TENANT_RUNNING) == {"t": "1", "u": "1"}


def test_a_return_while_nobody_waits_does_not_dispatch(store, redis):
    (held,) = hold(store, redis, "t", 1)
    called: list[bool] = []
    assert store.vms.return_vm(held, "held", then=lambda: called.append(True))
    assert called == []  # one round trip: nothing waits
    assert redis.hgetall(keys.TENANT_RUNNING) == {}


def test_the_default_quota_limits_unlisted_tenants_but_never_the_anonymous_one(store, redis):
    settings = QueueSettings(default_quota=1, tenants=(("big", 1.0, None),))
    hold(store, redis, "v", 1)
    hold(store, redis, "", 3)
    hold(store, redis, "big", 3)
    wait(store, rq("rv", "a", tenant="v"), rq("ranon", "a"), rq("rbig", "a", tenant="big"), settings=settings)
    ready(redis, "a", "a1", "a2", "a3")
    # v is at the default quota; 'big' is listed with no quota, so the default applies to it too
    assert sorted(store.queue.dispatch(settings, now=NOW)) == ["ranon"]
    assert status(store, "rv") == "waiting" and status(store, "rbig") == "waiting"


def test_a_request_that_would_go_over_the_quota_waits(store, redis):
    settings = QueueSettings(tenants=(("t", 1.0, 2),))
    hold(store, redis, "t", 1)
    wait(store, rq("r2", "a", "a", tenant="t"), settings=settings)  # 1 + 2 > 2
    ready(redis, "a", "a1", "a2")
    assert store.queue.dispatch(settings, now=NOW) == []
    assert redis.scard(keys.ready_set("a")) == 2


def test_an_immediate_checkout_over_quota_raises_and_changes_nothing(store, redis):
    (held,) = hold(store, redis, "t", 1)
    ready(redis, "a", "a1")
    before = {k: redis.dump(k) for k in redis.keys("*")}
    with pytest.raises(OverQuota) as err:
        store.vms.checkout([Pick("a", ("a",))], now=NOW, tenant="t", quota=1)
    assert (err.value.tenant, err.value.quota) == ("t", 1)
    assert {k: redis.dump(k) for k in redis.keys("*")} == before
    assert redis.smembers(keys.ready_set("a")) == {"a1"}
    assert redis.hgetall(keys.TENANT_RUNNING) == {"t": "1"}
    assert redis.hgetall(keys.TENANT_HELD) == {held: "t"}
    # within the quota it goes through
    store.vms.checkout([Pick("a", ("a",))], now=NOW, tenant="t", quota=2)
    assert redis.hget(keys.TENANT_RUNNING, "t") == "2"


# -- 5. all or nothing, blocking, no deadlock ---------------------------------------------------------


def test_a_multi_pool_request_is_served_whole_and_holds_its_pools_meanwhile(store, redis):
    wait(store, rq("ab", "a", "b"), rq("a-only", "a"))
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == []
    # ab took nothing (a1 went back), and a-only may not take a1 from it
    assert redis.smembers(keys.ready_set("a")) == {"a1"}
    assert not redis.exists(keys.running_set("a"))
    assert status(store, "ab") == "waiting" and status(store, "a-only") == "waiting"
    assert store.queue.demand() == {"a": 2, "b": 1}

    ready(redis, "b", "b1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["ab"]
    assert store.queue.served(["ab"]) == {"ab": [Allocation("a", "a", "a1"), Allocation("b", "b", "b1")]}
    assert status(store, "a-only") == "waiting"


def test_a_later_request_on_an_unrelated_pool_is_not_held_back(store, redis):
    wait(store, rq("ab", "a", "b"), rq("c-only", "c"))
    ready(redis, "a", "a1")
    ready(redis, "c", "c1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["c-only"]
    assert redis.smembers(keys.ready_set("a")) == {"a1"}


@pytest.mark.parametrize("stepwise", [False, True])
def test_crossed_multi_pool_requests_never_deadlock(store, redis, stepwise):
    wait(store, rq("ab", "a", "b"), rq("ba", "b", "a"))
    if stepwise:
        ready(redis, "b", "b1")
        assert store.queue.dispatch(NO_LIMITS, now=NOW) == []
        assert redis.smembers(keys.ready_set("b")) == {"b1"}
        ready(redis, "a", "a1")
    else:
        ready(redis, "a", "a1")
        ready(redis, "b", "b1")
    served = store.queue.dispatch(NO_LIMITS, now=NOW)
    assert served == ["ab"]  # the first in line, whole
    assert sorted(a.vm for a in store.queue.served(["ab"])["ab"]) == ["a1", "b1"]
    assert status(store, "ba") == "waiting" and "vms" not in store.queue.status("ba")
    assert not redis.exists(keys.ready_set("a"), keys.ready_set("b"))
    assert store.queue.demand() == {"a": 1, "b": 1}  # ba's two picks, still counted


# -- 6. cancel ----------------------------------------------------------------------------------------


def test_cancel_of_a_waiting_request(store, redis):
    wait(store, rq("r1", "a"), rq("r2", "a", "b"), rq("r3", "a"))
    assert store.queue.cancel("r2", NO_LIMITS, now=NOW, give_back=False) == ("gone", 2)
    assert redis.zrange(keys.QUEUE, 0, -1) == ["r1", "r3"]
    assert status(store, "r2") == "gone" and 0 < redis.ttl(keys.queue_request("r2")) <= 300
    assert store.queue.demand() == {"a": 2}
    assert redis.hgetall(keys.QUEUE_WANTED) == {"a": "2"}
    assert store.queue.position("r3") == 2
    # nothing to cancel any more
    assert store.queue.cancel("r2", NO_LIMITS, now=NOW, give_back=True) == ("unknown", None)
    assert store.queue.cancel("never", NO_LIMITS, now=NOW, give_back=True) == ("unknown", None)
    assert store.queue.demand() == {"a": 2}


def test_cancel_of_a_served_request_keeping_its_vms(store, redis):
    wait(store, rq("r1", "a", tenant="t"))
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]
    assert store.queue.cancel("r1", NO_LIMITS, now=NOW, give_back=False) == (
        "served",
        [Allocation("a", "a", "a1")],
    )
    assert status(store, "r1") == "served"
    assert redis.smembers(keys.running_set("a")) == {"a1"}
    assert redis.hgetall(keys.TENANT_RUNNING) == {"t": "1"}


def test_cancel_giving_back_puts_the_vms_back_in_ready(store, redis):
    got = store.queue.enqueue(
        rq("r1", "a", "b", tenant="t", token="tok", user="u", lifetime=3), NO_LIMITS, now=NOW
    )
    assert got is None
    ready(redis, "a", "a1")
    ready(redis, "b", "b1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]
    assert store.queue.cancel("r1", NO_LIMITS, now=NOW, give_back=True) == ("returned", 2)
    for pool, vm in (("a", "a1"), ("b", "b1")):
        assert redis.smembers(keys.ready_set(pool)) == {vm}
        assert not redis.exists(keys.running_set(pool), keys.migrating_set(pool), keys.active_hash(pool))
        assert redis.hgetall(keys.vm_hash(vm)) == {}
    assert not redis.exists(keys.TENANT_RUNNING, keys.TENANT_HELD)
    assert status(store, "r1") == "gone"
    # a second give-back finds nothing to give
    assert store.queue.cancel("r1", NO_LIMITS, now=NOW, give_back=True) == ("unknown", None)
    assert redis.smembers(keys.ready_set("a")) == {"a1"}


def test_cancel_giving_back_only_returns_vms_still_running(store, redis):
    wait(store, rq("r1", "a", "b", tenant="t"))
    ready(redis, "a", "a1")
    ready(redis, "b", "b1")
    store.queue.dispatch(NO_LIMITS, now=NOW)
    assert store.vms.return_vm("a1", "a")  # the client already returned one
    assert store.queue.cancel("r1", NO_LIMITS, now=NOW, give_back=True) == ("returned", 1)
    assert redis.smembers(keys.completed_set("a")) == {"a1"} and not redis.exists(keys.ready_set("a"))
    assert redis.smembers(keys.ready_set("b")) == {"b1"}
    assert not redis.exists(keys.TENANT_RUNNING, keys.TENANT_HELD)


def test_vms_given_back_go_to_the_next_waiting_request_in_the_same_multi(store, redis):
    ready(redis, "a", "a1")
    assert store.queue.enqueue(rq("r1", "a", tenant="t1"), NO_LIMITS, now=NOW) == [Allocation("a", "a", "a1")]
    wait(store, rq("r2", "a", tenant="t2", token="tok2", user="bob"))
    pubsub = subscribe(redis, keys.QUEUE_CHANNEL)
    assert store.queue.cancel("r1", NO_LIMITS, now="later", give_back=True) == ("returned", 1)
    assert pubsub.get_message(timeout=1)["data"] == "r2"
    pubsub.close()
    assert store.queue.served(["r2"]) == {"r2": [Allocation("a", "a", "a1")]}
    assert redis.smembers(keys.running_set("a")) == {"a1"} and not redis.exists(keys.ready_set("a"))
    assert redis.hget(keys.TENANT_HELD, "a1") == "t2"
    assert redis.hgetall(keys.TENANT_RUNNING) == {"t2": "1"}
    assert redis.hgetall(keys.vm_hash("a1")) == {
        "checkout": "later",
        "token:token": "tok2",
        "token:user": "bob",
    }
    assert store.queue.demand() == {}


# -- 7. requests nobody waits for any more ------------------------------------------------------------


def test_a_request_of_a_worker_that_never_beat_is_dropped_and_takes_nothing(store, redis):
    wait(store, rq("dead", "a", worker="crashed"), rq("live", "a"))
    assert store.queue.demand() == {"a": 2}
    ready(redis, "a", "a1", "a2")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["live"]
    assert status(store, "dead") == "gone" and "vms" not in store.queue.status("dead")
    assert 0 < redis.ttl(keys.queue_request("dead")) <= 300
    assert store.queue.position("dead") is None and redis.zcard(keys.QUEUE) == 0
    assert store.queue.demand() == {} and not redis.exists(keys.QUEUE_WANTED)
    assert redis.scard(keys.ready_set("a")) == 1  # the second VM stayed ready


def test_a_worker_whose_beat_expired_loses_its_requests(store, redis):
    store.queue.beat("short", ttl_seconds=60)
    wait(store, rq("r1", "a", worker="short"))
    redis.delete(keys.queue_worker("short"))  # its TTL ran out
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == []
    assert status(store, "r1") == "gone" and store.queue.demand() == {}
    assert redis.smembers(keys.ready_set("a")) == {"a1"}


def test_a_request_long_past_its_deadline_is_dropped(store, redis):
    wait(store, rq("old", "a"), rq("late", "a"))
    now_ms = int(time.time() * 1000)
    redis.hset(keys.queue_request("old"), "deadline", now_ms - 31_000)  # past the 30 s grace
    redis.hset(keys.queue_request("late"), "deadline", now_ms - 5_000)  # within it
    ready(redis, "a", "a1", "a2")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["late"]
    assert status(store, "old") == "gone" and store.queue.demand() == {}


# -- 8. the tenant's count goes down once when its VM leaves running ----------------------------------


def test_move_out_of_running_releases_the_tenant_once(store, redis):
    v1, v2 = hold(store, redis, "x", 2, pool="p")
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "2"}
    assert store.vms.move("p", v1, VMState.RUNNING, VMState.COMPLETED)
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert redis.hgetall(keys.TENANT_HELD) == {v2: "x"}
    # v1 is no longer running: nothing releases it again
    assert not store.vms.move("p", v1, VMState.RUNNING, VMState.COMPLETED)
    assert not store.vms.return_vm(v1, "p")
    assert store.vms.retire("p", v1, ttl_seconds=0)
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert store.vms.move("p", v2, VMState.RUNNING, VMState.COMPLETED)
    assert not redis.exists(keys.TENANT_RUNNING, keys.TENANT_HELD)  # 0 is deleted, never negative
    assert not store.vms.move("p", v2, VMState.RUNNING, VMState.COMPLETED)
    assert not redis.exists(keys.TENANT_RUNNING)


def test_retire_of_a_running_vm_releases_the_tenant(store, redis):
    v1, v2 = hold(store, redis, "x", 2, pool="p")
    assert store.vms.retire("p", v1, ttl_seconds=0, src=VMState.RUNNING)
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert not store.vms.retire("p", v1, ttl_seconds=0, src=VMState.RUNNING)
    assert store.vms.retire("p", v1, ttl_seconds=0)  # gone from every set already
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert store.vms.retire("p", v2, ttl_seconds=60, fields={"destroyed": NOW})
    assert not redis.exists(keys.TENANT_RUNNING, keys.TENANT_HELD)
    assert not redis.exists(keys.running_set("p"), keys.migrating_set("p"), keys.active_hash("p"))


def test_retire_of_a_vm_not_running_leaves_the_count(store, redis):
    (v1,) = hold(store, redis, "x", 1, pool="p")
    ready(redis, "p", "spare")
    assert store.vms.retire("p", "spare", ttl_seconds=0)
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert redis.hgetall(keys.TENANT_HELD) == {v1: "x"}


def test_return_releases_the_tenant(store, redis):
    v1, v2 = hold(store, redis, "x", 2, pool="p")
    assert store.vms.return_vm(v1, "p")
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert not store.vms.return_vm(v1, "p")
    assert redis.hgetall(keys.TENANT_RUNNING) == {"x": "1"}
    assert store.vms.return_vm(v2, "p")
    assert not redis.exists(keys.TENANT_RUNNING, keys.TENANT_HELD)


# -- 9. what the queue shows --------------------------------------------------------------------------


def test_view_counts_by_pool_priority_and_tenant(store, redis):
    assert store.queue.view().depth == 0 and store.queue.view().oldest_wait_seconds == 0.0
    wait(
        store,
        rq("r1", "a", "a", priority=1, tenant="A"),
        rq("r2", "b", tenant="B"),
        rq("r3", "a", "b", tenant="A"),
        rq("r4", "c", priority=3),
    )
    view = store.queue.view()
    assert view.depth == 4
    assert view.by_pool == {"a": 3, "b": 2, "c": 1}
    assert view.by_priority == {1: 1, 2: 2, 3: 1}
    assert view.by_tenant == {"A": 2, "B": 1, "": 1}
    assert 0.0 <= view.oldest_wait_seconds < 5.0


def test_position_is_one_based_in_priority_then_arrival_order(store, redis):
    wait(store, rq("r1", "a"), rq("r2", "a", priority=3), rq("r3", "a"))
    assert [store.queue.position(r) for r in ("r1", "r3", "r2")] == [1, 2, 3]
    wait(store, rq("urgent", "a", priority=1))
    assert [store.queue.position(r) for r in ("urgent", "r1", "r3", "r2")] == [1, 2, 3, 4]
    assert store.queue.position("unknown") is None
    store.queue.cancel("r1", NO_LIMITS, now=NOW, give_back=False)
    assert store.queue.position("r3") == 2


# -- requests nobody waits for any more; clocks ---------------------------------------------------------


def test_a_waiting_request_never_expires_and_a_sweep_drops_a_dead_workers_demand(store, redis):
    wait(store, rq("r1", "a"))
    assert redis.ttl(keys.queue_request("r1")) == -1  # no TTL while it waits: its counts cannot leak
    redis.delete(keys.queue_worker("w1"))  # its API worker died
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == []  # no ready VM: a plain dispatch has no work
    assert store.queue.demand() == {"a": 1}
    assert store.queue.dispatch(NO_LIMITS, now=NOW, sweep=True) == []
    assert redis.zcard(keys.QUEUE) == 0
    assert store.queue.demand() == {} and not redis.exists(keys.QUEUE_WANTED)
    assert redis.hget(keys.queue_request("r1"), "status") == "gone"
    assert 0 < redis.ttl(keys.queue_request("r1")) <= 300


def test_a_dispatcher_whose_clock_runs_ahead_does_not_drop_a_live_request(store, redis, monkeypatch):
    # deadlines are in Redis's clock: a host whose clock runs 2 minutes ahead drops nothing
    import types

    import vmpooler.store.queue as queue_module

    wait(store, rq("r1", "a"))  # wait_seconds=60
    real = time.time
    monkeypatch.setattr(queue_module, "time", types.SimpleNamespace(time=lambda: real() + 120))
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]


# -- fair share when VMs come back at once (stride scheduling) ----------------------------------------


def serve_one_at_a_time(store: Store, redis, n: int, settings: QueueSettings = NO_LIMITS) -> list[str]:
    """Make one VM ready at a time, dispatch, and return it at once (no tenant ever holds one when the
    next comes): the tenants of the requests served, in order."""
    tenants = []
    for i in range(n):
        ready(redis, "a", f"a{i}")
        (request_id,) = store.queue.dispatch(settings, now=NOW)
        tenants.append(store.queue.status(request_id)["tenant"])
        assert store.vms.return_vm(f"a{i}", "a")
    return tenants


def test_tenants_that_return_their_vms_at_once_still_take_turns(store, redis):
    # t0 queued all its requests first: without a memory of past service, FIFO would serve t0 three times
    wait(store, *(rq(f"t0-{i}", "a", tenant="t0") for i in range(3)))
    wait(store, *(rq(f"t1-{i}", "a", tenant="t1") for i in range(3)))
    wait(store, *(rq(f"t2-{i}", "a", tenant="t2") for i in range(3)))
    assert serve_one_at_a_time(store, redis, 6) == ["t0", "t1", "t2", "t0", "t1", "t2"]


def test_a_heavier_tenant_gets_its_weight_in_turns(store, redis):
    settings = QueueSettings(tenants=(("heavy", 2.0, None),))
    wait(store, *(rq(f"l-{i}", "a", tenant="light") for i in range(6)))
    wait(store, *(rq(f"h-{i}", "a", tenant="heavy") for i in range(6)))
    served = serve_one_at_a_time(store, redis, 9, settings)
    assert served.count("heavy") == 6 and served.count("light") == 3, served


def test_a_tenant_back_from_idle_gets_no_hoarded_credit(store, redis):
    wait(store, rq("x-0", "a", tenant="x"))
    assert serve_one_at_a_time(store, redis, 1) == ["x"]
    wait(store, *(rq(f"y-{i}", "a", tenant="y") for i in range(14)))
    assert serve_one_at_a_time(store, redis, 10) == ["y"] * 10  # x is idle meanwhile
    wait(store, *(rq(f"x-{i}", "a", tenant="x") for i in range(1, 5)))
    # x was served 1, y 10: x starts from where y stands, so they alternate (not 9 x in a row)
    assert serve_one_at_a_time(store, redis, 4) == ["x", "y", "x", "y"]


# -- VMs served to a worker that died before answering ------------------------------------------------


def test_vms_served_to_a_dead_workers_request_go_back_to_ready(store, redis):
    wait(store, rq("r1", "a", tenant="t"))
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]  # served, and then its worker dies
    assert redis.zscore(keys.QUEUE_SERVED, "r1") is not None
    redis.delete(keys.queue_worker(WORKER))
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == []  # under 5 s: its worker may yet answer
    assert redis.smembers(keys.running_set("a")) == {"a1"}
    redis.zadd(keys.QUEUE_SERVED, {"r1": 1})  # as if served long ago
    store.queue.dispatch(NO_LIMITS, now=NOW)
    assert redis.smembers(keys.running_set("a")) == set()
    assert redis.smembers(keys.ready_set("a")) == {"a1"}
    assert redis.hget(keys.TENANT_RUNNING, "t") is None and redis.hget(keys.TENANT_HELD, "a1") is None
    assert status(store, "r1") == "gone" and redis.zcard(keys.QUEUE_SERVED) == 0


def test_a_request_answered_in_time_keeps_its_vms(store, redis):
    wait(store, rq("r1", "a"))
    ready(redis, "a", "a1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]
    store.queue.delivered("r1")  # the API answered
    redis.delete(keys.queue_worker(WORKER))  # and then its worker stopped
    store.queue.dispatch(NO_LIMITS, now=NOW)
    assert redis.smembers(keys.running_set("a")) == {"a1"} and status(store, "r1") == "served"


def test_a_stopping_worker_gives_back_its_waiters_places_and_vms(store, redis):
    from vmpooler.http.waiting import Waiters

    waiters = Waiters(store, capacity=10)
    waiters.worker = WORKER
    try:
        for request_id in ("r1", "r2"):
            assert waiters.enter(request_id, None) is not None
        wait(store, rq("r1", "a"), rq("r2", "b"))
        ready(redis, "a", "a1")
        assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["r1"]  # served; its thread has not answered
        waiters.abandon(NO_LIMITS, NOW)
        assert redis.smembers(keys.ready_set("a")) == {"a1"}  # back
        assert redis.zcard(keys.QUEUE) == 0 and store.queue.demand() == {}
        assert status(store, "r1") == "gone" and status(store, "r2") == "gone"
        assert not redis.exists(keys.queue_worker(WORKER))
    finally:
        waiters.stop()


def test_the_index_by_priority_and_tenant_follows_the_queue(store, redis):
    def index() -> dict[str, Any]:
        found = {}
        for key in redis.scan_iter(match=f"{keys.QUEUE_BY_TENANT}*"):
            found[key] = redis.zrange(key, 0, -1)
        for key in redis.scan_iter(match=f"{keys.QUEUE_TENANTS}*"):
            found[key] = sorted(redis.smembers(key))
        return found

    wait(store, rq("a1", "a", tenant="t"), rq("a2", "a", tenant="u", priority=1), rq("b1", "b", tenant="t"))
    wait(store, rq("dead", "a", tenant="v", worker="gone-worker"))
    assert index() == {
        f"{keys.QUEUE_BY_TENANT}2__t": ["a1", "b1"],
        f"{keys.QUEUE_BY_TENANT}1__u": ["a2"],
        f"{keys.QUEUE_BY_TENANT}2__v": ["dead"],
        f"{keys.QUEUE_TENANTS}2": ["t", "v"],
        f"{keys.QUEUE_TENANTS}1": ["u"],
    }
    ready(redis, "a", "v1")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["a2"]  # priority 1 (it read no further)
    assert status(store, "dead") == "waiting"
    assert store.queue.dispatch(NO_LIMITS, now=NOW, sweep=True) == []  # a sweep reads every request
    assert status(store, "dead") == "gone"
    store.queue.cancel("b1", NO_LIMITS, now=NOW, give_back=False)
    assert index() == {f"{keys.QUEUE_BY_TENANT}2__t": ["a1"], f"{keys.QUEUE_TENANTS}2": ["t"]}
    ready(redis, "a", "v2")
    assert store.queue.dispatch(NO_LIMITS, now=NOW) == ["a1"]
    assert index() == {} and redis.zcard(keys.QUEUE) == 0 and store.queue.demand() == {}
