"""Who is calling: HTTP Basic credentials checked against the ``:auth:`` provider.

Only the token routes take a user name and password; every other route identifies its caller by
``X-AUTH-TOKEN`` (:meth:`vmpooler.http.context.ApiContext.owner`).

* ``dummy`` accepts any user whose password differs from the name (``admin``/``s3cr3t`` yes, ``a``/``a``
  no). The config loader allows it only with ``VMPOOLER_DEBUG`` set to a true value.
* ``ldap`` settings are validated by the config loader (:class:`vmpooler.config.LdapSettings`).
* ``ldap`` binds to the directory with the ``ldap3`` package, an optional dependency
  (``pip install 'vmpooler[ldap]'``), imported only when LDAP is configured.

Differences from the original:

* An empty password is refused before any LDAP traffic: a simple bind with an empty password is an
  *unauthenticated* bind, which most servers accept (RFC 4513 §5.1.2), so any user name would have
  passed. A request whose Basic user name is empty counts as no credentials (401).
* The user name is escaped where it goes into a DN (RFC 4514) or a search filter (RFC 4515), so a name
  such as ``*`` or ``bob,ou=admins`` cannot change what is bound or searched.
* TLS certificates are verified (``tls_options: {verify_mode: none}`` turns that off, ``ca_file`` names
  the CA bundle). ``tls_options: ssl_version`` is accepted and ignored: Python negotiates the newest
  TLS version both ends support. Connecting and each answer time out after 5 seconds.

Passwords are never logged.
"""

from __future__ import annotations

import abc
import base64
import binascii
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from vmpooler.config.auth import LdapSettings
from vmpooler.errors import ConfigError

if TYPE_CHECKING:
    import falcon

    from vmpooler.config import AuthConfig

__all__ = [
    "TIMEOUT",
    "Authenticator",
    "DummyAuthenticator",
    "LdapAuthenticator",
    "LdapConnection",
    "LdapSettings",
    "basic_credentials",
    "escape_dn_value",
    "escape_filter_value",
    "make_authenticator",
]

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds, for connecting to and for each answer of the LDAP server


class Authenticator(abc.ABC):
    """Checks a user name and password.

    The token resources call :meth:`authenticate` once per request that needs Basic authentication,
    on the API worker thread serving it; implementations must be thread-safe and must never log the
    password.
    """

    @abc.abstractmethod
    def authenticate(self, username: str, password: str) -> bool:
        """True if ``password`` is ``username``'s. Failures of the backend count as False."""


class DummyAuthenticator(Authenticator):
    """Accepts any user whose password is not the user name (for development only)."""

    def authenticate(self, username: str, password: str) -> bool:
        return username != password


class LdapConnection(Protocol):
    """One connection to the directory, as :class:`LdapAuthenticator` uses it.

    Made by a connect function ``(dn, password) -> LdapConnection`` for one bind identity.
    """

    def bind(self) -> bool:
        """Open the connection (with StartTLS when configured) and bind; False when refused."""

    def search_dns(self, base: str, search_filter: str) -> list[str]:
        """The DNs of the entries under ``base`` matching ``search_filter`` (subtree)."""

    def close(self) -> None:
        """Unbind and close; never raises."""


LdapConnect = Callable[[str, str], LdapConnection]


class LdapAuthenticator(Authenticator):
    """Binds to an LDAP directory as the user.

    For every base × user object, in order, either binds as ``<user_object>=<username>,<base>``, or,
    with a service account, binds as the service account, searches ``(<user_object>=<username>)``
    under the base and binds as the first entry found. The first successful bind wins.

    Args:
        settings: the parsed ``:ldap:`` settings.
        connect: makes a connection for one ``(dn, password)``; tests pass a fake. Default: ``ldap3``.

    Raises:
        ConfigError: ``connect`` is not given and ``ldap3`` is not installed.
    """

    def __init__(self, settings: LdapSettings, *, connect: LdapConnect | None = None) -> None:
        self._settings = settings
        self._connect = connect or _ldap3_connect(settings)

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
        s = self._settings
        for base in s.bases:
            for attr in s.user_objects:
                if s.service_dn is None:
                    dn: str | None = f"{attr}={escape_dn_value(username)},{base}"
                else:
                    dn = self._search(s.service_dn, base, f"({attr}={escape_filter_value(username)})")
                if dn is not None and self._bind(dn, password):
                    log.info("ldap: %s authenticated as %s", username, dn)
                    return True
        log.info("ldap: authentication of %s failed", username)
        return False

    def _bind(self, dn: str, password: str) -> bool:
        conn: LdapConnection | None = None
        try:
            conn = self._connect(dn, password)
            return conn.bind()
        except Exception as err:  # the backend's errors are many; any of them is a failed bind
            log.warning("ldap: bind as %s failed: %s", dn, type(err).__name__)
            return False
        finally:
            if conn is not None:
                conn.close()

    def _search(self, service_dn: str, base: str, search_filter: str) -> str | None:
        """The first DN matching the filter, found as the service account (as net-ldap's bind_as)."""
        conn: LdapConnection | None = None
        try:
            conn = self._connect(service_dn, self._settings.service_password)
            if not conn.bind():
                log.error("ldap: the service account %s cannot bind", service_dn)
                return None
            found = conn.search_dns(base, search_filter)
        except Exception as err:  # as in _bind
            log.warning("ldap: search %s under %s failed: %s", search_filter, base, type(err).__name__)
            return None
        finally:
            if conn is not None:
                conn.close()
        return found[0] if found else None


def _ldap3_connect(settings: LdapSettings) -> LdapConnect:
    """A connect function using ``ldap3`` (imported here, so that it stays optional)."""
    try:
        import ldap3
    except ImportError:
        raise ConfigError(
            ":auth: provider 'ldap' needs the ldap3 package: "
            "pip install 'vmpooler[ldap]' (or pip install ldap3)"
        ) from None
    tls = None
    if settings.encryption:
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED if settings.verify else ssl.CERT_NONE,
            ca_certs_file=settings.ca_file,
        )
    server = ldap3.Server(
        settings.host,
        port=settings.port,
        use_ssl=settings.encryption == "simple_tls",
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=TIMEOUT,
    )
    start_tls = settings.encryption == "start_tls"

    def connect(dn: str, password: str) -> LdapConnection:
        conn = ldap3.Connection(
            server,
            user=dn,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            receive_timeout=TIMEOUT,
            auto_escape=False,
        )
        return _Ldap3Connection(conn, start_tls=start_tls)

    return connect


class _Ldap3Connection:
    """:class:`LdapConnection` over an ``ldap3.Connection``."""

    def __init__(self, conn: Any, *, start_tls: bool) -> None:
        self._conn = conn
        self._start_tls = start_tls

    def bind(self) -> bool:
        self._conn.open()
        if self._start_tls and not self._conn.start_tls():
            return False
        return bool(self._conn.bind())

    def search_dns(self, base: str, search_filter: str) -> list[str]:
        import ldap3

        self._conn.search(base, search_filter, search_scope=ldap3.SUBTREE, attributes=[], size_limit=2)
        return [e["dn"] for e in self._conn.response or () if e.get("type") == "searchResEntry"]

    def close(self) -> None:
        try:
            self._conn.unbind()
        except Exception:  # already closed or never opened
            log.debug("ldap: unbind failed", exc_info=True)


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
