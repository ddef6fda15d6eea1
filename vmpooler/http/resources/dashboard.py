"""``/dashboard/``: a self-contained status page and the two stats feeds of the original (reference §1.14).

The page (``dashboard.html`` next to this package's ``openapi.json``) has no external assets: its CSS and
JavaScript are inline and it polls ``/api/v3/status`` every 5 seconds. Its title is ``:config:
site_name`` (env ``SITE_NAME``), HTML-escaped.

Difference from the original: there is no graphite history. ``history`` is always a one-element list
holding the current value, with or without ``?history=1`` (what the original answers when no graph
server is configured), and no ``/lib``, ``/img`` or CSS assets are served.
"""

from __future__ import annotations

import html
from importlib import resources as importlib_resources
from typing import Any

import falcon

from vmpooler.http.context import ApiContext
from vmpooler.http.stats import pool_sizes

__all__ = ["Dashboard", "PoolStats", "RunningStats", "major"]

# Inline script and style only; the page talks to its own origin alone.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def major(pool: str) -> str:
    """A pool's group in the running stats: the part before the first ``-`` (``centos-8`` → ``centos``)."""
    return pool.split("-", 1)[0]


class Dashboard:
    """``GET /dashboard/``: the HTML status page."""

    def __init__(self, ctx: ApiContext) -> None:
        template = importlib_resources.files("vmpooler.http").joinpath("dashboard.html").read_text("utf-8")
        self._page = template.replace("{{site_name}}", html.escape(ctx.config.globals.site_name))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", _CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.text = self._page


class PoolStats:
    """``GET /dashboard/stats/vmpooler/pool``: ``{pool: {"size", "ready", "history": [ready]}}``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        sizes = pool_sizes(ctx)
        ready = ctx.store.ready_counts(p.name for p in ctx.config.pools)
        resp.media = {
            pool.name: {"size": sizes[pool.name], "ready": ready[pool.name], "history": [ready[pool.name]]}
            for pool in ctx.config.pools
        }


class RunningStats:
    """``GET /dashboard/stats/vmpooler/running``: ``{major: {"running", "history": [running]}}``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        counts = ctx.store.pool_counts(p.name for p in ctx.config.pools)
        body: dict[str, Any] = {}
        for pool in ctx.config.pools:
            group = body.setdefault(major(pool.name), {"running": 0})
            group["running"] += counts[pool.name].running
        for group in body.values():
            group["history"] = [group["running"]]
        resp.media = body
