"""Who may do what: owners and admins (``:auth: admins`` / ``admin_groups``), ``ApiContext.require_owner``.

Alice checks a VM out with her token ``alice1``; Bob has a token of his own, ``root`` is in ``admins``.
Bob gets a 403 that says why for every change of Alice's VM and for deleting her token; Alice (with
any of her tokens) and the admin may. Without ``:auth:`` nothing changes: everything stays open.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from tests.integration.http.conftest import (
    AUTH_ENV,
    DEB,
    NOW,
    NOW_TEXT,
    UPTIME,
    Api,
    Clock,
    add_running,
    add_token,
    dump,
    with_auth,
    with_config,
)
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.http.app import create_app
from vmpooler.http.auth import DummyAuthenticator
from vmpooler.store import Store

pytestmark = pytest.mark.integration

ADMINS = with_auth(with_config("experimental_features: true")) + "  admins: [root]\n"
SNAPSHOT = "2026-11-21 09:00:00 +0000"
GROUP_DN = "cn=vmadmins,ou=groups,dc=example,dc=com"


def basic(user: str, password: str = "s3cr3t") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def token(value: str) -> dict[str, str]:
    return {"X-AUTH-TOKEN": value}


def denied(vm: str = "d1") -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"vm {vm} belongs to another user; only its owner or an admin may change it",
    }


@pytest.fixture
def roles_api(make_api: Callable[..., Api], redis: Any) -> Api:
    """Alice's VM ``d1`` (token ``alice1``), tokens of alice, bob and the admin root."""
    add_running(redis, DEB, "d1", **{"token:token": "alice1", "token:user": "alice", "snapshot:s1": SNAPSHOT})
    for value, user in (("alice1", "alice"), ("alice2", "alice"), ("bob1", "bob"), ("root1", "root")):
        add_token(redis, value, user)
    return make_api(ADMINS, env=AUTH_ENV)


# (name, method, path, body, status of a success); ``changed`` tells whether the change was made
CHANGES: list[tuple[str, str, str, Any, int]] = [
    ("delete", "DELETE", "/api/v3/vm/d1", None, 200),
    ("lifetime", "PUT", "/api/v3/vm/d1", {"lifetime": 5}, 200),
    ("tags", "PUT", "/api/v3/vm/d1", {"tags": {"project": "x"}}, 200),
    ("lifetime-v1", "PUT", "/api/v1/vm/d1", {"lifetime": 5}, 200),
    ("disk", "POST", "/api/v3/vm/d1/disk/8", None, 202),
    ("snapshot", "POST", "/api/v3/vm/d1/snapshot", None, 202),
    ("revert", "POST", "/api/v3/vm/d1/snapshot/s1", None, 202),
]
IDS = [change[0] for change in CHANGES]


def call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    data = None if body is None else json.dumps(body)
    return api.simulate_request(method, path, body=data, headers=headers)


def changed(redis: Any, name: str) -> bool:
    """Whether the change ``name`` of ``CHANGES`` was made on ``d1``."""
    vm = redis.hgetall(keys.vm_hash("d1"))
    return {
        "delete": redis.sismember(keys.completed_set(DEB), "d1"),
        "lifetime": vm.get("lifetime") == "5",
        "lifetime-v1": vm.get("lifetime") == "5",
        "tags": vm.get("tag:project") == "x",
        "disk": redis.scard(keys.TASKS_DISK) > 0,
        "snapshot": redis.scard(keys.TASKS_SNAPSHOT) > 0,
        "revert": redis.scard(keys.TASKS_SNAPSHOT_REVERT) > 0,
    }[name]


def without_token_uses(state: dict[str, Any]) -> dict[str, Any]:
    """A ``dump`` without the token hashes (a valid token's use records ``last``)."""
    return {key: value for key, value in state.items() if not key.startswith(keys.token(""))}


