"""Checkout through the API: ``POST /vm`` with a JSON body and ``POST /vm/<a>+<b>``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.http.conftest import (
    AUTH_ENV,
    CENTOS,
    DEB,
    NODOMAIN,
    NOW_TEXT,
    REALM,
    WEIGHTED,
    WIN,
    add_ready,
    add_token,
    dump,
    vm_fields,
    with_auth,
    with_config,
)
from vmpooler import keys

pytestmark = pytest.mark.integration


def post_json(api, body, **kwargs):
    return api.post("/api/v3/vm", body=json.dumps(body), **kwargs)


def assert_checked_out(redis, pool: str, vm: str) -> None:
    """The writes of one checkout."""
    assert not redis.sismember(keys.ready_set(pool), vm)
    assert redis.sismember(keys.running_set(pool), vm)
    assert redis.sismember(keys.migrating_set(pool), vm)
    assert redis.hget(keys.active_hash(pool), vm) == NOW_TEXT
    assert redis.hget(keys.vm_hash(vm), "checkout") == NOW_TEXT


# -- the JSON form -------------------------------------------------------------------------------------


def test_get_vm_lists_configured_pool_names_without_aliases(api):
    resp = api.get("/api/v3/vm")
    assert resp.status_code == 200
    assert resp.json == [DEB, CENTOS, WIN, NODOMAIN]


def test_checkout_with_string_count_returns_fqdn_and_writes_metadata(api, redis):
    add_ready(redis, DEB, "d1")
    resp = post_json(api, {DEB: "1"})
    assert resp.status_code == 200
    assert resp.json == {"ok": True, DEB: {"hostname": "d1.example.com"}}
    assert resp.headers["content-type"] == "application/json"
    assert_checked_out(redis, DEB, "d1")
    assert redis.hgetall(keys.vm_hash("d1")) == vm_fields(DEB, checkout=NOW_TEXT)


def test_checkout_with_int_counts_from_several_pools(api, redis):
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    resp = post_json(api, {DEB: 2, CENTOS: 1})
    assert resp.status_code == 200
    body = resp.json
    assert sorted(body[DEB]["hostname"]) == ["d1.example.com", "d2.example.com"]
    assert body == {
        "ok": True,
        DEB: {"hostname": body[DEB]["hostname"]},
        CENTOS: {"hostname": "c1.other.example.net"},
    }
    for vm in ("d1", "d2"):
        assert_checked_out(redis, DEB, vm)
    assert_checked_out(redis, CENTOS, "c1")
    assert redis.scard(keys.ready_set(DEB)) == 0


def test_alias_is_served_by_its_pool_and_keyed_by_the_alias(api, redis):
    add_ready(redis, DEB, "d1")
    add_ready(redis, CENTOS, "c1")
    resp = post_json(api, {"debian": 1, "centos": "1"})
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "debian": {"hostname": "d1.example.com"},
        "centos": {"hostname": "c1.other.example.net"},
    }
    assert_checked_out(redis, DEB, "d1")
    assert_checked_out(redis, CENTOS, "c1")


def test_alias_and_pool_name_in_one_request_each_get_their_own_key(api, redis):
    add_ready(redis, DEB, "d1", "d2")
    resp = post_json(api, {"debian": 1, DEB: 1})
    assert resp.status_code == 200
    body = resp.json
    assert set(body) == {"ok", "debian", DEB}
    assert {body["debian"]["hostname"], body[DEB]["hostname"]} == {"d1.example.com", "d2.example.com"}


def test_pool_without_domain_gives_short_name(api, redis):
    add_ready(redis, NODOMAIN, "n1")
    resp = post_json(api, {NODOMAIN: 1})
    assert resp.json == {"ok": True, NODOMAIN: {"hostname": "n1"}}


def test_pool_name_with_a_dot_is_accepted(api, redis):
    """Deliberate fix: the original's 3.8.1 validator rejected pool names with a dot."""
    add_ready(redis, WIN, "w1")
    resp = post_json(api, {WIN: "1"})
    assert resp.status_code == 200
    assert resp.json == {"ok": True, WIN: {"hostname": "w1.example.com"}}
    assert_checked_out(redis, WIN, "w1")


