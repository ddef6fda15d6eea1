"""Who is calling: HTTP Basic credentials checked against the ``:auth:`` provider.

Only the token routes take a user name and password; every other route identifies its caller by
``X-AUTH-TOKEN`` (:meth:`vmpooler.http.context.ApiContext.owner`).

* ``dummy`` accepts any user whose password differs from the name (``admin``/``s3cr3t`` yes, ``a``/``a``
  no). The config loader allows it only with ``VMPOOLER_DEBUG`` set to a true value.
* ``ldap`` (:class:`LdapAuthenticator`) binds to the directory with the ``ldap3`` package, an optional
  dependency (``pip install 'vmpooler[ldap]'``), imported only when LDAP is configured. Its settings
  are validated by the config loader (:class:`vmpooler.config.LdapSettings`).

Differences from the original:

* An empty password is refused before any LDAP traffic: a simple bind with an empty password is an
  *unauthenticated* bind, which most servers accept (RFC 4513 §5.1.2), so any user name would have
  passed. A request whose Basic user name is empty counts as no credentials (401).
* The user name is escaped where it goes into a DN (RFC 4514) or a search filter (RFC 4515), so a name
  such as ``*)(uid=*`` or ``bob,ou=admins`` cannot change what is bound or searched. A search that
  finds more than one entry for a name is refused (the original bound as the first).
* A directory that cannot answer (down, unreachable, timed out, TLS failure, busy, service account
  refused) raises :class:`AuthUnavailable`, which the API answers with a 503; the original answered
  401, as for a wrong password. Connecting and each answer time out after :data:`TIMEOUT` seconds.
* TLS certificates and host names are verified by the standard library (``tls_options: {verify_mode:
  none}`` turns that off, ``ca_file`` names the CA bundle). ``tls_options: ssl_version`` is accepted
  and ignored: Python negotiates the newest TLS version both ends support (1.2 at least).
* The user's groups are looked up at login (:meth:`Authenticator.groups`), for ``admin_groups``.

Passwords are never logged.
"""

from __future__ import annotations

import abc
import base64
import binascii
import collections
import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmpooler.config.auth import LdapSettings
from vmpooler.errors import AuthUnavailable, ConfigError
from vmpooler.http import ldap_client
from vmpooler.http.ldap_client import TIMEOUT

if TYPE_CHECKING:
    import falcon

    from vmpooler.config import AuthConfig

__all__ = [
    "TIMEOUT",
    "AuthUnavailable",
    "Authenticator",
    "DummyAuthenticator",
    "LdapAuthenticator",
    "LdapSettings",
    "basic_credentials",
    "escape_dn_value",
    "escape_filter_value",
    "make_authenticator",
]

log = logging.getLogger(__name__)

_REMEMBERED_USERS = 1024  # users whose groups of their last login are kept


class Authenticator(abc.ABC):
    """Checks a user name and password, and tells the user's groups.

    The token resources call :meth:`authenticate` once per request that needs Basic authentication,
    then (``POST /token``) :meth:`groups` of the same user, on the API worker thread serving it;
    implementations must be thread-safe and must never log the password.
    """

    @abc.abstractmethod
    def authenticate(self, username: str, password: str) -> bool:
        """True if ``password`` is ``username``'s, False if not.

        Raises:
            AuthUnavailable: the backend cannot answer now (the API answers 503).
        """

    def groups(self, username: str) -> frozenset[str]:
        """The groups ``username`` was found in when :meth:`authenticate` last accepted them (in this
        process); empty if never, or when the backend has no groups (the default)."""
        return frozenset()


class DummyAuthenticator(Authenticator):
    """Accepts any user whose password is not the user name (for development only); no groups."""

    def authenticate(self, username: str, password: str) -> bool:
        return username != password


