"""``/dashboard/``: a self-contained status page and the two stats feeds of the original.

The page (``dashboard.html`` next to this package's ``openapi.json``) has no external assets: its CSS and
JavaScript are inline and it polls ``/api/v3/status`` every 5 seconds. Its title is ``:config:
site_name`` (env ``SITE_NAME``), HTML-escaped.

The stats feeds have the original's shapes: ``history`` only when asked for (see ``wants_history``),
read from the graph server (``:graphs:``, else ``:graphite:``) when one is configured, as the original
did. Differences: whenever there is no graphite history for a pool or group, ``history`` is
``[<current value>]``; the original answered that only for pools without a graph server and left the
key out otherwise (running groups without a graph server, graphite unreachable or slow, no series
for the pool). A pool name that the original's ``^(\\w+)-`` does not match is grouped by its part
before the first ``-``, or its whole name (the original put all of those under the key ``""``). No
``/lib``, ``/img`` or CSS assets are served.
"""

from __future__ import annotations

import html
import re
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import unquote_plus

import falcon

from vmpooler.http import graphite
from vmpooler.http.context import ApiContext
from vmpooler.http.stats import pool_sizes

__all__ = ["Dashboard", "PoolStats", "RunningStats", "major", "wants_history"]

_QUERY_SEPARATOR = re.compile(r"[&;] *")  # Rack 2.2's default separator

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


def wants_history(query: str) -> bool:
    """Whether ``?history`` counts as the original's ``if params[:history]``.

    Rack parses ``history=<anything>`` (even ``false``, ``0`` or nothing after the ``=``) to a string,
    which Ruby treats as true, and a bare ``history`` to nil, which is false; the last one wins.
    Parameters are separated by ``&`` or ``;``.
    """
    wanted = False
    for part in _QUERY_SEPARATOR.split(query):
        name, equals, _ = part.partition("=")
        if unquote_plus(name) == "history":
            wanted = bool(equals)
    return wanted


class PoolStats:
    """``GET /dashboard/stats/vmpooler/pool``: ``{pool: {"size", "ready"[, "history"]}}``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        sizes = pool_sizes(ctx)
        ready = ctx.store.stats.ready_counts(p.name for p in ctx.config.pools)
        body: dict[str, Any] = {
            pool.name: {"size": sizes[pool.name], "ready": ready[pool.name]} for pool in ctx.config.pools
        }
        if wants_history(req.query_string or ""):
            series = _graphite(ctx, "ready")
            history = graphite.pool_history(series, sizes) if series else {}
            for name, entry in body.items():
                entry["history"] = history.get(name, [entry["ready"]])
        resp.media = body


class RunningStats:
    """``GET /dashboard/stats/vmpooler/running``: ``{major: {"running"[, "history"]}}``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = self._ctx
        counts = ctx.store.stats.pool_counts(p.name for p in ctx.config.pools)
        body: dict[str, Any] = {}
        for pool in ctx.config.pools:
            group = body.setdefault(major(pool.name), {"running": 0})
            group["running"] += counts[pool.name].running
        if wants_history(req.query_string or ""):
            series = _graphite(ctx, "running")
            history = graphite.running_history(series, body.keys(), major) if series else {}
            for name, group in body.items():
                group["history"] = history.get(name, [group["running"]])
        resp.media = body


def _graphite(ctx: ApiContext, metric: str) -> list[graphite.Series] | None:
    """The last hour of ``metric`` from the configured graph server; None without one or on failure."""
    server = ctx.config.metrics.graphs_server
    if not server:
        return None
    return graphite.fetch(server, ctx.config.metrics.graphs_prefix, metric)
