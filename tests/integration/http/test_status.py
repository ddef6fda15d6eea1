"""Status, statistics, config and service endpoints."""

from __future__ import annotations

import json
import re

import pytest
from falcon import testing
from prometheus_client import REGISTRY

from tests.integration.http.conftest import (
    BASE_CONFIG,
    CENTOS,
    DEB,
    NODOMAIN,
    TODAY,
    WIN,
    add_ready,
    add_running,
    with_config,
)
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.http.app import create_app
from vmpooler.store import Store

pytestmark = pytest.mark.integration

OK_MESSAGE = "Battle station fully armed and operational."
NO_STATS = {"duration": {"average": 0, "min": 0, "max": 0, "total": 0}, "count": {"total": 0}}


def seed_everything(redis) -> None:
    add_ready(redis, DEB, "d1", "d2")
    add_running(redis, DEB, "d3")
    redis.sadd(keys.pending_set(DEB), "d4")
    redis.sadd(keys.completed_set(DEB), "d5")
    add_ready(redis, CENTOS, "c1")
    redis.sadd(keys.pending_set(CENTOS), "c2", "c3")
    redis.set(keys.TASKS_CLONE, "2")
    redis.set(keys.TASKS_ONDEMANDCLONE, "1")
    # on-demand VMs not cloning yet: 3 of a request not taken in, 1 queued of a request taken in
    redis.zadd(keys.PROVISIONING_REQUEST, {"req-1": 1})
    redis.hset(keys.odrequest("req-1"), "requested", f"debian:{DEB}:2,centos:{CENTOS}:1")
    redis.zadd(keys.PROVISIONING_PROCESSING, {"req-2": 1})
    redis.zadd(keys.ODCREATE_TASK, {f"debian:{DEB}:1:req-2": 1})
    redis.hset(
        keys.clone_stats(TODAY),
        mapping={f"{DEB}:d1": "10.5", f"{DEB}:d2": "20", f"{CENTOS}:c1": "30"},
    )
    redis.hset(keys.clone_stats("2026-11-20"), mapping={f"{DEB}:old": "1000"})
    redis.hset(keys.boot_stats(TODAY), mapping={f"{CENTOS}:c1": "100"})
    redis.hset(keys.LASTBOOT, mapping={DEB: "2026-11-21 09:00:00 +0000"})
    # a pool that is not configured (any more) counts nowhere
    add_ready(redis, "retired", "r1")


FULL_STATUS = {
    "boot": {
        "duration": {"average": 100.0, "min": 100.0, "max": 100.0, "total": 100.0},
        "count": {"total": 1},
    },
    "capacity": {"current": 3, "total": 6, "percent": 50.0},
    "health": {
        "status": "healthy",
        "providers": {},
        "dlq": {"clone": 0, "pending": 0, "ready": 0},
        "pools": {},
    },
    "clone": {"duration": {"average": 20.17, "min": 10.5, "max": 30.0, "total": 60.5}, "count": {"total": 3}},
    "pools": {
        DEB: {
            "ready": 2,
            "running": 1,
            "pending": 1,
            "max": 3,
            "lastBoot": "2026-11-21 09:00:00 +0000",
            "alias": ["debian"],
        },
        CENTOS: {"ready": 1, "running": 0, "pending": 2, "max": 2, "lastBoot": "", "alias": "centos"},
        WIN: {"ready": 0, "running": 0, "pending": 0, "max": 1, "lastBoot": ""},
        NODOMAIN: {"ready": 0, "running": 0, "pending": 0, "max": 0, "lastBoot": ""},
    },
    "queue": {
        "requested": 4,
        "pending": 3,
        "cloning": 3,
        "booting": 0,
        "ready": 3,
        "running": 1,
        "completed": 1,
        "total": 12,
        "waiting": 0,
        "waiting_oldest_seconds": 0.0,
    },
    "status": {"ok": False, "message": "Found 1 empty pools.", "empty": [WIN], "uptime": 90.0},
}


# -- /status -------------------------------------------------------------------------------------------


def test_status_full_body(api, redis):
    seed_everything(redis)
    resp = api.get("/api/v3/status")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.text.startswith('{\n  "boot": {\n')  # pretty-printed, keys sorted
    assert resp.json == FULL_STATUS
    assert list(resp.json) == ["boot", "capacity", "clone", "health", "pools", "queue", "status"]


