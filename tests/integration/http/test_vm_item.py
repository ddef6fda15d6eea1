"""One VM through the API: ``GET``/``PUT``/``DELETE /vm/<host>``, disks and snapshots."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.http.conftest import (
    AUTH_ENV,
    BASE_CONFIG,
    CENTOS,
    DEB,
    NODOMAIN,
    REALM,
    TODAY,
    add_ready,
    add_running,
    add_token,
    dump,
    vm_fields,
    with_auth,
    with_config,
)
from vmpooler import bus, keys

pytestmark = pytest.mark.integration


def put_json(api, vm, body, *, version=3, **kwargs):
    return api.put(f"/api/v{version}/vm/{vm}", body=json.dumps(body), **kwargs)


# -- GET -----------------------------------------------------------------------------------------------


def test_get_running_vm_with_default_lifetime(api, redis):
    add_running(
        redis,
        DEB,
        "d1",
        checkout="2026-11-21 08:30:00 +0000",
        ip="10.0.0.5",
        disk="+8gb:+16gb",
        **{"tag:owner": "alice", "tag:project": "x", "snapshot:s1": "2026-11-21 09:00:00 +0000"},
    )
    resp = api.get("/api/v3/vm/d1")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "d1": {
            "template": DEB,
            "lifetime": 12,
            "running": 1.5,
            # deliberate fix: the default lifetime counts (the original used the VM's own field only)
            "remaining": 10.5,
            "start_time": "2026-11-21T08:30:00+00:00",
            "end_time": "2026-11-21T20:30:00+00:00",
            "state": "running",
            "tags": {"owner": "alice", "project": "x"},
            "snapshots": ["s1"],
            "disk": ["+8gb", "+16gb"],
            "ip": "10.0.0.5",
            "fqdn": "d1.example.com",
        },
    }


def test_get_running_vm_with_own_lifetime_and_other_time_offset(api, redis):
    # 03:30 at -0500 is 08:30 UTC
    add_running(redis, CENTOS, "c1", checkout="2026-11-21 03:30:00 -0500", lifetime="48")
    api.clock.advance(15 * 60)
    resp = api.get("/api/v3/vm/c1")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "c1": {
            "template": CENTOS,
            "lifetime": 48,
            "running": 1.75,
            "remaining": 46.25,
            "start_time": "2026-11-21T08:30:00+00:00",
            "end_time": "2026-11-23T08:30:00+00:00",
            "state": "running",
            "ip": "",
            "fqdn": "c1.other.example.net",
        },
    }


def test_get_ready_vm(api, redis):
    add_ready(redis, DEB, "d1")
    resp = api.get("/api/v3/vm/d1")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "d1": {"template": DEB, "lifetime": 12, "state": "ready", "ip": "", "fqdn": "d1.example.com"},
    }


def test_get_pending_vm(api, redis):
    redis.sadd(keys.pending_set(NODOMAIN), "n1")
    redis.hset(
        keys.vm_hash("n1"),
        mapping={"clone": "2026-11-21 09:59:00 +0000", "template": NODOMAIN, "pool": NODOMAIN},
    )
    resp = api.get("/api/v3/vm/n1")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "n1": {"template": NODOMAIN, "lifetime": 12, "state": "pending", "ip": ""},
    }


def test_get_destroyed_vm_counts_checkout_to_destroy(api, redis):
    add_running(
        redis,
        DEB,
        "d1",
        checkout="2026-11-21 08:30:00 +0000",
        destroy="2026-11-21 09:00:00 +0000",
        host="esx-01",
        migrated="true",
    )
    resp = api.get("/api/v3/vm/d1")
    assert resp.json == {
        "ok": True,
        "d1": {
            "template": DEB,
            "lifetime": 12,
            "running": 0.5,
            "state": "destroyed",
            "ip": "",
            "fqdn": "d1.example.com",
            "host": "esx-01",
            "migrated": "true",
        },
    }


def test_get_destroyed_vm_that_never_ran_has_no_running(api, redis):
    redis.hset(keys.vm_hash("d1"), mapping=vm_fields(DEB, destroy="2026-11-21 09:40:00 +0000", lifetime="3"))
    resp = api.get("/api/v3/vm/d1")
    assert resp.json == {
        "ok": True,
        "d1": {"template": DEB, "lifetime": 3, "state": "destroyed", "ip": "", "fqdn": "d1.example.com"},
    }


def test_get_by_fqdn_is_shortened(api, redis):
    add_ready(redis, DEB, "d1")
    resp = api.get("/api/v3/vm/d1.example.com")
    assert resp.status_code == 200
    assert list(resp.json) == ["ok", "d1"]
    assert resp.json["d1"]["fqdn"] == "d1.example.com"


def test_get_bad_hostname_is_400(api, redis):
    add_ready(redis, DEB, "bad_name")
    resp = api.get("/api/v3/vm/bad_name")
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Invalid hostname format"}


def test_get_unknown_vm_is_404(api):
    resp = api.get("/api/v3/vm/nosuchvm")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


# -- PUT -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [24, "36", 20000])
def test_put_lifetime(api, redis, value):
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1", {"lifetime": value})
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert redis.hget(keys.vm_hash("d1"), "lifetime") == str(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-1, "-1"),
        ("abc", "abc"),
        ("12abc", "12abc"),
        ("²", "²"),  # str.isdigit() is true for it, int() refuses it: once a 500
        (1.5, "1.5"),
        (24.0, "24.0"),
        (1e20, "1.0e+20"),
        ("", ""),
        (None, ""),
        (True, "true"),
        ([1], "[1]"),
        ({"h": 1}, '{"h"=>1}'),
    ],
)
def test_put_invalid_lifetime_is_400_and_writes_nothing(api, redis, value, shown):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = put_json(api, "d1", {"lifetime": value})
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "failure": [f"Lifetime must be a positive integer (got {shown})"]}
    assert dump(redis) == before


def test_put_tags_writes_vm_and_daily_tag_stats(api, redis):
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1.example.com", {"tags": {"project": "alpha", "owner": "bob"}})
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    data = redis.hgetall(keys.vm_hash("d1"))
    assert (data["tag:project"], data["tag:owner"]) == ("alpha", "bob")
    assert redis.hgetall(keys.tag_stats(TODAY)) == {"d1:project": "alpha", "d1:owner": "bob"}
    assert api.get("/api/v3/vm/d1").json["d1"]["tags"] == {"project": "alpha", "owner": "bob"}


def test_put_lifetime_and_tags_together(api, redis):
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1", {"lifetime": 3, "tags": {"project": "alpha"}})
    assert resp.status_code == 200
    data = redis.hgetall(keys.vm_hash("d1"))
    assert (data["lifetime"], data["tag:project"]) == ("3", "alpha")


def test_put_tag_values_with_equals_and_comma_are_accepted(api, redis):
    """Deliberate fix: the original's 3.8.1 tag rule rejected Jenkins build URLs."""
    url = "https://jenkins.example.com/job/x/RMM_COMPONENT=agent,PLATFORM=el8/42/?a=1&b=%20"
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1", {"tags": {"jenkins_build_url": url}})
    assert resp.status_code == 200
    assert redis.hget(keys.vm_hash("d1"), "tag:jenkins_build_url") == url