# -- the path form ---------------------------------------------------------------------------------


def test_path_form_counts_each_name(api, redis):
    add_ready(redis, DEB, "d1", "d2", "d3")
    add_ready(redis, CENTOS, "c1")
    resp = api.post(f"/api/v3/vm/{DEB}+{DEB}+{CENTOS}")
    assert resp.status_code == 200
    body = resp.json
    assert len(body[DEB]["hostname"]) == 2
    assert set(body[DEB]["hostname"]) < {"d1.example.com", "d2.example.com", "d3.example.com"}
    assert body[CENTOS] == {"hostname": "c1.other.example.net"}
    assert redis.scard(keys.ready_set(DEB)) == 1
    assert redis.scard(keys.running_set(DEB)) == 2


def test_path_form_accepts_aliases_and_dotted_names_and_ignores_the_body(api, redis):
    add_ready(redis, DEB, "d1")
    add_ready(redis, WIN, "w1")
    resp = api.post(f"/api/v3/vm/debian+{WIN}", body=json.dumps({CENTOS: 5}))
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "debian": {"hostname": "d1.example.com"},
        WIN: {"hostname": "w1.example.com"},
    }


def test_path_form_unknown_pool_is_404(api, redis):
    add_ready(redis, DEB, "d1")
    before = dump(redis)
    resp = api.post(f"/api/v3/vm/{DEB}+nosuchpool")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == before


# -- all or nothing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "send",
    [
        lambda api: post_json(api, {DEB: 2, CENTOS: 2}),
        lambda api: post_json(api, {CENTOS: 2, DEB: 2}),
        lambda api: api.post(f"/api/v3/vm/{DEB}+{DEB}+{CENTOS}+{CENTOS}"),
        lambda api: post_json(api, {"debian": 3}),
    ],
    ids=["json", "json-empty-pool-first", "path", "alias"],
)
def test_unmet_request_is_503_and_changes_nothing(api, redis, send):
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    before = dump(redis)
    resp = send(api)
    assert resp.status_code == 503
    assert resp.json == {"ok": False}
    assert dump(redis) == before


def test_concurrent_checkouts_never_hand_out_a_vm_twice(api, redis):
    add_ready(redis, DEB, *(f"d{i}" for i in range(10)))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: api.post(f"/api/v3/vm/{DEB}"), range(20)))
    assert sorted(r.status_code for r in results) == [200] * 10 + [503] * 10
    hostnames = [r.json[DEB]["hostname"] for r in results if r.status_code == 200]
    assert sorted(hostnames) == sorted(f"d{i}.example.com" for i in range(10))
    assert redis.scard(keys.running_set(DEB)) == 10
    assert redis.scard(keys.ready_set(DEB)) == 0


# -- invalid requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   ", b"{}"], ids=["empty", "blank", "empty-object"])
def test_empty_request_is_404(api, redis, raw):
    add_ready(redis, DEB, "d1")
    before = dump(redis)
    resp = api.post("/api/v3/vm", body=raw)
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == before


