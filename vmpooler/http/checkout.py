"""A checkout's options and its waiting path (``POST /vm``, ``POST /vm/<spec>``).

Options, from the query string, else the JSON body, else a header (``X-Vmpooler-Wait``,
``X-Vmpooler-Priority``, ``X-Vmpooler-Tenant``):

* ``wait``: seconds to wait for the VMs (0, the default, answers 503 at once as the original; capped by
  ``:config: max_checkout_wait``);
* ``priority``: 1 (high) to 3 (low), default 2; with ``:auth:``, 1 only for admins and
  ``:config: priority_users``;
* ``tenant``: whose share and quota the VMs count for, when no token names a user;
* ``request_id``: the client's name for a waiting request (``GET /queue?request_id=``); else one is made.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import attrs
import falcon

from vmpooler import metrics
from vmpooler.errors import OverQuota, PoolEmpty, StoreError
from vmpooler.http.context import ApiContext, Owner
from vmpooler.http.errors import ApiError
from vmpooler.http.waiting import Waiter
from vmpooler.store import Allocation, Pick
from vmpooler.store.queue import QueueRequest

__all__ = [
    "OPTION_KEYS",
    "CheckoutOptions",
    "allow_priority",
    "checkout_options",
    "hand_out",
    "priority_option",
]

OPTION_KEYS = frozenset({"wait", "priority", "tenant", "request_id"})
_TENANT = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")


@attrs.frozen
class CheckoutOptions:
    wait: float = 0.0
    priority: int = 2
    tenant: str | None = None
    request_id: str | None = None


_DEFAULTS = CheckoutOptions()
# each option's header (X-Vmpooler-Wait, ...) by its WSGI environ key, as Falcon's get_header finds it
_HEADER_KEYS = {name: f"HTTP_X_VMPOOLER_{name.upper()}" for name in OPTION_KEYS}
_ANY_HEADER = tuple(_HEADER_KEYS.values())


def _option(req: falcon.Request, body: Mapping[str, Any], name: str) -> Any:
    value = req.get_param(name) if req.query_string else None
    if value is None and body:
        value = body.get(name)
    if value is None:
        value = req.env.get(_HEADER_KEYS[name])
    return value


def priority_option(req: falcon.Request, body: Mapping[str, Any]) -> int:
    """The ``priority`` of a checkout or an on-demand request: 1 (high) to 3 (low), default 2 (400
    otherwise); :func:`allow_priority` says whether the caller may use it."""
    text = _option(req, body, "priority")
    if text is None:
        return 2
    if isinstance(text, bool) or str(text) not in ("1", "2", "3"):
        raise ApiError(400, error=f"priority must be 1 (high), 2 or 3 (low), got {text!r}")
    return int(text)


def allow_priority(ctx: ApiContext, owner: Owner | None, priority: int) -> None:
    """403 unless the caller may use ``priority``: 1 is for admins and ``:config: priority_users`` when
    ``:auth:`` is on (for everyone without it)."""
    if priority != 1 or not ctx.auth_enabled:
        return
    if owner is None or not (owner.admin or owner.user in ctx.config.globals.priority_users):
        raise ApiError(403, error="priority 1 is for admins and :config: priority_users")


def checkout_options(ctx: ApiContext, req: falcon.Request, body: Mapping[str, Any]) -> CheckoutOptions:
    """The checkout's options, validated (400 with the reason otherwise)."""
    env = req.env
    if not (req.query_string or body) and not any(key in env for key in _ANY_HEADER):
        return _DEFAULTS  # none given (most checkouts): wait 0, priority 2
    wait_text = _option(req, body, "wait")
    wait = 0.0
    if wait_text is not None:
        try:
            wait = float(wait_text)
        except (TypeError, ValueError):
            wait = -1.0
        if isinstance(wait_text, bool) or not wait >= 0 or wait == float("inf"):
            raise ApiError(400, error=f"wait must be a number of seconds >= 0, got {wait_text!r}")
    priority = priority_option(req, body)
    tenant = _option(req, body, "tenant")
    if tenant is not None and not (isinstance(tenant, str) and _TENANT.match(tenant)):
        raise ApiError(400, error=f"tenant must match [A-Za-z0-9_.@-]{{1,64}}, got {tenant!r}")
    request_id = _option(req, body, "request_id")
    if request_id is not None and not (isinstance(request_id, str) and _REQUEST_ID.match(request_id)):
        raise ApiError(400, error=f"request_id must match [A-Za-z0-9_-]{{8,64}}, got {request_id!r}")
    return CheckoutOptions(
        wait=min(wait, float(ctx.config.globals.max_checkout_wait)),
        priority=priority,
        tenant=tenant,
        request_id=request_id,
    )


def _quota_error(tenant: str, quota: int, wanted: int) -> ApiError:
    return ApiError(
        403,
        error=f"tenant {tenant!r} may hold {quota} running VMs (:tenants: max_running); "
        f"this checkout of {wanted} would go over it",
        quota={"tenant": tenant, "max_running": quota},
    )


