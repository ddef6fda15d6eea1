"""Logging setup and context-carrying loggers.

Every module logs through ``logging.getLogger(__name__)``; ``get_logger(name, pool=…, vm=…)`` adds
context to each line (nodepool's annotated logger). One event is one line, in either format
(``:config: log_format``):

* ``text`` (default): ``time LEVEL [process/thread] logger: [pool=… vm=…] message``; the process and
  the thread are named, since pykka names its threads after actors. A traceback follows on its own lines.
* ``json``: one JSON object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``
  (without the ``[…]`` context), ``process``, ``pid``, ``thread``, the context fields (``pool``, ``vm``,
  ``request``, ``provider``) that are known, and ``exc`` holding the traceback, so nothing is ever written
  outside the JSON.

The context is part of the message (``record.getMessage()`` starts with ``[pool=… vm=…]``, as handlers
and tests have always seen it) and also a record attribute, from which the JSON format takes it.

The supervisor reads the format from its config and hands it to the children it spawns in
``VMPOOLER_LOG_FORMAT`` (as ``VMPOOLER_LOG_LEVEL``), so every process of one service logs alike.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import types
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from vmpooler.config.env import env_flag, env_value

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "ContextLogger",
    "EscapingFormatter",
    "JsonFormatter",
    "get_logger",
    "redact_path",
    "setup_logging",
]

FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s/%(threadName)s] %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("pool", "vm", "request", "provider")
"""The context keys the actors use; a plain logger's ``extra`` with one of them is context too."""

_FORMAT_VARIABLE = "VMPOOLER_LOG_FORMAT"  # the supervisor's hand-off to its spawned children
_CONTEXT = "vmpooler_context"  # the LogRecord attribute that carries a ContextLogger's context
_PREFIX = "vmpooler_context_prefix"  # ... and the "[pool=… vm=…] " it put before the message
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TOKEN_PATH = re.compile(r"(/token/)([^/?#]{1,4})[^/?#]*")


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context (a ContextLogger's, or known fields a plain logger's ``extra`` set), in the
    order given, without the None values."""
    given: Mapping[str, Any] = {
        **{key: getattr(record, key) for key in CONTEXT_FIELDS if hasattr(record, key)},
        **(getattr(record, _CONTEXT, None) or {}),
    }
    return {key: value for key, value in given.items() if value is not None}


class EscapingFormatter(logging.Formatter):
    """The text format. Every log line is one line: control characters in the message (a CR/LF or NUL
    a client put in a user name or a URL) are written escaped (``\\n``, ``\\x00``), so nobody can forge a
    log line. Tracebacks, appended after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class JsonFormatter(logging.Formatter):
    """The ``json`` format: each record one JSON object on one line (non-ASCII escaped, so no character
    in it counts as a line break anywhere); the traceback, if any, in ``exc``, the stack in ``stack``."""

    def format(self, record: logging.LogRecord) -> str:
        message, prefix = record.getMessage(), getattr(record, _PREFIX, "")
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message[len(prefix) :] if prefix and message.startswith(prefix) else message,
            "process": record.processName,
            "pid": record.process,
            "thread": record.threadName,
        }
        entry["time"] = entry["time"].replace("+00:00", "Z")
        for key, value in _context(record).items():
            entry.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def redact_path(path: str) -> str:
    """``path`` with any token in it cut to its first 4 characters: ``/token/abcd…``."""
    return _TOKEN_PATH.sub(r"\1\2…", path)


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return EscapingFormatter(FORMAT)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")


def setup_logging(level: str | int | None = None, logfile: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once per process: stderr, plus ``logfile`` when given.

    Args:
        level: defaults to env ``VMPOOLER_LOG_LEVEL``, else DEBUG when ``VMPOOLER_DEBUG`` is set, else INFO.
        logfile: a file to append to as well.
        fmt: ``text`` or ``json`` (:data:`LOG_FORMATS`); defaults to ``VMPOOLER_LOG_FORMAT``, which the
            supervisor sets from ``:config: log_format`` for its children, else ``text``. With ``json``
            Python's warnings and uncaught exceptions (of any thread) are logged too, as JSON.

    Raises:
        ValueError: an unknown ``fmt``.
    """
    if level is None:
        level = env_value("VMPOOLER_LOG_LEVEL", None) or ("DEBUG" if env_flag("VMPOOLER_DEBUG") else "INFO")
    fmt = fmt or os.environ.get(_FORMAT_VARIABLE, "").strip() or "text"
    formatter = _formatter(fmt)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    failed: OSError | None = None
    if logfile:
        try:
            handlers.append(logging.FileHandler(logfile))
        except OSError as exc:
            failed = exc
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if failed is not None:
        logging.getLogger(__name__).error(
            "cannot open logfile %s: %s; logging to stderr only", logfile, failed
        )
    if fmt == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
    logging.getLogger("vmpooler").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("vmpooler").error(
        "uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=args.exc_value
    )


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds context to each record: ``pool``, ``vm``, ``request`` (an on-demand request id)
    and ``provider``, or any other key. The message starts with it, ``[pool=debian vm=ab-cd] …``; the
    JSON format writes it as fields of their own instead. A None value is left out.

    A call can add to it with ``extra``: ``log.info("queued", extra={"request": request_id})``.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        context = {
            **(self.extra or {}),
            **{key: extra.pop(key) for key in list(extra) if key in CONTEXT_FIELDS},
        }
        context = {key: value for key, value in context.items() if value is not None}
        if not context:
            return msg, kwargs
        prefix = "[" + " ".join(f"{key}={value}" for key, value in context.items()) + "] "
        kwargs["extra"] = {**extra, _CONTEXT: context, _PREFIX: prefix}
        return f"{prefix}{msg}", kwargs

    def bind(self, **context: Any) -> ContextLogger:
        """This logger with more context, e.g. ``log.bind(request=request_id)`` for one request's lines."""
        return ContextLogger(self.logger, {**(self.extra or {}), **context})


def get_logger(name: str, **context: Any) -> ContextLogger:
    """``logging.getLogger(name)`` adding ``context`` to every record.

    Args:
        name: the logger name, ``__name__``.
        context: ``pool=``, ``vm=``, ``request=`` (an on-demand request id), ``provider=``; other keys
            are logged too.
    """
    return ContextLogger(logging.getLogger(name), context)
