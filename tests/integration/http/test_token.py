"""``/token`` and the authenticators of ``vmpooler.http.auth``.

Here: the dummy authenticator, and what the LDAP settings and escaping are without a directory. LDAP
against a real slapd: ``tests/integration/auth/test_ldap.py``.
"""

from __future__ import annotations

import base64
import re
import sys
from typing import Any

import pytest
from falcon import testing

from tests.integration.http.conftest import (
    BASE_CONFIG,
    CENTOS,
    DEB,
    NOW_TEXT,
    REALM,
    add_ready,
    add_running,
    add_token,
    dump,
)
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.errors import ConfigError
from vmpooler.http.app import create_app
from vmpooler.http.auth import (
    DummyAuthenticator,
    LdapAuthenticator,
    LdapSettings,
    basic_credentials,
    escape_dn_value,
    escape_filter_value,
    make_authenticator,
)
from vmpooler.store import Store

pytestmark = pytest.mark.integration

CREATED = "2026-11-01 12:00:00 +0000"  # what add_token writes
TOKEN_SHAPE = re.compile(r"[a-y][a-z0-9]{31}")
VERSIONS = (1, 2, 3)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE = basic("alice", "s3cr3t")
BOB = basic("bob", "hunter2")


def assert_401(resp: Any, **body: Any) -> None:
    assert resp.status_code == 401
    assert resp.json == {"ok": False, **body}
    assert resp.headers["www-authenticate"] == REALM


# -- auth not configured ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/token"), ("POST", "/token"), ("GET", "/token/tok1"), ("DELETE", "/token/tok1")],
)
def test_every_token_route_is_404_without_auth(api, redis, version, method, path):
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    resp = api.simulate_request(method, f"/api/v{version}{path}", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
    assert "www-authenticate" not in resp.headers
    assert dump(redis) == before


# -- Basic authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("admin", "admin"),  # the dummy provider refuses a password equal to the name
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic"},
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b":password").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
        {"X-AUTH-TOKEN": "tok1"},  # a token is not a user
    ],
    ids=["none", "same", "bearer", "empty", "garbage", "no-colon", "no-user", "not-utf8", "token"],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/token"), ("POST", "/token"), ("DELETE", "/token/tok1")]
)
def test_basic_auth_is_required(auth_api, redis, headers, method, path):
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    resp = auth_api.simulate_request(method, f"/api/v3{path}", headers=headers)
    assert_401(resp)
    assert dump(redis) == before


def test_basic_scheme_is_case_insensitive(auth_api, redis):
    header = ALICE["Authorization"].replace("Basic", "bAsIc")
    resp = auth_api.post("/api/v3/token", headers={"Authorization": header})
    assert resp.status_code == 200


def test_basic_credentials_parsing():
    def parse(value: str | None) -> tuple[str, str] | None:
        headers = {"Authorization": value} if value is not None else {}
        return basic_credentials(testing.create_req(headers=headers))

    assert parse(ALICE["Authorization"]) == ("alice", "s3cr3t")
    assert parse("Basic " + base64.b64encode(b"bob:pa:ss:").decode()) == ("bob", "pa:ss:")
    assert parse("Basic " + base64.b64encode(b"bob:").decode()) == ("bob", "")
    assert parse("Basic " + base64.b64encode("jürgen:ü".encode()).decode()) == ("jürgen", "ü")
    assert parse(None) is None
    assert parse("Basic") is None
    assert parse("Digest abc") is None
    assert parse("Basic YWxpY2U6cw") is None  # bad padding


def test_dummy_authenticator():
    dummy = DummyAuthenticator()
    assert dummy.authenticate("admin", "s3cr3t")
    assert not dummy.authenticate("a", "a")


# -- POST /token --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_post_token_creates_one(auth_api, redis, version):
    resp = auth_api.post(f"/api/v{version}/token", headers=ALICE)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    token = resp.json["token"]
    assert resp.json == {"ok": True, "token": token}
    assert TOKEN_SHAPE.fullmatch(token)
    assert redis.hgetall(keys.token(token)) == {"user": "alice", "created": NOW_TEXT}