def test_put_empty_tag_values_are_skipped(api, redis):
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1", {"tags": {"empty": "", "null": None, "kept": "yes"}})
    assert resp.status_code == 200
    tags = {k: v for k, v in redis.hgetall(keys.vm_hash("d1")).items() if k.startswith("tag:")}
    assert tags == {"tag:kept": "yes"}


@pytest.mark.parametrize(
    ("body", "failures"),
    [
        ({"tags": "foo"}, ["You provided tags (foo) as something other than a hash."]),
        ({"tags": {"bad key!": "v"}}, ["Invalid tag key format"]),
        ({"tags": {"k" * 51: "v"}}, ["Tag key too long"]),
        ({"tags": {"k": "v" * 256}}, ["Tag value too long"]),
        ({"tags": {"k": "line\nbreak"}}, ["Tag value contains invalid characters"]),
        ({"tags": {"k": {"nested": 1}}}, ["Tag value of k must be a string"]),
        ({"colour": "blue"}, ["Unknown argument blue."]),  # the original names the value
        (
            {"lifetime": 5, "tags": "x", "colour": "blue"},
            ["You provided tags (x) as something other than a hash.", "Unknown argument blue."],
        ),
        (
            {"lifetime": "abc", "tags": {"ok": "fine", "bad key!": "v"}},
            ["Lifetime must be a positive integer (got abc)", "Invalid tag key format"],
        ),
    ],
    ids=[
        "tags-string",
        "tag-key",
        "tag-key-long",
        "tag-value-long",
        "tag-value-control",
        "tag-value-object",
        "unknown",
        "several-with-valid-lifetime",
        "several-with-valid-tag",
    ],
)
def test_put_failures_are_400_and_write_nothing(api, redis, body, failures):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = put_json(api, "d1", body)
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "failure": failures}
    assert dump(redis) == before