def hand_out(
    ctx: ApiContext,
    req: falcon.Request,
    picks: Sequence[Pick],
    owner: Owner | None,
    options: CheckoutOptions,
) -> list[Allocation]:
    """The VMs of a checkout, at once or after waiting for them.

    Raises:
        ApiError: 403 over quota (not waiting, or more than the quota at all), 403 priority 1 not
            allowed, 503 no VM (not waiting), 503 when the wait ran out (with the queue position) or
            this worker holds as many waiters as it may.
    """
    settings = ctx.queue_settings
    tenant = owner.user if owner is not None else options.tenant or ""
    quota = settings.quota_of(tenant)
    allow_priority(ctx, owner, options.priority)
    lifetime = (ctx.config.globals.vm_lifetime_auth or None) if owner else None
    if options.wait <= 0 or ctx.waiters is None:
        try:
            return ctx.store.vms.checkout(
                picks,
                now=ctx.now(),
                token=owner.token if owner else None,
                user=owner.user if owner else None,
                lifetime=lifetime,
                tenant=tenant,
                quota=quota,
            )
        except PoolEmpty as empty:
            metrics.CHECKOUT_EMPTY.labels(empty.requested).inc()
            raise ApiError(503) from None
        except OverQuota as over:
            raise _quota_error(tenant, over.quota, len(picks)) from None
    if quota is not None and len(picks) > quota:
        raise _quota_error(tenant, quota, len(picks))
    return _wait_for(ctx, req, picks, owner, options, tenant, lifetime)


def _wait_for(
    ctx: ApiContext,
    req: falcon.Request,
    picks: Sequence[Pick],
    owner: Owner | None,
    options: CheckoutOptions,
    tenant: str,
    lifetime: int | None,
) -> list[Allocation]:
    waiters = ctx.waiters
    assert waiters is not None
    request_id = options.request_id or secrets.token_hex(12)
    try:
        waiter = waiters.enter(request_id, req.env.get("waitress.client_disconnected"))
    except ValueError as exc:
        raise ApiError(409, error=str(exc)) from None
    if waiter is None:
        raise ApiError(503, error="this API worker holds as many waiting checkouts as it may (queue_waiters)")
    started = time.monotonic()
    try:
        waiters.ensure_alive()
        request = QueueRequest(
            request_id=request_id,
            picks=tuple(picks),
            priority=options.priority,
            tenant=tenant,
            token=owner.token if owner else None,
            user=owner.user if owner else None,
            lifetime=lifetime,
            wait_seconds=options.wait,
            worker=waiters.worker,
        )
        try:
            got = ctx.store.queue.enqueue(request, ctx.queue_settings, now=ctx.now())
        except ValueError as exc:
            raise ApiError(409, error=str(exc)) from None
        try:
            if got is not None:
                return _deliver(ctx, waiter, got, started)
            return _await(ctx, waiter, picks, options, started)
        except StoreError:  # this client gets a 503: what may have been served to it goes back
            with contextlib.suppress(StoreError):
                ctx.store.queue.cancel(request_id, ctx.queue_settings, now=ctx.now(), give_back=True)
            raise
    finally:
        waiters.leave(waiter)


def _deliver(ctx: ApiContext, waiter: Waiter, got: list[Allocation], started: float) -> list[Allocation]:
    """The VMs served to a waiting request, unless its client has gone meanwhile: then they go back."""
    if waiter.client_gone():
        _give_back(ctx, waiter, started)
    ctx.store.queue.delivered(waiter.request_id)
    metrics.QUEUE_WAIT.labels("served").observe(time.monotonic() - started)
    return got


def _give_back(ctx: ApiContext, waiter: Waiter, started: float) -> NoReturn:
    """The client disconnected: its place (or the VMs already served to it) goes back; nobody reads the
    answer."""
    ctx.store.queue.cancel(waiter.request_id, ctx.queue_settings, now=ctx.now(), give_back=True)
    metrics.QUEUE_WAIT.labels("disconnected").observe(time.monotonic() - started)
    raise ApiError(503, error="the client disconnected")


def _await(
    ctx: ApiContext, waiter: Waiter, picks: Sequence[Pick], options: CheckoutOptions, started: float
) -> list[Allocation]:
    """Wait for a recorded request until it is served, its client leaves, or its time runs out."""
    request_id = waiter.request_id
    deadline = started + options.wait
    while True:
        waiter.event.wait(max(0.0, deadline - time.monotonic()))
        waiter.event.clear()
        if waiter.client_gone():
            _give_back(ctx, waiter, started)
        served = ctx.store.queue.served([request_id]).get(request_id)
        if served is not None:
            return _deliver(ctx, waiter, served, started)
        if time.monotonic() >= deadline:
            break
    kind, detail = ctx.store.queue.cancel(request_id, ctx.queue_settings, now=ctx.now(), give_back=False)
    if kind == "served":  # served between the last look and the cancel
        return _deliver(ctx, waiter, list(detail), started)
    metrics.QUEUE_WAIT.labels("timeout").observe(time.monotonic() - started)
    for pick in picks:
        metrics.CHECKOUT_EMPTY.labels(pick.requested).inc()
    raise ApiError(
        503,
        error=f"no VM became available within {options.wait:g} s",
        queue={
            "request_id": request_id,
            "position": detail if kind == "gone" else None,
            "waited": round(time.monotonic() - started, 3),
        },
    )
