"""``/ondemandvm``: ask for VMs to be built for you, follow the request, give it back.

``POST /ondemandvm`` (JSON body ``{"<name>": "<count>", ..., "request_id": "<optional id>"}``) and
``POST /ondemandvm/<a>+<a>+<b>`` record a request (201) that the manager fills; ``GET
/ondemandvm/<id>`` answers 202 while it is being filled and 200 once it is ready, failed or deleted;
``DELETE /ondemandvm/<id>`` returns its VMs. When ``:auth:`` is configured, POST and DELETE need a
valid ``X-AUTH-TOKEN`` and the request carries the caller's token. See docs/architecture.md,
"On-demand requests".

Differences from the original:

* Names are checked against the configured pools and aliases (the original consulted the pools the
  manager had published, and could record an empty request that was "ready" at once); an empty
  request is a 404.
* Counts must be whole numbers ≥ 1 (400 with ``error``; the original read ``"abc"`` as 0), and a given
  ``request_id`` must be 1–100 characters of ``[A-Za-z0-9_.-]`` (400).
* A body that is valid JSON but not an object is a 400 (the original crashed with a 500).
* ``DELETE`` of a request made with a token needs a token of the same user or of an admin (403
  otherwise), as ``DELETE /vm/<host>``.
* ``GET`` of a failed request adds ``failure_reason`` when the manager recorded one.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any, NoReturn

import falcon

from vmpooler import metrics
from vmpooler.http import validate
from vmpooler.http.checkout import allow_priority, priority_option
from vmpooler.http.errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vmpooler.http.context import ApiContext, Owner

__all__ = ["OnDemandCollection", "OnDemandItem"]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]+\Z")
_UNPARSABLE = "JSON payload could not be parsed"


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"unexpected token {name}")


def _parse(raw: bytes) -> Any:
    """The body as JSON; 400 with the original's message when it is not JSON."""
    if len(raw) > validate.MAX_BODY:
        raise ApiError(413, error="Request body too large")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, message=_UNPARSABLE) from None


def _request_id(value: Any) -> str:
    if not isinstance(value, str) or not value or not _REQUEST_ID.match(value):
        raise ApiError(400, error="Invalid request_id format")  # fix: the id becomes part of Redis keys
    if len(value) > 100:
        raise ApiError(400, error="request_id too long")
    return value


def _not_found(request_id: str) -> ApiError:
    return ApiError(404, message=f"no request found for request_id '{request_id}'")


def _create(
    ctx: ApiContext,
    resp: falcon.Response,
    wanted: Mapping[str, int],
    owner: Owner | None,
    request_id: str | None = None,
    priority: int = 2,
) -> None:
    """The shared part of both POST forms: check the names and counts, pick pools, record.

    ``priority`` (ours, 1 high to 3 low) orders its clones among the on-demand requests waiting for them.
    """
    allow_priority(ctx, owner, priority)
    if not wanted:
        raise ApiError(404)  # fix: the original recorded an empty request, "ready" at once
    bad = [name for name in wanted if name not in ctx.config.pool_names]  # fix: configured names only
    if bad:
        raise ApiError(404, bad_templates=bad)
    limit = ctx.config.globals.max_ondemand_instances_per_request
    if any(count > limit for count in wanted.values()):
        raise ApiError(403, message=f"requested amount of instances exceeds the maximum {limit}")
    request_id = request_id or str(uuid.uuid4())
    picks: dict[tuple[str, str], int] = {}
    for name, count in wanted.items():
        for _ in range(count):
            pool = ctx.choose_pool(name)
            assert pool is not None  # every name is configured
            picks[name, pool] = picks.get((name, pool), 0) + 1
    platforms = [(alias, pool, count) for (alias, pool), count in picks.items()]
    created = ctx.store.ondemand.create(
        request_id,
        platforms,
        ctx.clock(),
        token=owner.token if owner else None,
        user=owner.user if owner else None,
        priority=priority,
    )
    if not created:
        raise ApiError(
            409, request_id=request_id, message=f"request_id '{request_id}' has already been created"
        )
    log.info("on-demand request %s: %s", request_id, ",".join(f"{a}:{p}:{n}" for a, p, n in platforms))
    resp.status = falcon.HTTP_201
    resp.media = {"ok": True, "request_id": request_id, **ctx.v1_domain(pool for _, pool in picks)}


