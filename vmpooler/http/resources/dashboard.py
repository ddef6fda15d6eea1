"""``/dashboard/``: a self-contained status page and the two stats feeds of the original.

The page (``dashboard.html`` next to this package's ``openapi.json``) has no external assets: its CSS and
JavaScript are inline, and its Content-Security-Policy allows exactly those two blocks (by their SHA-256)
and requests to this origin, nothing else. It fetches ``/api/v3/status`` 5 seconds after the previous
fetch ended (never two at once), keeps each pool's last 60 ready counts in memory for its charts (seeded
once from ``/dashboard/stats/vmpooler/pool?history=1`` when graphite gives more), and draws only the pool
rows in the window, so a thousand pools stay light. Its title is ``:config: site_name`` (env
``SITE_NAME``), HTML-escaped; pool names reach the page only as text nodes.

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

import base64
import hashlib
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

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _csp(page: str) -> str:
    """The page's Content-Security-Policy: its own inline ``<script>`` and ``<style>`` blocks (by hash, so
    no injected one would run) and requests to its own origin; nothing else."""
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
        allowed[tag].append(f"'sha256-{digest}'")
    scripts = " ".join(allowed["script"]) or "'none'"
    styles = " ".join(allowed["style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def major(pool: str) -> str:
    """A pool's group in the running stats: the part before the first ``-`` (``centos-8`` → ``centos``)."""
    return pool.split("-", 1)[0]


class Dashboard:
    """``GET /dashboard/``: the HTML status page."""

    def __init__(self, ctx: ApiContext) -> None:
        template = importlib_resources.files("vmpooler.http").joinpath("dashboard.html").read_text("utf-8")
        self._page = template.replace("{{site_name}}", html.escape(ctx.config.globals.site_name))
        self._csp = _csp(self._page)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", self._csp)
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
