"""On-demand requests through the API: ``POST``/``GET``/``DELETE /ondemandvm``, on the real redis-server.

The manager's side is played by seeding its keys directly (the request's VM sets, ``status``, running VMs).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests

from tests.integration.http.conftest import (
    AUTH_ENV,
    BASE_CONFIG,
    CENTOS,
    DEB,
    NOW,
    REALM,
    WEIGHTED,
    WIN,
    Api,
    add_running,
    add_token,
    dump,
    with_auth,
    with_config,
)
from tests.support.service import start_service
from vmpooler import bus, keys
from vmpooler.store import Store
from vmpooler.store.ondemand import parse_platforms
from vmpooler.store.slots import ONDEMAND_PREFIX

pytestmark = pytest.mark.integration

DEB12 = "debian-12"
# A second pool behind the alias "debian", in another domain.
MULTI_CONFIG = (
    BASE_CONFIG
    + """  - name: debian-12
    template: templates/debian-12
    size: 1
    alias: [debian]
    dns_plugin: other
"""
)

UNWEIGHTED = """
:pools:
  - name: pool-a
    template: t/a
    size: 5
    alias: [both]
  - name: pool-b
    template: t/b
    size: 5
    alias: [both]
"""

TTL_15_DAYS = 1_296_000
UNPARSABLE = {"ok": False, "message": "JSON payload could not be parsed"}


def post(api: Api, body: Any, version: int = 3, **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return api.simulate_post(f"/api/v{version}/ondemandvm", body=data, **kwargs)


def post_spec(api: Api, spec: str, version: int = 3, **kwargs: Any) -> Any:
    return api.simulate_post(f"/api/v{version}/ondemandvm/{spec}", **kwargs)


def get(api: Api, request_id: str, version: int = 3) -> Any:
    return api.simulate_get(f"/api/v{version}/ondemandvm/{request_id}")


def delete(api: Api, request_id: str, version: int = 3, **kwargs: Any) -> Any:
    return api.simulate_delete(f"/api/v{version}/ondemandvm/{request_id}", **kwargs)


def seed_request(redis: redis_lib.Redis, request_id: str, requested: str, **fields: str) -> None:
    """A request as the API records it, plus whatever the manager wrote (``status``, ...)."""
    redis.hset(keys.odrequest(request_id), mapping={"requested": requested, **fields})
    redis.zadd(keys.PROVISIONING_REQUEST, {request_id: NOW})


def give(redis: redis_lib.Redis, request_id: str, alias: str, pool: str, *vms: str) -> None:
    """The manager gives ``vms`` (running) to the request."""
    for vm in vms:
        add_running(redis, pool, vm)
        redis.sadd(keys.odrequest_vms(request_id, alias, pool), vm)


# -- POST: accepted ------------------------------------------------------------------------------------


def test_post_records_the_request_under_a_new_uuid(api, redis):
    resp = post(api, {DEB: "2"})
    assert resp.status_code == 201
    request_id = resp.json["request_id"]
    assert resp.json == {"ok": True, "request_id": request_id}
    assert uuid.UUID(request_id).version == 4
    assert redis.hgetall(keys.odrequest(request_id)) == {"requested": f"{DEB}:{DEB}:2"}
    assert redis.zrange(keys.PROVISIONING_REQUEST, 0, -1, withscores=True) == [(request_id, NOW)]
    assert redis.zcard(keys.PROVISIONING_PROCESSING) == 0


def test_post_uses_the_given_request_id_and_integer_counts(api, redis):
    resp = post(api, {DEB: 1, "request_id": "build-42_x.y"})
    assert resp.status_code == 201
    assert resp.json == {"ok": True, "request_id": "build-42_x.y"}
    assert redis.hget(keys.odrequest("build-42_x.y"), "requested") == f"{DEB}:{DEB}:1"


def test_a_null_request_id_is_no_request_id(api, redis):
    resp = post(api, {"request_id": None, DEB: 1})
    assert resp.status_code == 201
    assert uuid.UUID(resp.json["request_id"]).version == 4


@pytest.mark.parametrize("request_id", ["\x00alias\x00", "a\x00pool\x00b", "x" * 300, "%zz"])
def test_any_id_in_the_path_is_just_not_found(api, request_id):
    for resp in (get(api, request_id), delete(api, request_id)):
        assert resp.status_code == 404
        assert resp.json == {"ok": False, "message": f"no request found for request_id '{request_id}'"}


def test_aliases_are_recorded_with_their_pool(api, redis):
    resp = post(api, {"debian": "1", "centos": 2, WIN: "1"})
    assert resp.status_code == 201
    requested = redis.hget(keys.odrequest(resp.json["request_id"]), "requested")
    assert requested == f"debian:{DEB}:1,centos:{CENTOS}:2,{WIN}:{WIN}:1"


def test_identical_picks_are_grouped_per_alias_and_pool(make_api, redis):
    api = make_api(MULTI_CONFIG)
    resp = post(api, {"debian": "10", DEB: "1"})
    assert resp.status_code == 201
    platforms = parse_platforms(redis.hget(keys.odrequest(resp.json["request_id"]), "requested"))
    pairs = [(alias, pool) for alias, pool, _ in platforms]
    assert len(pairs) == len(set(pairs))
    assert {pair for pair in pairs if pair[0] == "debian"} == {("debian", DEB), ("debian", DEB12)}
    assert sum(n for alias, _, n in platforms if alias == "debian") == 10
    assert (DEB, DEB, 1) in platforms


def test_uniform_choice_uses_every_pool_of_an_alias(make_api, redis):
    api = make_api(UNWEIGHTED)
    resp = post(api, {"both": "10"})
    platforms = parse_platforms(redis.hget(keys.odrequest(resp.json["request_id"]), "requested"))
    assert {pool for _, pool, _ in platforms} == {"pool-a", "pool-b"}


def test_weighted_choice_never_picks_weight_zero(make_api, redis):
    api = make_api(WEIGHTED)
    resp = post(api, {"both": "10", "pool2": "1"})
    requested = redis.hget(keys.odrequest(resp.json["request_id"]), "requested")
    # the original's spec: pool2 is a pool and an alias of pool1; weights pool1 5, pool2 0
    assert requested == "both:pool-b:10,pool2:pool1:1"


def test_post_publishes_one_ondemand_event_per_pool(make_api, redis, events):
    api = make_api(MULTI_CONFIG)
    subscription = events(DEB, DEB12, CENTOS, WIN)
    resp = post(api, {"debian": "6", DEB: "1", "centos": "1", "request_id": "r-events"})
    assert resp.status_code == 201
    got = subscription.read()
    platforms = parse_platforms(redis.hget(keys.odrequest("r-events"), "requested"))
    pools = {pool for _, pool, _ in platforms}
    assert sorted(got) == sorted(
        (keys.events_channel(pool), bus.OnDemandQueued(pool=pool, request_id="r-events")) for pool in pools
    )
    assert CENTOS in pools


def test_path_form_counts_each_name(api, redis, events):
    subscription = events(DEB, CENTOS)
    resp = post_spec(api, f"debian+debian+{CENTOS}")
    assert resp.status_code == 201
    request_id = resp.json["request_id"]
    assert resp.json == {"ok": True, "request_id": request_id}
    assert redis.hget(keys.odrequest(request_id), "requested") == f"debian:{DEB}:2,{CENTOS}:{CENTOS}:1"
    assert sorted(subscription.read()) == [
        (keys.events_channel(CENTOS), bus.OnDemandQueued(CENTOS, request_id)),
        (keys.events_channel(DEB), bus.OnDemandQueued(DEB, request_id)),
    ]


def test_count_equal_to_the_maximum_is_accepted(make_api):
    api = make_api(with_config("max_ondemand_instances_per_request: 3"))
    assert post(api, {DEB: "3"}).status_code == 201
    assert post_spec(api, f"{DEB}+{DEB}+{DEB}").status_code == 201


# -- POST: refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["{not json", "", '{"a": NaN}', "[1, 2]", '"debian"', "3"])
def test_unparsable_or_non_object_body_is_400(api, redis, body):
    resp = post(api, body)
    assert resp.status_code == 400
    assert resp.json == UNPARSABLE
    assert dump(redis) == {}


@pytest.mark.parametrize("body", ["null", "{}", '{"request_id": "only-an-id"}'])
def test_null_or_empty_request_is_404(api, redis, body):
    resp = post(api, body)
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == {}


def test_unknown_names_are_404_with_bad_templates(api, redis):
    resp = post(api, {DEB: "1", "pool4": "1", "nope": 2, "request_id": "r1"})
    assert resp.status_code == 404
    assert resp.json == {"ok": False, "bad_templates": ["pool4", "nope"]}
    resp = post_spec(api, f"{DEB}+pool4+pool4")
    assert resp.status_code == 404
    assert resp.json == {"ok": False, "bad_templates": ["pool4"]}
    assert dump(redis) == {}


@pytest.mark.parametrize(
    ("count", "error"),
    [
        ("0", "VM count must be at least 1"),
        (0, "VM count must be at least 1"),
        (-1, "VM count must be a valid integer"),
        ("abc", "VM count must be a valid integer"),
        (1.5, "VM count must be a valid integer"),
        (True, "VM count must be a valid integer"),
        ([1], "VM count must be a valid integer"),
        (None, "VM count is required"),
    ],
)
def test_counts_must_be_whole_numbers_of_at_least_one(api, redis, count, error):
    resp = post(api, {DEB: count})
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": error}
    assert dump(redis) == {}


@pytest.mark.parametrize(
    ("request_id", "error"),
    [
        ("", "Invalid request_id format"),
        ("a b", "Invalid request_id format"),
        ("a:b", "Invalid request_id format"),
        ("../x", "Invalid request_id format"),
        (5, "Invalid request_id format"),
        ("x" * 101, "request_id too long"),
    ],
)
def test_a_given_request_id_must_be_safe(api, redis, request_id, error):
    resp = post(api, {DEB: "1", "request_id": request_id})
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": error}
    assert dump(redis) == {}


def test_a_request_id_of_100_characters_is_accepted(api):
    resp = post(api, {DEB: "1", "request_id": "x" * 100})
    assert resp.status_code == 201


def test_more_than_the_maximum_per_name_is_403(make_api, redis):
    api = make_api()
    resp = post(api, {DEB: "1", CENTOS: "11"})
    assert resp.status_code == 403
    assert resp.json == {"ok": False, "message": "requested amount of instances exceeds the maximum 10"}
    api = make_api(with_config("max_ondemand_instances_per_request: 3"))
    resp = post_spec(api, "+".join([DEB] * 4))
    assert resp.status_code == 403
    assert resp.json == {"ok": False, "message": "requested amount of instances exceeds the maximum 3"}
    assert dump(redis) == {}


def test_an_existing_request_id_is_409_and_changes_nothing(api, redis):
    assert post(api, {DEB: "1", "request_id": "dup"}).status_code == 201
    before = dump(redis)
    resp = post(api, {CENTOS: "2", "request_id": "dup"})
    assert resp.status_code == 409
    assert resp.json == {
        "ok": False,
        "request_id": "dup",
        "message": "request_id 'dup' has already been created",
    }
    assert dump(redis) == before


# -- POST: authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-AUTH-TOKEN": "unknown"}])
def test_post_needs_a_valid_token_when_auth_is_configured(auth_api, redis, headers):
    for resp in (post(auth_api, {DEB: "1"}, headers=headers), post_spec(auth_api, DEB, headers=headers)):
        assert resp.status_code == 401
        assert resp.json == {"ok": False}
        assert resp.headers["WWW-Authenticate"] == REALM
    assert dump(redis) == {}


def test_post_with_a_token_records_its_owner(auth_api, redis):
    add_token(redis, "tok1", "alice")
    resp = post(auth_api, {DEB: "1"}, headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 201
    assert redis.hgetall(keys.odrequest(resp.json["request_id"])) == {
        "requested": f"{DEB}:{DEB}:1",
        "token:token": "tok1",
        "token:user": "alice",
    }
    resp = post_spec(auth_api, "debian", headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 201
    assert redis.hget(keys.odrequest(resp.json["request_id"]), "token:user") == "alice"


def test_the_auth_check_comes_before_the_body(auth_api):
    assert post(auth_api, "{not json").status_code == 401


def test_without_auth_a_token_is_ignored(api, redis):
    resp = post(api, {DEB: "1"}, headers={"X-AUTH-TOKEN": "whatever"})
    assert resp.status_code == 201
    assert "token:token" not in redis.hgetall(keys.odrequest(resp.json["request_id"]))


# -- POST: older API versions --------------------------------------------------------------------------


def test_v1_answer_carries_the_domain_and_v2_does_not(api, redis):
    resp = post(api, {DEB: "1"}, version=1)
    assert resp.status_code == 201
    assert resp.json == {"ok": True, "request_id": resp.json["request_id"], "domain": "example.com"}
    resp = post_spec(api, "nodomain", version=1)
    assert resp.json == {"ok": True, "request_id": resp.json["request_id"]}
    resp = post(api, {DEB: "1"}, version=2)
    assert resp.json == {"ok": True, "request_id": resp.json["request_id"]}
    assert redis.zcard(keys.PROVISIONING_REQUEST) == 3


# -- GET -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_get_unknown_request_is_404(api, version):
    resp = get(api, "nope", version)
    assert resp.status_code == 404
    assert resp.json == {"ok": False, "message": "no request found for request_id 'nope'"}


def test_get_just_created_request_is_202_with_everything_pending(api):
    request_id = post(api, {"debian": "2", CENTOS: "1"}).json["request_id"]
    resp = get(api, request_id)
    assert resp.status_code == 202
    assert resp.json == {
        "ok": True,
        "request_id": request_id,
        "ready": False,
        "debian": {"ready": "0", "pending": "2"},
        CENTOS: {"ready": "0", "pending": "1"},
    }


@pytest.mark.parametrize("version", [1, 2, 3])
def test_get_in_progress_sums_the_pools_behind_an_alias(make_api, redis, version):
    api = make_api(MULTI_CONFIG)
    seed_request(redis, "r1", f"debian:{DEB}:3,debian:{DEB12}:2,centos:{CENTOS}:1")
    give(redis, "r1", "debian", DEB, "d1", "d2")
    give(redis, "r1", "debian", DEB12, "e1")
    resp = get(api, "r1", version)
    assert resp.status_code == 202
    assert resp.json == {
        "ok": True,
        "request_id": "r1",
        "ready": False,
        "debian": {"ready": "3", "pending": "2"},
        "centos": {"ready": "0", "pending": "1"},
    }


def seed_ready(redis: redis_lib.Redis) -> None:
    seed_request(redis, "r1", f"debian:{DEB}:2,debian:{DEB12}:1,centos:{CENTOS}:1", status="ready")
    give(redis, "r1", "debian", DEB, "d2", "d1")
    give(redis, "r1", "debian", DEB12, "e1")
    give(redis, "r1", "centos", CENTOS, "c1")


@pytest.mark.parametrize("version", [2, 3])
def test_get_ready_concatenates_fqdns_of_every_pool_of_an_alias(make_api, redis, version):
    api = make_api(MULTI_CONFIG)
    seed_ready(redis)
    resp = get(api, "r1", version)
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "request_id": "r1",
        "ready": True,
        "debian": {"hostname": ["d1.example.com", "d2.example.com", "e1.other.example.net"]},
        "centos": {"hostname": ["c1.other.example.net"]},  # an array even for one host
    }


def test_get_ready_in_v1_is_short_names_and_a_domain(make_api, redis):
    api = make_api(MULTI_CONFIG)
    seed_ready(redis)
    resp = get(api, "r1", 1)
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "request_id": "r1",
        "ready": True,
        "debian": {"hostname": ["d1", "d2", "e1"]},
        "centos": {"hostname": ["c1"]},
        "domain": "example.com",
    }


@pytest.mark.parametrize("version", [1, 2, 3])
def test_get_failed_names_the_configured_ttl(make_api, redis, version):
    api = make_api(with_config("ondemand_request_ttl: 42"))
    seed_request(redis, "r1", f"{DEB}:{DEB}:1", status="failed")
    resp = get(api, "r1", version)
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "request_id": "r1",
        "ready": False,
        "message": "The request failed to provision instances within the configured"
        " ondemand_request_ttl '42'",
    }


def test_get_failed_adds_the_managers_reason(api, redis):
    seed_request(redis, "r1", f"{DEB}:{DEB}:1", status="failed", failure_reason="Max retry attempts exceeded")
    resp = get(api, "r1")
    assert resp.status_code == 200
    assert resp.json["failure_reason"] == "Max retry attempts exceeded"
    assert "'5'" in resp.json["message"]  # the default ttl


@pytest.mark.parametrize("version", [1, 2, 3])
def test_get_deleted(api, redis, version):
    seed_request(redis, "r1", f"{DEB}:{DEB}:1", status="deleted")
    resp = get(api, "r1", version)
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "request_id": "r1",
        "ready": False,
        "message": "The request has been deleted",
    }


def test_get_needs_no_token(auth_api, redis):
    seed_request(redis, "r1", f"{DEB}:{DEB}:1")
    assert get(auth_api, "r1").status_code == 202


# -- DELETE --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_delete_unknown_request_is_404(api, version):
    resp = delete(api, "nope", version)
    assert resp.status_code == 404
    assert resp.json == {"ok": False, "message": "no request found for request_id 'nope'"}


def test_delete_returns_the_running_vms_and_keeps_the_request_15_days(make_api, redis, events):
    api = make_api(MULTI_CONFIG)
    request_id = post(api, {"debian": "3", CENTOS: "1", "request_id": "r-del"}).json["request_id"]
    platforms = parse_platforms(redis.hget(keys.odrequest(request_id), "requested"))
    given: list[tuple[str, str]] = []
    for n, (alias, pool, _) in enumerate(platforms):
        give(redis, request_id, alias, pool, f"vm{n}")
        given.append((pool, f"vm{n}"))
    # the manager moved the request along and queued one of its clones; another request's task stays
    redis.zrem(keys.PROVISIONING_REQUEST, request_id)
    redis.zadd(keys.PROVISIONING_PROCESSING, {request_id: NOW})
    redis.zadd(keys.ODCREATE_TASK, {f"debian:{DEB}:1:{request_id}": NOW, f"debian:{DEB}:1:other": NOW})
    # a VM of the request that is no longer running is left where it is, with no event
    redis.sadd(keys.odrequest_vms(request_id, CENTOS, CENTOS), "gone")
    redis.sadd(keys.completed_set(CENTOS), "gone")
    subscription = events(DEB, DEB12, CENTOS)

    resp = delete(api, request_id)
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    for pool, vm in given:
        assert not redis.sismember(keys.running_set(pool), vm)
        assert redis.sismember(keys.completed_set(pool), vm)
        assert redis.hget(keys.active_hash(pool), vm) is None
    assert redis.smembers(keys.completed_set(CENTOS)) == {"gone", *(vm for p, vm in given if p == CENTOS)}
    assert sorted(subscription.read()) == sorted(
        (keys.events_channel(pool), bus.Returned(pool=pool, vm=vm)) for pool, vm in given
    )
    for alias, pool, _ in platforms:
        assert not redis.exists(keys.odrequest_vms(request_id, alias, pool))
    assert redis.hget(keys.odrequest(request_id), "status") == "deleted"
    assert TTL_15_DAYS - 5 <= redis.ttl(keys.odrequest(request_id)) <= TTL_15_DAYS
    assert redis.zcard(keys.PROVISIONING_REQUEST) == 0
    assert redis.zcard(keys.PROVISIONING_PROCESSING) == 0
    assert redis.zrange(keys.ODCREATE_TASK, 0, -1) == [f"debian:{DEB}:1:other"]

    assert get(api, request_id).json["message"] == "The request has been deleted"
    before = dump(redis)
    again = delete(api, request_id)
    assert again.status_code == 200
    assert again.json == {"ok": True, "message": "the request has already been deleted"}
    assert dump(redis) == before
    assert subscription.read() == []
    recreate = post(api, {DEB: "1", "request_id": request_id})
    assert recreate.status_code == 409
    assert recreate.json["message"] == f"request_id '{request_id}' has already been created"


def test_delete_of_a_request_without_vms(api, redis):
    request_id = post(api, {DEB: "2"}).json["request_id"]
    assert delete(api, request_id).json == {"ok": True}
    assert redis.hget(keys.odrequest(request_id), "status") == "deleted"
    assert redis.zcard(keys.PROVISIONING_REQUEST) == 0


@pytest.mark.parametrize("headers", [{}, {"X-AUTH-TOKEN": "unknown"}])
def test_delete_needs_a_valid_token_when_auth_is_configured(auth_api, redis, headers):
    seed_request(redis, "r1", f"{DEB}:{DEB}:1")
    before = dump(redis)
    resp = delete(auth_api, "r1", headers=headers)
    assert resp.status_code == 401
    assert resp.json == {"ok": False}
    assert resp.headers["WWW-Authenticate"] == REALM
    assert dump(redis) == before


def test_delete_of_another_users_request_is_403(make_api, redis):
    api = make_api(with_auth(), env=AUTH_ENV)
    add_token(redis, "alice1", "alice")
    add_token(redis, "alice2", "alice")
    add_token(redis, "bob1", "bob")
    request_id = post(api, {DEB: "1"}, headers={"X-AUTH-TOKEN": "alice1"}).json["request_id"]
    resp = delete(api, request_id, headers={"X-AUTH-TOKEN": "bob1"})
    assert resp.status_code == 403
    assert resp.json == {
        "ok": False,
        "error": f"request {request_id} belongs to another user; only its owner or an admin may delete it",
    }
    assert "www-authenticate" not in resp.headers
    assert redis.hget(keys.odrequest(request_id), "status") is None
    resp = delete(api, request_id, headers={"X-AUTH-TOKEN": "alice2"})  # the same user, another token
    assert resp.json == {"ok": True}
    assert delete(api, "nope", headers={"X-AUTH-TOKEN": "bob1"}).status_code == 404


# -- over real HTTP ------------------------------------------------------------------------------------


def test_post_then_get_over_http_against_the_real_api(redis_url, redis, tmp_path: Path):
    config = tmp_path / "vmpooler.yaml"
    config.write_text(f":redis:\n  url: {redis_url}\n" + BASE_CONFIG)
    service = start_service(config, tmp_path / "vmpooler.log", "api")
    try:
        created = requests.post(service.url("/api/v3/ondemandvm"), json={"debian": "2"}, timeout=10)
        assert created.status_code == 201, created.text
        request_id = created.json()["request_id"]
        status = requests.get(service.url(f"/api/v3/ondemandvm/{request_id}"), timeout=10)
        assert status.status_code == 202
        assert status.json() == {
            "ok": True,
            "request_id": request_id,
            "ready": False,
            "debian": {"ready": "0", "pending": "2"},
        }
        assert redis.hget(keys.odrequest(request_id), "requested") == f"debian:{DEB}:2"
    finally:
        service.stop()


# -- priority (ours) ----------------------------------------------------------------------------------


def test_priority_orders_the_clones_of_on_demand_requests(api, redis):
    low = post(api, {DEB: 1, "request_id": "low-one", "priority": 3})
    normal = post_spec(api, DEB)
    high = post_spec(api, DEB, params={"priority": "1"})
    assert [r.status_code for r in (low, normal, high)] == [201, 201, 201]
    assert redis.hget(keys.odrequest("low-one"), "priority") == "3"
    assert redis.hget(keys.odrequest(normal.json["request_id"]), "priority") is None  # 2: as the original
    store = Store(redis_lib.Redis(connection_pool=redis.connection_pool))
    assert store.provisioning.intake(NOW) == 3
    claimed = store.provisioning.claim(
        "dummy", [DEB], [f"{ONDEMAND_PREFIX}{n}" for n in range(3)], limit=3, now=NOW, lease_seconds=60
    )
    assert [c.request_id for c in claimed] == [high.json["request_id"], normal.json["request_id"], "low-one"]


@pytest.mark.parametrize("priority", ["0", "4", "high", "1.5"])
def test_a_bad_priority_is_400(api, redis, priority):
    resp = post_spec(api, DEB, params={"priority": priority})
    assert resp.status_code == 400
    assert "priority must be 1 (high), 2 or 3 (low)" in resp.json["error"]
    assert redis.zcard(keys.PROVISIONING_REQUEST) == 0


def test_a_manager_claims_on_demand_clones_only_for_pools_whose_lease_it_still_holds(api, redis):
    """Several managers: the claim counts a pool only while the given fencing token is its lease's."""
    assert post(api, {DEB: 2, "request_id": "fenced-one"}).status_code == 201
    store = Store(redis_lib.Redis(connection_pool=redis.connection_pool))
    assert store.provisioning.intake(NOW) == 1
    held = store.leases.claim([DEB], owner="m-a", instance="i", pid=1, ttl_ms=60_000)[DEB]
    assert held is not None
    slots = [f"{ONDEMAND_PREFIX}{n}" for n in range(2)]
    stale = store.provisioning.claim(
        "dummy@m-b", [DEB], slots, limit=2, now=NOW, lease_seconds=60, tokens={DEB: held + 1}
    )
    assert stale == []  # a token the lease does not have: nothing claimed, no slot taken
    assert redis.zcard(keys.ONDEMAND_LEASES) == 0
    claimed = store.provisioning.claim(
        "dummy@m-a", [DEB], slots, limit=2, now=NOW, lease_seconds=60, tokens={DEB: held}
    )
    assert [c.request_id for c in claimed] == ["fenced-one", "fenced-one"]
