"""``/token``: create, list, inspect and delete API tokens.

Every route answers 404 ``{"ok": false}`` when no ``:auth:`` is configured. ``GET``/``POST /token`` and
``DELETE /token/<token>`` need HTTP Basic credentials (401 with ``WWW-Authenticate`` otherwise);
``GET /token/<token>`` needs none. A token path segment must match ``[A-Za-z0-9_-]{1,64}`` (400
``Invalid token format``).

Differences from the original:

* ``DELETE /token/<token>`` checks ownership: only the token's user or an admin may delete it; anyone
  else gets a 403 with ``error`` (the original deleted any token for any authenticated user).
* ``DELETE /token/<token>`` of a token that does not exist is a 404 once the caller is authenticated
  (the original answered 401).
* ``POST /token`` records on the token whether its user is an admin (fields ``admin``, and
  ``admin_group`` when through an LDAP group; see :meth:`ApiContext.owner`). ``GET /token/<token>``
  does not show them: its body keeps the original's fields.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import falcon

from vmpooler.http.auth import basic_credentials
from vmpooler.http.context import ApiContext, generate_token
from vmpooler.http.errors import ApiError

__all__ = ["TokenCollection", "TokenItem"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HIDDEN = ("admin", "admin_group")  # ours, kept out of GET /token/<token>


def _auth_configured(
    req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
) -> None:
    """404 unless an authenticator is configured."""
    if resource._ctx.authenticator is None:
        raise ApiError(404)


def _basic_user(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    """Authenticate the Basic credentials into ``req.context.user``; 401 when missing or wrong."""
    credentials = basic_credentials(req)
    if credentials is None or not resource._ctx.authenticator.authenticate(*credentials):
        raise ApiError(401)
    req.context.user = credentials[0]


def _token_format(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    if not _TOKEN.fullmatch(params["token"]):
        raise ApiError(400, error="Invalid token format")


class TokenCollection:
    """``GET /token`` (the caller's tokens) and ``POST /token`` (a new token)."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    @falcon.before(_auth_configured)
    @falcon.before(_basic_user)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tokens = self._ctx.store.tokens.of_user(req.context.user)
        if not tokens:
            raise ApiError(404)
        body: dict[str, Any] = {"ok": True}
        for token in sorted(tokens):
            data = tokens[token]
            body[token] = {"created": data.get("created", ""), "last": data.get("last") or "never"}
        resp.media = body

    @falcon.before(_auth_configured)
    @falcon.before(_basic_user)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx, user = self._ctx, req.context.user
        token = generate_token()
        admin, group = ctx.login_admin(user)
        ctx.store.tokens.create(token, user, ctx.now(), admin=admin, admin_group=group)
        log.info("token created for %s%s", user, " (an admin)" if admin else "")
        resp.media = {"ok": True, "token": token}


class TokenItem:
    """``GET /token/<token>`` (its fields and running VMs) and ``DELETE /token/<token>``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    @falcon.before(_auth_configured)
    @falcon.before(_token_format)
    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        ctx = self._ctx
        data: dict[str, Any] = dict(ctx.store.tokens.get(token))
        if not data:
            raise ApiError(404)
        for field in _HIDDEN:
            data.pop(field, None)
        running = ctx.store.vms.running_vms_of_token((p.name for p in ctx.config.pools), token)
        if running:
            data["vms"] = {"running": running}
        resp.media = {"ok": True, token: data}

    @falcon.before(_auth_configured)
    @falcon.before(_basic_user)
    @falcon.before(_token_format)
    def on_delete(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        ctx, user = self._ctx, req.context.user
        data = ctx.store.tokens.get(token)
        if not data:
            raise ApiError(404)
        owner = data.get("user")
        if not ctx.basic_caller(user).may_change(None, owner):
            raise ApiError(
                403, error="this token belongs to another user; only its owner or an admin may delete it"
            )
        if not ctx.store.tokens.delete(token):
            raise ApiError(404)  # deleted meanwhile
        log.info("token of %s deleted by %s", owner, user)
        resp.media = {"ok": True}