def test_unknown_pool_is_404_and_nothing_is_taken(api, redis):
    add_ready(redis, DEB, "d1")
    before = dump(redis)
    resp = post_json(api, {DEB: 1, "nosuchpool": 1})
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert dump(redis) == before


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"k": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"debian": ', "Invalid JSON: "),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"debian"', "Request body must be a JSON object"),
        (json.dumps(_nested(6)).encode(), "Request body too complex"),
        # five levels are allowed: the nesting passes and the count is what is wrong
        (json.dumps({"debian": _nested(4)}).encode(), "VM count must be a valid integer"),
        (json.dumps({DEB: "1"}).encode() + b" " * 10_240, "Request body too large"),
        (json.dumps({"bad pool!": 1}).encode(), "Invalid pool name format"),
        (json.dumps({"p" * 101: 1}).encode(), "Pool name too long"),
        (json.dumps({DEB: 0}).encode(), "VM count must be at least 1"),
        (json.dumps({DEB: "0"}).encode(), "VM count must be at least 1"),
        (json.dumps({DEB: 101}).encode(), "VM count must be at most 100"),
        (json.dumps({DEB: "abc"}).encode(), "VM count must be a valid integer"),
        (json.dumps({DEB: -1}).encode(), "VM count must be a valid integer"),
        (json.dumps({DEB: 1.5}).encode(), "VM count must be a valid integer"),
        (json.dumps({DEB: True}).encode(), "VM count must be a valid integer"),
        (json.dumps({DEB: None}).encode(), "VM count is required"),
    ],
    ids=[
        "invalid-json",
        "array",
        "string",
        "too-deep",
        "depth-5-ok",
        "too-large",
        "bad-pool-name",
        "pool-name-too-long",
        "count-0",
        "count-0-string",
        "count-101",
        "count-abc",
        "count-negative",
        "count-float",
        "count-bool",
        "count-null",
    ],
)
def test_invalid_body_is_4xx_with_the_validator_message(api, redis, raw, error):
    add_ready(redis, DEB, "d1")
    before = dump(redis)
    resp = api.post("/api/v3/vm", body=raw)
    assert resp.status_code == (413 if error == "Request body too large" else 400)
    assert set(resp.json) == {"ok", "error"}
    assert resp.json["ok"] is False
    if error.endswith(": "):
        assert resp.json["error"].startswith(error)
        assert len(resp.json["error"]) > len(error)
    else:
        assert resp.json["error"] == error
    assert dump(redis) == before


def test_body_of_exactly_the_limit_is_accepted(api, redis):
    add_ready(redis, DEB, "d1")
    raw = json.dumps({DEB: 1}).encode()
    raw += b" " * (10_240 - len(raw))
    assert len(raw) == 10_240
    resp = api.post("/api/v3/vm", body=raw)
    assert resp.status_code == 200
    assert resp.json == {"ok": True, DEB: {"hostname": "d1.example.com"}}


def test_counts_of_1_and_100_are_the_bounds(api, redis):
    add_ready(redis, DEB, *(f"d{i}" for i in range(100)))
    resp = post_json(api, {DEB: "100"})
    assert resp.status_code == 200
    assert len(resp.json[DEB]["hostname"]) == 100
    assert redis.scard(keys.running_set(DEB)) == 100


# -- aliases over several pools and backend weights ----------------------------------------------------

UNWEIGHTED = """
:pools:
  - name: pool-a
    template: t/a
    size: 30
    alias: [both]
  - name: pool-b
    template: t/b
    size: 30
    alias: [both]
"""


def test_weight_zero_is_never_chosen_first(make_api, redis):
    api = make_api(WEIGHTED)
    add_ready(redis, "pool-a", *(f"a{i}" for i in range(5)))
    add_ready(redis, "pool-b", *(f"b{i}" for i in range(5)))
    got = []
    for _ in range(4):
        resp = post_json(api, {"both": 1})
        assert resp.status_code == 200
        got.append(resp.json["both"]["hostname"])
    resp = api.post("/api/v3/vm/both")
    got.append(resp.json["both"]["hostname"])
    assert sorted(got) == [f"b{i}" for i in range(5)]
    assert redis.scard(keys.ready_set("pool-a")) == 5


def test_weighted_alias_falls_back_to_the_other_candidate_when_the_first_is_empty(make_api, redis):
    api = make_api(WEIGHTED)
    add_ready(redis, "pool-a", "a1")
    add_ready(redis, "pool-b", "b1")
    resp = post_json(api, {"both": 2})
    assert resp.status_code == 200
    assert sorted(resp.json["both"]["hostname"]) == ["a1", "b1"]
    assert_checked_out(redis, "pool-a", "a1")
    assert_checked_out(redis, "pool-b", "b1")


