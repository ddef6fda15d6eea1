"""Checkouts from many processes at once against the real server: no VM is ever handed out twice."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from vmpooler import keys

pytestmark = pytest.mark.acceptance


def _checkout_many(port: int, path: str, count: int) -> list[tuple[int, dict[str, object]]]:
    """Runs in a separate process: ``count`` concurrent POSTs from a thread pool."""

    def one(_: int) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=10) as threads:
        return list(threads.map(one, range(count)))


def test_200_concurrent_checkouts_hand_out_each_vm_once(start_service, redis):
    vms = {f"vm{i:02d}" for i in range(50)}
    redis.sadd(keys.ready_set("deb"), *vms)
    service = start_service({"deb": 50}, "api", workers=2)
    with ProcessPoolExecutor(max_workers=4) as procs:
        futures = [procs.submit(_checkout_many, service.port, "/api/v3/vm/deb", 50) for _ in range(4)]
        results = [r for f in futures for r in f.result()]
    assert len(results) == 200
    handed = [body["deb"]["hostname"] for status, body in results if status == 200]
    refused = [body for status, body in results if status == 503]
    assert len(handed) == 50
    assert len(refused) == 150 and all(body == {"ok": False} for body in refused)
    assert len(set(handed)) == 50, "a VM was handed out twice"
    assert {h.split(".")[0] for h in handed} == vms
    assert all(h.endswith(".example.com") for h in handed)
    assert redis.scard(keys.ready_set("deb")) == 0
    assert redis.smembers(keys.running_set("deb")) == vms
    assert set(redis.hkeys(keys.active_hash("deb"))) == vms


def test_unmet_multi_pool_request_leaves_every_pool_as_it_was(start_service, redis):
    redis.sadd(keys.ready_set("a"), "a1", "a2", "a3")
    redis.sadd(keys.ready_set("b"), "b1")
    service = start_service({"a": 3, "b": 1, "c": 1}, "api", workers=2)
    with ProcessPoolExecutor(max_workers=3) as procs:
        futures = [procs.submit(_checkout_many, service.port, "/api/v3/vm/a+a+b+c", 20) for _ in range(3)]
        results = [r for f in futures for r in f.result()]
    assert {status for status, _ in results} == {503}
    assert redis.smembers(keys.ready_set("a")) == {"a1", "a2", "a3"}
    assert redis.smembers(keys.ready_set("b")) == {"b1"}
    for pool in ("a", "b", "c"):
        assert not redis.exists(keys.running_set(pool), keys.migrating_set(pool), keys.active_hash(pool))
    assert not any(redis.exists(keys.vm_hash(vm)) for vm in ("a1", "a2", "a3", "b1"))
