"""The LDAP directory as :class:`vmpooler.http.auth.LdapAuthenticator` talks to it: an ``ldap3`` wrapper only.

ldap3 objects never leave this module's functions as anything but opaque connections. Every failure
of a directory that cannot answer (refused or timed-out connection, TLS failure, a dropped
connection, result ``busy``/``unavailable``) becomes :class:`AuthUnavailable`; a refused bind is
False and a failed search finds nothing.

ldap3 (2.9) is imported only when a :class:`Directory` is made, so it stays an optional dependency.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from vmpooler.errors import AuthUnavailable, ConfigError

if TYPE_CHECKING:
    from vmpooler.config.auth import LdapSettings

__all__ = ["TIMEOUT", "Directory", "ServiceConnections", "bind", "close", "find_one", "search"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds, for connecting to the LDAP server and for each of its answers. An int: ldap3 2.9 packs the
# receive timeout into a C struct (SO_RCVTIMEO), which refuses a float on every connection.
TIMEOUT = 5

_BUSY = {51, 52}  # LDAP result codes busy, unavailable: the directory cannot answer now
_KEEP_SERVICE_CONNECTIONS = 4  # idle service-account connections kept for reuse


class Directory:
    """Opens connections to the configured server: TCP, then TLS (LDAPS or StartTLS) when configured."""

    def __init__(self, settings: LdapSettings, timeout: float) -> None:
        try:
            import ldap3
        except ImportError:
            raise ConfigError(
                ":auth: provider 'ldap' needs the ldap3 package: "
                "pip install 'vmpooler[ldap]' (or pip install ldap3)"
            ) from None
        self._ldap3 = ldap3
        self._settings = settings
        self._timeout = max(1, math.ceil(timeout))  # whole seconds: see TIMEOUT
        self._tls = _tls(ldap3, settings) if settings.encryption else None
        self.where = f"{settings.host}:{settings.port}"

    def open(self) -> Any:
        """A new, open, anonymous ``ldap3.Connection`` (TLS established when configured).

        Raises:
            AuthUnavailable: the server cannot be reached, or TLS failed.
        """
        ldap3, s = self._ldap3, self._settings
        server = ldap3.Server(
            s.host,
            port=s.port,
            use_ssl=s.encryption == "simple_tls",
            tls=self._tls,
            get_info=ldap3.NONE,
            connect_timeout=self._timeout,
        )
        conn = ldap3.Connection(
            server,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            read_only=True,
            receive_timeout=self._timeout,
            raise_exceptions=False,
            auto_referrals=False,
        )
        try:
            with _answers(f"connecting to {self.where}"):
                conn.open(read_server_info=False)
                if s.encryption == "start_tls" and not conn.start_tls(read_server_info=False):
                    raise AuthUnavailable(f"{self.where} refused StartTLS: {conn.result}")
        except BaseException:
            close(conn)
            raise
        return conn

    @contextlib.contextmanager
    def user_connection(self) -> Iterator[Callable[[], Any]]:
        """A function returning this login's connection, opened at its first call; closed at exit."""
        opened: list[Any] = []

        def conn() -> Any:
            if not opened:
                opened.append(self.open())
            return opened[0]

        try:
            yield conn
        finally:
            for connection in opened:
                close(connection)


class ServiceConnections:
    """Connections bound as the service account, reused: each serves one request at a time."""

    def __init__(self, directory: Directory, dn: str, password: str) -> None:
        self._directory = directory
        self._dn = dn
        self._password = password
        self._lock = threading.Lock()
        self._idle: list[Any] = []

    def run(self, operation: Callable[[Any], T]) -> T:
        """``operation(connection)`` on an idle connection, else on a new one.

        A reused connection that fails to communicate (the server closed it, or restarted) is closed
        and the operation runs once more on a new one; one that timed out is not retried, so that a
        hung server costs one timeout.

        Raises:
            AuthUnavailable: the directory cannot answer, or the service account cannot bind.
        """
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                result = operation(conn)
            except AuthUnavailable as err:
                close(conn)
                if isinstance(err.__cause__, TimeoutError):
                    raise
                log.info("ldap: a reused service-account connection failed (%s); opening a new one", err)
            else:
                self._give_back(conn)
                return result
        conn = self._open()
        try:
            result = operation(conn)
        except BaseException:
            close(conn)
            raise
        self._give_back(conn)
        return result

    def _open(self) -> Any:
        conn = self._directory.open()
        try:
            if not bind(conn, self._dn, self._password):
                reason = conn.result.get("description") if isinstance(conn.result, dict) else None
                log.error("ldap: the service account %s cannot bind: %s", self._dn, reason)
                raise AuthUnavailable(f"the LDAP service account cannot bind ({reason})")
        except BaseException:
            close(conn)
            raise
        return conn

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < _KEEP_SERVICE_CONNECTIONS:
                self._idle.append(conn)
                return
        close(conn)