def test_pool_that_is_also_an_alias_is_served_by_the_weighted_pool(make_api, redis):
    """Reference spec example: pool2 is a pool and an alias of pool1; weights pool2=0, pool1=5."""
    api = make_api(WEIGHTED)
    add_ready(redis, "pool1", "p1")
    add_ready(redis, "pool2", "p2")
    resp = post_json(api, {"pool2": 1})
    assert resp.json == {"ok": True, "pool2": {"hostname": "p1"}}
    assert redis.smembers(keys.ready_set("pool2")) == {"p2"}


def test_unweighted_alias_spreads_over_its_pools(make_api, redis):
    api = make_api(UNWEIGHTED, seed=3)
    add_ready(redis, "pool-a", *(f"a{i}" for i in range(20)))
    add_ready(redis, "pool-b", *(f"b{i}" for i in range(20)))
    for _ in range(20):
        assert post_json(api, {"both": 1}).status_code == 200
    taken_a = redis.scard(keys.running_set("pool-a"))
    taken_b = redis.scard(keys.running_set("pool-b"))
    assert taken_a + taken_b == 20
    assert taken_a > 0
    assert taken_b > 0


# -- tokens ------------------------------------------------------------------------------------------


def test_checkout_with_valid_token_records_owner_and_auth_lifetime(make_api, redis):
    api = make_api(with_auth(with_config("vm_lifetime_auth: 2")), env=AUTH_ENV)
    add_ready(redis, DEB, "d1")
    add_token(redis, "tok1", "alice")
    resp = post_json(api, {DEB: 1}, headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 200
    assert resp.json == {"ok": True, DEB: {"hostname": "d1.example.com"}}
    assert_checked_out(redis, DEB, "d1")
    assert redis.hgetall(keys.vm_hash("d1")) == vm_fields(
        DEB, checkout=NOW_TEXT, **{"token:token": "tok1", "token:user": "alice", "lifetime": "2"}
    )
    assert redis.hget(keys.token("tok1"), "last") == NOW_TEXT


def test_checkout_with_token_and_no_auth_lifetime_writes_no_lifetime(auth_api, redis):
    add_ready(redis, DEB, "d1")
    add_token(redis, "tok1", "alice")
    resp = auth_api.post(f"/api/v3/vm/{DEB}", headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 200
    data = redis.hgetall(keys.vm_hash("d1"))
    assert (data["token:token"], data["token:user"]) == ("tok1", "alice")
    assert "lifetime" not in data


@pytest.mark.parametrize(
    "send",
    [
        lambda api: post_json(api, {DEB: 1}, headers={"X-AUTH-TOKEN": "nosuchtoken"}),
        lambda api: api.post(f"/api/v3/vm/{DEB}", headers={"X-AUTH-TOKEN": "nosuchtoken"}),
    ],
    ids=["json", "path"],
)
def test_checkout_with_invalid_token_is_401_and_takes_nothing(auth_api, redis, send):
    add_ready(redis, DEB, "d1")
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    resp = send(auth_api)
    assert resp.status_code == 401
    assert resp.json == {"ok": False}
    assert resp.headers["www-authenticate"] == REALM
    assert dump(redis) == before


def test_anonymous_checkout_is_allowed_with_auth_configured(make_api, redis):
    api = make_api(with_auth(with_config("vm_lifetime_auth: 2")), env=AUTH_ENV)
    add_ready(redis, DEB, "d1")
    resp = post_json(api, {DEB: 1})
    assert resp.status_code == 200
    assert resp.json == {"ok": True, DEB: {"hostname": "d1.example.com"}}
    assert redis.hgetall(keys.vm_hash("d1")) == vm_fields(DEB, checkout=NOW_TEXT)


def test_token_is_ignored_without_auth_configured(api, redis):
    add_ready(redis, DEB, "d1")
    resp = post_json(api, {DEB: 1}, headers={"X-AUTH-TOKEN": "anything"})
    assert resp.status_code == 200
    assert redis.hgetall(keys.vm_hash("d1")) == vm_fields(DEB, checkout=NOW_TEXT)
    assert not redis.exists(keys.token("anything"))