def test_post_token_twice_gives_two_tokens(auth_api, redis):
    first = auth_api.post("/api/v3/token", headers=ALICE).json["token"]
    second = auth_api.post("/api/v3/token", headers=ALICE).json["token"]
    assert first != second
    assert set(auth_api.get("/api/v3/token", headers=ALICE).json) == {"ok", first, second}


# -- GET /token -------------------------------------------------------------------------------------


def test_get_token_lists_only_the_callers_tokens(auth_api, redis):
    add_token(redis, "tok1", "alice")
    add_token(redis, "tok2", "alice")
    redis.hset(keys.token("tok2"), "last", "2026-11-20 08:00:00 +0000")
    add_token(redis, "tok3", "bob")
    resp = auth_api.get("/api/v3/token", headers=ALICE)
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "tok1": {"created": CREATED, "last": "never"},
        "tok2": {"created": CREATED, "last": "2026-11-20 08:00:00 +0000"},
    }
    assert resp.json.keys() == {"ok", "tok1", "tok2"}
    assert auth_api.get("/api/v3/token", headers=BOB).json == {
        "ok": True,
        "tok3": {"created": CREATED, "last": "never"},
    }


def test_get_token_without_tokens_is_404(auth_api, redis):
    add_token(redis, "tok3", "bob")
    resp = auth_api.get("/api/v3/token", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


def test_using_a_token_for_a_checkout_updates_last(auth_api, redis):
    add_ready(redis, DEB, "d1")
    token = auth_api.post("/api/v3/token", headers=ALICE).json["token"]
    assert auth_api.get("/api/v3/token", headers=ALICE).json[token]["last"] == "never"
    auth_api.clock.advance(3600)
    resp = auth_api.post(f"/api/v3/vm/{DEB}", headers={"X-AUTH-TOKEN": token})
    assert resp.status_code == 200
    assert auth_api.get("/api/v3/token", headers=ALICE).json[token] == {
        "created": NOW_TEXT,
        "last": "2026-11-21 11:00:00 +0000",
    }


# -- GET /token/<token> ---------------------------------------------------------------------------


def test_get_one_token_needs_no_auth(auth_api, redis):
    add_token(redis, "tok1", "alice")
    resp = auth_api.get("/api/v3/token/tok1")
    assert resp.status_code == 200
    assert resp.json == {"ok": True, "tok1": {"user": "alice", "created": CREATED}}


def test_get_unknown_token_is_404(auth_api, redis):
    resp = auth_api.get("/api/v3/token/nosuchtoken")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


@pytest.mark.parametrize("version", VERSIONS)
def test_get_token_shows_its_running_vms_and_last_use(auth_api, redis, version):
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    add_token(redis, "tok1", "alice")
    add_token(redis, "tok2", "bob")
    add_running(redis, CENTOS, "c9", **{"token:token": "tok2", "token:user": "bob"})  # another token's
    add_running(redis, DEB, "d9")  # anonymous
    redis.hset(keys.vm_hash("d2"), "token:token", "tok1")  # ready, so not running
    resp = auth_api.post(f"/api/v3/vm/{DEB}+{CENTOS}", headers={"X-AUTH-TOKEN": "tok1"})
    assert resp.status_code == 200
    taken = {resp.json[DEB]["hostname"].split(".")[0], resp.json[CENTOS]["hostname"].split(".")[0]}
    resp = auth_api.get(f"/api/v{version}/token/tok1")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "tok1": {
            "user": "alice",
            "created": CREATED,
            "last": NOW_TEXT,
            "vms": {"running": sorted(taken)},
        },
    }


def test_returned_vms_leave_the_token(auth_api, redis):
    add_token(redis, "tok1", "alice")
    add_running(redis, DEB, "d1", **{"token:token": "tok1", "token:user": "alice"})
    assert auth_api.get("/api/v3/token/tok1").json["tok1"]["vms"] == {"running": ["d1"]}
    assert auth_api.delete("/api/v3/vm/d1", headers={"X-AUTH-TOKEN": "tok1"}).status_code == 200
    assert "vms" not in auth_api.get("/api/v3/token/tok1").json["tok1"]


