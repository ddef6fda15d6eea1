"""What every resource needs: config, store, clock, randomness and the API version's shape rules."""

from __future__ import annotations

import logging
import random
import secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import falcon

from vmpooler.http.errors import ApiError
from vmpooler.store import Pick
from vmpooler.store.queue import QueueSettings
from vmpooler.timeutil import format_time

if TYPE_CHECKING:
    from vmpooler.config import Config
    from vmpooler.http.auth import Authenticator
    from vmpooler.http.waiting import Waiters
    from vmpooler.store import Store

__all__ = ["ApiContext", "Owner", "generate_token"]

log = logging.getLogger(__name__)

_TOKEN_FIRST = string.ascii_lowercase[:25]  # a..y, as the original
_TOKEN_REST = string.ascii_lowercase + string.digits


def generate_token(length: int = 32) -> str:
    """A token or snapshot name: first character a–y, then ``[a-z0-9]``."""
    return secrets.choice(_TOKEN_FIRST) + "".join(secrets.choice(_TOKEN_REST) for _ in range(length - 1))


@attrs.frozen
class Owner:
    """The caller identified by a valid ``X-AUTH-TOKEN`` (or, on the token routes, by Basic auth).

    Attributes:
        token: the token sent ("" for a caller identified by Basic auth).
        user: the token's user.
        admin: the caller is an admin (see :meth:`ApiContext.owner`).
    """

    token: str
    user: str
    admin: bool = False

    def may_change(self, token: str | None, user: str | None) -> bool:
        """The ownership rule: may this caller change what was made with ``token`` by ``user``?

        Yes for the same token, the same user, or an admin.
        """
        return self.admin or (bool(token) and self.token == token) or (user is not None and self.user == user)


