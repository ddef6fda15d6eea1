"""Hostile input: every one a 4xx with a JSON body that says what was wrong, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.integration.http.conftest import DEB, add_running, dump

DEEP = ("[" * 100_000 + "]" * 100_000).encode()  # far past what the JSON parser can nest
DEEP_OBJECT = ('{"a":' * 3_000 + "1" + "}" * 3_000).encode()


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_json_nested_past_the_parser_is_a_4xx(api, redis, body, method):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    path = "/api/v3/vm" if method == "post" else "/api/v3/vm/d1"
    resp = getattr(api, method)(path, body=body[:10_240] if len(body) > 10_240 else body)
    assert resp.status_code in (400, 413), resp.text
    assert resp.json["ok"] is False and resp.json["error"]
    assert dump(redis) == before


def test_a_lone_surrogate_in_a_tag_value_is_a_400(api, redis):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put("/api/v3/vm/d1", body=b'{"tags": {"k": "a\\ud800b"}}')
    assert resp.status_code == 400, resp.text
    assert dump(redis) == before


@pytest.mark.parametrize("lifetime", ["²", "١٢", "12abc", "1" * 19, "-1", "0"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_lifetimes_that_are_not_ascii_digits_are_refused(api, redis, lifetime, version):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put(f"/api/{version}/vm/d1", body=json.dumps({"lifetime": lifetime}).encode())
    assert resp.status_code == 400, resp.text
    assert dump(redis) == before


def test_a_huge_lifetime_never_breaks_get(api, redis):
    add_running(redis, DEB, "d1")
    resp = api.put("/api/v3/vm/d1", body=json.dumps({"lifetime": "9" * 18}).encode())
    assert resp.status_code == 200
    got = api.get("/api/v3/vm/d1")
    assert got.status_code == 200, got.text
    assert got.json["d1"]["lifetime"] == int("9" * 18)
    assert got.json["d1"]["end_time"].startswith("9999-12-31T23:59:59")


@pytest.mark.parametrize(
    ("size", "status"), [("²", 404), ("١", 404), ("0", 404), ("2049", 400), ("9" * 20, 404)]
)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_old_disk_routes_parse_and_cap_sizes_as_v3(api, redis, size, status, version):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.post(f"/api/{version}/vm/d1/disk/{size}")
    assert resp.status_code == status, resp.text
    assert dump(redis) == before