# -- another user's token ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), CHANGES, ids=IDS)
def test_another_users_token_cannot_change_the_vm(roles_api, redis, name, method, path, body, status):
    before = dump(redis)
    resp = call(roles_api, method, path, body, token("bob1"))
    assert resp.status_code == 403
    assert resp.json == denied()
    assert "www-authenticate" not in resp.headers  # 403, not a login prompt
    assert without_token_uses(dump(redis)) == without_token_uses(before)
    assert not changed(redis, name)


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), CHANGES, ids=IDS)
@pytest.mark.parametrize("caller", ["alice1", "alice2", "root1"], ids=["same-token", "same-user", "admin"])
def test_the_owner_and_an_admin_can_change_the_vm(roles_api, redis, name, method, path, body, status, caller):
    resp = call(roles_api, method, path, body, token(caller))
    assert resp.status_code == status, resp.json
    assert changed(redis, name)
    assert redis.hget(keys.token(caller), "last") == NOW_TEXT


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), CHANGES, ids=IDS)
@pytest.mark.parametrize("headers", [{}, {"X-AUTH-TOKEN": "nosuchtoken"}], ids=["none", "unknown"])
def test_no_token_or_an_unknown_one_is_still_401(roles_api, redis, name, method, path, body, status, headers):
    resp = call(roles_api, method, path, body, headers)
    assert resp.status_code == 401
    assert resp.json == {"ok": False}
    assert not changed(redis, name)


def test_changing_tags_of_a_vm_checked_out_with_a_token_needs_a_token(roles_api, redis):
    """the original let anyone tag any VM; a VM with an owner now needs the owner's or an admin's token"""
    resp = call(roles_api, "PUT", "/api/v3/vm/d1", {"tags": {"project": "x"}}, {})
    assert resp.status_code == 401
    assert not redis.hexists(keys.vm_hash("d1"), "tag:project")


def test_a_put_without_lifetime_or_tags_is_a_400_for_anyone(roles_api, redis):
    resp = call(roles_api, "PUT", "/api/v3/vm/d1", {"colour": "red"}, token("bob1"))
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "failure": ["Unknown argument red."]}


def test_a_bad_lifetime_from_the_owner_is_still_a_400(roles_api, redis):
    resp = call(roles_api, "PUT", "/api/v3/vm/d1", {"lifetime": "soon"}, token("alice2"))
    assert resp.status_code == 400


def test_a_vm_checked_out_without_a_token_stays_open(roles_api, redis):
    """as the original: no owner, no ownership check (lifetime, disk and snapshots still need a token)"""
    add_running(redis, DEB, "free1")
    tags = call(roles_api, "PUT", "/api/v3/vm/free1", {"tags": {"project": "x"}}, {})
    assert tags.status_code == 200
    lifetime = call(roles_api, "PUT", "/api/v3/vm/free1", {"lifetime": 3}, token("bob1"))
    assert lifetime.status_code == 200
    assert call(roles_api, "POST", "/api/v3/vm/free1/snapshot", None, token("bob1")).status_code == 202
    assert call(roles_api, "DELETE", "/api/v3/vm/free1", None, {}).status_code == 200
    assert redis.hget(keys.vm_hash("free1"), "lifetime") == "3"


# -- tokens --------------------------------------------------------------------------------------------


def test_another_user_cannot_delete_your_token(roles_api, redis):
    resp = roles_api.delete("/api/v3/token/alice1", headers=basic("bob"))
    assert resp.status_code == 403
    assert resp.json == {
        "ok": False,
        "error": "this token belongs to another user; only its owner or an admin may delete it",
    }
    assert redis.exists(keys.token("alice1"))


def test_the_owner_and_an_admin_can_delete_a_token(roles_api, redis):
    assert roles_api.delete("/api/v3/token/alice1", headers=basic("alice")).status_code == 200
    assert roles_api.delete("/api/v3/token/alice2", headers=basic("root")).status_code == 200
    assert not redis.exists(keys.token("alice1")) and not redis.exists(keys.token("alice2"))
    assert redis.smembers(keys.user_tokens("alice")) == set()