BASE_WITH_TAGFILTER = BASE_CONFIG + ":tagfilter:\n  url: '(.*)\\/'\n  ref: '(a)-(b)'\n"


@pytest.mark.parametrize(
    ("tags", "shown"), [(["a", "b"], '["a", "b"]'), (5, "5"), (None, ""), (True, "true"), (1.5, "1.5")]
)
def test_put_tags_that_are_not_an_object_are_400_not_500(api, redis, tags, shown):
    """the original crashed with a 500 here; the message is its first one."""
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = put_json(api, "d1", {"tags": tags})
    assert resp.status_code == 400
    assert resp.json == {
        "ok": False,
        "failure": [f"You provided tags ({shown}) as something other than a hash."],
    }
    assert dump(redis) == before


def test_put_tagfilter_keeps_the_capture_groups(make_api, redis):
    api = make_api(BASE_WITH_TAGFILTER)
    add_running(redis, DEB, "d1")
    resp = put_json(api, "d1", {"tags": {"url": "foo.com/something.html", "ref": "a-b", "other": "x/y"}})
    assert resp.status_code == 200
    data = redis.hgetall(keys.vm_hash("d1"))
    assert data["tag:url"] == "foo.com"
    assert data["tag:ref"] == "ab"
    assert data["tag:other"] == "x/y"
    assert redis.hgetall(keys.tag_stats(TODAY)) == {"d1:url": "foo.com", "d1:ref": "ab", "d1:other": "x/y"}


def test_put_tagfilter_that_does_not_match_keeps_the_value(make_api, redis):
    api = make_api(BASE_WITH_TAGFILTER)
    add_running(redis, DEB, "d1")
    assert put_json(api, "d1", {"tags": {"url": "no-slash-here"}}).status_code == 200
    assert redis.hget(keys.vm_hash("d1"), "tag:url") == "no-slash-here"


def test_put_allowed_tags(make_api, redis):
    api = make_api(with_config("allowed_tags: [project, owner]"))
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = put_json(api, "d1", {"tags": {"project": "x", "evil": "y", "worse": "z"}})
    assert resp.status_code == 400
    # the original's spelling ("unsuppored") and its Ruby rendering of the whole tags hash
    assert resp.json == {
        "ok": False,
        "failure": ['You provided unsuppored tags ({"project"=>"x", "evil"=>"y", "worse"=>"z"}).'],
    }
    assert dump(redis) == before
    assert put_json(api, "d1", {"tags": {"project": "x", "owner": "y"}}).status_code == 200


def test_put_max_lifetime_upper_limit(make_api, redis):
    api = make_api(with_config("max_lifetime_upper_limit: 48"))
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = put_json(api, "d1", {"lifetime": 49})
    assert resp.status_code == 400
    assert resp.json == {
        "ok": False,
        "failure": ["You provided a lifetime (49) that exceeds the configured maximum of 48."],
    }
    assert dump(redis) == before
    # the value is shown as sent, not as parsed
    resp = put_json(api, "d1", {"lifetime": "0049"})
    assert resp.json == {
        "ok": False,
        "failure": ["You provided a lifetime (0049) that exceeds the configured maximum of 48."],
    }
    assert dump(redis) == before
    # deliberate fix: the original rejected a lifetime equal to the limit
    resp = put_json(api, "d1", {"lifetime": 48})
    assert resp.status_code == 200
    assert redis.hget(keys.vm_hash("d1"), "lifetime") == "48"


