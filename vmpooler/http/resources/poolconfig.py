"""``/config/poolsize``, ``/config/pooltemplate``, ``/config/clonetarget`` and ``/poolreset``: change a
running pool's size, template or clone target, undo a size or template change, or drain a pool.

Every route answers 405 ``{"ok": false}`` unless ``experimental_features`` is set (checked first), then,
when ``:auth:`` is configured, needs a valid ``X-AUTH-TOKEN`` (401) of an admin (403 with ``error``; the
original let any token in). A POST body is a JSON object of pool name → value; an empty body or
``null`` is a 404, ``{}`` changes nothing. Any bad entry is a 400 that lists its pool (``not_configured``
for sizes, ``bad_templates`` for templates and clone targets, ``bad_pools`` for resets) and changes
nothing. The value compared with is the one in force: the Redis override if there is one, else the
configuration file's. 201 when some pool changed, 200 when none did;
``/poolreset`` always answers 201. Each request is one Redis transaction that also publishes a
``ConfigChanged`` event for every pool it changed (``store.pools``).

Differences from the original:

* Malformed JSON, or a body that is not an object, is a 400 with ``error`` (the original answered 500).
* Only pools count: an alias is a bad entry (the original crashed with a 500, or queued the alias name
  for a reset that nothing acted on). A DELETE of an alias is a 404.
* A size is digits, as a string or a JSON integer, from 0 to ``MAX_POOL_SIZE`` (no floats, no ``08``
  read as octal); a template or clone target must be a string without control characters, and a clone
  target must not be blank (the original crashed on a non-string template, stored any clone target).
* A pool is listed once in an error list, however many of its checks failed.
* A clone target is compared with the pool's own, else the global ``clone_target`` (what the manager
  clones to); the original compared with the pool's own only.
* A DELETE also removes an override equal to the configured value (answering 200), so that no stale
  override comes back into force when the file changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import falcon

from vmpooler.http import validate
from vmpooler.http.context import ApiContext
from vmpooler.http.errors import ApiError
from vmpooler.http.stats import pool_sizes

__all__ = ["MAX_POOL_SIZE", "CloneTargetOverride", "PoolReset", "PoolSizeOverride", "TemplateOverride"]

log = logging.getLogger(__name__)

MAX_POOL_SIZE = 10_000
_DIGITS = re.compile(r"[0-9]{1,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _experimental(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    """405 unless ``experimental_features`` is set."""
    if not resource._ctx.config.globals.experimental_features:
        raise ApiError(405)


def _caller(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    """With auth, an admin's token (401, 403); the caller's name into ``req.context.user``."""
    owner = resource._ctx.require_admin(req, denied="only an admin may change the pool configuration")
    req.context.user = owner.user if owner else "anonymous"


def _payload(req: falcon.Request) -> dict[str, Any]:
    """The body as a JSON object; 404 when there is none (empty or ``null``), 400 when malformed."""
    raw = req.bounded_stream.read(validate.MAX_BODY + 1)
    if raw.strip() in (b"", b"null"):
        raise ApiError(404)
    return validate.json_object(raw)


def _size(value: Any) -> str | None:
    """A pool size as the digits to store, or None when invalid."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None
    return str(number) if 0 <= number <= MAX_POOL_SIZE else None


def _text(value: Any) -> str | None:
    """A non-blank string without control characters, or None."""
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        return None
    return value


def _template(value: Any) -> str | None:
    """A template path: contains ``/``, neither starts nor ends with it; or None."""
    text = _text(value)
    if text is None or "/" not in text or text.startswith("/") or text.endswith("/"):
        return None
    return text


def _in_force(ctx: ApiContext, kind: str) -> dict[str, str | None]:
    """Each pool's ``kind`` value in force: its Redis override, else its configured value."""
    if kind == "poolsize":
        return {pool: str(size) for pool, size in pool_sizes(ctx).items()}
    overrides = ctx.store.pools.overrides(kind)
    configured: Mapping[str, str | None] = {
        pool.name: pool.template if kind == "template" else pool.clone_target for pool in ctx.config.pools
    }
    return {pool: overrides.get(pool, value) for pool, value in configured.items()}


