"""LDAP authentication against a real OpenLDAP slapd (``tests.support.slapd``), through the token routes.

The directory has two bases (``ou=people,dc=example,dc=com``, users named by ``uid``, and
``ou=staff,dc=example,dc=org``, named by ``cn``), a service account, a ``groupOfNames`` of admins and
a ``groupOfUniqueNames``. Every test goes through ``create_app`` and ``POST /token`` unless it is about
:meth:`LdapAuthenticator.groups`; one runs the real service over HTTP.

A directory that cannot be used (stopped, hung, TLS refused: a wrong CA or a host name the certificate
does not hold, the service account refused) is a 503 within the timeout, never a 401 (the password was
not checked) and never a 500.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from tests.integration.auth.conftest import (
    UNAVAILABLE,
    Api,
    auth_config_text,
    basic,
    service_account,
)
from tests.support.service import free_port, start_service
from tests.support.slapd import ADMINS, OPS, PEOPLE, STAFF, USERS, Slapd, User
from tests.support.waiting import TIMEOUT_SCALE
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.http import auth
from vmpooler.http.auth import LdapAuthenticator, LdapSettings

pytestmark = pytest.mark.integration

REALM = 'Basic realm="Authentication required"'
MODES = {"direct bind": {}, "search-then-bind": service_account()}


def login(api: Api, user: str, password: str) -> tuple[int, dict[str, object]]:
    resp = api.post("/api/v3/token", headers=basic(user, password))
    return resp.status_code, resp.json


def assert_refused(api: Api, user: str, password: str) -> None:
    resp = api.post("/api/v3/token", headers=basic(user, password))
    assert (resp.status_code, resp.json) == (401, {"ok": False}), (user, resp.text)
    assert resp.headers["www-authenticate"] == REALM


def assert_unavailable(api: Api, user: User, within: float) -> None:
    started = time.monotonic()
    resp = api.post("/api/v3/token", headers=basic(user.name, user.password))
    took = time.monotonic() - started
    assert (resp.status_code, resp.json) == (503, UNAVAILABLE), resp.text
    assert resp.headers["retry-after"] == "5"
    assert took < within, f"503 after {took:.1f}s"


def ldaps(slapd: Slapd, ca_file: Path, **tls: str) -> dict[str, object]:
    return {
        "port": slapd.ldaps_port,
        "encryption": {"method": "simple_tls", "tls_options": {"ca_file": str(ca_file), **tls}},
    }


def start_tls(ca_file: Path, **tls: str) -> dict[str, object]:
    return {"encryption": {"method": "start_tls", "tls_options": {"ca_file": str(ca_file), **tls}}}


# -- every base × user object, direct and search-then-bind ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", USERS)
def test_every_user_of_every_base_logs_in_with_their_password_only(make_ldap_api, redis, mode, key):
    api = make_ldap_api(**MODES[mode])
    user = USERS[key]
    status, body = login(api, user.name, user.password)
    assert status == 200, body
    assert redis.hget(keys.token(str(body["token"])), "user") == user.name
    assert_refused(api, user.name, user.password + "x")
    assert_refused(api, user.name, user.password.upper())


@pytest.mark.parametrize("mode", MODES)
def test_each_base_and_user_object_alone(make_ldap_api, mode):
    alice, carol = USERS["alice"], USERS["carol"]
    people = make_ldap_api(base=PEOPLE, user_object="uid", **MODES[mode])
    staff = make_ldap_api(base=STAFF, user_object="cn", **MODES[mode])
    assert login(people, alice.name, alice.password)[0] == 200
    assert_refused(people, carol.name, carol.password)  # carol is in the other base
    assert login(staff, carol.name, carol.password)[0] == 200
    assert_refused(staff, alice.name, alice.password)
    # alice's entry is named by uid but has a cn too: a bind as cn=alice,<base> names no entry, a
    # search for (cn=alice) finds hers
    by_cn = make_ldap_api(base=PEOPLE, user_object="cn", **MODES[mode])
    if mode == "direct bind":
        assert_refused(by_cn, alice.name, alice.password)
    else:
        assert login(by_cn, alice.name, alice.password)[0] == 200


def test_search_then_bind_finds_users_in_the_second_base(make_ldap_api, redis):
    api = make_ldap_api(**service_account())
    status, body = login(api, "carol", USERS["carol"].password)
    assert status == 200
    assert redis.hget(keys.token(str(body["token"])), "user") == "carol"
    assert_refused(api, "carol", "wrong")
    assert_refused(api, "nobody", "whatever")
    assert_refused(api, "vmpooler-svc", USERS["alice"].password)  # the service account is no user


def test_search_then_bind_with_a_refused_service_account_is_unavailable(make_ldap_api):
    api = make_ldap_api(**service_account("wrong"))
    assert_unavailable(api, USERS["alice"], within=5)


# -- names that try to change the DN or the filter, empty passwords -----------------------------------

HOSTILE = [
    "*",
    "*)(uid=*",
    "al*",
    "alice)(|(uid=*",
    "alice,ou=people",
    "admin,ou=x",
    "uid=alice,ou=people,dc=example,dc=com",
    "alice\\",
    "alice\x00",
    "#alice",
]  # (not " alice" or "ALICE": uid values match ignoring case and outer spaces, so those are alice)


@pytest.mark.parametrize("mode", MODES)
def test_hostile_names_are_refused_with_any_password(make_ldap_api, mode):
    api = make_ldap_api(**MODES[mode])
    for name in HOSTILE:
        for password in (USERS["alice"].password, "x"):
            assert_refused(api, name, password)


@pytest.mark.parametrize("mode", MODES)
def test_names_holding_dn_and_filter_characters_are_escaped_not_refused(make_ldap_api, mode):
    api = make_ldap_api(**MODES[mode])
    for key in ("smith, jo", "star*ry (x)"):
        assert login(api, key, USERS[key].password)[0] == 200
    assert_refused(api, "star*", USERS["star*ry (x)"].password)  # '*' is no wildcard


@pytest.mark.parametrize("mode", MODES)
def test_empty_password_is_refused(make_ldap_api, mode):
    # an empty password is an unauthenticated bind, which slapd accepts for any DN
    api = make_ldap_api(**MODES[mode])
    assert_refused(api, "alice", "")
    assert_refused(api, "nobody", "")


# -- TLS ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_ldaps_verified_with_the_ca(make_ldap_api, slapd, host):
    api = make_ldap_api(host=host, **ldaps(slapd, slapd.ca_file))
    assert login(api, "alice", USERS["alice"].password)[0] == 200
    assert_refused(api, "alice", "wrong")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_starttls_verified_with_the_ca(make_ldap_api, slapd, host):
    api = make_ldap_api(host=host, **start_tls(slapd.ca_file), **service_account())
    assert login(api, "carol", USERS["carol"].password)[0] == 200
    assert_refused(api, "carol", "wrong")


def test_tls_with_another_ca_is_unavailable(make_ldap_api, slapd):
    # the certificate cannot be trusted: the directory is unreachable for us (503), no password was
    # checked (so not 401)
    for tls in (ldaps(slapd, slapd.other_ca_file), start_tls(slapd.other_ca_file)):
        assert_unavailable(make_ldap_api(**tls), USERS["alice"], within=5)


def test_tls_to_a_name_the_certificate_does_not_hold_is_unavailable(make_ldap_api, slapd):
    assert_unavailable(make_ldap_api(host="127.0.0.2", **ldaps(slapd, slapd.ca_file)), USERS["alice"], 5)


def test_tls_without_verification_accepts_any_certificate(make_ldap_api, slapd):
    api = make_ldap_api(host="127.0.0.2", **ldaps(slapd, slapd.other_ca_file, verify_mode="none"))
    assert login(api, "alice", USERS["alice"].password)[0] == 200
    assert_refused(api, "alice", "wrong")


def test_starttls_against_the_ldaps_port_is_unavailable(make_ldap_api, slapd):
    api = make_ldap_api(timeout=1, port=slapd.ldaps_port, **start_tls(slapd.ca_file))
    assert_unavailable(api, USERS["alice"], within=1 + 2 * TIMEOUT_SCALE)


# -- the directory down or hung: 503 within the timeout, and back when it is back -----------------------


@pytest.mark.parametrize("mode", MODES)
def test_stopped_directory_is_503_then_logins_work_again(make_ldap_api, slapd, mode):
    api = make_ldap_api(**MODES[mode])
    alice = USERS["alice"]
    assert login(api, alice.name, alice.password)[0] == 200  # the service connection is now reused
    with slapd.stopped():
        assert_unavailable(api, alice, within=auth.TIMEOUT + 2)
        assert_unavailable(api, USERS["carol"], within=auth.TIMEOUT + 2)
    assert login(api, alice.name, alice.password)[0] == 200
    assert_refused(api, alice.name, "wrong")


@pytest.mark.parametrize("mode", MODES)
def test_restarted_directory_replaces_reused_connections(make_ldap_api, slapd, mode):
    api = make_ldap_api(**MODES[mode])
    carol = USERS["carol"]
    assert login(api, carol.name, carol.password)[0] == 200
    slapd.stop()
    slapd.start()
    assert login(api, carol.name, carol.password)[0] == 200


@pytest.mark.parametrize("mode", MODES)
def test_hung_directory_is_503_within_the_timeout(make_ldap_api, slapd, mode):
    api = make_ldap_api(timeout=1, **MODES[mode])
    alice = USERS["alice"]
    assert login(api, alice.name, alice.password)[0] == 200
    with slapd.paused():  # connections are accepted by the kernel, nothing answers
        assert_unavailable(api, alice, within=1 + 2 * TIMEOUT_SCALE)  # a loaded machine may stall
    assert login(api, alice.name, alice.password)[0] == 200


def test_unroutable_directory_is_503_within_the_timeout(make_ldap_api):
    # 192.0.2.1 (TEST-NET-1) answers nothing: the connect times out, or fails at once without a route
    api = make_ldap_api(timeout=1, host="192.0.2.1")
    assert_unavailable(api, USERS["alice"], within=1 + 2 * TIMEOUT_SCALE)


def test_nothing_listening_is_503(make_ldap_api, slapd):
    for settings in ({}, start_tls(slapd.ca_file), ldaps(slapd, slapd.ca_file)):
        settings = {**settings, "port": free_port()}
        api = make_ldap_api(**settings)
        assert_unavailable(api, USERS["alice"], within=5)


# -- groups ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_groups_are_found_at_login(slapd, mode):
    authenticator = LdapAuthenticator(LdapSettings.from_mapping(slapd.ldap_settings(**MODES[mode])))
    admins = {ADMINS, "vmpooler-admins"}
    assert authenticator.groups("alice") == frozenset()  # not logged in yet
    assert authenticator.authenticate("alice", USERS["alice"].password)
    assert authenticator.groups("alice") == admins
    # carol: a member of a groupOfNames in the other suffix and of a groupOfUniqueNames in hers
    assert authenticator.authenticate("carol", USERS["carol"].password)
    assert authenticator.groups("carol") == admins | {OPS, "ops"}
    for other in ("bob", "smith, jo", "erin"):
        assert authenticator.authenticate(other, USERS[other].password)
        assert authenticator.groups(other) == frozenset()
    assert not authenticator.authenticate("bob", "wrong")
    assert authenticator.groups("bob") == frozenset()
    assert authenticator.groups("alice") == admins  # kept for each user


def test_groups_only_under_group_base(slapd):
    settings = LdapSettings.from_mapping(
        slapd.ldap_settings(group_base="ou=groups,dc=example,dc=org", **service_account())
    )
    authenticator = LdapAuthenticator(settings)
    assert authenticator.authenticate("carol", USERS["carol"].password)
    assert authenticator.groups("carol") == {OPS, "ops"}
    assert authenticator.authenticate("alice", USERS["alice"].password)
    assert authenticator.groups("alice") == frozenset()


def test_concurrent_logins_share_the_service_connections(slapd):
    authenticator = LdapAuthenticator(LdapSettings.from_mapping(slapd.ldap_settings(**service_account())))
    results: list[bool] = []
    lock = threading.Lock()

    def logins(user: User) -> None:
        for i in range(5):
            ok = authenticator.authenticate(user.name, user.password if i % 2 == 0 else "wrong")
            with lock:
                results.append(ok == (i % 2 == 0))

    threads = [threading.Thread(target=logins, args=(u,)) for u in USERS.values() for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 5 * len(threads) and all(results)
    assert authenticator.groups("carol") == {ADMINS, "vmpooler-admins", OPS, "ops"}


# -- the real service over HTTP -------------------------------------------------------------------------


@pytest.mark.acceptance
def test_real_service_over_http(slapd, redis_url, redis: redis_lib.Redis, tmp_path: Path):
    text = auth_config_text(slapd.ldap_settings(**start_tls(slapd.ca_file), **service_account()))
    config = tmp_path / "vmpooler.yaml"
    config.write_text(f":redis:\n  url: {redis_url}\n" + text)
    assert load_config_text(config.read_text(), env={}).auth is not None
    service = start_service(config, tmp_path / "vmpooler.log", "api")
    try:
        url = service.url("/api/v3/token")
        carol = USERS["carol"]
        resp = requests.post(url, auth=(carol.name, carol.password), timeout=30)
        assert resp.status_code == 200, resp.text
        token = resp.json()["token"]
        assert redis.hget(keys.token(token), "user") == "carol"
        resp = requests.post(url, auth=(carol.name, "wrong"), timeout=30)
        assert (resp.status_code, resp.json()) == (401, {"ok": False})
        with slapd.stopped():
            resp = requests.post(url, auth=(carol.name, carol.password), timeout=30)
            assert (resp.status_code, resp.json()) == (503, UNAVAILABLE)
        resp = requests.get(url, auth=(carol.name, carol.password), timeout=30)
        assert resp.status_code == 200 and token in resp.json()
    finally:
        service.stop()
