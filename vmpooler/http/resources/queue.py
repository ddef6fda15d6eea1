"""``GET /queue``: what waits (depth by pool, priority and tenant; on-demand requests still being
provisioned, by priority), or one request's place in line."""

from __future__ import annotations

from typing import Any

import falcon

from vmpooler import metrics
from vmpooler.http.context import ApiContext
from vmpooler.http.errors import ApiError

__all__ = ["Queue", "queue_body"]

_PRIORITIES = (1, 2, 3)


def queue_body(ctx: ApiContext) -> dict[str, Any]:
    """The queue counted (and the queue gauges set from it, for ``/status`` and each scrape)."""
    view = ctx.store.queue.view()
    ondemand = ctx.store.ondemand.waiting_by_priority()  # on-demand requests: their own clone lane
    for priority in _PRIORITIES:
        metrics.QUEUE_DEPTH.labels(str(priority)).set(view.by_priority.get(priority, 0))
    metrics.QUEUE_OLDEST.set(view.oldest_wait_seconds)
    return {
        "depth": view.depth,
        "oldest_wait_seconds": round(view.oldest_wait_seconds, 3),
        "pools": dict(sorted(view.by_pool.items())),
        "priorities": {str(p): view.by_priority.get(p, 0) for p in _PRIORITIES},
        "tenants": dict(sorted(view.by_tenant.items())),
        "demand": dict(sorted(ctx.store.queue.demand().items())),
        "ondemand": {str(p): ondemand.get(p, 0) for p in _PRIORITIES},
    }


class Queue:
    """``GET /queue``; ``GET /queue?request_id=<id>``: that request's status and 1-based position."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        request_id = req.get_param("request_id")
        if request_id is None:
            resp.media = {"ok": True, "queue": queue_body(ctx)}
            return
        fields = ctx.store.queue.status(request_id)
        if not fields:
            raise ApiError(404, error=f"no waiting or recent request {request_id!r}")
        pools = sorted({line.split("\t")[1] for line in fields.get("picks", "").splitlines() if "\t" in line})
        resp.media = {
            "ok": True,
            "request": {
                "request_id": request_id,
                "status": fields.get("status"),
                "position": ctx.store.queue.position(request_id),
                "priority": int(fields.get("priority") or 2),
                "tenant": fields.get("tenant", ""),
                "pools": pools,
            },
        }
