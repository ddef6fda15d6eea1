"""A real OpenLDAP ``slapd`` for the LDAP tests: a process of the test session on free loopback ports.

:class:`Slapd` writes a ``slapd.conf`` (two ``mdb`` databases), a CA and a server certificate made with
``openssl`` (SAN ``127.0.0.1`` and ``localhost``), loads :data:`USERS`, :data:`SERVICE` and the groups
with ``slapadd``, and serves plain LDAP (StartTLS offered) on :attr:`Slapd.port` and LDAPS on
:attr:`Slapd.ldaps_port`. It needs the Debian packages ``slapd`` and ``ldap-utils`` (``scripts/lib.sh``
installs them); when it cannot start, :class:`SlapdError` says why, and the fixtures fail the tests
(they never skip).

The directory::

    dc=example,dc=com
      ou=people     uid=alice, uid=bob, uid=smith\\, jo, uid=star*ry (x), uid=erin   (named by uid)
      ou=services   cn=vmpooler-svc                                     (the service account)
      ou=groups     cn=vmpooler-admins (groupOfNames: alice, carol)
    dc=example,dc=org
      ou=staff      cn=carol, cn=erin                                   (named by cn)
      ou=groups     cn=ops (groupOfUniqueNames: carol)

Anonymous clients may only bind; bound ones read everything but passwords (as most directories).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from tests.support.service import free_port
from tests.support.waiting import poll

__all__ = [
    "ADMINS",
    "OPS",
    "PEOPLE",
    "SERVICE",
    "STAFF",
    "USERS",
    "Slapd",
    "SlapdError",
    "User",
    "running_slapd",
]

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_TIMEOUT = 15.0  # seconds for slapd to listen
STOP_TIMEOUT = 10.0  # seconds a SIGTERM gets before SIGKILL
LDAPS_ADDRESSES = ("127.0.0.1", "127.0.0.2")  # LDAPS listens on both; the certificate names the first

PEOPLE = "ou=people,dc=example,dc=com"
STAFF = "ou=staff,dc=example,dc=org"
ADMINS = "cn=vmpooler-admins,ou=groups,dc=example,dc=com"
OPS = "cn=ops,ou=groups,dc=example,dc=org"


@attrs.frozen
class User:
    """An entry that can bind: its login ``name``, ``dn`` and ``password``."""

    name: str
    dn: str
    password: str


USERS = {
    "alice": User("alice", f"uid=alice,{PEOPLE}", "alice-Secret-1"),
    "bob": User("bob", f"uid=bob,{PEOPLE}", "bob-Secret-2"),
    "smith, jo": User("smith, jo", f"uid=smith\\, jo,{PEOPLE}", "smith-Secret-3"),
    "star*ry (x)": User("star*ry (x)", f"uid=star*ry (x),{PEOPLE}", "starry-Secret-8"),
    "carol": User("carol", f"cn=carol,{STAFF}", "carol-Secret-4"),
    # one name in both bases, with a password of each: either one logs in
    "erin": User("erin", f"uid=erin,{PEOPLE}", "erin-com-Secret-5"),
    "erin@org": User("erin", f"cn=erin,{STAFF}", "erin-org-Secret-6"),
}
SERVICE = User("vmpooler-svc", "cn=vmpooler-svc,ou=services,dc=example,dc=com", "svc-Secret-7")

_CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
TLSCACertificateFile {root}/tls/ca.crt
TLSCertificateFile {root}/tls/server.crt
TLSCertificateKeyFile {root}/tls/server.key
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none

database mdb
suffix "dc=example,dc=com"
directory {root}/com
maxsize 16777216

database mdb
suffix "dc=example,dc=org"
directory {root}/org
maxsize 16777216
"""


class SlapdError(Exception):
    """slapd could not be set up or started; the message says why (and ends with its log)."""


