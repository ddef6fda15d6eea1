"""Cross-cutting concerns of every request: metrics and the optional request log."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

from vmpooler import metrics

__all__ = ["RequestMetrics", "metric_path"]

log = logging.getLogger("vmpooler.http.requests")

_COLLAPSE = ("/vm/", "/ondemandvm/", "/token/", "/lib/", "/img/")


def metric_path(path: str) -> str:
    """The path with everything after ``/vm/``, ``/token/`` … cut, to bound label cardinality."""
    for marker in _COLLAPSE:
        at = path.find(marker)
        if at >= 0:
            return path[: at + len(marker) - 1]
    return path


class RequestMetrics:
    """Counts and times every request; logs it when ``request_logger`` is on."""

    def __init__(self, *, log_requests: bool = False) -> None:
        self._log_requests = log_requests

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        path = metric_path(req.path)
        elapsed = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        code = resp.status.split(" ", 1)[0] if isinstance(resp.status, str) else str(resp.status)
        metrics.HTTP_REQUESTS.labels(code, req.method, path).inc()
        metrics.HTTP_DURATION.labels(req.method, path).observe(elapsed)
        if self._log_requests:
            log.info("%s %s %s %.1fms", req.method, req.relative_uri, code, elapsed * 1000)