def test_status_with_no_vms_at_all(api):
    body = api.get("/api/v3/status").json
    assert body["capacity"] == {"current": 0, "total": 6, "percent": 0.0}
    assert body["clone"] == NO_STATS
    assert body["boot"] == NO_STATS
    assert body["queue"] == dict.fromkeys(
        (
            "requested", "pending", "cloning", "booting", "ready", "running", "completed", "total",
            "waiting", "waiting_oldest_seconds",
        ),
        0,
    )  # fmt: skip
    assert body["status"] == {
        "ok": False,
        "message": "Found 3 empty pools.",
        "empty": [DEB, CENTOS, WIN],
        "uptime": 90.0,
    }


def test_status_ok_when_no_pool_is_empty(api, redis):
    add_ready(redis, DEB, "d1")
    add_ready(redis, CENTOS, "c1")
    add_ready(redis, WIN, "w1")
    api.clock.advance(10.3)
    body = api.get("/api/v3/status?view=").json
    assert body == {"status": {"ok": True, "message": OK_MESSAGE, "uptime": 100.3}}


def test_status_capacity_uses_the_pool_size_override(api, redis):
    seed_everything(redis)
    redis.hset(keys.config_override("poolsize"), mapping={CENTOS: "5", NODOMAIN: "1"})
    body = api.get("/api/v3/status?view=capacity,pools").json
    assert body["capacity"] == {"current": 3, "total": 10, "percent": 30.0}
    assert body["pools"][CENTOS]["max"] == 5
    assert body["pools"][NODOMAIN]["max"] == 1
    assert body["status"]["empty"] == [WIN, NODOMAIN]


def test_status_percent_has_one_decimal(api, redis):
    add_ready(redis, DEB, "d1")
    assert api.get("/api/v3/status?view=capacity").json["capacity"] == {
        "current": 1,
        "total": 6,
        "percent": 16.7,
    }


@pytest.mark.parametrize(
    ("query", "sections"),
    [
        ("?view=pools,capacity", ["capacity", "pools", "status"]),
        ("?view=", ["status"]),
        ("?view", ["boot", "capacity", "clone", "health", "pools", "queue", "status"]),
        ("", ["boot", "capacity", "clone", "health", "pools", "queue", "status"]),
        ("?view=bogus,queue,status", ["queue", "status"]),
        ("?view=bogus", ["status"]),
        ("?view=clone%2Cboot", ["boot", "clone", "status"]),  # as requests encodes the comma
    ],
)
def test_status_views(api, redis, query, sections):
    seed_everything(redis)
    body = api.get(f"/api/v3/status{query}").json
    assert list(body) == sections
    assert body == {name: FULL_STATUS[name] for name in sections}


def test_status_is_cached_per_view_when_configured(make_api, redis):
    api = make_api(with_config("status_cache_seconds: 30"))
    assert api.get("/api/v3/status?view=capacity").json["capacity"]["current"] == 0
    add_ready(redis, DEB, "d1")
    api.clock.advance(29)
    assert api.get("/api/v3/status?view=capacity").json["capacity"]["current"] == 0
    assert api.get("/api/v3/status?view=capacity,queue").json["capacity"]["current"] == 1
    api.clock.advance(2)
    assert api.get("/api/v3/status?view=capacity").json["capacity"]["current"] == 1


def test_status_is_not_cached_by_default(api, redis):
    assert api.get("/api/v3/status?view=capacity").json["capacity"]["current"] == 0
    add_ready(redis, DEB, "d1")
    assert api.get("/api/v3/status?view=capacity").json["capacity"]["current"] == 1


# -- /poolstat and /totalrunning -----------------------------------------------------------------------


def test_poolstat_by_name_and_alias(api, redis):
    seed_everything(redis)
    resp = api.get(f"/api/v3/poolstat?pool={DEB},centos,nosuchpool")
    assert resp.status_code == 200
    assert resp.json == {
        "pools": {
            DEB: {"max": 3, "alias": ["debian"], "ready": 2},
            CENTOS: {"max": 2, "alias": "centos", "ready": 1},
        }
    }