def _ssha(password: str) -> str:
    """``{SSHA}`` of ``password`` (salted SHA-1, as ``slappasswd`` makes it)."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _entry(dn: str, *attributes: tuple[str, str]) -> str:
    return "\n".join([f"dn: {dn}", *(f"{name}: {value}" for name, value in attributes)]) + "\n"


def _person(user: User, naming: str) -> str:
    return _entry(
        user.dn,
        ("objectClass", "inetOrgPerson"),
        (naming, user.name),
        *((("cn", user.name),) if naming != "cn" else ()),
        ("sn", user.name),
        ("userPassword", _ssha(user.password)),
    )


def _com_ldif() -> str:
    people = [u for u in USERS.values() if u.dn.endswith(PEOPLE)]
    return "\n".join(
        [
            _entry(
                "dc=example,dc=com",
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", "example"),
                ("o", "Example (com)"),
            ),
            *(
                _entry(f"ou={ou},dc=example,dc=com", ("objectClass", "organizationalUnit"), ("ou", ou))
                for ou in ("people", "services", "groups")
            ),
            *(_person(u, "uid") for u in people),
            _entry(
                SERVICE.dn,
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "vmpooler-svc"),
                ("userPassword", _ssha(SERVICE.password)),
            ),
            _entry(
                ADMINS,
                ("objectClass", "groupOfNames"),
                ("cn", "vmpooler-admins"),
                ("member", USERS["alice"].dn),
                ("member", USERS["carol"].dn),
            ),
        ]
    )


def _org_ldif() -> str:
    staff = [u for u in USERS.values() if u.dn.endswith(STAFF)]
    return "\n".join(
        [
            _entry(
                "dc=example,dc=org",
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", "example"),
                ("o", "Example (org)"),
            ),
            *(
                _entry(f"ou={ou},dc=example,dc=org", ("objectClass", "organizationalUnit"), ("ou", ou))
                for ou in ("staff", "groups")
            ),
            *(_person(u, "cn") for u in staff),
            _entry(
                OPS, ("objectClass", "groupOfUniqueNames"), ("cn", "ops"), ("uniqueMember", USERS["carol"].dn)
            ),
        ]
    )


def _run(*command: str | Path, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlapdError(f"{command[0]}: {exc}") from exc
    if done.returncode != 0:
        raise SlapdError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr}")


def _make_ca(tls: Path, name: str) -> None:
    _run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", tls / f"{name}.key", "-out", tls / f"{name}.crt", "-days", "3",
        "-subj", f"/CN=vmpooler test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def make_certificates(tls: Path) -> None:
    """``ca.crt`` and ``server.crt``/``server.key`` (signed by it), and an unrelated ``other-ca.crt``."""
    tls.mkdir(parents=True, exist_ok=True)
    _make_ca(tls, "ca")
    _make_ca(tls, "other-ca")
    (tls / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _run(
        "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", tls / "server.key", "-out", tls / "server.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    _run(
        "openssl", "x509", "-req", "-in", tls / "server.csr", "-CA", tls / "ca.crt", "-CAkey", tls / "ca.key",
        "-CAcreateserial", "-days", "3", "-extfile", tls / "server.ext", "-out", tls / "server.crt",
    )  # fmt: skip


class Slapd:
    """One slapd with its data in ``root``; :meth:`setup` once, then :meth:`start`/:meth:`stop` at will.

    Attributes:
        root: its config, data, certificates and log.
        port: plain LDAP (StartTLS offered) on 127.0.0.1.
        ldaps_port: LDAPS on 127.0.0.1, and on 127.0.0.2, a name its certificate does not hold.
        ca_file: the CA that signed the server certificate.
        other_ca_file: a CA that did not.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.ldaps_port = free_port()
        self.ca_file = root / "tls" / "ca.crt"
        self.other_ca_file = root / "tls" / "other-ca.crt"
        self.log = root / "slapd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        """Certificates, ``slapd.conf`` and the loaded databases.

        Raises:
            SlapdError: ``slapd``, ``slapadd`` or ``openssl`` is missing or failed.
        """
        for tool in ("slapd", "slapadd", "openssl"):
            if _which(tool) is None:
                raise SlapdError(
                    f"{tool} not found: install the Debian packages slapd and ldap-utils "
                    "(scripts/test.sh does, via scripts/lib.sh vmp_ensure_slapd)"
                )
        if not (SCHEMA_DIR / "core.schema").exists():
            raise SlapdError(f"no OpenLDAP schema in {SCHEMA_DIR}: install the Debian package slapd")
        make_certificates(self.root / "tls")
        conf = self.root / "slapd.conf"
        conf.write_text(_CONF.format(schema=SCHEMA_DIR, modules=MODULE_DIR, root=self.root))
        loads = (("dc=example,dc=com", "com", _com_ldif()), ("dc=example,dc=org", "org", _org_ldif()))
        for _, name, ldif in loads:
            (self.root / name).mkdir()
            (self.root / f"{name}.ldif").write_text(ldif)
        for suffix, name, _ in loads:
            _run(_which("slapadd") or "slapadd", "-f", conf, "-b", suffix, "-l", self.root / f"{name}.ldif")

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start slapd and wait until both ports accept connections.

        Raises:
            SlapdError: it exited or did not listen in time (with its log).
        """
        # 127.0.0.2 is not in the certificate: a client that checks host names refuses it
        urls = " ".join(
            (
                f"ldap://127.0.0.1:{self.port}/",
                *(f"ldaps://{ip}:{self.ldaps_port}/" for ip in LDAPS_ADDRESSES),
            )
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [_which("slapd") or "slapd", "-f", str(self.root / "slapd.conf"), "-h", urls, "-d", "stats"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        listening = poll(
            lambda: self.proc is None or self.proc.poll() is not None or self._listening(),
            START_TIMEOUT,
            0.05,
        )
        if not listening or self.proc.poll() is not None:
            self.stop()
            raise SlapdError(
                f"slapd did not start on {urls}:\n{self.log.read_text(errors='replace')[-4000:]}"
            )

    def _listening(self) -> bool:
        for address in (("127.0.0.1", self.port), *((ip, self.ldaps_port) for ip in LDAPS_ADDRESSES)):
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                continue
            return False
        return True

    def ensure_running(self) -> None:
        """Start it again if a test left it stopped."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def stop(self) -> None:
        """SIGTERM slapd (SIGKILL after ``STOP_TIMEOUT``); nothing listens on its ports afterwards."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # in case a test left it paused
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """slapd is not running inside the block, and runs again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """slapd is stopped with SIGSTOP inside the block: connections are accepted (by the kernel),
        nothing is answered. SIGCONT after it."""
        assert self.proc is not None, "slapd is not running"
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def ldap_settings(self, **overrides: Any) -> dict[str, Any]:
        """An ``:auth: :ldap:`` mapping for this server: both bases, ``uid`` then ``cn``, plain LDAP."""
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "base": [PEOPLE, STAFF],
            "user_object": ["uid", "cn"],
        }
        settings.update(overrides)
        return settings


def _which(tool: str) -> str | None:
    """``tool`` on PATH, or in /usr/sbin (not on a non-root user's PATH on Debian)."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


@contextlib.contextmanager
def running_slapd() -> Iterator[Slapd]:
    """A set-up, started :class:`Slapd` in a temporary directory; stopped and removed afterwards.

    Raises:
        SlapdError: it could not be set up or started.
    """
    root = Path(tempfile.mkdtemp(prefix="vmpooler-test-slapd-"))
    server = Slapd(root)
    try:
        server.setup()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