def test_put_invalid_json_is_400(api, redis):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put("/api/v3/vm/d1", body=b'{"lifetime": ')
    assert resp.status_code == 400
    assert set(resp.json) == {"ok", "error"}
    assert resp.json["error"].startswith("Invalid JSON: ")
    assert dump(redis) == before


def test_put_body_too_large_is_413(api, redis):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put("/api/v3/vm/d1", body=json.dumps({"tags": {"k": "v"}}).encode() + b" " * 10_240)
    assert resp.status_code == 413
    assert resp.json == {"ok": False, "error": "Request body too large"}
    assert dump(redis) == before


def test_put_non_object_is_400(api, redis):
    add_running(redis, DEB, "d1")
    resp = api.put("/api/v3/vm/d1", body=b"[1]")
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Request body must be a JSON object"}


def test_put_unknown_vm_is_404_and_bad_name_400(api, redis):
    assert put_json(api, "nosuchvm", {"lifetime": 2}).status_code == 404
    assert put_json(api, "nosuchvm", {"lifetime": 2}).json == {"ok": False}
    resp = put_json(api, "bad_name", {"lifetime": 2})
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Invalid hostname format"}
    assert dump(redis) == {}


def test_put_lifetime_needs_a_token_with_auth(auth_api, redis):
    add_running(redis, DEB, "d1")
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    for headers in ({}, {"X-AUTH-TOKEN": "nosuchtoken"}):
        resp = put_json(auth_api, "d1", {"lifetime": 5}, headers=headers)
        assert resp.status_code == 401
        assert resp.json == {"ok": False}
        assert resp.headers["www-authenticate"] == REALM
        assert dump(redis) == before
    resp = put_json(auth_api, "d1", {"lifetime": 5}, headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 200
    assert redis.hget(keys.vm_hash("d1"), "lifetime") == "5"


def test_put_tags_need_no_token_with_auth(auth_api, redis):
    add_running(redis, DEB, "d1")
    resp = put_json(auth_api, "d1", {"tags": {"project": "x"}})
    assert resp.status_code == 200
    assert redis.hget(keys.vm_hash("d1"), "tag:project") == "x"


# -- DELETE --------------------------------------------------------------------------------------------


def test_delete_running_vm_moves_it_to_completed(api, redis):
    add_running(redis, DEB, "d1")
    resp = api.delete("/api/v3/vm/d1.example.com")
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert redis.smembers(keys.running_set(DEB)) == set()
    assert redis.smembers(keys.completed_set(DEB)) == {"d1"}


@pytest.mark.parametrize("auth", [False, True], ids=["one round trip", "with auth"])
def test_delete_tells_the_pool_to_destroy_the_vm(make_api, redis, events, auth):
    api = make_api(with_auth(), env=AUTH_ENV) if auth else make_api()
    add_running(redis, DEB, "d1")
    subscription = events(DEB)
    assert api.simulate_delete("/api/v3/vm/d1.example.com").status_code == 200
    assert subscription.read() == [(keys.events_channel(DEB), bus.Returned(pool=DEB, vm="d1"))]


def test_delete_of_a_running_vm_whose_hash_names_no_pool(api, redis):
    redis.sadd(keys.running_set(CENTOS), "c1")
    redis.hset(keys.vm_hash("c1"), "checkout", "2026-11-21 08:30:00 +0000")
    assert api.delete("/api/v3/vm/c1").status_code == 200
    assert redis.smembers(keys.completed_set(CENTOS)) == {"c1"}
    assert not redis.exists(keys.running_set(CENTOS))


def _seed_state(redis, state: str) -> None:
    if state == "unknown":
        add_ready(redis, DEB, "other")
        return
    redis.sadd(keys.state_set(state, DEB), "d1")
    redis.hset(keys.vm_hash("d1"), mapping=vm_fields(DEB))


@pytest.mark.parametrize("state", ["ready", "pending", "completed", "unknown"])
def test_delete_of_a_vm_that_is_not_running_is_404_and_changes_nothing(api, redis, state):
    """only a running VM can be returned (the original answered 200 and moved it)."""
    _seed_state(redis, state)
    before = dump(redis)
    resp = api.delete("/api/v3/vm/d1")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == before


def test_delete_bad_name_is_400(api):
    resp = api.delete("/api/v3/vm/bad_name")
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Invalid hostname format"}


def test_delete_of_a_vm_checked_out_with_a_token(auth_api, redis):
    add_running(redis, DEB, "d1", **{"token:token": "tok1", "token:user": "alice"})
    add_token(redis, "tok1", "alice")
    add_token(redis, "tok2", "bob")
    before = dump(redis)
    for headers in ({}, {"X-AUTH-TOKEN": "nosuchtoken"}, {"X-AUTH-TOKEN": "tok2"}):
        resp = auth_api.delete("/api/v3/vm/d1", headers=headers)
        if headers.get("X-AUTH-TOKEN") == "tok2":  # a valid token of another user: forbidden
            assert resp.status_code == 403
            assert "www-authenticate" not in resp.headers
        else:
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"] == REALM
        assert resp.json["ok"] is False
        assert redis.smembers(keys.running_set(DEB)) == {"d1"}
        assert not redis.exists(keys.completed_set(DEB))
    assert {k: v for k, v in dump(redis).items() if k != keys.token("tok2")} == {
        k: v for k, v in before.items() if k != keys.token("tok2")
    }
    resp = auth_api.delete("/api/v3/vm/d1", headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert redis.smembers(keys.completed_set(DEB)) == {"d1"}


def test_delete_by_another_token_of_the_same_user(auth_api, redis):
    add_running(redis, DEB, "d1", **{"token:token": "tok1", "token:user": "alice"})
    add_token(redis, "tok3", "alice")
    resp = auth_api.delete("/api/v3/vm/d1", headers={"X-AUTH-TOKEN": "tok3"})
    assert resp.status_code == 200
    assert redis.smembers(keys.completed_set(DEB)) == {"d1"}


def test_delete_of_an_anonymous_vm_needs_no_token_with_auth(auth_api, redis):
    add_running(redis, DEB, "d1")
    assert auth_api.delete("/api/v3/vm/d1").status_code == 200
    assert redis.smembers(keys.completed_set(DEB)) == {"d1"}


def test_delete_ignores_the_owner_without_auth(api, redis):
    add_running(redis, DEB, "d1", **{"token:token": "tok1", "token:user": "alice"})
    assert api.delete("/api/v3/vm/d1").status_code == 200


# -- disks ---------------------------------------------------------------------------------------------


def test_disk_is_queued(api, redis):
    add_running(redis, DEB, "d1")
    resp = api.post("/api/v3/vm/d1.example.com/disk/8")
    assert resp.status_code == 202
    assert resp.json == {"ok": True, "d1": {"disk": "+8gb"}}
    assert redis.smembers(keys.TASKS_DISK) == {"d1:8"}


def test_disk_publishes_a_task_event(api, redis):
    add_running(redis, DEB, "d1")
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.events_channel(DEB))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    assert api.post("/api/v3/vm/d1/disk/2048").status_code == 202
    message = pubsub.get_message(timeout=1)
    pubsub.close()
    assert json.loads(message["data"]) == {
        "event": "task",
        "task": "disk",
        "pool": DEB,
        "vm": "d1",
        "argument": "2048",
    }


@pytest.mark.parametrize(
    ("size", "error"),
    [
        ("0", "Disk size must be at least 1"),
        ("2049", "Disk size must be at most 2048"),
        ("abc", "Disk size must be a valid integer"),
        ("-5", "Disk size must be a valid integer"),
    ],
)
def test_disk_size_is_validated_in_v3(api, redis, size, error):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.post(f"/api/v3/vm/d1/disk/{size}")
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": error}
    assert dump(redis) == before


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", ["0", "abc"])
def test_disk_size_that_is_not_positive_is_404_in_v1_v2(api, redis, version, size):
    add_running(redis, DEB, "d1")
    resp = api.post(f"/api/v{version}/vm/d1/disk/{size}")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert not redis.exists(keys.TASKS_DISK)


@pytest.mark.parametrize("version", [1, 2])
def test_disk_in_v1_v2(api, redis, version):
    add_running(redis, DEB, "d1")
    resp = api.post(f"/api/v{version}/vm/d1/disk/2048")  # v3's cap holds in every version
    assert resp.status_code == 202
    assert resp.json == {"ok": True, "d1": {"disk": "+2048gb"}}
    assert redis.smembers(keys.TASKS_DISK) == {"d1:2048"}


def test_disk_of_unknown_vm_is_404(api, redis):
    resp = api.post("/api/v3/vm/nosuchvm/disk/8")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert not redis.exists(keys.TASKS_DISK)


# -- snapshots -----------------------------------------------------------------------------------------


def test_snapshot_is_queued_under_a_generated_name(api, redis):
    add_running(redis, DEB, "d1")
    resp = api.post("/api/v3/vm/d1/snapshot")
    assert resp.status_code == 202
    name = resp.json["d1"]["snapshot"]
    assert re.fullmatch(r"[a-y][a-z0-9]{31}", name)
    assert resp.json == {"ok": True, "d1": {"snapshot": name}}
    assert redis.smembers(keys.TASKS_SNAPSHOT) == {f"d1:{name}"}
    second = api.post("/api/v3/vm/d1.example.com/snapshot").json["d1"]["snapshot"]
    assert second != name
    assert redis.scard(keys.TASKS_SNAPSHOT) == 2


def test_snapshot_of_unknown_vm_is_404(api, redis):
    resp = api.post("/api/v3/vm/nosuchvm/snapshot")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert not redis.exists(keys.TASKS_SNAPSHOT)


def test_snapshot_routes_do_not_validate_the_hostname(api, redis):
    """no hostname validation on the snapshot routes (a bad name is just unknown)."""
    for path in ("/api/v3/vm/bad_name/snapshot", "/api/v3/vm/bad_name/snapshot/s1"):
        resp = api.post(path)
        assert resp.status_code == 404
        assert resp.json == {"ok": False}


def test_revert_to_an_existing_snapshot_is_queued(api, redis):
    add_running(redis, DEB, "d1", **{"snapshot:snap1": "2026-11-21 09:00:00 +0000"})
    resp = api.post("/api/v3/vm/d1/snapshot/snap1")
    assert resp.status_code == 202
    assert resp.json == {"ok": True}
    assert redis.smembers(keys.TASKS_SNAPSHOT_REVERT) == {"d1:snap1"}


@pytest.mark.parametrize("vm", ["d1", "nosuchvm"])
def test_revert_to_a_missing_snapshot_is_404(api, redis, vm):
    add_running(redis, DEB, "d1", **{"snapshot:snap1": "2026-11-21 09:00:00 +0000"})
    before = dump(redis)
    resp = api.post(f"/api/v3/vm/{vm}/snapshot/snap2")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == before


# -- disks and snapshots with auth ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "task_set"),
    [
        ("/api/v3/vm/d1/disk/8", keys.TASKS_DISK),
        ("/api/v1/vm/d1/disk/8", keys.TASKS_DISK),
        ("/api/v3/vm/d1/snapshot", keys.TASKS_SNAPSHOT),
        ("/api/v3/vm/d1/snapshot/snap1", keys.TASKS_SNAPSHOT_REVERT),
    ],
    ids=["disk", "disk-v1", "snapshot", "revert"],
)
def test_disk_and_snapshot_need_a_token_with_auth(auth_api, redis, path, task_set):
    add_running(redis, DEB, "d1", **{"snapshot:snap1": "2026-11-21 09:00:00 +0000"})
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    for headers in ({}, {"X-AUTH-TOKEN": "nosuchtoken"}):
        resp = auth_api.post(path, headers=headers)
        assert resp.status_code == 401
        assert resp.json == {"ok": False}
        assert resp.headers["www-authenticate"] == REALM
        assert dump(redis) == before
    resp = auth_api.post(path, headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 202
    assert redis.scard(task_set) == 1


def test_auth_is_checked_before_the_vm_exists(make_api, redis):
    api = make_api(with_auth(), env=AUTH_ENV)
    resp = api.post("/api/v3/vm/nosuchvm/disk/8")
    assert resp.status_code == 401