@pytest.mark.parametrize("token", ["bad.token", "tok*", "x" * 65, "t%C3%BC", "a%20b"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_malformed_token_is_400(auth_api, redis, method, token):
    add_token(redis, "tok1", "alice")
    before = dump(redis)
    resp = auth_api.simulate_request(method, f"/api/v3/token/{token}", headers=ALICE)
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Invalid token format"}
    assert dump(redis) == before


def test_longest_token_is_accepted(auth_api, redis):
    token = "A_-9" * 16
    add_token(redis, token, "alice")
    assert auth_api.get(f"/api/v3/token/{token}").status_code == 200


# -- DELETE /token/<token> ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_delete_own_token(auth_api, redis, version):
    add_token(redis, "tok1", "alice")
    add_token(redis, "tok2", "alice")
    resp = auth_api.delete(f"/api/v{version}/token/tok1", headers=ALICE)
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert not redis.exists(keys.token("tok1"))
    assert redis.exists(keys.token("tok2"))
    again = auth_api.delete(f"/api/v{version}/token/tok1", headers=ALICE)
    assert again.status_code == 404
    assert again.json == {"ok": False}


def test_delete_missing_token_is_404_when_authenticated(auth_api, redis):
    # deliberate fix: the original answered 401
    resp = auth_api.delete("/api/v3/token/nosuchtoken", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


def test_delete_another_users_token_is_403(auth_api, redis):
    # deliberate fix: the original deleted any token
    add_token(redis, "tok3", "bob")
    before = dump(redis)
    resp = auth_api.delete("/api/v3/token/tok3", headers=ALICE)
    assert resp.status_code == 403
    assert resp.json == {
        "ok": False,
        "error": "this token belongs to another user; only its owner or an admin may delete it",
    }
    assert "www-authenticate" not in resp.headers
    assert dump(redis) == before
    assert auth_api.delete("/api/v3/token/tok3", headers=BOB).status_code == 200


def test_deleted_token_no_longer_authenticates(auth_api, redis):
    add_ready(redis, DEB, "d1")
    token = auth_api.post("/api/v3/token", headers=ALICE).json["token"]
    assert auth_api.delete(f"/api/v3/token/{token}", headers=ALICE).status_code == 200
    assert_401(auth_api.post(f"/api/v3/vm/{DEB}", headers={"X-AUTH-TOKEN": token}))
    assert auth_api.get(f"/api/v3/token/{token}").status_code == 404


# -- LDAP (without a directory: tests/integration/auth/test_ldap.py has a real one) ---------------------


BASES = ("ou=people,dc=example,dc=com", "ou=robots,dc=example,dc=com")
SERVICE = {"user_dn": "cn=svc,dc=example,dc=com", "password": "svc-pw"}


def ldap_settings(**overrides: Any) -> LdapSettings:
    values: dict[str, Any] = {
        "host": "ldap.example.com",
        "base": list(BASES),
        "user_object": ["uid", "cn"],
        **overrides,
    }
    return LdapSettings.from_mapping(values)


def test_ldap_dn_building_and_escaping():
    authenticator = LdapAuthenticator(ldap_settings())  # connects to nothing until a login
    assert authenticator.candidate_dns("alice") == [
        "uid=alice,ou=people,dc=example,dc=com",
        "cn=alice,ou=people,dc=example,dc=com",
        "uid=alice,ou=robots,dc=example,dc=com",
        "cn=alice,ou=robots,dc=example,dc=com",
    ]
    assert (
        authenticator.candidate_dns("alice,ou=people")[0]
        == "uid=alice\\,ou\\=people,ou=people,dc=example,dc=com"
    )
    assert escape_dn_value("bob,ou=admins") == "bob\\,ou\\=admins"
    assert escape_dn_value(' #a+b"<c>;d\\ ') == '\\ #a\\+b\\"\\<c\\>\\;d\\\\\\ '
    assert escape_dn_value("#x") == "\\#x"
    assert escape_filter_value("*)(uid=*") == "\\2a\\29\\28uid=\\2a"
    assert escape_filter_value("a\\b\0") == "a\\5cb\\00"


def test_ldap_refuses_empty_credentials_without_connecting():
    # an empty password would be an unauthenticated bind, which servers accept; nothing listens on
    # ldap.example.com, so any connection attempt would raise AuthUnavailable
    authenticator = LdapAuthenticator(ldap_settings())
    assert not authenticator.authenticate("alice", "")
    assert not authenticator.authenticate("", "pw")
    assert authenticator.groups("alice") == frozenset()


def test_ldap_settings_from_config_text():
    config = load_config_text(
        BASE_CONFIG
        + """
:auth:
  :provider: :ldap
  :ldap:
    :host: ldap.example.com
    :port: 636
    :base: ou=people,dc=example,dc=com ou=robots,dc=example,dc=com
    :user_object: uid cn
    :encryption:
      :method: :simple_tls
      :tls_options:
        :ssl_version: TLSv1_2
    :service_account_hash:
      :user_dn: cn=svc,dc=example,dc=com
      :password: svc-pw
""",
        env={},
    )
    authenticator = make_authenticator(config.auth)
    assert isinstance(authenticator, LdapAuthenticator)
    settings = authenticator.settings
    assert (settings.host, settings.port, settings.encryption, settings.verify) == (
        "ldap.example.com",
        636,
        "simple_tls",
        True,
    )
    assert settings.bases == BASES  # a string is split on whitespace, never on the commas of a DN
    assert settings.user_objects == ("uid", "cn")
    assert settings.group_bases == ("dc=example,dc=com",)  # the bases' dc= suffixes
    assert (settings.service_dn, settings.service_password) == ("cn=svc,dc=example,dc=com", "svc-pw")
    assert "svc-pw" not in repr(settings)


def test_ldap_settings_defaults_and_errors():
    settings = ldap_settings(base="dc=example,dc=com", user_object="uid")
    assert (settings.port, settings.encryption, settings.service_dn) == (389, None, None)
    assert settings.bases == settings.group_bases == ("dc=example,dc=com",)
    assert ldap_settings(base="ou=people,o=corp").group_bases == ("ou=people,o=corp",)
    assert ldap_settings(group_base="ou=groups,dc=x ou=teams,dc=y").group_bases == (
        "ou=groups,dc=x",
        "ou=teams,dc=y",
    )
    assert ldap_settings(encryption={"method": "start_tls"}).encryption == "start_tls"
    assert not ldap_settings(
        encryption={"method": "simple_tls", "tls_options": {"verify_mode": "none"}}
    ).verify
    with pytest.raises(ConfigError, match="must be simple_tls or start_tls"):
        ldap_settings(encryption={"method": "ssl"})
    with pytest.raises(ConfigError) as err:
        LdapSettings.from_mapping({"host": "h"})
    assert err.value.problems == [":auth:.ldap.base: is required", ":auth:.ldap.user_object: is required"]


def test_ldap_with_a_missing_ca_file_fails_at_creation():
    settings = ldap_settings(
        encryption={"method": "start_tls", "tls_options": {"ca_file": "/nonexistent.pem"}}
    )
    with pytest.raises(ConfigError, match=r"tls_options.ca_file: cannot load /nonexistent.pem"):
        LdapAuthenticator(settings)


def test_ldap_without_ldap3_fails_at_app_creation(redis_url, monkeypatch):
    monkeypatch.setitem(sys.modules, "ldap3", None)  # import ldap3 raises ImportError
    config = load_config_text(
        BASE_CONFIG
        + ":auth:\n  provider: ldap\n  ldap:\n    host: h\n    base: dc=x\n    user_object: uid\n",
        env={},
    )
    store = Store.from_url(redis_url)
    try:
        with pytest.raises(ConfigError, match=r"pip install ldap3"):
            create_app(config, store)
    finally:
        store.close()
