"""The pool configuration endpoints: ``/config/poolsize``, ``/config/pooltemplate``, ``/config/clonetarget``,
``/poolreset``, and ``GET /config`` showing what they changed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.http.conftest import (
    AUTH_ENV,
    BASE_CONFIG,
    CENTOS,
    DEB,
    NODOMAIN,
    REALM,
    WIN,
    Api,
    add_token,
    dump,
    with_auth,
    with_config,
)
from vmpooler import bus, keys

pytestmark = pytest.mark.integration

SIZES = keys.config_override("poolsize")
TEMPLATES = keys.config_override("template")
CLONE_TARGETS = keys.config_override("clone_target")
TOKEN = "abcdefghijklmnopqrstuvwxyz012345"

# DEB clones to its own cluster; the other pools inherit the global one.
CONFIG = with_config("experimental_features: true\nclone_target: cluster0").replace(
    "    dns_plugin: example\n", "    dns_plugin: example\n    clone_target: cluster-deb\n", 1
)

# (method, path, body) of a call that would change something on every route
CHANGES = [
    ("POST", "/config/poolsize", {DEB: "1"}),
    ("DELETE", f"/config/poolsize/{DEB}", None),
    ("POST", "/config/pooltemplate", {DEB: "templates/new"}),
    ("DELETE", f"/config/pooltemplate/{DEB}", None),
    ("POST", "/config/clonetarget", {DEB: "cluster9"}),
    ("POST", "/poolreset", {DEB: "1"}),
]
POSTS = ["/config/poolsize", "/config/pooltemplate", "/config/clonetarget", "/poolreset"]


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(CONFIG)


def call(api: Api, method: str, path: str, body: Any = None, version: int = 3, **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    return api.simulate_request(method, f"/api/v{version}{path}", body=data, **kwargs)


def announced(*pools: str) -> list[tuple[str, Any]]:
    return [(keys.events_channel(p), bus.ConfigChanged(p)) for p in pools]


def pool_config(api: Api, version: int = 3) -> dict[str, dict[str, Any]]:
    resp = call(api, "GET", "/config", version=version)
    assert resp.status_code == 200
    return {entry["name"]: entry for entry in resp.json["pool_configuration"]}


# -- experimental_features and auth --------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_every_route_is_405_without_experimental_features(make_api, redis, version, method, path, body):
    api = make_api(BASE_CONFIG)
    redis.hset(SIZES, DEB, "2")
    redis.hset(TEMPLATES, DEB, "templates/other")
    before = dump(redis)
    resp = call(api, method, path, body, version)
    assert (resp.status_code, resp.json) == (405, {"ok": False})
    assert dump(redis) == before


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_405_comes_before_authentication(make_api, redis, method, path, body):
    api = make_api(with_auth(), env=AUTH_ENV)
    resp = call(api, method, path, body, headers={"X-AUTH-TOKEN": "nosuchtoken"})
    assert (resp.status_code, resp.json) == (405, {"ok": False})


@pytest.mark.parametrize("token", [None, "nosuchtoken"])
@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_with_auth_a_valid_token_is_required(make_api, redis, method, path, body, token):
    api = make_api(with_auth(CONFIG), env=AUTH_ENV)
    redis.hset(SIZES, DEB, "2")
    redis.hset(TEMPLATES, DEB, "templates/other")
    before = dump(redis)
    resp = call(api, method, path, body, headers={"X-AUTH-TOKEN": token} if token else {})
    assert (resp.status_code, resp.json) == (401, {"ok": False})
    assert resp.headers["WWW-Authenticate"] == REALM
    assert dump(redis) == before


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_with_auth_an_admins_token_changes_and_is_never_logged(make_api, redis, caplog, method, path, body):
    api = make_api(with_auth(CONFIG) + "  admins: [jdoe]\n", env=AUTH_ENV)
    add_token(redis, TOKEN, "jdoe")
    redis.hset(SIZES, DEB, "2")
    redis.hset(TEMPLATES, DEB, "templates/other")
    with caplog.at_level(logging.INFO, logger="vmpooler.http.resources.poolconfig"):
        resp = call(api, method, path, body, headers={"X-AUTH-TOKEN": TOKEN})
    assert resp.status_code == 201
    lines = [r.getMessage() for r in caplog.records if r.name == "vmpooler.http.resources.poolconfig"]
    assert len(lines) == 1 and lines[0].startswith(f"pool {DEB} ") and lines[0].endswith(" by jdoe")
    assert TOKEN not in caplog.text
    assert redis.hget(keys.token(TOKEN), "last")  # the use is recorded


def test_without_auth_the_change_is_logged_as_anonymous(api, caplog):
    with caplog.at_level(logging.INFO, logger="vmpooler.http.resources.poolconfig"):
        call(api, "POST", "/config/poolsize", {DEB: 7})
    assert f"pool {DEB} size override set to 7 by anonymous" in caplog.messages


# -- bodies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("body", ["", "  \n", "null"])
def test_no_payload_is_404(api, redis, path, body):
    resp = call(api, "POST", path, body)
    assert (resp.status_code, resp.json) == (404, {"ok": False})
    assert dump(redis) == {}


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"pool1":"1}', "Invalid JSON: "),
        ("{", "Invalid JSON: "),
        (f'["{DEB}"]', "Request body must be a JSON object"),
        ('"text"', "Request body must be a JSON object"),
        (b"\xff\xfe", "Invalid JSON: "),
    ],
)
def test_malformed_json_is_400_with_an_error(api, redis, path, body, error):
    resp = call(api, "POST", path, body)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json["ok"] is False and resp.json["error"].startswith(error)
    assert dump(redis) == {}


@pytest.mark.parametrize(("path", "status"), [(p, 200) for p in POSTS[:3]] + [("/poolreset", 201)])
def test_an_empty_object_changes_nothing(api, redis, events, path, status):
    sub = events()
    resp = call(api, "POST", path, {})
    assert (resp.status_code, resp.json) == (status, {"ok": True})
    assert dump(redis) == {}
    assert sub.read() == []


# -- POST /config/poolsize -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_poolsize_sets_an_override_and_announces_it(api, redis, events, version):
    sub = events()
    resp = call(api, "POST", "/config/poolsize", {DEB: "1"}, version)
    assert (resp.status_code, resp.json) == (201, {"ok": True})
    assert redis.hgetall(SIZES) == {DEB: "1"}
    assert sub.read() == announced(DEB)
    assert pool_config(api, version)[DEB]["size"] == 1


def test_poolsize_of_several_pools_writes_only_the_changed_ones(api, redis, events):
    sub = events()
    resp = call(api, "POST", "/config/poolsize", {DEB: 3, CENTOS: 5, WIN: "05", NODOMAIN: 0})
    assert (resp.status_code, resp.json) == (201, {"ok": True})
    assert redis.hgetall(SIZES) == {CENTOS: "5", WIN: "5"}  # stored as plain digits
    assert sorted(sub.read()) == sorted(announced(CENTOS, WIN))


def test_poolsize_unchanged_is_200_and_writes_nothing(api, redis, events):
    sub = events()
    resp = call(api, "POST", "/config/poolsize", {DEB: "3", CENTOS: 2})
    assert (resp.status_code, resp.json) == (200, {"ok": True})
    assert dump(redis) == {}
    assert sub.read() == []


def test_poolsize_compares_with_the_override_in_force(api, redis):
    redis.hset(SIZES, DEB, "4")
    assert call(api, "POST", "/config/poolsize", {DEB: "4"}).status_code == 200
    # going back to the file's value is a change too
    assert call(api, "POST", "/config/poolsize", {DEB: "3"}).status_code == 201
    assert redis.hgetall(SIZES) == {DEB: "3"}


@pytest.mark.parametrize(
    "size",
    ["four", "-1", -1, "1.5", 1.5, 2.0, True, None, "", " 2", "2 ", "10001", 10001, "1" * 40, [2], {"a": 1}],
)
def test_poolsize_rejects_what_is_no_size(api, redis, size):
    resp = call(api, "POST", "/config/poolsize", {CENTOS: "1", DEB: size})
    assert (resp.status_code, resp.json) == (400, {"ok": False, "not_configured": [DEB]})
    assert dump(redis) == {}


def test_poolsize_accepts_the_limits(api, redis):
    assert call(api, "POST", "/config/poolsize", {DEB: "10000", CENTOS: 0}).status_code == 201
    assert redis.hgetall(SIZES) == {DEB: "10000", CENTOS: "0"}


def test_poolsize_lists_unknown_pools_and_aliases_once(api, redis):
    resp = call(api, "POST", "/config/poolsize", {"pool10": "four", DEB: "2", "debian": "2", "centos": 1})
    assert (resp.status_code, resp.json) == (
        400,
        {"ok": False, "not_configured": ["pool10", "debian", "centos"]},
    )
    assert dump(redis) == {}


# -- DELETE /config/poolsize/<pool> ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_poolsize_delete_restores_the_configured_size(api, redis, events, version):
    call(api, "POST", "/config/poolsize", {DEB: "2"}, version)
    sub = events()
    resp = call(api, "DELETE", f"/config/poolsize/{DEB}", version=version)
    assert resp.status_code == 201
    assert resp.json == {"ok": True, "pool_size_before_reset": 2, "pool_size_before_overrides": 3}
    assert redis.hgetall(SIZES) == {}
    assert redis.smembers(keys.UNDO_SIZE_OVERRIDE) == {DEB}
    assert sub.read() == announced(DEB)
    assert pool_config(api, version)[DEB]["size"] == 3


def test_poolsize_delete_without_override_is_200(api, redis, events):
    sub = events()
    resp = call(api, "DELETE", f"/config/poolsize/{WIN}")
    assert resp.status_code == 200
    assert resp.json == {"ok": True, "pool_size_before_reset": 1, "pool_size_before_overrides": 1}
    assert dump(redis) == {}
    assert sub.read() == []


def test_poolsize_delete_removes_an_override_equal_to_the_file(api, redis):
    redis.hset(SIZES, mapping={DEB: "3", CENTOS: "7"})
    resp = call(api, "DELETE", f"/config/poolsize/{DEB}")
    assert resp.status_code == 200
    assert resp.json == {"ok": True, "pool_size_before_reset": 3, "pool_size_before_overrides": 3}
    assert redis.hgetall(SIZES) == {CENTOS: "7"}


@pytest.mark.parametrize("pool", ["pool10", "debian", "centos"])
def test_poolsize_delete_of_an_unknown_pool_or_alias_is_404(api, redis, pool):
    resp = call(api, "DELETE", f"/config/poolsize/{pool}")
    assert (resp.status_code, resp.json) == (404, {"ok": False})
    assert dump(redis) == {}


# -- /config/pooltemplate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_pooltemplate_sets_an_override(api, redis, events, version):
    sub = events()
    body = {DEB: "templates/new_template", CENTOS: "templates/centos-8"}
    resp = call(api, "POST", "/config/pooltemplate", body, version)
    assert (resp.status_code, resp.json) == (201, {"ok": True})
    assert redis.hgetall(TEMPLATES) == {DEB: "templates/new_template"}
    assert sub.read() == announced(DEB)
    assert pool_config(api, version)[DEB]["template"] == "templates/new_template"
    # the same again is no change
    assert call(api, "POST", "/config/pooltemplate", body, version).status_code == 200


@pytest.mark.parametrize(
    "template", ["template1", "/template1", "template1/", "/", "a/b\n", "", 5, None, ["a/b"], {"a": "b/c"}]
)
def test_pooltemplate_rejects_bad_templates(api, redis, template):
    resp = call(api, "POST", "/config/pooltemplate", {CENTOS: "templates/x", DEB: template})
    assert (resp.status_code, resp.json) == (400, {"ok": False, "bad_templates": [DEB]})
    assert dump(redis) == {}


def test_pooltemplate_lists_unknown_pools(api, redis):
    resp = call(
        api, "POST", "/config/pooltemplate", {DEB: "templates/new", "pool3": "/bad/", "debian": "a/b"}
    )
    assert (resp.status_code, resp.json) == (400, {"ok": False, "bad_templates": ["pool3", "debian"]})
    assert dump(redis) == {}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_pooltemplate_delete_restores_the_configured_template(api, redis, events, version):
    call(api, "POST", "/config/pooltemplate", {WIN: "templates/new_template"}, version)
    sub = events()
    resp = call(api, "DELETE", f"/config/pooltemplate/{WIN}", version=version)
    assert resp.status_code == 201
    assert resp.json == {
        "ok": True,
        "template_before_reset": "templates/new_template",
        "template_before_overrides": "templates/win-2019",
    }
    assert redis.hgetall(TEMPLATES) == {}
    assert redis.smembers(keys.UNDO_TEMPLATE_OVERRIDE) == {WIN}
    assert sub.read() == announced(WIN)
    assert pool_config(api, version)[WIN]["template"] == "templates/win-2019"


def test_pooltemplate_delete_without_override_is_200(api, redis, events):
    sub = events()
    resp = call(api, "DELETE", f"/config/pooltemplate/{DEB}")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "template_before_reset": "templates/debian-7-x86_64",
        "template_before_overrides": "templates/debian-7-x86_64",
    }
    assert dump(redis) == {}
    assert sub.read() == []


@pytest.mark.parametrize("pool", ["poolpoolpool", "debian"])
def test_pooltemplate_delete_of_an_unknown_pool_is_404(api, redis, pool):
    resp = call(api, "DELETE", f"/config/pooltemplate/{pool}")
    assert (resp.status_code, resp.json) == (404, {"ok": False})
    assert dump(redis) == {}


# -- POST /config/clonetarget --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_clonetarget_sets_an_override(api, redis, events, version):
    sub = events()
    resp = call(api, "POST", "/config/clonetarget", {DEB: "cluster1", CENTOS: "cluster2"}, version)
    assert (resp.status_code, resp.json) == (201, {"ok": True})
    assert redis.hgetall(CLONE_TARGETS) == {DEB: "cluster1", CENTOS: "cluster2"}
    assert sorted(sub.read()) == sorted(announced(DEB, CENTOS))
    shown = pool_config(api, version)
    assert (shown[DEB]["clone_target"], shown[CENTOS]["clone_target"]) == ("cluster1", "cluster2")


def test_clonetarget_compares_with_the_pools_then_the_global_one(api, redis):
    resp = call(api, "POST", "/config/clonetarget", {DEB: "cluster-deb", CENTOS: "cluster0"})
    assert (resp.status_code, resp.json) == (200, {"ok": True})
    assert dump(redis) == {}
    assert call(api, "POST", "/config/clonetarget", {DEB: "cluster0"}).status_code == 201
    assert call(api, "POST", "/config/clonetarget", {DEB: "cluster0"}).status_code == 200


@pytest.mark.parametrize("target", ["", "  ", "a\tb", 5, None, ["c"]])
def test_clonetarget_rejects_what_is_no_cluster(api, redis, target):
    resp = call(api, "POST", "/config/clonetarget", {"pool10": "cluster1", DEB: target})
    assert (resp.status_code, resp.json) == (400, {"ok": False, "bad_templates": ["pool10", DEB]})
    assert dump(redis) == {}


# -- POST /poolreset ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_poolreset_queues_the_pools_and_announces_them(api, redis, events, version):
    sub = events()
    resp = call(api, "POST", "/poolreset", {DEB: "1", WIN: {"any": ["thing"]}}, version)
    assert (resp.status_code, resp.json) == (201, {"ok": True})
    assert redis.smembers(keys.POOLRESET) == {DEB, WIN}
    assert sorted(sub.read()) == sorted(announced(DEB, WIN))
    # again, while still queued: 201 all the same
    assert call(api, "POST", "/poolreset", {DEB: None}, version).status_code == 201


def test_poolreset_rejects_unknown_pools_and_aliases(api, redis):
    resp = call(api, "POST", "/poolreset", {DEB: "1", "pool3": "1", "debian": "1"})
    assert (resp.status_code, resp.json) == (400, {"ok": False, "bad_pools": ["pool3", "debian"]})
    assert dump(redis) == {}


# -- GET /config --------------------------------------------------------------------------------------


def test_config_shows_the_file_without_overrides(api):
    shown = pool_config(api)
    assert shown[DEB] == {
        "name": DEB,
        "template": "templates/debian-7-x86_64",
        "size": 3,
        "alias": ["debian"],
        "dns_plugin": "example",
        "clone_target": "cluster-deb",
        "template_ready": False,
    }
    assert "clone_target" not in shown[CENTOS]  # not in its entry: the global one is elsewhere


def test_config_shows_overrides_and_template_ready(api, redis):
    call(api, "POST", "/config/poolsize", {CENTOS: 9})
    call(api, "POST", "/config/pooltemplate", {CENTOS: "templates/centos-9"})
    call(api, "POST", "/config/clonetarget", {CENTOS: "cluster7"})
    redis.hset(
        keys.TEMPLATE_PREPARED, mapping={CENTOS: "templates/centos-8", DEB: "templates/debian-7-x86_64"}
    )
    shown = pool_config(api)
    assert shown[CENTOS] == {
        "name": CENTOS,
        "template": "templates/centos-9",
        "size": 9,
        "alias": "centos",
        "dns_plugin": "other",
        "clone_target": "cluster7",
        "template_ready": False,  # the manager prepared the old template
    }
    assert shown[DEB]["template_ready"] is True
    assert shown[WIN]["template_ready"] is False  # nothing prepared
    redis.hset(keys.TEMPLATE_PREPARED, CENTOS, "templates/centos-9")
    assert pool_config(api)[CENTOS]["template_ready"] is True
    call(api, "DELETE", f"/config/pooltemplate/{CENTOS}")
    assert pool_config(api)[CENTOS]["template"] == "templates/centos-8"
    assert pool_config(api)[CENTOS]["template_ready"] is False


def test_v1_and_v2_answer_as_v3(make_api, redis):
    """The same sequence of calls on each version gives the same answers and the same Redis state."""
    script = [
        *CHANGES,
        ("POST", "/config/poolsize", {DEB: "x"}),
        ("POST", "/config/pooltemplate", {"nope": "a/b"}),
        ("POST", "/poolreset", "{"),
        ("DELETE", "/config/poolsize/nope", None),
        ("GET", "/config", None),
    ]
    seen = []
    for version in (1, 2, 3):
        redis.flushdb()
        api = make_api(CONFIG)
        answers = [(r.status_code, r.json) for r in (call(api, m, p, b, version) for m, p, b in script)]
        seen.append((answers, dump(redis)))
    assert seen[0] == seen[1] == seen[2]
