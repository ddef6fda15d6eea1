"""Hostile input: every one a 4xx with a JSON body that says what was wrong, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.integration.http.conftest import DEB, add_running, dump, with_config

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


def test_lifetimes_have_a_default_limit_of_ten_years(api, redis):
    add_running(redis, DEB, "d1")
    assert api.put("/api/v3/vm/d1", body=b'{"lifetime": 87600}').status_code == 200
    resp = api.put("/api/v3/vm/d1", body=json.dumps({"lifetime": "9" * 18}).encode())
    assert resp.status_code == 400
    assert resp.json["failure"] == [
        f"You provided a lifetime ({'9' * 18}) that exceeds the configured maximum of 87600."
    ]


def test_a_huge_lifetime_already_in_redis_never_breaks_get(api, redis):
    add_running(redis, DEB, "d1", lifetime="9" * 18)  # written by an older version, or by hand
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


@pytest.mark.parametrize(("method", "path"), [("get", "/api/v3/status"), ("post", "/api/v3/vm/d1/snapshot")])
def test_a_body_over_the_server_limit_is_a_json_413_on_every_route(api, redis, method, path):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = getattr(api, method)(path, body=b"x" * (1_048_576 + 1))
    assert resp.status_code == 413, resp.text
    assert resp.json == {"ok": False, "error": "Request body too large"}
    assert dump(redis) == before
    assert api.get("/api/v3/status", body=b"x" * 1_000).status_code == 200  # under the limit: fine


def test_the_server_limit_is_configurable(make_api, redis):
    small = make_api(with_config("  max_request_body: 100\n"))
    assert small.get("/api/v3/status", body=b"x" * 101).status_code == 413
    assert small.get("/api/v3/status", body=b"x" * 100).status_code == 200


@pytest.mark.parametrize("path", ["/api/v3/vm", "/api/v3/vm/d1", "/api/v1/status", "/api/v3/token"])
def test_options_answers_allow_with_no_body(api, path):
    resp = api.simulate_options(path)
    assert resp.status_code == 204
    assert resp.content == b"" and "content-type" not in resp.headers
    allowed = {method.strip() for method in resp.headers["allow"].split(",")}
    assert "OPTIONS" in allowed and allowed & {"GET", "POST", "PUT", "DELETE"}


def test_options_of_an_unknown_path_is_a_json_404(api):
    resp = api.simulate_options("/api/v3/nosuch")
    assert resp.status_code == 404 and resp.json
