"""Checkouts that wait (issue 13) end to end: the real ``vmpooler`` (2 API workers, a manager with the
dummy provider and 1-second clones) over real HTTP, a real redis-server. Oracles are the HTTP answers
and the Redis state (ready/running sets, the queue zset and request hashes, the tenant counts), never
the log.

Where an order must be certain (priority, fair share) the waiters are queued while only the API runs
and the manager, the only source of VMs, is started after them: every waiter is known before the
first VM turns ready."""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest
import redis as redis_lib

from tests.acceptance.conftest import Service
from tests.conftest import TIMEOUT_SCALE, wait_for
from tests.support.waiting import poll
from vmpooler import keys
from vmpooler.store import Pick, Store
from vmpooler.store.queue import QueueRequest, QueueSettings

pytestmark = pytest.mark.acceptance

CONFIG = """
:config:
  api_workers: 2
  task_limit: {task_limit}
{config_extra}
:redis:
  url: '{redis_url}'
:providers:
  :dummy:
    filename: '{inventory}'
    createvm_max_time: 1
    connection_pool_size: {connections}
:pools:
{pools}
{tenants}
"""


def config_text(
    redis_url: str,
    tmp_path: Path,
    pools: list[dict[str, Any]],
    *,
    task_limit: int = 2,
    connections: int = 10,
    config_extra: str = "",
    tenants: str = "",
) -> str:
    """A full config: the given pools (name, size, max_size) on the dummy provider."""
    lines = []
    for pool in pools:
        name = pool["name"]
        line = f"  - {{name: {name}, template: t/{name}, size: {pool['size']}, provider: dummy"
        if "max_size" in pool:
            line += f", max_size: {pool['max_size']}"
        lines.append(line + "}")
    return CONFIG.format(
        task_limit=task_limit,
        config_extra=config_extra,
        redis_url=redis_url,
        inventory=tmp_path / "dummy.yaml",
        connections=connections,
        pools="\n".join(lines),
        tenants=tenants,
    )


# -- HTTP -------------------------------------------------------------------------------------------


@attrs.define
class Answer:
    status: int
    body: dict[str, Any]
    started: float  # time.monotonic() when the request was sent
    done: float  # ... when its answer had been read

    @property
    def elapsed(self) -> float:
        return self.done - self.started

    def hostnames(self, pool: str) -> list[str]:
        """The short names handed out of ``pool`` (a string or a list in the body)."""
        got = self.body[pool]["hostname"]
        hosts = [got] if isinstance(got, str) else list(got)
        return [host.split(".", 1)[0] for host in hosts]


def checkout_path(pools: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"/api/v3/vm/{pools}" + (f"?{query}" if query else "")


def checkout(
    service: Service,
    pools: str,
    *,
    conns: dict[str, http.client.HTTPConnection] | None = None,
    **params: Any,
) -> Answer:
    """One ``POST /api/v3/vm/<pools>?<params>`` on its own connection (registered in ``conns`` under
    its ``request_id``, so that another thread may cut it)."""
    wait = float(params.get("wait") or 0)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=wait + 30)
    if conns is not None:
        conns[params["request_id"]] = conn
    started = time.monotonic()
    try:
        conn.request("POST", checkout_path(pools, **params))
        resp = conn.getresponse()
        body = json.loads(resp.read())
        return Answer(resp.status, body, started, time.monotonic())
    finally:
        conn.close()


def give_back(service: Service, vm: str) -> None:
    status, body = service.call("DELETE", f"/api/v3/vm/{vm}")
    assert (status, body) == (200, {"ok": True}), f"returning {vm}: {status} {body}"


def request_status(service: Service, request_id: str) -> dict[str, Any] | None:
    status, body = service.call("GET", f"/api/v3/queue?{urlencode({'request_id': request_id})}")
    if status == 404:
        return None
    assert status == 200 and body["ok"] is True, (status, body)
    return dict(body["request"])


def queue_view(service: Service) -> dict[str, Any]:
    status, body = service.call("GET", "/api/v3/queue")
    assert status == 200 and body["ok"] is True, (status, body)
    return dict(body["queue"])


def known_request(service: Service, request_id: str) -> dict[str, Any]:
    found = request_status(service, request_id)
    assert found is not None, f"GET /queue knows no request {request_id}"
    return found


