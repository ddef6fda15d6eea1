"""Endpoints about the service itself: health, root redirect, config, OpenAPI document, metrics."""

from __future__ import annotations

import json
import logging
from importlib import resources as importlib_resources
from typing import Any

import falcon

from vmpooler import metrics
from vmpooler.errors import StoreError
from vmpooler.http.context import ApiContext
from vmpooler.http.errors import ApiError
from vmpooler.http.resources.queue import queue_body
from vmpooler.http.stats import health_body, pool_sizes

__all__ = ["Config", "Healthcheck", "Metrics", "NotFound", "OpenAPI", "Root"]

log = logging.getLogger(__name__)

_SECRET_WORDS = ("password", "secret", "token", "key")


class Healthcheck:
    """``GET /healthcheck``: the process answers (no dependency checks, as the original)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


class Root:
    """``GET /`` → the dashboard."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPFound("/dashboard/")


class NotFound:
    """Any unknown route: JSON 404."""

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs: Any) -> None:
        raise ApiError(404)


class Config:
    """``GET /config``: the pool configuration with the live overrides from Redis applied."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        if not ctx.config.pools:
            raise ApiError(404)
        sizes = pool_sizes(ctx)
        templates = ctx.store.pools.overrides("template")
        clone_targets = ctx.store.pools.overrides("clone_target")
        prepared = ctx.store.pools.prepared_templates()
        pools = []
        for pool in ctx.config.pools:
            entry = _redacted(dict(pool.raw))
            entry["size"] = sizes[pool.name]
            entry["template"] = templates.get(pool.name, pool.template)
            if pool.name in clone_targets:
                entry["clone_target"] = clone_targets[pool.name]
            entry["template_ready"] = prepared.get(pool.name) == entry["template"]
            pools.append(entry)
        resp.media = {"pool_configuration": pools, "status": {"ok": True}}


def _redacted(value: Any) -> Any:
    """Copy of a config value with secrets replaced (the original's /full_config leaked them)."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if any(w in str(k).lower() for w in _SECRET_WORDS) else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class OpenAPI:
    """``GET /api/v3/openapi.json``: the OpenAPI 3.1 description of the v3 API."""

    def __init__(self) -> None:
        text = importlib_resources.files("vmpooler.http").joinpath("openapi.json").read_text()
        self._document = json.loads(text)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document


class Metrics:
    """The Prometheus exposition of every process (see ``vmpooler.metrics``), with the health verdict
    of ``/status`` computed for the scrape (``vmpooler_health_status``)."""

    def __init__(self, ctx: ApiContext | None = None) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._ctx is not None:
            try:
                names = [pool.name for pool in self._ctx.config.pools]
                health_body(self._ctx, self._ctx.store.stats.pool_counts(names))
                queue_body(self._ctx)
            except StoreError as exc:  # the scrape still answers: the other metrics are in files
                log.warning("health verdict for the scrape failed: %s", exc)
        resp.content_type = metrics.CONTENT_TYPE_LATEST
        resp.data = metrics.exposition()