class LdapAuthenticator(Authenticator):
    """Binds to an LDAP directory as the user.

    For every base × user object, in order, either binds as ``<user_object>=<username>,<base>``, or,
    with a service account, searches ``(<user_object>=<username>)`` under the base as the service
    account and binds as the entry found. The first successful bind wins. Then the user's groups are
    searched under each of ``group_bases``: the entries whose ``member`` or ``uniqueMember`` is the
    user's DN (as the service account when there is one, else as the user); :meth:`groups` returns
    their DNs and ``cn`` values.

    Each login opens a connection of its own for the user's binds (one connection, bound in turn as
    each candidate DN) and closes it. Service-account connections are kept bound and reused (a few at
    most, one request at a time each); a reused one that fails is replaced once.

    Args:
        settings: the parsed ``:ldap:`` settings.
        timeout: seconds for connecting and for each answer (rounded up to whole seconds).

    Raises:
        ConfigError: ``ldap3`` is not installed.
    """

    def __init__(self, settings: LdapSettings, *, timeout: float = TIMEOUT) -> None:
        self._settings = settings
        self._directory = ldap_client.Directory(settings, timeout)
        self._service = (
            ldap_client.ServiceConnections(self._directory, settings.service_dn, settings.service_password)
            if settings.service_dn is not None
            else None
        )
        self._lock = threading.Lock()
        self._groups: collections.OrderedDict[str, frozenset[str]] = collections.OrderedDict()

    @property
    def settings(self) -> LdapSettings:
        return self._settings

    def candidate_dns(self, username: str) -> list[str]:
        """The DNs tried by a direct bind, in order."""
        value = escape_dn_value(username)
        s = self._settings
        return [f"{attr}={value},{base}" for base in s.bases for attr in s.user_objects]

    def authenticate(self, username: str, password: str) -> bool:
        if not username or not password:
            return False
        with self._directory.user_connection() as conn:
            dn = self._bind_user(conn, username, password)
            if dn is None:
                log.info("ldap: authentication of %s failed", username)
                return False
            if self._service is not None:
                groups = self._service.run(lambda service: self._find_groups(service, dn))
            else:
                groups = self._find_groups(conn(), dn)
        with self._lock:
            self._groups[username] = groups
            self._groups.move_to_end(username)
            while len(self._groups) > _REMEMBERED_USERS:
                self._groups.popitem(last=False)
        log.info("ldap: %s authenticated as %s (%d groups)", username, dn, len(groups))
        return True

    def groups(self, username: str) -> frozenset[str]:
        with self._lock:
            return self._groups.get(username, frozenset())

    def _bind_user(self, conn: Callable[[], Any], username: str, password: str) -> str | None:
        """The DN ``username`` bound as on ``conn()`` with ``password``, None when none accepted it."""
        s = self._settings
        for base in s.bases:
            for attr in s.user_objects:
                if self._service is None:
                    dn: str | None = f"{attr}={escape_dn_value(username)},{base}"
                else:
                    search_filter = f"({attr}={escape_filter_value(username)})"
                    dn = self._service.run(
                        functools.partial(ldap_client.find_one, base=base, search_filter=search_filter)
                    )
                if dn is not None and ldap_client.bind(conn(), dn, password):
                    return dn
        return None

    def _find_groups(self, conn: Any, dn: str) -> frozenset[str]:
        value = escape_filter_value(dn)
        search_filter = f"(|(member={value})(uniqueMember={value}))"
        found: set[str] = set()
        for base in self._settings.group_bases:
            for entry in ldap_client.search(conn, base, search_filter, ["cn"], limit=0):
                found.add(entry["dn"])
                found.update(str(cn) for cn in entry.get("attributes", {}).get("cn", ()))
        return frozenset(found)


def escape_dn_value(value: str) -> str:
    """``value`` escaped as an attribute value of a DN (RFC 4514 §2.4)."""
    out = []
    for i, char in enumerate(value):
        if char in '\\,+"<>;=' or (char == "#" and i == 0) or (char == " " and i in (0, len(value) - 1)):
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def escape_filter_value(value: str) -> str:
    """``value`` escaped for an assertion value of a search filter (RFC 4515 §3)."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\0" else c for c in value)


def basic_credentials(req: falcon.Request) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, None if absent or malformed."""
    header = req.get_header("Authorization")
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def make_authenticator(auth: AuthConfig | None) -> Authenticator | None:
    """The authenticator of the ``:auth:`` section, None when none is configured.

    Raises:
        ConfigError: LDAP is configured but unusable (e.g. ``ldap3`` is not installed).
    """
    if auth is None:
        return None
    if auth.provider == "dummy":
        return DummyAuthenticator()
    if auth.ldap is None:  # AuthConfig guarantees settings for 'ldap'; a hand-built one may lack them
        raise ConfigError(":auth:.ldap: required when :auth:.provider is 'ldap'")
    return LdapAuthenticator(auth.ldap)