def all_waiting(service: Service, request_ids: list[str]) -> bool:
    return all((request_status(service, rid) or {}).get("status") == "waiting" for rid in request_ids)


class Background:
    """Checkouts run in threads; their answers (or exceptions) by request id."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer | BaseException] = {}
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def start(self, request_id: str, fn: Callable[[], Answer]) -> None:
        def run() -> None:
            try:
                result: Answer | BaseException = fn()
            except BaseException as exc:  # recorded for the test to look at
                result = exc
            with self.lock:
                self.answers[request_id] = result

        thread = threading.Thread(target=run, daemon=True, name=f"checkout-{request_id}")
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"checkouts still running: {alive}"

    def ok(self) -> dict[str, Answer]:
        with self.lock:
            return {rid: a for rid, a in self.answers.items() if isinstance(a, Answer) and a.status == 200}


# -- Redis oracles ------------------------------------------------------------------------------------


def running(redis: redis_lib.Redis, pool: str) -> set[str]:
    return {str(vm) for vm in redis.smembers(keys.running_set(pool))}


def ready(redis: redis_lib.Redis, pool: str) -> set[str]:
    return {str(vm) for vm in redis.smembers(keys.ready_set(pool))}


def tenant_counts(redis: redis_lib.Redis) -> dict[str, int]:
    return {str(t): int(n) for t, n in redis.hgetall(keys.TENANT_RUNNING).items() if int(n) != 0}


def served_ms(redis: redis_lib.Redis, request_id: str) -> int:
    value = redis.hget(keys.queue_request(request_id), "served")
    assert value is not None, f"request {request_id} has no 'served' time"
    return int(value)


# -- 1. a waiting checkout on an empty pool -----------------------------------------------------------


def test_a_waiting_checkout_on_an_empty_pool_is_answered_as_soon_as_a_vm_is_ready(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    text = config_text(redis_url, tmp_path, [{"name": "q", "size": 0, "max_size": 2}], task_limit=2)
    service = start_service_yaml(text)
    assert ready(redis, "q") == set()
    # without waiting an empty pool answers 503 at once, as ever
    now = checkout(service, "q")
    assert (now.status, now.body) == (503, {"ok": False})

    answer = checkout(service, "q", wait=30, tenant="alice", request_id="first-wait-01")
    assert answer.status == 200, answer.body
    assert answer.body["ok"] is True
    [vm] = answer.hostnames("q")
    # a 1 s clone made for this request: it did wait for it, and not much longer
    assert 0.9 <= answer.elapsed < 6, f"answered after {answer.elapsed:.2f} s"
    assert running(redis, "q") == {vm}
    assert vm not in ready(redis, "q")
    assert redis.zcard(keys.QUEUE) == 0
    assert redis.hget(keys.queue_request("first-wait-01"), "status") == "served"
    assert tenant_counts(redis) == {"alice": 1}
    assert redis.hget(keys.TENANT_HELD, vm) == "alice"
    view = queue_view(service)
    assert view["depth"] == 0 and view["demand"] == {}
    assert known_request(service, "first-wait-01")["status"] == "served"


# -- 2. priority ----------------------------------------------------------------------------------------


def test_a_priority_1_waiter_queued_last_is_served_first(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    # one VM at a time: a single clone slot, at most one VM ready or pending
    text = config_text(redis_url, tmp_path, [{"name": "q", "size": 0, "max_size": 1}], task_limit=1)
    service = start_service_yaml(text, "api")  # no VM can turn up until the manager starts
    background = Background()
    low = [("low-p3-aaaa", 3), ("low-p3-bbbb", 3), ("mid-p2-cccc", 2)]
    for request_id, priority in low:
        background.start(
            request_id,
            functools.partial(
                checkout, service, "q", wait=40, priority=priority, tenant="team", request_id=request_id
            ),
        )
        wait_for(functools.partial(all_waiting, service, [request_id]), 5, f"{request_id} waiting")
    assert queue_view(service)["priorities"] == {"1": 0, "2": 1, "3": 2}
    background.start(
        "high-p1-dddd",
        lambda: checkout(service, "q", wait=40, priority=1, tenant="team", request_id="high-p1-dddd"),
    )
    wait_for(lambda: all_waiting(service, ["high-p1-dddd"]), 5, "the priority-1 request waiting")
    view = queue_view(service)
    assert view["depth"] == 4 and view["priorities"] == {"1": 1, "2": 1, "3": 2}
    assert view["demand"] == {"q": 4}
    assert known_request(service, "high-p1-dddd")["position"] == 1

    start_service_yaml(text, "manager")
    background.join(60)
    served = background.ok()
    assert set(served) == {"high-p1-dddd", *(r for r, _ in low)}, background.answers
    by_served = sorted(served, key=lambda r: served_ms(redis, r))
    assert by_served == ["high-p1-dddd", "mid-p2-cccc", "low-p3-aaaa", "low-p3-bbbb"]
    # the HTTP answers came back in that order too
    by_answer = sorted(served, key=lambda r: served[r].done)
    assert by_answer == by_served
    handed = {vm for a in served.values() for vm in a.hostnames("q")}
    assert len(handed) == 4
    assert running(redis, "q") == handed
    assert redis.zcard(keys.QUEUE) == 0


# -- 3. fair share ------------------------------------------------------------------------------------------


def test_tenants_with_equal_demand_get_equal_shares_of_a_scarce_pool(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    tenants = [f"tenant{i}" for i in range(5)]
    per_tenant, wanted = 6, 25
    text = config_text(redis_url, tmp_path, [{"name": "q", "size": 0, "max_size": 2}], task_limit=2)
    service = start_service_yaml(text, "api")
    conns: dict[str, http.client.HTTPConnection] = {}
    background = Background()
    served_order: list[str] = []  # request ids, in the order their answers came
    enough = threading.Event()

    def client(request_id: str, tenant: str) -> Answer:
        answer = checkout(service, "q", conns=conns, wait=50, tenant=tenant, request_id=request_id)
        if answer.status == 200:
            with background.lock:
                served_order.append(request_id)
                if len(served_order) >= wanted:
                    enough.set()
            time.sleep(0.3)  # holds its VM briefly
            for vm in answer.hostnames("q"):
                give_back(service, vm)
        return answer

    # queued tenant by tenant: first come, first served would give the first tenants everything
    ids: dict[str, str] = {}
    for tenant in tenants:
        batch = [f"{tenant}-req-{j:02d}" for j in range(per_tenant)]
        for request_id in batch:
            ids[request_id] = tenant
            background.start(request_id, functools.partial(client, request_id, tenant))
        wait_for(functools.partial(all_waiting, service, batch), 5, f"{tenant}'s requests waiting")
    assert queue_view(service)["tenants"] == {t: per_tenant for t in tenants}

    start_service_yaml(text, "manager")
    got_enough = enough.wait(60)
    for request_id, conn in list(conns.items()):  # the rest hang up
        if request_id not in served_order and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
    background.join(30)
    assert got_enough, f"only {len(served_order)} served in 60 s"
    served = sorted(background.ok(), key=lambda r: served_ms(redis, r))
    first = served[:wanted]
    counts = Counter(ids[r] for r in first)
    shares = {t: counts.get(t, 0) for t in tenants}
    assert min(shares.values()) > 0, f"a tenant got nothing of the first {wanted}: {shares}"
    assert max(shares.values()) / min(shares.values()) <= 1.5, (
        f"unfair shares of the first {wanted} VMs: {shares}; order served: "
        + ", ".join(ids[r] for r in first)
    )


# -- 4. quota -----------------------------------------------------------------------------------------------


def test_a_tenant_at_its_quota_waits_while_others_are_served(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    text = config_text(
        redis_url,
        tmp_path,
        [{"name": "q", "size": 1, "max_size": 3}],
        task_limit=2,
        tenants=":tenants:\n  capped:\n    max_running: 1\n",
    )
    service = start_service_yaml(text)
    wait_for(lambda: len(ready(redis, "q")) == 1, 10, "a ready VM")
    held = checkout(service, "q", tenant="capped")
    assert held.status == 200, held.body
    [capped_vm] = held.hostnames("q")
    assert tenant_counts(redis) == {"capped": 1}
    wait_for(lambda: len(ready(redis, "q")) == 1, 10, "the pool refilled")

    # not waiting: over the quota is a 403 naming it, and the ready VM stays ready
    refused = checkout(service, "q", tenant="capped")
    assert refused.status == 403, refused.body
    assert refused.body["ok"] is False
    assert refused.body["quota"] == {"tenant": "capped", "max_running": 1}
    assert len(ready(redis, "q")) == 1

    background = Background()
    background.start(
        "capped-wait-01",
        lambda: checkout(service, "q", wait=30, tenant="capped", request_id="capped-wait-01"),
    )
    wait_for(lambda: all_waiting(service, ["capped-wait-01"]), 5, "capped's request waiting")
    # a VM is ready, yet capped's request waits: it is at its quota
    time.sleep(0.5)
    assert len(ready(redis, "q")) == 1
    assert known_request(service, "capped-wait-01")["status"] == "waiting"
    # another tenant's later waiting request is served meanwhile
    other = checkout(service, "q", wait=20, tenant="free", request_id="free-wait-01")
    assert other.status == 200, other.body
    [free_vm] = other.hostnames("q")
    assert known_request(service, "capped-wait-01")["status"] == "waiting"
    assert redis.zrange(keys.QUEUE, 0, -1) == ["capped-wait-01"]
    assert tenant_counts(redis) == {"capped": 1, "free": 1}

    # capped returns its VM: its waiting request is served
    give_back(service, capped_vm)
    background.join(30)
    answer = background.answers["capped-wait-01"]
    assert isinstance(answer, Answer) and answer.status == 200, answer
    [second_vm] = answer.hostnames("q")
    assert second_vm not in (capped_vm, free_vm)
    assert running(redis, "q") == {second_vm, free_vm}
    assert tenant_counts(redis) == {"capped": 1, "free": 1}
    assert redis.hget(keys.TENANT_HELD, second_vm) == "capped"
    assert redis.zcard(keys.QUEUE) == 0


# -- 5. disconnect ------------------------------------------------------------------------------------------


def raw_waiter(service: Service, path: str) -> socket.socket:
    """A client that sends a waiting checkout and reads nothing (the test closes it)."""
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
    return sock


API_ONLY_POOLS = [{"name": "q", "size": 0, "max_size": 0}]  # VMs come from the test, not a manager


def test_a_waiter_that_hangs_up_gives_its_place_up(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    service = start_service_yaml(config_text(redis_url, tmp_path, API_ONLY_POOLS), "api")
    ghost = raw_waiter(service, checkout_path("q", wait=30, tenant="ghost", request_id="ghost-req-01"))
    wait_for(lambda: all_waiting(service, ["ghost-req-01"]), 5, "the ghost's request waiting")
    ghost.close()
    wait_for(
        lambda: (request_status(service, "ghost-req-01") or {}).get("status") == "gone",
        3,
        "the request of the client that hung up marked gone",
    )
    assert redis.zcard(keys.QUEUE) == 0
    assert queue_view(service)["demand"] == {}

    # the next client gets the VM
    redis.sadd(keys.ready_set("q"), "vmq0001")
    answer = checkout(service, "q", wait=5, tenant="good", request_id="good-req-01")
    assert answer.status == 200, answer.body
    assert answer.hostnames("q") == ["vmq0001"]
    assert running(redis, "q") == {"vmq0001"}
    assert tenant_counts(redis) == {"good": 1}


def test_a_vm_allocated_to_a_waiter_that_hung_up_goes_back_to_ready(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    """The client hangs up and a VM turns up a moment later, before the API has noticed: the VM must
    not stay running for nobody, nor be kept from the next client."""
    service = start_service_yaml(config_text(redis_url, tmp_path, API_ONLY_POOLS), "api")
    handed: set[str] = set()
    ghosts = [f"ghost-req-{i:02d}" for i in range(3)]
    for i, request_id in enumerate(ghosts):
        sock = raw_waiter(service, checkout_path("q", wait=30, tenant="ghost", request_id=request_id))
        wait_for(functools.partial(all_waiting, service, [request_id]), 5, f"{request_id} waiting")
        sock.close()
        time.sleep(0.2)  # the client is gone; a VM comes, and a client who stays asks for it
        redis.sadd(keys.ready_set("q"), f"vmq{i:04d}")
        answer = checkout(service, "q", wait=3, tenant="good", request_id=f"good-req-{i:02d}")
        if answer.status == 200:
            handed.update(answer.hostnames("q"))
        # whatever the timing, within a few seconds no VM is running without a client holding it
        poll(lambda: running(redis, "q") == handed, 3 * TIMEOUT_SCALE)
        assert running(redis, "q") == handed, (
            f"a VM runs that no client received: running {sorted(running(redis, 'q'))}, handed out "
            f"over HTTP {sorted(handed)}; the next client's answer {answer.status} {answer.body}; "
            f"{request_id}: {redis.hgetall(keys.queue_request(request_id))}; "
            f"tenant counts {tenant_counts(redis)}"
        )
        assert (request_status(service, request_id) or {}).get("status") == "gone"
        assert f"vmq{i:04d}" in handed | ready(redis, "q")
    assert redis.zcard(keys.QUEUE) == 0
    assert "ghost" not in tenant_counts(redis)
    assert not any(redis.hget(keys.TENANT_HELD, vm) == "ghost" for vm in redis.hkeys(keys.TENANT_HELD))
    # and the clients who stayed got every VM
    assert handed == {f"vmq{i:04d}" for i in range(len(ghosts))}


# -- 6. many waiters at once ------------------------------------------------------------------------------


def test_200_concurrent_waiting_checkouts_each_get_a_vm_of_their_own(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    count = 200
    text = config_text(
        redis_url, tmp_path, [{"name": "q", "size": 0, "max_size": count}], task_limit=20, connections=40
    )
    service = start_service_yaml(text)
    tenants = [f"team{i}" for i in range(4)]

    def one(i: int) -> tuple[str, Answer]:
        tenant = tenants[i % len(tenants)]
        return tenant, checkout(service, "q", wait=45, tenant=tenant, request_id=f"many-req-{i:04d}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    took = time.monotonic() - started
    bad = [(a.status, a.body) for _, a in results if a.status != 200]
    assert not bad, f"{len(bad)} of {count} not served: {bad[:5]}"
    handed = [(tenant, vm) for tenant, a in results for vm in a.hostnames("q")]
    vms = [vm for _, vm in handed]
    assert len(vms) == count
    duplicates = [vm for vm, n in Counter(vms).items() if n > 1]
    assert not duplicates, f"handed out more than once: {duplicates}"
    assert running(redis, "q") == set(vms)
    assert redis.zcard(keys.QUEUE) == 0
    counts = tenant_counts(redis)
    assert sum(counts.values()) == count
    assert counts == dict(Counter(tenant for tenant, _ in handed))
    held = redis.hgetall(keys.TENANT_HELD)
    assert {vm: held.get(vm) for _, vm in handed} == {vm: tenant for tenant, vm in handed}
    assert queue_view(service)["depth"] == 0
    assert took < 45, f"200 waiters took {took:.1f} s"


def test_a_vm_served_to_an_api_worker_that_died_before_answering_goes_back(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    """A request recorded by an API worker that dies before answering: the manager clones for it, serves
    it, and once the worker's liveness key is gone its sweep takes the VM back from the dead request."""
    service = start_service_yaml(config_text(redis_url, tmp_path, [{"name": "q", "size": 0, "max_size": 1}]))
    store = Store.from_url(redis_url)
    try:
        store.queue.beat("doomed-worker", ttl_seconds=6)
        request = QueueRequest(
            request_id="doomed-req-1",
            picks=(Pick("q", ("q",)),),
            tenant="ghost",
            wait_seconds=60,
            worker="doomed-worker",
        )
        assert store.queue.enqueue(request, QueueSettings(), now="2026-11-30 12:00:00 +0000") is None

        def served() -> bool:  # the worker lives (beats) until its request is served, then dies
            store.queue.beat("doomed-worker", ttl_seconds=6)
            return redis.hget(keys.queue_request("doomed-req-1"), "status") == "served"

        wait_for(served, 30, "the manager cloning for the request and serving it")
        [vm] = redis.smembers(keys.running_set("q"))
        assert redis.zscore(keys.QUEUE_SERVED, "doomed-req-1") is not None  # nobody answered it
        wait_for(
            lambda: redis.hget(keys.queue_request("doomed-req-1"), "status") == "gone",
            40,
            "the sweep taking the VM back",
        )
        assert vm not in redis.smembers(keys.running_set("q"))
        assert "ghost" not in tenant_counts(redis)
        assert redis.zcard(keys.QUEUE_SERVED) == 0
        assert service.alive()
    finally:
        store.close()
