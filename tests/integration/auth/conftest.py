"""Fixtures of the authentication tests: a real OpenLDAP slapd for the session (``tests.support.slapd``),
and ``create_app(...)`` with ``:auth:`` LDAP in a Falcon ``TestClient`` on the real redis-server.

slapd not starting fails every test that uses it, with the reason; nothing is skipped.
"""

from __future__ import annotations

import base64
import random
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from falcon import testing

from tests.support.slapd import SERVICE, Slapd, SlapdError, running_slapd
from vmpooler.config import Config, load_config_text
from vmpooler.http.app import create_app
from vmpooler.http.auth import Authenticator, LdapAuthenticator
from vmpooler.store import Store

POOLS = """
:pools:
  - name: debian-12
    template: templates/debian-12
    size: 1
"""
UNAVAILABLE = {"ok": False, "error": "the authentication directory (LDAP) is unavailable, try again shortly"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def service_account(password: str = SERVICE.password) -> dict[str, Any]:
    """``service_account_hash`` of the directory's service account."""
    return {"service_account_hash": {"user_dn": SERVICE.dn, "password": password}}


def auth_config_text(ldap: dict[str, Any], **auth: Any) -> str:
    """A whole config: one pool and ``:auth:`` LDAP with the ``ldap`` settings (and ``auth`` keys)."""
    section = yaml.safe_dump({"provider": "ldap", **auth, "ldap": ldap}, sort_keys=False)
    return POOLS + ":auth:\n" + textwrap.indent(section, "  ")


class Api(testing.TestClient):
    """A TestClient that also knows the app's config and authenticator."""

    def __init__(self, app: Any, config: Config, authenticator: Authenticator | None) -> None:
        super().__init__(app)
        self.config = config
        self.authenticator = authenticator


@pytest.fixture(scope="session")
def slapd_server() -> Iterator[Slapd]:
    try:
        with running_slapd() as server:
            yield server
    except SlapdError as err:
        pytest.fail(f"the LDAP tests need a slapd, which did not start: {err}", pytrace=False)


@pytest.fixture
def slapd(slapd_server: Slapd) -> Slapd:
    """The session's slapd, running (started again if a test stopped it)."""
    slapd_server.ensure_running()
    return slapd_server


@pytest.fixture
def make_ldap_api(redis_url: str, slapd: Slapd) -> Iterator[Callable[..., Api]]:
    """``make_ldap_api(**ldap_overrides, timeout=None, auth={...})``: the app with LDAP against slapd.

    ``ldap_overrides`` change :meth:`Slapd.ldap_settings`; ``timeout`` makes the authenticator with
    that timeout (default: the one the config makes, as in production).
    """
    stores: list[Store] = []

    def make(*, timeout: int | None = None, auth: dict[str, Any] | None = None, **ldap: Any) -> Api:
        config = load_config_text(auth_config_text(slapd.ldap_settings(**ldap), **(auth or {})), env={})
        assert config.auth is not None and config.auth.ldap is not None
        authenticator = LdapAuthenticator(config.auth.ldap, timeout=timeout) if timeout else None
        store = Store.from_url(redis_url)
        stores.append(store)
        app = create_app(config, store, rng=random.Random(7), authenticator=authenticator)
        return Api(app, config, authenticator)

    yield make
    for store in stores:
        store.close()
