"""Checkout options (wait, priority, tenant, request_id), quotas and ``GET /queue`` through the Falcon app
against the real Redis. The waiting itself over real HTTP is ``tests/acceptance/test_queue_service.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.http.conftest import (
    AUTH_ENV,
    BASE_CONFIG,
    DEB,
    Api,
    add_ready,
    add_token,
    with_auth,
    with_config,
)
from vmpooler import keys

QUOTAS = BASE_CONFIG + ":tenants:\n  small:\n    max_running: 1\n  big:\n    weight: 3\n"


def checkout(api: Api, spec: str = DEB, **params: Any) -> Any:
    return api.simulate_post(f"/api/v3/vm/{spec}", params={k: str(v) for k, v in params.items()})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"wait": "-1"}, "wait must be a number of seconds >= 0"),
        ({"wait": "soon"}, "wait must be a number of seconds >= 0"),
        ({"wait": "inf"}, "wait must be a number of seconds >= 0"),
        ({"priority": "4"}, "priority must be 1 (high), 2 or 3 (low)"),
        ({"priority": "high"}, "priority must be 1 (high), 2 or 3 (low)"),
        ({"tenant": "two words"}, "tenant must match"),
        ({"request_id": "short"}, "request_id must match"),
    ],
)
def test_a_bad_option_is_a_400_that_names_it_and_changes_nothing(api, redis, params, message):
    add_ready(redis, DEB, "d1")
    resp = checkout(api, **params)
    assert resp.status_code == 400
    assert resp.json["ok"] is False and message in resp.json["error"]
    assert redis.smembers(keys.ready_set(DEB)) == {"d1"}
    assert redis.zcard(keys.QUEUE) == 0


def test_a_waiting_checkout_with_a_ready_vm_is_served_through_the_queue_at_once(api, redis):
    add_ready(redis, DEB, "d1")
    started = time.monotonic()
    resp = checkout(api, wait=30, tenant="team-a", request_id="req-00001")
    assert resp.status_code == 200
    assert time.monotonic() - started < 5
    assert resp.json == {"ok": True, DEB: {"hostname": "d1.example.com"}}
    assert redis.hget(keys.queue_request("req-00001"), "status") == "served"
    assert redis.hget(keys.TENANT_HELD, "d1") == "team-a"
    assert redis.hget(keys.TENANT_RUNNING, "team-a") == "1"


@pytest.mark.parametrize("how", ["query", "body", "header"])
def test_wait_comes_from_the_query_the_body_or_the_header(api, redis, how):
    add_ready(redis, DEB, "d1")
    if how == "query":
        resp = api.simulate_post("/api/v3/vm", body=json.dumps({DEB: 1}), params={"wait": "5"})
    elif how == "body":
        resp = api.simulate_post(
            "/api/v3/vm", body=json.dumps({DEB: 1, "wait": 5, "request_id": "body-req-1"})
        )
    else:
        resp = api.simulate_post(f"/api/v3/vm/{DEB}", headers={"X-Vmpooler-Wait": "5"})
    assert resp.status_code == 200
    assert resp.json[DEB]["hostname"] == "d1.example.com"
    if how == "body":
        assert redis.hget(keys.queue_request("body-req-1"), "status") == "served"


def test_every_option_comes_from_its_header(api, redis):
    add_ready(redis, DEB, "d1")
    headers = {
        "X-Vmpooler-Wait": "5",
        "x-vmpooler-tenant": "team-h",  # any case
        "X-Vmpooler-Priority": "3",
        "X-Vmpooler-Request-Id": "hdr-req-001",
    }
    resp = api.simulate_post(f"/api/v3/vm/{DEB}", headers=headers)
    assert resp.status_code == 200
    assert redis.hget(keys.queue_request("hdr-req-001"), "status") == "served"
    assert redis.hget(keys.TENANT_HELD, "d1") == "team-h"


@pytest.mark.parametrize(
    ("header", "value", "named"),
    [
        ("X-Vmpooler-Priority", "9", "priority"),
        ("X-Vmpooler-Tenant", "no spaces", "tenant"),
        ("X-Vmpooler-Wait", "soon", "wait"),
        ("X-Vmpooler-Request-Id", "short", "request_id"),
    ],
)
def test_a_bad_option_header_is_a_400_naming_it(api, redis, header, value, named):
    add_ready(redis, DEB, "d1")
    resp = api.simulate_post(f"/api/v3/vm/{DEB}", headers={header: value})
    assert resp.status_code == 400
    assert resp.json["error"].startswith(named)
    assert redis.smembers(keys.ready_set(DEB)) == {"d1"}


def test_the_wait_runs_out_with_a_503_that_gives_the_position(api, redis):
    resp = checkout(api, wait=0.3, request_id="late-req-1")
    assert resp.status_code == 503
    assert resp.json["queue"]["request_id"] == "late-req-1"
    assert resp.json["queue"]["position"] == 1
    assert resp.json["queue"]["waited"] >= 0.3
    assert redis.zcard(keys.QUEUE) == 0
    assert api.simulate_get("/api/v3/queue", params={"request_id": "late-req-1"}).json["request"][
        "status"
    ] == ("gone")


def test_max_checkout_wait_caps_the_wait(make_api: Callable[..., Api], redis):
    api = make_api(with_config("max_checkout_wait: 0"))
    started = time.monotonic()
    resp = checkout(api, wait=600)
    assert resp.status_code == 503 and time.monotonic() - started < 2
    assert redis.zcard(keys.QUEUE) == 0  # capped to 0: never queued


def test_a_request_id_in_use_is_a_409(api, redis):
    add_ready(redis, DEB, "d1", "d2")
    assert checkout(api, wait=5, request_id="same-id-1").status_code == 200
    resp = checkout(api, wait=5, request_id="same-id-1")
    assert resp.status_code == 409 and "already in use" in resp.json["error"]
    assert len(redis.smembers(keys.ready_set(DEB))) == 1  # the second took nothing


def test_over_quota_without_waiting_is_a_403_naming_the_quota(make_api: Callable[..., Api], redis):
    api = make_api(QUOTAS)
    add_ready(redis, DEB, "d1", "d2")
    assert checkout(api, tenant="small").status_code == 200
    resp = checkout(api, tenant="small")
    assert resp.status_code == 403
    assert resp.json["quota"] == {"tenant": "small", "max_running": 1}
    assert len(redis.smembers(keys.ready_set(DEB))) == 1  # nothing taken
    # more than the quota at all cannot be waited for either
    resp = checkout(api, f"{DEB}+{DEB}", tenant="small", wait=30)
    assert resp.status_code == 403 and redis.zcard(keys.QUEUE) == 0
    # a tenant without a quota is not limited
    assert checkout(api, tenant="big").status_code == 200


def test_the_default_quota_applies_to_tenants_not_listed(make_api: Callable[..., Api], redis):
    api = make_api(with_config("default_tenant_max_running: 1", QUOTAS))
    add_ready(redis, DEB, "d1", "d2", "d3")
    assert checkout(api, tenant="someone").status_code == 200
    assert checkout(api, tenant="someone").status_code == 403
    assert checkout(api).status_code == 200  # the anonymous tenant is never limited
    assert checkout(api).status_code == 200


def test_with_auth_priority_1_is_for_admins_and_priority_users(make_api: Callable[..., Api], redis):
    config = with_auth(with_config("priority_users: [ci]")) + "  admins: [root]\n"
    api = make_api(config, env=AUTH_ENV)
    for token, user in (("alice1", "alice"), ("ci1", "ci"), ("root1", "root")):
        add_token(redis, token, user)
    add_ready(redis, DEB, "d1", "d2")

    def as_user(token: str | None) -> Any:
        headers = {"X-AUTH-TOKEN": token} if token else {}
        return api.simulate_post(f"/api/v3/vm/{DEB}", params={"priority": "1"}, headers=headers)

    for token in (None, "alice1"):
        resp = as_user(token)
        assert resp.status_code == 403 and "priority 1" in resp.json["error"]
    assert len(redis.smembers(keys.ready_set(DEB))) == 2
    assert as_user("ci1").status_code == 200
    assert as_user("root1").status_code == 200
    assert redis.hgetall(keys.TENANT_RUNNING) == {"ci": "1", "root": "1"}  # the tenant is the token's user


def test_get_queue_counts_what_waits(api, redis):
    for request_id, tenant, priority in (("w-000001", "a", 1), ("w-000002", "a", 2), ("w-000003", "b", 2)):
        redis.hset(
            keys.queue_request(request_id),
            mapping={"picks": f"{DEB}\t{DEB}", "tenant": tenant, "priority": priority, "status": "waiting"},
        )
        redis.zadd(keys.QUEUE, {request_id: priority * 10**13 + int(time.time() * 1000) - 5000})
    redis.hset(keys.QUEUE_DEMAND, DEB, 3)
    redis.hset(keys.odrequest("od-1"), mapping={"requested": f"{DEB}:{DEB}:1", "priority": "1"})
    redis.zadd(keys.PROVISIONING_REQUEST, {"od-1": 1})
    body = api.simulate_get("/api/v3/queue").json
    queue = body["queue"]
    assert queue["depth"] == 3
    assert queue["pools"] == {DEB: 3}
    assert queue["priorities"] == {"1": 1, "2": 2, "3": 0}
    assert queue["tenants"] == {"a": 2, "b": 1}
    assert queue["demand"] == {DEB: 3}
    assert queue["ondemand"] == {"1": 1, "2": 0, "3": 0}
    assert 4 <= queue["oldest_wait_seconds"] < 60
    one = api.simulate_get("/api/v3/queue", params={"request_id": "w-000003"}).json["request"]
    assert one == {
        "request_id": "w-000003",
        "status": "waiting",
        "position": 3,
        "priority": 2,
        "tenant": "b",
        "pools": [DEB],
    }
    assert api.simulate_get("/api/v3/queue", params={"request_id": "nope-0001"}).status_code == 404
    status = api.simulate_get("/api/v3/status").json["queue"]
    assert status["waiting"] == 3 and status["waiting_oldest_seconds"] >= 4


def test_a_worker_holds_at_most_queue_waiters_and_each_id_once(redis_url: str):
    from vmpooler.http.waiting import Waiters
    from vmpooler.store import Store

    store = Store.from_url(redis_url)
    waiters = Waiters(store, capacity=2)
    try:
        first = waiters.enter("req-a", None)
        assert first is not None
        with pytest.raises(ValueError, match="already in use"):
            waiters.enter("req-a", None)  # the same id twice: refused, its slot given back
        second = waiters.enter("req-b", None)
        assert second is not None and len(waiters) == 2
        assert waiters.enter("req-c", None) is None  # full
        waiters.leave(first)
        third = waiters.enter("req-c", None)
        assert third is not None and len(waiters) == 2
        # the watcher wakes a waiter whose request a dispatch served (its id on the queue channel)
        # (published again until heard: the watcher subscribes when the first waiter enters)
        deadline = time.monotonic() + 5
        while not third.event.is_set() and time.monotonic() < deadline:
            store.client.publish(keys.QUEUE_CHANNEL, "req-x,req-c")
            third.event.wait(0.1)
        assert third.event.is_set() and not second.event.is_set()
    finally:
        waiters.stop()
        store.close()
