"""``/vm``: list pools, check VMs out, inspect, modify and return them, disk and snapshot requests.

With ``:auth:``, a VM checked out with a token may only be returned, modified (lifetime or tags), given a
disk, snapshotted or reverted with a token of the same user or of an admin (403 otherwise; the
original let any valid token return it and anyone tag it); a VM checked out without a token stays
open to everyone, as in the original. ``ApiContext.require_owner`` holds the rule.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import falcon

from vmpooler import metrics
from vmpooler.http import usage, validate
from vmpooler.http.checkout import OPTION_KEYS, checkout_options, hand_out
from vmpooler.http.context import ApiContext, generate_token, group_hostnames
from vmpooler.http.errors import ApiError
from vmpooler.http.rubyfmt import ruby_to_s
from vmpooler.http.vminfo import describe_vm
from vmpooler.textnum import whole_number

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["VMCollection", "VMDisk", "VMItem", "VMSnapshot", "VMSnapshotRevert"]

log = logging.getLogger(__name__)


def _checkout(
    ctx: ApiContext,
    req: falcon.Request,
    resp: falcon.Response,
    wanted: Mapping[str, int],
    body: Mapping[str, Any],
) -> None:
    """The shared part of both checkout forms (``vmpooler.http.checkout``: waiting, priority, tenants)."""
    if not wanted:
        metrics.CHECKOUT_INVALID.labels("unknown").inc()
        raise ApiError(404)
    unknown = [name for name in wanted if name not in ctx.config.pool_names]
    if unknown:
        for name in unknown:
            metrics.CHECKOUT_INVALID.labels(name).inc()
        raise ApiError(404)
    options = checkout_options(ctx, req, body)
    owner = ctx.owner(req, required=False)
    allocations = hand_out(ctx, req, ctx.plan(wanted), owner, options)
    for alloc in allocations:
        metrics.CHECKOUT_SUCCESS.labels(alloc.pool).inc()
        if ctx.config.globals.usage_stats:  # a new VM has no tags yet: only its user is known
            usage.record("allocate", {"token:user": owner.user} if owner else {}, alloc.pool)
    if log.isEnabledFor(logging.INFO):
        log.info("checked out %s", ", ".join(f"{a.vm} ({a.pool})" for a in allocations))
    resp.media = {
        "ok": True,
        **group_hostnames(ctx, allocations),
        **ctx.v1_domain(a.pool for a in allocations),
    }


def _options_body(req: falcon.Request) -> Mapping[str, Any]:
    """The options of a ``POST /vm/<spec>`` body (``{"wait": 60}``); the original ignored that body, so
    one that is not a JSON object is ignored too."""
    if not req.content_length:
        return {}
    try:
        return validate.json_object(req.bounded_stream.read(validate.MAX_BODY + 1))
    except ApiError:
        return {}


def _existing_vm(ctx: ApiContext, host: str, *, validate_name: bool = True) -> tuple[str, dict[str, str]]:
    """The short name and metadata of a known VM; 400 for a malformed name, 404 when unknown."""
    vm = validate.hostname(host) if validate_name and ctx.version >= 3 else host.split(".", 1)[0]
    data = ctx.store.vms.fields(vm) if vm else {}
    if not data:
        raise ApiError(404)
    return vm, data


def _owner_only(
    ctx: ApiContext, req: falcon.Request, vm: str, data: Mapping[str, str], *, required: bool
) -> None:
    """With auth, 401/403 unless the caller may change ``vm`` (``ApiContext.require_owner``)."""
    ctx.require_owner(
        req,
        token=data.get("token:token"),
        user=data.get("token:user"),
        required=required,
        denied=f"vm {vm} belongs to another user; only its owner or an admin may change it",
    )


class VMCollection:
    """``GET /vm`` (pool names) and ``POST /vm`` (checkout with a JSON body)."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = [pool.name for pool in self._ctx.config.pools]

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        metrics.HTTP_REQUESTS_VM.labels("post", "vm", "checkout").inc()
        body = validate.json_object(req.bounded_stream.read(validate.MAX_BODY + 1))
        wanted: dict[str, int] = {}
        for name, count in body.items():
            if name in OPTION_KEYS and name not in self._ctx.config.pool_names:
                continue
            wanted[validate.pool_name(name)] = validate.vm_count(count)
        _checkout(self._ctx, req, resp, wanted, body)


