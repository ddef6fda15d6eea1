"""Errors of the HTTP API and the one place they become responses.

Every error body keeps the original's shape, ``{"ok": false, ...}``: a validation error adds
``"error": <message>``, a PUT failure ``"failure": [...]``, and so on. Nothing reaches
the client as a traceback: unexpected exceptions are logged and answered with a JSON 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from vmpooler import metrics
from vmpooler.errors import AuthUnavailable, StoreError, StoreUnavailable
from vmpooler.log import redact_path

__all__ = ["ApiError", "install_error_handlers"]

log = logging.getLogger(__name__)

_REALM = 'Basic realm="Authentication required"'


class ApiError(Exception):
    """An answer other than success: ``status`` and the body fields besides ``ok``.

    Args:
        status: the HTTP status code.
        body: extra fields of the JSON body, e.g. ``error="Invalid hostname format"``.
    """

    def __init__(self, status: int, **body: Any) -> None:
        super().__init__(body.get("error") or body.get("message") or str(status))
        self.status = status
        self.body = body


def _write(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"ok": False, **body}, indent=2)
    if status == 401:
        resp.set_header("WWW-Authenticate", _REALM)


def _api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: Any) -> None:
    _write(resp, ex.status, ex.body)


def _http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: Any) -> None:
    body: dict[str, Any] = {}
    if ex.status_code not in (404, 405) and ex.description:
        body["error"] = ex.description
    _write(resp, ex.status_code, body)
    resp.set_headers(ex.headers or {})


def _unavailable(req: falcon.Request, resp: falcon.Response, ex: StoreError, params: Any) -> None:
    if isinstance(ex, StoreUnavailable):
        log.warning("redis unavailable while serving %s %s: %s", req.method, redact_path(req.path), ex)
        _write(resp, 503, {"error": "the pool store (redis) is unavailable, try again shortly"})
        resp.set_header("Retry-After", "1")
    else:
        log.error("redis error while serving %s %s: %s", req.method, redact_path(req.path), ex)
        _write(resp, 500, {"error": "internal store error"})


def _auth_unavailable(req: falcon.Request, resp: falcon.Response, ex: AuthUnavailable, params: Any) -> None:
    log.warning("directory unavailable while serving %s %s: %s", req.method, redact_path(req.path), ex)
    _write(resp, 503, {"error": "the authentication directory (LDAP) is unavailable, try again shortly"})
    resp.set_header("Retry-After", "5")


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    if isinstance(ex, falcon.HTTPError):
        _http_error(req, resp, ex, params)
        return
    metrics.HTTP_EXCEPTIONS.labels(type(ex).__name__).inc()
    log.exception("unhandled error serving %s %s", req.method, redact_path(req.path))
    _write(resp, 500, {"error": "internal error"})


def install_error_handlers(app: falcon.App) -> None:
    """Map every error to a JSON body; the most specific handler wins."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(StoreError, _unavailable)
    app.add_error_handler(AuthUnavailable, _auth_unavailable)
    app.add_error_handler(ApiError, _api_error)