def test_poolstat_by_list_alias_and_dotted_name(api, redis):
    add_ready(redis, WIN, "w1")
    assert api.get(f"/api/v3/poolstat?pool=debian,{WIN}").json == {
        "pools": {DEB: {"max": 3, "alias": ["debian"], "ready": 0}, WIN: {"max": 1, "ready": 1}}
    }


@pytest.mark.parametrize("query", ["", "?pool=", "?pool=nosuchpool"])
def test_poolstat_without_known_pools_is_empty(api, redis, query):
    seed_everything(redis)
    resp = api.get(f"/api/v3/poolstat{query}")
    assert resp.status_code == 200
    assert resp.json == {"pools": {}}


def test_totalrunning(api, redis):
    assert api.get("/api/v3/totalrunning").json == {"running": 0}
    add_running(redis, DEB, "d1")
    add_running(redis, DEB, "d2")
    add_running(redis, CENTOS, "c1")
    add_running(redis, "retired", "r1")
    resp = api.get("/api/v3/totalrunning")
    assert resp.status_code == 200
    assert resp.json == {"running": 3}


# -- /summary ------------------------------------------------------------------------------------------


def dur(average, low, high, total, **pools):
    return {"average": average, "min": low, "max": high, "total": total, "pool": pools}


def pool_dur(total, average, low, high):
    return {"total": total, "average": average, "min": low, "max": high}


def task(duration, total, **pool_counts):
    return {
        "duration": duration,
        "count": {"total": total, "pool": {p: {"total": n} for p, n in pool_counts.items()}},
    }


EMPTY_DAY_TASK = task(dur(0, 0, 0, 0), 0)


def seed_range(redis) -> None:
    for date in ("2026-11-18", "2026-11-22"):
        redis.hset(keys.boot_stats(date), f"{DEB}:outside", "999")
        redis.hset(keys.clone_stats(date), f"{DEB}:outside", "999")
        redis.hset(keys.tag_stats(date), "outside:project", "gamma")
    redis.hset(keys.boot_stats("2026-11-19"), mapping={f"{DEB}:a": "10", f"{CENTOS}:b": "30"})
    redis.hset(keys.boot_stats("2026-11-21"), mapping={f"{DEB}:c": "20"})
    redis.hset(keys.clone_stats("2026-11-20"), mapping={f"{DEB}:a": "5.5"})
    redis.hset(keys.tag_stats("2026-11-19"), mapping={"a:project": "alpha", "b:project": "beta"})
    redis.hset(keys.tag_stats("2026-11-21"), mapping={"c:project": "alpha", "c:owner": "bob"})


RANGE_BOOT = task(
    dur(
        20.0,
        10.0,
        30.0,
        60.0,
        **{DEB: pool_dur(30.0, 15.0, 10.0, 20.0), CENTOS: pool_dur(30.0, 30.0, 30.0, 30.0)},
    ),
    3,
    **{DEB: 2, CENTOS: 1},
)
RANGE_CLONE = task(dur(5.5, 5.5, 5.5, 5.5, **{DEB: pool_dur(5.5, 5.5, 5.5, 5.5)}), 1, **{DEB: 1})
DAILY = [
    {
        "date": "2026-11-19",
        "boot": task(
            dur(
                20.0,
                10.0,
                30.0,
                40.0,
                **{DEB: pool_dur(10.0, 10.0, 10.0, 10.0), CENTOS: pool_dur(30.0, 30.0, 30.0, 30.0)},
            ),
            2,
            **{DEB: 1, CENTOS: 1},
        ),
        "clone": EMPTY_DAY_TASK,
        "tag": {"project": {"alpha": 1, "beta": 1, "total": 2}},
    },
    {"date": "2026-11-20", "boot": EMPTY_DAY_TASK, "clone": RANGE_CLONE, "tag": {}},
    {
        "date": "2026-11-21",
        "boot": task(dur(20.0, 20.0, 20.0, 20.0, **{DEB: pool_dur(20.0, 20.0, 20.0, 20.0)}), 1, **{DEB: 1}),
        "clone": EMPTY_DAY_TASK,
        "tag": {"owner": {"bob": 1, "total": 1}, "project": {"alpha": 1, "total": 1}},
    },
]
RANGE = "?from=2026-11-19&to=2026-11-21"


def test_summary_defaults_to_today(api, redis):
    seed_range(redis)
    resp = api.get("/api/v3/summary")
    assert resp.status_code == 200
    today = DAILY[2]
    assert resp.json == {
        "boot": today["boot"],
        "clone": EMPTY_DAY_TASK,
        "tag": today["tag"],
        "daily": [today],
    }