class VMItem:
    """``POST /vm/<a>+<b>`` (checkout) and ``GET``/``PUT``/``DELETE /vm/<host>``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("get", "vm", "template").inc()
        wanted: dict[str, int] = {}
        for part in name.split("+"):
            wanted[part] = wanted.get(part, 0) + 1
        if len(wanted) > 100 or sum(wanted.values()) > 100 * len(wanted):
            raise ApiError(400, error="Too many VMs requested")
        _checkout(self._ctx, req, resp, wanted, _options_body(req))

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("get", "vm", "hostname").inc()
        vm, data = _existing_vm(self._ctx, name)
        resp.media = {"ok": True, vm: describe_vm(self._ctx, vm, data)}

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("put", "vm", "modify").inc()
        ctx = self._ctx
        vm, data = _existing_vm(ctx, name)
        raw = req.bounded_stream.read(validate.MAX_BODY + 1)
        if ctx.version < 3 and not raw.strip():
            raise ApiError(400)  # v1/v2 parsed every body: an empty one was a parse error
        try:
            body = validate.json_object(raw)
        except ApiError:
            if ctx.version >= 3:
                raise
            raise ApiError(400) from None  # v1/v2: a bare {"ok": false} for any unparsable body
        if "lifetime" in body or "tags" in body:  # before validating: 401 beats 400, as in the original
            _owner_only(ctx, req, vm, data, required="lifetime" in body)
        lifetime, tags, failures = _modification(ctx, body)
        if failures:
            raise ApiError(400, failure=failures)
        ctx.store.vms.modify(vm, lifetime=lifetime, tags=tags, date=ctx.now()[:10])
        resp.media = {"ok": True}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("delete", "vm", "hostname").inc()
        ctx = self._ctx

        def dispatch() -> None:  # checkouts wait: the tenant whose VM this was may have room now
            ctx.store.queue.dispatch(ctx.queue_settings, now=ctx.now())

        if ctx.auth_enabled:  # the owner is checked first: a look-up, then the return
            vm, data = _existing_vm(ctx, name)
            _owner_only(ctx, req, vm, data, required=False)
        else:  # no owner to check: the look-up and the return are one round trip
            vm = validate.hostname(name) if ctx.version >= 3 else name.split(".", 1)[0]
        usage_stats = ctx.config.globals.usage_stats  # the VM's hash is read back only for them
        outcome, pool, data = (
            ctx.store.vms.return_named(vm, then=dispatch, with_hash=usage_stats)
            if vm
            else ("missing", None, {})
        )
        if outcome == "no-pool":
            pool = ctx.store.vms.running_pool_of(vm, (p.name for p in ctx.config.pools))
            outcome = "returned" if pool and ctx.store.vms.return_vm(vm, pool, then=dispatch) else outcome
        if outcome == "missing":  # an unknown VM counts as no failed delete (the original's)
            raise ApiError(404)
        if outcome == "returned" and pool:
            metrics.DELETE_SUCCESS.inc()
            if usage_stats:
                usage.record("destroy", data, pool)
            log.info("%s returned", vm)
            resp.media = {"ok": True}
            return
        metrics.DELETE_FAILED.inc()
        raise ApiError(404)


def _modification(ctx: ApiContext, body: dict[str, Any]) -> tuple[int | None, dict[str, str], list[str]]:
    """Validate a PUT body into (lifetime, tags to write, failure messages).

    The failure texts are the original's word for word, values printed as Ruby prints them (clients
    may match on them): an unknown argument is named by its *value*, as the original did.
    """
    lifetime: int | None = None
    tags: dict[str, str] = {}
    failures: list[str] = []
    for key, value in body.items():
        if key == "lifetime":
            lifetime, failure = _lifetime(ctx, value)
            if failure:
                failures.append(failure)
        elif key == "tags":
            failures += _tags(ctx, value, tags)
        else:
            failures.append(f"Unknown argument {ruby_to_s(value)}.")
    return lifetime, tags, failures


def _lifetime(ctx: ApiContext, value: Any) -> tuple[int | None, str | None]:
    """Hours since checkout: digits only (the original's ``to_i`` also took ``"12abc"`` and ``1.5``)."""
    text = ruby_to_s(value)
    hours = whole_number(text) or 0  # ruby_to_s(True) is "true"
    if hours < 1:
        if ctx.version >= 3:
            return None, f"Lifetime must be a positive integer (got {text})"
        return None, f"You provided a lifetime ({text}) but you must provide a positive number."
    limit = ctx.config.globals.max_lifetime_upper_limit or validate.DEFAULT_MAX_LIFETIME
    if hours > limit:  # deliberate fix: the original also rejected hours == limit
        return None, f"You provided a lifetime ({text}) that exceeds the configured maximum of {limit}."
    return hours, None


def _tags(ctx: ApiContext, value: Any, out: dict[str, str]) -> list[str]:
    """Check every tag, then the ``allowed_tags`` list, in the original's order; fill ``out``."""
    if not isinstance(value, dict):  # the original went on and crashed with a 500
        return [f"You provided tags ({ruby_to_s(value)}) as something other than a hash."]
    failures = []
    for key, tag_value in value.items():
        try:
            validate.tag(key, tag_value)
        except ApiError as err:
            failures.append(str(err))
            continue
        if tag_value is None or tag_value == "":
            continue
        text = str(tag_value)
        pattern = ctx.config.tagfilter.get(key)
        match = pattern.search(text) if pattern else None
        if match and match.groups():
            text = "".join(g for g in match.groups() if g)
        out[key] = text
    allowed = ctx.config.globals.allowed_tags
    if allowed is not None and any(k not in allowed for k in value):
        # "unsuppored" (sic): the original's spelling, kept because clients may match on the text
        failures.append(f"You provided unsuppored tags ({ruby_to_s(value)}).")
    return failures


class VMDisk:
    """``POST /vm/<host>/disk/<size>``: queue a new disk for the manager."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str, size: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("post", "vm", "disksize").inc()
        ctx = self._ctx
        ctx.owner(req, required=True)
        if ctx.version >= 3:
            validate.hostname(name)
            gigabytes = validate.disk_size(size)
        else:
            parsed = whole_number(size)
            if parsed is None or parsed < 1:
                raise ApiError(404)
            if parsed > validate.MAX_DISK_GB:  # the same cap as v3
                raise ApiError(400)
            gigabytes = parsed
        vm, data = _existing_vm(ctx, name)
        _owner_only(ctx, req, vm, data, required=True)
        ctx.store.tasks.queue("disk", vm, data.get("template", ""), str(gigabytes))
        resp.status = falcon.HTTP_202
        resp.media = {"ok": True, vm: {"disk": f"+{gigabytes}gb"}}


class VMSnapshot:
    """``POST /vm/<host>/snapshot``: queue a snapshot under a generated name."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("post", "vm", "snapshot").inc()
        ctx = self._ctx
        ctx.owner(req, required=True)
        vm, data = _existing_vm(ctx, name, validate_name=False)
        _owner_only(ctx, req, vm, data, required=True)
        snapshot = generate_token()
        ctx.store.tasks.queue("snapshot", vm, data.get("template", ""), snapshot)
        resp.status = falcon.HTTP_202
        resp.media = {"ok": True, vm: {"snapshot": snapshot}}


class VMSnapshotRevert:
    """``POST /vm/<host>/snapshot/<name>``: queue a revert to an existing snapshot."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str, snapshot: str) -> None:
        metrics.HTTP_REQUESTS_VM.labels("post", "vm", "snapshot").inc()
        ctx = self._ctx
        ctx.owner(req, required=True)
        vm, data = _existing_vm(ctx, name, validate_name=False)
        _owner_only(ctx, req, vm, data, required=True)
        if not data.get(f"snapshot:{snapshot}"):
            raise ApiError(404)
        ctx.store.tasks.queue("snapshot-revert", vm, data.get("template", ""), snapshot)
        resp.status = falcon.HTTP_202
        resp.media = {"ok": True}
