"""Logging setup and context-carrying loggers.

Every module logs through ``logging.getLogger(__name__)``; ``get_logger(name, pool=…, vm=…)`` adds
context to each line (nodepool's annotated logger). The format names the process and the thread,
since pykka names its threads after actors.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

from vmpooler.config.env import env_flag, env_value

__all__ = ["ContextLogger", "EscapingFormatter", "get_logger", "redact_path", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s/%(threadName)s] %(name)s: %(message)s"


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TOKEN_PATH = re.compile(r"(/token/)([^/?#]{1,4})[^/?#]*")


class EscapingFormatter(logging.Formatter):
    """Every log line is one line: control characters in the message (a CR/LF or NUL a client put in
    a user name or a URL) are written escaped (``\\n``, ``\\x00``), so nobody can forge a log line.
    Tracebacks, appended after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def redact_path(path: str) -> str:
    """``path`` with any token in it cut to its first 4 characters: ``/token/abcd…``."""
    return _TOKEN_PATH.sub(r"\1\2…", path)


def setup_logging(level: str | int | None = None, logfile: str | None = None) -> None:
    """Configure the root logger once per process: stderr, plus ``logfile`` when given.

    ``level`` defaults to env ``VMPOOLER_LOG_LEVEL``, else DEBUG when ``VMPOOLER_DEBUG`` is set,
    else INFO.
    """
    if level is None:
        level = env_value("VMPOOLER_LOG_LEVEL", None) or ("DEBUG" if env_flag("VMPOOLER_DEBUG") else "INFO")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        try:
            handlers.append(logging.FileHandler(logfile))
        except OSError as exc:
            print(f"vmpooler: cannot open logfile {logfile}: {exc}; logging to stderr only", file=sys.stderr)
    formatter = EscapingFormatter(FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``key=value`` context, e.g. ``[pool=debian vm=ab-cd]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        context = " ".join(f"{k}={v}" for k, v in (self.extra or {}).items() if v is not None)
        return (f"[{context}] {msg}" if context else msg), kwargs


def get_logger(name: str, **context: Any) -> ContextLogger:
    return ContextLogger(logging.getLogger(name), context)