@attrs.frozen(kw_only=True)
class ApiContext:
    """Dependencies and per-version rules shared by the resources of one mount point.

    Attributes:
        version: 1, 2 or 3 (``/api/v<version>``).
        authenticator: checks Basic credentials of the token routes; None when no ``:auth:``.
        queue_settings: tenant weights and quotas, for every checkout and queue dispatch.
        waiters: this worker's waiting checkouts (``vmpooler.http.waiting``).
    """

    config: Config
    store: Store
    version: int = 3
    clock: Callable[[], float] = time.time
    rng: random.Random = attrs.field(factory=random.Random)
    authenticator: Authenticator | None = None
    queue_settings: QueueSettings = attrs.field(factory=QueueSettings)
    waiters: Waiters | None = None  # None: checkouts never wait (wait is ignored)

    def with_version(self, version: int) -> ApiContext:
        return attrs.evolve(self, version=version)

    def now(self) -> str:
        return format_time(self.clock())

    # -- hostnames -------------------------------------------------------------------------------

    def domain_of(self, pool: str | None) -> str | None:
        if pool is None or pool not in self.config.pools_by_name:
            return None
        return self.config.pool(pool).domain

    def hostname(self, vm: str, pool: str) -> str:
        """v2/v3: ``<vm>.<domain>`` when the pool has a domain; v1: the short name."""
        domain = self.domain_of(pool)
        if self.version >= 2 and domain:
            return f"{vm}.{domain}"
        return vm

    def v1_domain(self, pools: Iterable[str]) -> dict[str, str]:
        """The top-level ``domain`` key v1 responses carry (the first domain of ``pools``)."""
        if self.version != 1:
            return {}
        for pool in pools:
            domain = self.domain_of(pool)
            if domain:
                return {"domain": domain}
        return {}

    # -- authentication --------------------------------------------------------------------------

    @property
    def auth_enabled(self) -> bool:
        return self.config.auth is not None

    def owner(self, req: falcon.Request, *, required: bool) -> Owner | None:
        """The caller's token, validated when auth is configured.

        Without auth configured, tokens are ignored and everyone may do everything. With auth, a
        token that is sent must exist (401 otherwise), and ``required`` makes sending one mandatory.
        Each use of a token records it as ``last`` (once per request: the answer is kept on
        ``req.context``).

        The caller is an admin when the user is in ``:auth: admins`` of the config in force (not
        recorded on the token: a name removed counts as soon as the API runs with the new file), or
        when the token was made while the user was in an LDAP group of ``admin_groups`` that is still
        listed there (membership is looked up when a token is made: a change of membership takes
        effect with the user's next token).
        """
        if not self.auth_enabled:
            return None
        cached: Owner | None = getattr(req.context, "vmpooler_owner", None)
        if cached is not None:
            return cached
        token = req.get_header("X-AUTH-TOKEN")
        if not token:
            if required:
                raise ApiError(401)
            return None
        data = self.store.tokens.get(token)
        if not data:
            raise ApiError(401)
        self.store.tokens.touch(token, self.now())
        user = data.get("user", "")
        group = data.get("admin_group")
        admin = user in self._admins or (
            data.get("admin") == "true" and group is not None and group.casefold() in self._admin_groups
        )
        req.context.vmpooler_owner = Owner(token, user, admin)
        return req.context.vmpooler_owner

    def require_owner(
        self,
        req: falcon.Request,
        *,
        token: str | None,
        user: str | None,
        required: bool,
        denied: str,
    ) -> Owner | None:
        """Let the caller change something made with ``token`` by ``user`` (a VM, a request), or refuse.

        Without auth: None, open to everyone. With auth, when ``token`` is set the caller must send a
        valid token (401) of the same token or user, or be an admin (403 with ``error`` ``denied``);
        when it is not set (made without a token), a token is needed only if ``required``.

        Raises:
            ApiError: 401 or 403.
        """
        if not self.auth_enabled or not (token or required):
            return None
        caller = self.owner(req, required=True)
        assert caller is not None  # required, with auth
        if token and not caller.may_change(token, user):
            raise ApiError(403, error=denied)
        return caller

    def require_admin(self, req: falcon.Request, *, denied: str) -> Owner | None:
        """With auth, the caller must send a valid token (401) of an admin (403 with ``error``
        ``denied``); without auth, None."""
        caller = self.owner(req, required=True)
        if caller is not None and not caller.admin:
            raise ApiError(403, error=denied)
        return caller

    def basic_caller(self, user: str) -> Owner:
        """The caller of a token route, ``user`` authenticated by Basic auth (no token)."""
        return Owner("", user, self.login_admin(user)[0])

    def login_admin(self, user: str) -> tuple[bool, str | None]:
        """Whether ``user`` (just authenticated by Basic auth) is an admin now, and through which
        configured ``admin_groups`` entry (None when through ``admins`` or not at all).

        The groups come from the authenticator (LDAP: the user's group DNs and cns; compared without
        regard to case); a failing lookup counts as no groups.
        """
        group = self._admin_group_of(user)
        return user in self._admins or group is not None, group

    def _admin_group_of(self, user: str) -> str | None:
        auth = self.config.auth
        if auth is None or not auth.admin_groups or self.authenticator is None:
            return None
        try:
            groups = {group.casefold() for group in self.authenticator.groups(user)}
        except Exception:  # a directory that cannot answer makes nobody an admin through it
            log.warning("group lookup of %s failed; not an admin through admin_groups", user, exc_info=True)
            return None
        return next((group for group in auth.admin_groups if group.casefold() in groups), None)

    @property
    def _admins(self) -> tuple[str, ...]:
        return self.config.auth.admins if self.config.auth is not None else ()

    @property
    def _admin_groups(self) -> frozenset[str]:
        auth = self.config.auth
        return frozenset(group.casefold() for group in auth.admin_groups) if auth is not None else frozenset()

    # -- checkout planning -----------------------------------------------------------------------

    def plan(self, wanted: Mapping[str, int]) -> list[Pick]:
        """One ``Pick`` per VM wanted, with its candidate pools in the order to try them.

        A name that is an alias of several pools picks the first candidate by the configured backend
        weights when every candidate has one (weight 0 is never picked first), else uniformly at
        random; the other candidates follow in config order.
        """
        picks: list[Pick] = []
        for name, count in wanted.items():
            candidates = self.config.candidates(name)
            for _ in range(count):
                picks.append(Pick(name, self._order(candidates)))
        return picks

    def choose_pool(self, name: str) -> str | None:
        """The pool to serve one VM of ``name`` (by backend weight or at random, as ``plan``); None
        when ``name`` is neither a pool nor an alias."""
        candidates = self.config.candidates(name)
        return self._order(candidates)[0] if candidates else None

    def _order(self, candidates: tuple[str, ...]) -> tuple[str, ...]:
        if len(candidates) < 2:
            return candidates
        weights = [self.config.backend_weight(pool) for pool in candidates]
        first: str
        if all(w is not None for w in weights) and sum(w or 0 for w in weights) > 0:
            first = self.rng.choices(candidates, weights=[w or 0 for w in weights])[0]
        else:
            first = self.rng.choice(candidates)
        return (first, *(c for c in candidates if c != first))


def group_hostnames(ctx: ApiContext, allocations: Iterable[Any]) -> dict[str, Any]:
    """``{requested: {"hostname": str | [str, ...]}}``: a string for one VM, a list for several."""
    grouped: dict[str, list[str]] = {}
    for alloc in allocations:
        grouped.setdefault(alloc.requested, []).append(ctx.hostname(alloc.vm, alloc.pool))
    return {name: {"hostname": hosts[0] if len(hosts) == 1 else hosts} for name, hosts in grouped.items()}