def test_summary_range_with_daily_and_per_pool_breakdown(api, redis):
    """Range-level average/min/max are filled in (the original left them out)."""
    seed_range(redis)
    resp = api.get(f"/api/v3/summary{RANGE}")
    assert resp.status_code == 200
    assert resp.json == {
        "boot": RANGE_BOOT,
        "clone": RANGE_CLONE,
        "tag": {"project": {"alpha": 2, "beta": 1, "total": 3}, "owner": {"bob": 1, "total": 1}},
        "daily": DAILY,
    }


def test_summary_from_only_runs_to_today(api, redis):
    seed_range(redis)
    body = api.get("/api/v3/summary?from=2026-11-20").json
    assert [day["date"] for day in body["daily"]] == ["2026-11-20", "2026-11-21"]
    assert body["boot"]["count"]["total"] == 1
    assert body["clone"]["count"]["total"] == 1


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?from=2026/11/19", "Invalid date format '2026/11/19', must match YYYY-MM-DD."),
        ("?from=2026-11-1", "Invalid date format '2026-11-1', must match YYYY-MM-DD."),
        ("?from=2026-02-30", "Invalid date format '2026-02-30', must match YYYY-MM-DD."),
        ("?from=2026-11-19&to=tomorrow", "Invalid date format 'tomorrow', must match YYYY-MM-DD."),
        ("?from=2026-11-20&to=2026-11-19", "Date range is invalid, 'to' cannot come before 'from'."),
        ("?to=2026-11-20", "Date range is invalid, 'to' cannot come before 'from'."),
        ("?from=2026-11-22&to=2026-11-23", "Date range is invalid, 'from' must be in the past."),
    ],
)
@pytest.mark.parametrize("path", ["/summary", "/summary/boot", "/summary/tag/project"])
def test_summary_bad_dates_are_400_json(api, query, error, path):
    resp = api.get(f"/api/v3{path}{query}")
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    assert resp.json == {"ok": False, "error": error}


def test_summary_boot(api, redis):
    seed_range(redis)
    resp = api.get(f"/api/v3/summary/boot{RANGE}")
    assert resp.status_code == 200
    assert resp.json == {
        "boot": RANGE_BOOT,
        "daily": [{"date": day["date"], "boot": day["boot"]} for day in DAILY],
    }


def test_summary_clone_duration(api, redis):
    seed_range(redis)
    resp = api.get(f"/api/v3/summary/clone/duration{RANGE}")
    assert resp.status_code == 200
    assert resp.json == {
        "clone": {"duration": RANGE_CLONE["duration"]},
        "daily": [
            {"date": "2026-11-19", "clone": {"duration": EMPTY_DAY_TASK["duration"]}},
            {"date": "2026-11-20", "clone": {"duration": RANGE_CLONE["duration"]}},
            {"date": "2026-11-21", "clone": {"duration": EMPTY_DAY_TASK["duration"]}},
        ],
    }


def test_summary_boot_count_today(api, redis):
    seed_range(redis)
    assert api.get("/api/v3/summary/boot/count").json == {
        "boot": {"count": {"total": 1, "pool": {DEB: {"total": 1}}}},
        "daily": [{"date": TODAY, "boot": {"count": {"total": 1, "pool": {DEB: {"total": 1}}}}}],
    }


def test_summary_tag_by_name(api, redis):
    seed_range(redis)
    resp = api.get(f"/api/v3/summary/tag/project{RANGE}")
    assert resp.status_code == 200
    assert resp.json == {
        "tag": {"project": {"alpha": 2, "beta": 1, "total": 3}},
        "daily": [
            {"date": "2026-11-19", "tag": {"project": {"alpha": 1, "beta": 1, "total": 2}}},
            {"date": "2026-11-20", "tag": {}},
            {"date": "2026-11-21", "tag": {"project": {"alpha": 1, "total": 1}}},
        ],
    }


@pytest.mark.parametrize("path", ["/summary/bogus", "/summary/bogus/duration", "/summary/boot/bogus"])
def test_summary_unknown_route_is_404(api, path):
    resp = api.get(f"/api/v3{path}")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