def _tls(ldap3: Any, settings: LdapSettings) -> Any:
    """An ``ldap3.Tls`` whose handshake uses ``ssl.create_default_context``: the standard library checks
    the certificate chain and the host name or IP address (ldap3 2.9 matches names itself, and on
    Python 3.12+ with a fallback that cannot match an IP address)."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as err:
        where = ":auth:.ldap.encryption.tls_options.ca_file"
        raise ConfigError(f"{where}: cannot load {settings.ca_file}: {err}") from None
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    class ContextTls(ldap3.Tls):
        def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
            connection.socket = context.wrap_socket(
                connection.socket, server_hostname=settings.host, do_handshake_on_connect=do_handshake
            )

    return ContextTls(validate=context.verify_mode)


@contextlib.contextmanager
def _answers(doing: str) -> Iterator[None]:
    """Turns the errors of a directory that cannot answer into :class:`AuthUnavailable`."""
    from ldap3.core import exceptions as errors

    try:
        yield
    except (
        errors.LDAPCommunicationError,
        errors.LDAPStartTLSError,
        errors.LDAPCertificateError,
        errors.LDAPSSLConfigurationError,
        OSError,
    ) as err:
        log.warning("ldap: %s failed: %s: %s", doing, type(err).__name__, err)
        raise AuthUnavailable(f"{doing}: {type(err).__name__}") from err


def bind(conn: Any, dn: str, password: str) -> bool:
    """Simple bind as ``dn`` on the open ``conn``; False when the directory refuses it.

    Raises:
        AuthUnavailable: the directory cannot answer (or says it is busy or unavailable).
    """
    from ldap3 import SIMPLE
    from ldap3.core.exceptions import LDAPException

    conn.user, conn.password, conn.authentication = dn, password, SIMPLE
    try:
        with _answers(f"binding as {dn}"):
            if conn.bind(read_server_info=False):
                return True
    except LDAPException as err:  # a client-side refusal (e.g. a malformed DN): a failed bind
        log.warning("ldap: bind as %s refused: %s", dn, type(err).__name__)
        return False
    result = conn.result if isinstance(conn.result, dict) else {}
    if result.get("result") in _BUSY:
        raise AuthUnavailable(f"the directory is {result.get('description')}")
    log.debug("ldap: bind as %s refused: %s", dn, result.get("description"))
    return False


def search(conn: Any, base: str, search_filter: str, attributes: Any, *, limit: int) -> list[dict[str, Any]]:
    """The entries under ``base`` (subtree) matching ``search_filter``; none when the search fails.

    Raises:
        AuthUnavailable: the directory cannot answer (or says it is busy or unavailable).
    """
    import ldap3

    with _answers(f"searching {base}"):
        conn.search(base, search_filter, search_scope=ldap3.SUBTREE, attributes=attributes, size_limit=limit)
    result = conn.result if isinstance(conn.result, dict) else {}
    code = result.get("result")
    if code in _BUSY:
        raise AuthUnavailable(f"the directory is {result.get('description')}")
    if code not in (0, 4, 32):  # success, sizeLimitExceeded (entries follow), noSuchObject (no base)
        log.warning("ldap: search %s under %s failed: %s", search_filter, base, result.get("description"))
    return [e for e in conn.response or () if e.get("type") == "searchResEntry"]


def find_one(conn: Any, base: str, search_filter: str) -> str | None:
    """The DN of the one entry matching ``search_filter`` under ``base``; None if none or several."""
    import ldap3

    found = search(conn, base, search_filter, ldap3.NO_ATTRIBUTES, limit=2)
    if len(found) > 1:
        log.warning("ldap: %s matches several entries under %s: refused", search_filter, base)
        return None
    return str(found[0]["dn"]) if found else None


def close(conn: Any) -> None:
    """Unbind and close; never raises."""
    try:
        conn.unbind()
    except Exception:  # already closed, never opened, or the server is gone
        log.debug("ldap: unbind failed", exc_info=True)
