"""Logging setup and context-carrying loggers.

Every module logs through ``logging.getLogger(__name__)``; ``get_logger(name, pool=…, vm=…)`` adds
context to each line (nodepool's annotated logger). The format names the process and the thread,
since pykka names its threads after actors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from vmpooler.config.env import env_flag, env_value

__all__ = ["ContextLogger", "get_logger", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s/%(threadName)s] %(name)s: %(message)s"


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
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``key=value`` context, e.g. ``[pool=debian vm=ab-cd]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        context = " ".join(f"{k}={v}" for k, v in (self.extra or {}).items() if v is not None)
        return (f"[{context}] {msg}" if context else msg), kwargs


def get_logger(name: str, **context: Any) -> ContextLogger:
    return ContextLogger(logging.getLogger(name), context)