class OnDemandCollection:
    """``POST /ondemandvm``: a request from a JSON body."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        metrics.HTTP_REQUESTS_VM.labels("post", "ondemand", "requestid").inc()
        owner = self._ctx.owner(req, required=True)
        body = _parse(req.bounded_stream.read(validate.MAX_BODY + 1))
        if body is None:
            raise ApiError(404)
        if not isinstance(body, dict):
            raise ApiError(400, message=_UNPARSABLE)  # fix: the original crashed with a 500
        given = body.pop("request_id", None)
        request_id = None if given is None else _request_id(given)
        priority = priority_option(req, {"priority": body.pop("priority")} if "priority" in body else {})
        # fix: counts are whole numbers >= 1 (the original's to_i read "abc" as 0)
        wanted = {name: validate.integer(count, "VM count", low=1, high=None) for name, count in body.items()}
        _create(self._ctx, resp, wanted, owner, request_id, priority)


class OnDemandItem:
    """``POST /ondemandvm/<a>+<b>`` (a request from the path), ``GET``/``DELETE /ondemandvm/<id>``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        # fix: the original counted this route as delete.ondemand.template
        metrics.HTTP_REQUESTS_VM.labels("post", "ondemand", "template").inc()
        owner = self._ctx.owner(req, required=True)
        wanted: dict[str, int] = {}
        for part in name.split("+"):
            wanted[part] = wanted.get(part, 0) + 1
        _create(self._ctx, resp, wanted, owner, priority=priority_option(req, {}))

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("get", "ondemand", "request").inc()
        ctx = self._ctx
        request = ctx.store.ondemand.status(name)
        if request is None:
            raise _not_found(name)
        body: dict[str, Any] = {"ok": True, "request_id": name, "ready": False}
        resp.status = falcon.HTTP_200
        if request.status == "ready":
            body["ready"] = True
            for platform in request.platforms:
                hosts = body.setdefault(platform.alias, {"hostname": []})["hostname"]
                hosts.extend(ctx.hostname(vm, platform.pool) for vm in sorted(platform.vms))
            body.update(ctx.v1_domain(platform.pool for platform in request.platforms))
        elif request.status == "failed":
            ttl = ctx.config.globals.ondemand_request_ttl
            body["message"] = (
                "The request failed to provision instances within the configured"
                f" ondemand_request_ttl '{ttl}'"
            )
            if request.failure_reason:
                body["failure_reason"] = request.failure_reason  # ours: why, when the manager knows
        elif request.status == "deleted":
            body["message"] = "The request has been deleted"
        else:
            resp.status = falcon.HTTP_202
            for platform in request.platforms:
                counts = body.setdefault(platform.alias, {"ready": "0", "pending": "0"})
                ready = len(platform.vms)
                counts["ready"] = str(int(counts["ready"]) + ready)
                counts["pending"] = str(int(counts["pending"]) + platform.count - ready)
        resp.media = body

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("delete", "ondemand", "request").inc()
        ctx = self._ctx
        if ctx.owner(req, required=True) is not None:
            request = ctx.store.ondemand.status(name)
            if request is None:
                raise _not_found(name)
            # fix: as DELETE /vm, only the user who made a request with a token (or an admin) may delete it
            ctx.require_owner(
                req,
                token=request.token,
                user=request.user,
                required=True,
                denied=f"request {name} belongs to another user; only its owner or an admin may delete it",
            )
        result = ctx.store.ondemand.delete(name)
        if result == "missing":
            raise _not_found(name)
        if result == "already":
            resp.media = {"ok": True, "message": "the request has already been deleted"}
            return
        log.info("on-demand request %s deleted", name)
        resp.media = {"ok": True}