def test_a_token_records_whether_its_user_is_an_admin(roles_api, redis):
    admin = roles_api.post("/api/v3/token", headers=basic("root")).json["token"]
    plain = roles_api.post("/api/v3/token", headers=basic("carol")).json["token"]
    assert redis.hgetall(keys.token(admin)) == {"user": "root", "created": NOW_TEXT, "admin": "true"}
    assert redis.hgetall(keys.token(plain)) == {"user": "carol", "created": NOW_TEXT}  # the original's
    shown = roles_api.get(f"/api/v3/token/{admin}").json
    assert shown == {"ok": True, admin: {"user": "root", "created": NOW_TEXT}}  # the original's fields


def test_removing_a_user_from_admins_takes_effect_at_once(roles_api, make_api, redis):
    admin = roles_api.post("/api/v3/token", headers=basic("root")).json["token"]
    assert redis.hget(keys.token(admin), "admin") == "true"
    demoted = make_api(ADMINS.replace("admins: [root]", "admins: []"), env=AUTH_ENV)
    resp = call(demoted, "PUT", "/api/v3/vm/d1", {"lifetime": 5}, token(admin))
    assert (resp.status_code, resp.json) == (403, denied())
    promoted = make_api(ADMINS.replace("admins: [root]", "admins: [bob]"), env=AUTH_ENV)
    assert call(promoted, "PUT", "/api/v3/vm/d1", {"lifetime": 5}, token("bob1")).status_code == 200


# -- on-demand requests --------------------------------------------------------------------------------


def test_on_demand_delete_is_for_the_owner_or_an_admin(roles_api, redis):
    made = roles_api.post("/api/v3/ondemandvm", body=json.dumps({DEB: "1"}), headers=token("alice1"))
    request_id = made.json["request_id"]
    resp = roles_api.delete(f"/api/v3/ondemandvm/{request_id}", headers=token("bob1"))
    assert resp.status_code == 403
    assert resp.json == {
        "ok": False,
        "error": f"request {request_id} belongs to another user; only its owner or an admin may delete it",
    }
    assert redis.hget(keys.odrequest(request_id), "status") is None
    assert roles_api.delete(f"/api/v3/ondemandvm/{request_id}", headers=token("root1")).json == {"ok": True}
    assert redis.hget(keys.odrequest(request_id), "status") == "deleted"


# -- pool configuration --------------------------------------------------------------------------------

POOL_CHANGES = [
    ("POST", "/api/v3/config/poolsize", {DEB: "1"}),
    ("DELETE", f"/api/v3/config/poolsize/{DEB}", None),
    ("POST", "/api/v3/config/pooltemplate", {DEB: "templates/new"}),
    ("POST", "/api/v3/config/clonetarget", {DEB: "cluster9"}),
    ("POST", "/api/v3/poolreset", {DEB: "1"}),
]


@pytest.mark.parametrize(("method", "path", "body"), POOL_CHANGES)
def test_only_an_admin_may_change_the_pool_configuration(roles_api, redis, method, path, body):
    redis.hset(keys.config_override("poolsize"), DEB, "2")
    before = without_token_uses(dump(redis))
    resp = call(roles_api, method, path, body, token("alice1"))
    assert (resp.status_code, resp.json) == (
        403,
        {"ok": False, "error": "only an admin may change the pool configuration"},
    )
    assert without_token_uses(dump(redis)) == before
    assert call(roles_api, method, path, body, token("root1")).status_code == 201


def test_pool_configuration_without_auth_needs_nobody(make_api, redis):
    api = make_api(with_config("experimental_features: true"))
    assert call(api, "POST", "/api/v3/config/poolsize", {DEB: "1"}, {}).status_code == 201
    assert call(api, "POST", "/api/v3/poolreset", {DEB: "1"}, {}).status_code == 201