class _Override:
    """``POST /config/<route>``: set the ``kind`` override of each pool of the body whose value changes."""

    kind = ""  # the override kind in ``store.pools``
    noun = ""  # for the log line
    bad_key = ""  # the error list of a 400

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def _parse(self, value: Any) -> str | None:
        """The value to store, or None when invalid."""
        raise NotImplementedError

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        wanted = {pool: self._parse(value) for pool, value in _payload(req).items()}
        bad = [
            pool for pool, value in wanted.items() if value is None or pool not in ctx.config.pools_by_name
        ]
        if bad:
            raise ApiError(400, **{self.bad_key: bad})
        current = _in_force(ctx, self.kind)
        changes = {
            pool: value for pool, value in wanted.items() if value is not None and current[pool] != value
        }
        ctx.store.pools.set_overrides(self.kind, changes)
        for pool, value in changes.items():
            log.info("pool %s %s override set to %s by %s", pool, self.noun, value, req.context.user)
        resp.status = falcon.HTTP_201 if changes else falcon.HTTP_200
        resp.media = {"ok": True}

    def _undo(self, req: falcon.Request, pool: str) -> tuple[bool, str | None, str]:
        """``DELETE /config/<route>/<pool>``: back to the configured value.

        Returns:
            Whether the value in force changed, the value before, the configured value.
        """
        ctx = self._ctx
        config = ctx.config.pools_by_name.get(pool)
        if config is None:
            raise ApiError(404)
        before = _in_force(ctx, self.kind)[pool]
        configured = str(config.size) if self.kind == "poolsize" else config.template
        if pool in ctx.store.pools.overrides(self.kind):
            ctx.store.pools.undo_override(self.kind, pool)
        changed = before != configured
        if changed:
            log.info(
                "pool %s %s override removed, back to %s, by %s",
                pool,
                self.noun,
                configured,
                req.context.user,
            )
        return changed, before, configured


@falcon.before(_experimental)
@falcon.before(_caller)
class PoolSizeOverride(_Override):
    """``POST /config/poolsize`` (``{"<pool>": "<size>"}``) and ``DELETE /config/poolsize/<pool>``."""

    kind = "poolsize"
    noun = "size"
    bad_key = "not_configured"

    def _parse(self, value: Any) -> str | None:
        return _size(value)

    def on_delete_pool(self, req: falcon.Request, resp: falcon.Response, pool: str) -> None:
        changed, before, configured = self._undo(req, pool)
        resp.status = falcon.HTTP_201 if changed else falcon.HTTP_200
        resp.media = {
            "ok": True,
            "pool_size_before_reset": int(before or 0),
            "pool_size_before_overrides": int(configured),
        }


@falcon.before(_experimental)
@falcon.before(_caller)
class TemplateOverride(_Override):
    """``POST /config/pooltemplate`` (``{"<pool>": "<template path>"}``) and ``DELETE …/<pool>``."""

    kind = "template"
    noun = "template"
    bad_key = "bad_templates"

    def _parse(self, value: Any) -> str | None:
        return _template(value)

    def on_delete_pool(self, req: falcon.Request, resp: falcon.Response, pool: str) -> None:
        changed, before, configured = self._undo(req, pool)
        resp.status = falcon.HTTP_201 if changed else falcon.HTTP_200
        resp.media = {"ok": True, "template_before_reset": before, "template_before_overrides": configured}


@falcon.before(_experimental)
@falcon.before(_caller)
class CloneTargetOverride(_Override):
    """``POST /config/clonetarget`` (``{"<pool>": "<cluster>"}``); there is no undo, as in the original."""

    kind = "clone_target"
    noun = "clone target"
    bad_key = "bad_templates"

    def _parse(self, value: Any) -> str | None:
        return _text(value)


@falcon.before(_experimental)
@falcon.before(_caller)
class PoolReset:
    """``POST /poolreset`` (``{"<pool>": <anything>}``): the managers drain ready and pending VMs, refill."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        pools = list(_payload(req))
        bad = [pool for pool in pools if pool not in ctx.config.pools_by_name]
        if bad:
            raise ApiError(400, bad_pools=bad)
        ctx.store.pools.request_reset(pools)
        for pool in pools:
            log.info("pool %s reset requested by %s", pool, req.context.user)
        resp.status = falcon.HTTP_201
        resp.media = {"ok": True}
