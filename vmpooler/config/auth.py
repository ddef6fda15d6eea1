"""The ``:auth:`` section and its ``:ldap:`` settings: the one place they are validated.

``provider`` is ``dummy`` (any password that differs from the user name; only with env
``VMPOOLER_DEBUG`` set to a true value) or ``ldap``. The LDAP settings are parsed here into
:class:`LdapSettings`, which :mod:`vmpooler.http.auth` uses as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmpooler.config.env import env_flag
from vmpooler.config.reader import Context, SectionReader, run_alone
from vmpooler.config.values import Kind, symbol
from vmpooler.errors import ConfigError

__all__ = ["AuthConfig", "LdapSettings"]

_METHODS = ("simple_tls", "start_tls")


@attrs.frozen(kw_only=True)
class LdapSettings:
    """The ``:auth: :ldap:`` settings, ready to use.

    Attributes:
        host: the directory server.
        port: its port (389, or 636 for LDAPS).
        bases: search bases, tried in order (a string is split on whitespace: DNs hold commas).
        user_objects: naming attributes (``uid``, ``samAccountName``), tried in order for each base.
        group_bases: where the user's groups are searched (``group_base``, ours; a string is split
            like ``base``). Default: the ``dc=`` suffix of each base (``dc=example,dc=com`` of
            ``ou=people,dc=example,dc=com``), or the base itself when it has none.
        encryption: None (plain LDAP), ``"simple_tls"`` (LDAPS) or ``"start_tls"``.
        ca_file: ``tls_options: ca_file``, the CA bundle to verify the server with (None: the system's).
        verify: False when ``tls_options: verify_mode`` is ``none``.
        service_dn: the service account of search-then-bind, None to bind as the user directly.
        service_password: its password.
    """

    host: str
    port: int = 389
    bases: tuple[str, ...]
    user_objects: tuple[str, ...]
    group_bases: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda self: _suffixes(self.bases), takes_self=True)
    )
    encryption: str | None = None
    ca_file: str | None = None
    verify: bool = True
    service_dn: str | None = None
    service_password: str = attrs.field(default="", repr=False)

    @classmethod
    def from_mapping(cls, ldap: Mapping[str, Any]) -> LdapSettings:
        """Validate an ``:ldap:`` mapping alone.

        Raises:
            ConfigError: with every problem found.
        """
        return run_alone(lambda ctx: cls._parse(ldap, ":auth:.ldap", ctx))

    @classmethod
    def _parse(cls, data: object, path: str, ctx: Context) -> LdapSettings | None:
        before = len(ctx.problems)
        reader = SectionReader(data, path, ctx)
        host = reader.get("host", Kind.STR, required=True)
        port = reader.port("port", 389)
        bases, user_objects = _names(reader, "base"), _names(reader, "user_object")
        group_bases = _names(reader, "group_base", required=False) or _suffixes(bases)
        encryption = reader.get("encryption", Kind.MAPPING, {})
        method = symbol(str(encryption.get("method") or "").strip()) or None
        if method not in (None, *_METHODS):
            ctx.problem(f"{path}.encryption.method", f"must be simple_tls or start_tls, got {method!r}")
        tls = encryption.get("tls_options") or {}
        if not isinstance(tls, Mapping):
            ctx.problem(f"{path}.encryption.tls_options", f"must be a mapping, got {tls!r:.60}")
            tls = {}
        verify_mode = (symbol(str(tls.get("verify_mode") or "").strip()) or "peer").lower()
        if verify_mode not in ("peer", "none"):
            ctx.problem(
                f"{path}.encryption.tls_options.verify_mode", f"must be peer or none, got {verify_mode!r}"
            )
        service = reader.get("service_account_hash", Kind.MAPPING, {})
        if service and not service.get("user_dn"):
            ctx.problem(f"{path}.service_account_hash.user_dn", "is required")
        reader.warn_unknown()
        if host is None or len(ctx.problems) > before:
            return None
        return cls(
            host=host,
            port=port or 389,
            bases=bases,
            user_objects=user_objects,
            group_bases=group_bases,
            encryption=method,
            ca_file=symbol(str(tls["ca_file"])) if tls.get("ca_file") else None,
            verify=verify_mode == "peer",
            service_dn=str(service["user_dn"]) if service else None,
            service_password=str(service.get("password") or ""),
        )


def _names(reader: SectionReader, key: str, *, required: bool = True) -> tuple[str, ...]:
    """``base`` / ``user_object`` / ``group_base``: a list, or a string split on whitespace (DNs hold
    commas)."""
    given = reader.data.get(key)
    if isinstance(given, str):
        reader.used.add(key)
        names = tuple(given.split())
    else:
        names = reader.get(key, Kind.STR_LIST, ())
    if not names and required:
        reader.ctx.problem(reader.at(key), "is required")
    return names


def _suffixes(bases: tuple[str, ...]) -> tuple[str, ...]:
    """The default ``group_bases``: each base's trailing ``dc=`` RDNs, or the base when it has none."""
    found: dict[str, None] = {}
    for base in bases:
        rdns = [rdn.strip() for rdn in base.split(",")]
        start = len(rdns)
        while start > 0 and rdns[start - 1].lower().startswith("dc="):
            start -= 1
        found[",".join(rdns[start:]) if start < len(rdns) else base] = None
    return tuple(found)


@attrs.frozen(kw_only=True)
class AuthConfig:
    """The ``:auth:`` section: ``provider`` is ``dummy`` or ``ldap``; ``ldap`` holds its settings.

    Attributes:
        admins: user names that may change any VM and token and use the pool configuration endpoints
            (ours; the original had no roles).
        admin_groups: LDAP groups whose members are admins (their DNs, or their ``cn``).
    """

    provider: str = attrs.field(validator=attrs.validators.in_(("dummy", "ldap")))
    ldap: LdapSettings | None = None
    admins: tuple[str, ...] = ()
    admin_groups: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> AuthConfig:
        """Validate an ``:auth:`` mapping alone (``env`` is consulted for ``VMPOOLER_DEBUG``).

        Raises:
            ConfigError: with every problem found.
        """
        return run_alone(lambda ctx: cls._parse(data, ctx), env)

    @classmethod
    def _parse(cls, data: object, ctx: Context) -> AuthConfig | None:
        reader = SectionReader(data, ":auth:", ctx)
        provider = symbol(reader.get("provider", Kind.STR, required=True))
        if provider not in (None, "dummy", "ldap"):
            ctx.problem(reader.at("provider"), f"must be 'dummy' or 'ldap', got {provider!r}")
        try:
            debug = env_flag("VMPOOLER_DEBUG", ctx.env)
        except ConfigError as err:
            ctx.problems.extend(err.problems)
            debug = False
        if provider == "dummy" and not debug:
            ctx.problem(
                reader.at("provider"),
                "'dummy' accepts any password: only allowed when env VMPOOLER_DEBUG is true",
            )
        admins = reader.get("admins", Kind.STR_LIST, ())
        admin_groups = reader.get("admin_groups", Kind.STR_LIST, ())
        if admin_groups and provider != "ldap":
            ctx.warn(f"{reader.at('admin_groups')}: not used: groups come from LDAP only")
        reader.used.add("ldap")
        ldap = None
        if provider == "ldap":
            ldap = LdapSettings._parse(reader.data.get("ldap"), reader.at("ldap"), ctx)
        elif reader.given("ldap"):
            ctx.warn(f"{reader.at('ldap')}: not used: :auth:.provider is {provider!r}")
        reader.warn_unknown()
        if provider not in ("dummy", "ldap"):
            return None
        return cls(provider=provider, ldap=ldap, admins=tuple(admins), admin_groups=tuple(admin_groups))