# -- without auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), CHANGES, ids=IDS)
def test_without_auth_everything_stays_open(make_api, redis, name, method, path, body, status):
    """tokens are ignored without ``:auth:``, even on a VM that was checked out with one"""
    add_running(redis, DEB, "d1", **{"token:token": "alice1", "token:user": "alice", "snapshot:s1": SNAPSHOT})
    add_token(redis, "bob1", "bob")
    api = make_api(with_config("experimental_features: true"))
    for headers in ({}, token("bob1")):
        resp = call(api, method, path, body, headers)
        if name == "delete" and headers:  # returned already by the first call
            assert resp.status_code == 404
            continue
        assert resp.status_code == status
    assert changed(redis, name)


# -- admins through LDAP groups ------------------------------------------------------------------------


class GroupDirectory(DummyAuthenticator):
    """The dummy authenticator with the ``groups`` lookup of an LDAP directory."""

    def __init__(self, groups: dict[str, frozenset[str]], *, broken: bool = False) -> None:
        self._groups = groups
        self._broken = broken

    def groups(self, username: str) -> frozenset[str]:
        if self._broken:
            raise OSError("directory unavailable")
        return self._groups.get(username, frozenset())


def group_api(redis_url: str, directory: GroupDirectory, admin_groups: str) -> Api:
    text = with_auth() + f"  admin_groups: {admin_groups}\n"
    config = attrs.evolve(load_config_text(text, env=AUTH_ENV), loaded_at=NOW - UPTIME)
    clock = Clock()
    app = create_app(
        config, Store.from_url(redis_url), clock=clock, rng=random.Random(7), authenticator=directory
    )
    return Api(app, clock, config)


def test_a_member_of_an_admin_group_is_an_admin_with_the_token_made_then(redis, redis_url):
    add_running(redis, DEB, "d1", **{"token:token": "alice1", "token:user": "alice"})
    directory = GroupDirectory({"carol": frozenset({GROUP_DN, "vmadmins"}), "dave": frozenset({"staff"})})
    api = group_api(redis_url, directory, "['CN=VMAdmins,ou=groups,dc=example,dc=com']")  # any case
    carol = api.post("/api/v3/token", headers=basic("carol")).json["token"]
    dave = api.post("/api/v3/token", headers=basic("dave")).json["token"]
    assert redis.hget(keys.token(carol), "admin") == "true"
    assert redis.hget(keys.token(carol), "admin_group") == "CN=VMAdmins,ou=groups,dc=example,dc=com"
    assert redis.hget(keys.token(dave), "admin") is None
    assert call(api, "PUT", "/api/v3/vm/d1", {"lifetime": 5}, token(dave)).status_code == 403
    # membership is read when the token is made: leaving the group counts with the next token
    directory._groups["carol"] = frozenset()
    assert call(api, "PUT", "/api/v3/vm/d1", {"lifetime": 5}, token(carol)).status_code == 200
    # a group taken out of admin_groups counts at once
    without = group_api(redis_url, directory, "[other]")
    assert call(without, "PUT", "/api/v3/vm/d1", {"lifetime": 6}, token(carol)).status_code == 403
    # a cn works as well as a DN
    directory._groups["erin"] = frozenset({GROUP_DN, "vmadmins"})
    by_cn = group_api(redis_url, directory, "[vmadmins]")
    erin = by_cn.post("/api/v3/token", headers=basic("erin")).json["token"]
    assert call(by_cn, "PUT", "/api/v3/vm/d1", {"lifetime": 7}, token(erin)).status_code == 200


def test_a_failing_group_lookup_makes_nobody_an_admin(redis, redis_url, caplog):
    api = group_api(redis_url, GroupDirectory({}, broken=True), "[vmadmins]")
    with caplog.at_level(logging.WARNING, logger="vmpooler.http.context"):
        made = api.post("/api/v3/token", headers=basic("carol"))
    assert made.status_code == 200
    assert redis.hget(keys.token(made.json["token"]), "admin") is None
    assert "group lookup of carol failed" in caplog.text
