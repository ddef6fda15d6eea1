"""``/status``, ``/poolstat``, ``/totalrunning`` and ``/summary``."""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Any
from urllib.parse import unquote_plus

import falcon

from vmpooler.http import stats, validate
from vmpooler.http.context import ApiContext
from vmpooler.http.errors import ApiError

__all__ = ["PoolStat", "Status", "Summary", "TotalRunning"]


class Status:
    """``GET /status[?view=a,b]``; optionally cached for ``status_cache_seconds`` per view."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        sections, cache_key = _sections(req.query_string or "")
        resp.media = self._cached(cache_key, sections)

    def _cached(self, key: str, sections: tuple[str, ...]) -> dict[str, Any]:
        ttl = self._ctx.config.globals.status_cache_seconds
        now = self._ctx.clock()
        if ttl > 0:
            with self._lock:
                hit = self._cache.get(key)
                if hit and now - hit[0] < ttl:
                    return hit[1]
        body = stats.status_body(self._ctx, sections)
        if ttl > 0:
            with self._lock:
                if len(self._cache) >= 10:
                    self._cache.clear()
                self._cache[key] = (now, body)
        return body


def _sections(query: str) -> tuple[tuple[str, ...], str]:
    """The sections a ``view`` parameter asks for: none given or ``?view`` → all, ``?view=`` → none."""
    views = [part[5:] for part in query.split("&") if part.startswith("view=")]
    if not views:
        return stats.STATUS_SECTIONS, "*"
    wanted = set(unquote_plus(views[-1]).split(","))  # clients may send the comma encoded (%2C)
    sections = tuple(s for s in stats.STATUS_SECTIONS if s in wanted)
    return sections, ",".join(sections)


class PoolStat:
    """``GET /poolstat?pool=a,b``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = [p for p in (req.get_param("pool") or "").split(",") if p]
        resp.media = stats.poolstat_body(self._ctx, wanted)


class TotalRunning:
    """``GET /totalrunning``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"running": self._ctx.store.stats.running_total(p.name for p in self._ctx.config.pools)}


class Summary:
    """``GET /summary[?from=&to=]`` and ``GET /summary/<boot|clone|tag>[/<key>]``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def _range(self, req: falcon.Request) -> tuple[_dt.date, _dt.date]:
        today = _dt.date.fromisoformat(self._ctx.now()[:10])
        given_from, given_to = req.get_param("from"), req.get_param("to")
        start = validate.parse_date(given_from) if given_from else today
        end = validate.parse_date(given_to) if given_to else today
        if end < start:
            raise ApiError(400, error="Date range is invalid, 'to' cannot come before 'from'.")
        if start > today:
            raise ApiError(400, error="Date range is invalid, 'from' must be in the past.")
        if (end - start).days > 3660:
            raise ApiError(400, error="Date range is invalid, it may span ten years at most.")
        return start, end

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = stats.summary_body(self._ctx, *self._range(req))

    def on_get_route(
        self, req: falcon.Request, resp: falcon.Response, route: str, key: str | None = None
    ) -> None:
        if route not in ("boot", "clone", "tag"):
            raise ApiError(404)
        full = stats.summary_body(self._ctx, *self._range(req))
        section = full[route]
        if key is not None:
            if key not in section:
                raise ApiError(404)
            section = {key: section[key]}
        body: dict[str, Any] = {route: section, "daily": []}
        for day in full["daily"]:
            day_section = day[route]
            if key is not None:
                day_section = {key: day_section[key]} if key in day_section else {}
            body["daily"].append({"date": day["date"], route: day_section})
        resp.media = body
