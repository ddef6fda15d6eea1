"""Cross-cutting concerns of every request: metrics, the optional request log, gzip compression."""

from __future__ import annotations

import functools
import logging
import re
import time
import zlib
from typing import Any

import falcon

from vmpooler import metrics
from vmpooler.http.errors import ApiError
from vmpooler.log import redact_path

__all__ = [
    "GZIP_LEVEL",
    "GZIP_MIN_SIZE",
    "BodyLimit",
    "GzipResponses",
    "OptionsAnswers",
    "RequestMetrics",
    "accepts_gzip",
    "metric_path",
    "route_metric_path",
]

log = logging.getLogger("vmpooler.http.requests")

# Everything after these segments is cut (the original's strip_hostnames_from_path): at least one
# character must follow, up to the end of the line, as Ruby's gsub(%r{/vm/.+$}, '/vm') does.
_COLLAPSE = re.compile(r"/(vm|ondemandvm|token|lib|img)/.+$", re.MULTILINE)


class OptionsAnswers:
    """``OPTIONS`` on a route answers ``204 No Content`` with its ``Allow`` header (``OPTIONS``
    included), no body and no content type (Falcon's default answer is a 200 with an empty body
    labelled JSON)."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool) -> None:
        if req.method != "OPTIONS" or not ok or resource is None or resp.status not in (200, falcon.HTTP_200):
            return
        if resp.text or resp.data or resp.media is not None:
            return
        resp.status = falcon.HTTP_204
        resp.content_type = None
        allowed = resp.get_header("Allow")
        if allowed and "OPTIONS" not in allowed:
            resp.set_header("Allow", f"{allowed}, OPTIONS")


def metric_path(path: str) -> str:
    """The path with everything after ``/vm/``, ``/ondemandvm/``, ``/token/``, ``/lib/`` and ``/img/``
    cut (``/api/v3/vm/host1`` → ``/api/v3/vm``), to bound label cardinality (reference §6.2)."""
    found = _COLLAPSE.search(path)
    if found is None:
        return path
    if "\n" in path:  # a decoded %0A: each line is cut, as Ruby's $ ends a line
        return _COLLAPSE.sub(lambda each: f"/{each[1]}", path)
    return f"{path[: found.start()]}/{found[1]}"


@functools.lru_cache(maxsize=256)
def route_metric_path(template: str) -> str | None:
    """The :func:`metric_path` of every path (without a newline) that a route's ``template`` matches,
    when it is the same for all: a segment that cuts (``/vm/``, ...) stands before the template's first
    field, so all that is kept is literal (``/api/v3/vm/{name}`` → ``/api/v3/vm``); else None."""
    found = _COLLAPSE.search(template)
    if found is None:
        return None
    first_field = template.find("{")
    if first_field != -1 and first_field <= found.end(1):
        return None
    return f"{template[: found.start()]}/{found[1]}"


class RequestMetrics:
    """Counts and times every request (``vmpooler_http_requests_total{code,method,path}``,
    ``vmpooler_http_request_duration_seconds{method,path}``, the method in lower case and the path
    through :func:`metric_path`, as the original's middleware labels them); logs it when
    ``request_logger`` is on."""

    def __init__(self, *, log_requests: bool = False) -> None:
        self._log_requests = log_requests
        # the labelled children by (status, method, path label) and, for a route whose label is its own
        # (route_metric_path), by (status, method, route template): prometheus-client's labels() takes a
        # lock and builds its key on every call; its children live as long as the process, and so do these
        self._by_path: dict[tuple[Any, str, str], tuple[Any, Any]] = {}
        self._by_route: dict[tuple[Any, str, str], tuple[Any, Any]] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        status = resp.status
        # a route's label is fixed only for paths without a newline (metric_path cuts each line)
        route = req.uri_template if "\n" not in req.path else None
        children = self._by_route.get((status, req.method, route)) if route is not None else None
        if children is None:
            children = self._children(req, status, route)
        metrics.add(children[0])  # kept for the next flush in an API worker (metrics.defer_updates)
        metrics.observe(children[1], elapsed)
        if self._log_requests:
            log.info(
                "%s %s %s %.1fms", req.method, redact_path(req.relative_uri), _code(status), elapsed * 1000
            )

    def _children(self, req: falcon.Request, status: Any, route: str | None) -> tuple[Any, Any]:
        method = req.method
        label = route_metric_path(route) if route is not None else None
        fixed = label is not None
        if label is None:
            label = metric_path(req.path)
        children = self._by_path.get((status, method, label))
        if children is None:
            lower = method.lower()
            children = (
                metrics.HTTP_REQUESTS.labels(_code(status), lower, label),
                metrics.HTTP_DURATION.labels(lower, label),
            )
            self._by_path[status, method, label] = children
        if fixed:
            assert route is not None
            self._by_route[status, method, route] = children
        return children


def _code(status: Any) -> str:
    """The code of a Falcon status (``"200 OK"``, ``200`` or an ``HTTPStatus``) as text: ``"200"``."""
    return status.split(" ", 1)[0] if isinstance(status, str) else str(status)


# Below about 1 KiB a response fits in one TCP segment together with its headers, so compressing it
# saves no packet and no round trip while costing CPU (zlib's setup alone is 20-100 us) and gzip's 18
# bytes of framing: a checkout answer of 90 bytes grows to 101. Checkout, GET/PUT/DELETE /vm/<host>
# and error bodies stay below it; /status, /vm, /summary, /config and the dashboard page are above.
GZIP_MIN_SIZE = 1024
# Measured on a /status body (json.dumps(indent=2)) of 200 pools (31 kB) and 1000 pools (155 kB):
# level 1 gave 10.8 %/9.9 % of the size in 190/760 us, level 2 9.6 %/8.8 % in 160/670 us (fastest),
# level 3 9.0 %/7.9 % in 190/770 us, level 6 (zlib's default) 8.1 %/7.0 % in 420/1750 us, while
# serializing those bodies takes 1.6/10.4 ms. Level 2 buys nearly all of the gain at the least CPU.
GZIP_LEVEL = 2
_COMPRESSIBLE = re.compile(r"text/|application/(?:[\w.+-]*\+)?json\b", re.IGNORECASE)
_QVALUE = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")
_NO_BODY = (204, 304)


def _qvalue(params: str) -> float:
    """The ``q`` of one ``Accept-Encoding`` item (1 when absent, 0 when malformed: do not risk it)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QVALUE.fullmatch(value) else 0.0
    return 1.0


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (RFC 9110 12.5.3).

    ``gzip`` (or ``x-gzip``) with a q-value above 0 does, ``gzip;q=0`` does not; without a gzip item
    a ``*`` item decides.
    """
    if not header:
        return False
    gzip_q: float | None = None
    any_q: float | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = max(gzip_q or 0.0, _qvalue(params))
        elif coding == "*":
            any_q = _qvalue(params)
    if gzip_q is not None:
        return gzip_q > 0
    return any_q is not None and any_q > 0


def _gzip(body: bytes, level: int) -> bytes:
    # A window no larger than the body compresses exactly as well and sets up several times faster
    # (19 instead of 96 us for 1.2 kB); the hash table is sized to match, as zlib's defaults are.
    window = min(15, max(9, len(body).bit_length() + 1))
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + window, window - 7)
    return compressor.compress(body) + compressor.flush()


def _add_vary(resp: falcon.Response) -> None:
    vary = resp.get_header("Vary")
    if not vary:
        resp.set_header("Vary", "Accept-Encoding")
        return
    tokens = {token.strip().lower() for token in vary.split(",")}
    if "*" not in tokens and "accept-encoding" not in tokens:
        resp.set_header("Vary", f"{vary}, Accept-Encoding")


class BodyLimit:
    """Refuse a request body larger than ``limit`` bytes with a JSON 413, before anything reads it.

    Routes that parse JSON cap their bodies lower still (``validate.MAX_BODY``). waitress refuses a body
    over 4 times the limit (and a chunked one over it) before reading it, with its own plain-text 413
    (``http/serve.py``).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not req.env.get("CONTENT_LENGTH"):  # no body (most requests): nothing to parse
            return
        length = req.content_length  # a malformed header is Falcon's 400
        if length is not None and length > self._limit:
            raise ApiError(413, error="Request body too large")


class GzipResponses:
    """Gzip large text and JSON bodies for clients that accept it (the original used Rack::Deflater).

    Bodies under ``min_size`` bytes, streamed bodies, bodies that already have a ``Content-Encoding``,
    ``Cache-Control: no-transform`` and 204/304 answers are left alone. Every body that would be
    compressed for a gzip client carries ``Vary: Accept-Encoding``, compressed or not. Falcon sets
    ``Content-Length`` from the final body.

    Args:
        min_size: the smallest body compressed, in bytes.
        level: the zlib compression level.
    """

    def __init__(self, *, min_size: int = GZIP_MIN_SIZE, level: int = GZIP_LEVEL) -> None:
        self._min_size = min_size
        self._level = level

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if resp.stream is not None:
            return
        body = resp.render_body()  # Falcon keeps the rendered media: no second serialization
        if body is None or len(body) < self._min_size or resp.status_code in _NO_BODY:
            return
        content_type = resp.content_type or resp.options.default_media_type or ""
        if not _COMPRESSIBLE.match(content_type) or self._excluded(resp):
            return
        _add_vary(resp)
        if not accepts_gzip(req.get_header("Accept-Encoding")):
            return
        compressed = _gzip(body, self._level)
        if len(compressed) >= len(body):
            return
        resp.text = None
        resp.media = None
        resp.data = compressed
        resp.set_header("Content-Encoding", "gzip")

    @staticmethod
    def _excluded(resp: falcon.Response) -> bool:
        encoding = resp.get_header("Content-Encoding")
        if encoding and encoding.strip().lower() != "identity":
            return True
        return "no-transform" in (resp.get_header("Cache-Control") or "").lower()