# -- GET /config ---------------------------------------------------------------------------------------

SECRET_CONFIG = """
:pools:
  - name: pool-a
    template: templates/a
    size: 2
    alias: [a]
    folder: vms/a
    api_password: hunter2
  - name: pool-b
    template: templates/b
    size: 1
    alias: b
    clone_target: cluster1
"""


def test_config_applies_overrides_and_redacts_secrets(make_api, redis):
    api = make_api(SECRET_CONFIG)
    redis.hset(keys.config_override("poolsize"), "pool-b", "4")
    redis.hset(keys.config_override("template"), "pool-a", "templates/a-new")
    redis.hset(keys.config_override("clone_target"), "pool-a", "cluster9")
    redis.hset(keys.TEMPLATE_PREPARED, mapping={"pool-a": "templates/a-new", "pool-b": "templates/old-b"})
    resp = api.get("/api/v3/config")
    assert resp.status_code == 200
    assert resp.json == {
        "pool_configuration": [
            {
                "name": "pool-a",
                "template": "templates/a-new",
                "size": 2,
                "alias": ["a"],
                "folder": "vms/a",
                "api_password": "<redacted>",
                "clone_target": "cluster9",
                "template_ready": True,
            },
            {
                "name": "pool-b",
                "template": "templates/b",
                "size": 4,
                "alias": "b",
                "clone_target": "cluster1",
                "template_ready": False,
            },
        ],
        "status": {"ok": True},
    }
    assert "hunter2" not in resp.text


def test_config_without_pools_is_404(make_api):
    api = make_api(":pools: []\n")
    resp = api.get("/api/v3/config")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


# -- service endpoints and routing ---------------------------------------------------------------------


def test_healthcheck(api):
    resp = api.get("/healthcheck")
    assert resp.status_code == 200
    assert resp.json == {"ok": True}


def test_root_redirects_to_the_dashboard(api):
    resp = api.get("/")
    assert resp.status_code == 302
    assert resp.headers["location"] == "/dashboard/"


@pytest.mark.parametrize(
    "path",
    [
        "/nosuchthing",
        "/api/v3/nosuchthing",
        "/api/v4/status",
        "/vm",
        "/status",
        "/summary",
        "/api/v3/vm/d1/bogus",
    ],
)
def test_unknown_and_unversioned_routes_are_404_json(api, path):
    for method in ("GET", "POST"):
        resp = api.simulate_request(method, path)
        assert resp.status_code == 404
        assert resp.headers["content-type"] == "application/json"
        assert resp.json == {"ok": False}


def test_wrong_method_is_405_json(api):
    resp = api.delete("/api/v3/status")
    assert resp.status_code == 405
    assert resp.json == {"ok": False}


def test_openapi_document(api):
    resp = api.get("/api/v3/openapi.json")
    assert resp.status_code == 200
    document = json.loads(resp.text)
    assert document["openapi"].startswith("3.")
    assert "/vm" in json.dumps(document["paths"])


def _checkouts_counted(api, pool: str) -> float:
    resp = api.get("/prometheus")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    found = re.search(
        rf'^vmpooler_checkout_success_total{{poolname="{re.escape(pool)}"}} (\S+)$', resp.text, re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


def test_prometheus_counts_checkouts(api, redis):
    before = _checkouts_counted(api, CENTOS)
    add_ready(redis, CENTOS, "c1", "c2")
    assert api.post(f"/api/v3/vm/{CENTOS}+{CENTOS}").status_code == 200
    assert _checkouts_counted(api, CENTOS) == before + 2


def test_an_unexpected_error_is_a_json_500_and_counted(redis_url, monkeypatch):
    store = Store.from_url(redis_url)
    try:

        def broken(names):
            raise RuntimeError("a bug")

        monkeypatch.setattr(store.stats, "pool_counts", broken)
        api = testing.TestClient(create_app(load_config_text(BASE_CONFIG, env={}), store))
        labels = {"exception": "RuntimeError"}
        before = REGISTRY.get_sample_value("vmpooler_http_exceptions_total", labels) or 0.0
        resp = api.get("/api/v3/status")
        assert (resp.status_code, resp.json) == (500, {"ok": False, "error": "internal error"})
        assert REGISTRY.get_sample_value("vmpooler_http_exceptions_total", labels) == before + 1
    finally:
        store.close()
