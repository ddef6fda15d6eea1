"""Input validation of the v3 API, minus the original's regressions.

Each validator returns the clean value or raises ``ApiError(400, error=<message>)`` with the
original's message text. Deliberate differences: pool names may contain ``.``, and tag values may
contain any printable character (``=`` ``,`` ``?`` ``&`` … appear in Jenkins build URLs).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

from vmpooler.http.errors import ApiError

__all__ = [
    "DEFAULT_MAX_LIFETIME",
    "MAX_BODY",
    "MAX_DISK_GB",
    "disk_size",
    "hostname",
    "json_object",
    "parse_date",
    "pool_name",
    "tag",
    "vm_count",
]

MAX_BODY = 10_240
MAX_DISK_GB = 2048  # the largest disk a request may ask for, in every API version
DEFAULT_MAX_LIFETIME = 87_600  # hours (ten years): the lifetime limit when none is configured
MAX_DEPTH = 5
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z", re.I)
_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_TAG_KEY = re.compile(r"[A-Za-z0-9_.-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a lone surrogate ("\ud800" in JSON) is no text: not UTF-8
_INTEGER = re.compile(r"[0-9]+\Z")


def _bad(message: str) -> ApiError:
    return ApiError(400, error=message)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _no_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (Python accepts them; the original's parser does not)."""
    raise ValueError(f"unexpected token {name}")


def json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object; an empty body is ``{}``.

    The size is checked before parsing (the original parsed first), so an oversized body is never
    parsed. The text after ``Invalid JSON:`` is Python's parser message, not Ruby's.
    """
    if len(raw) > MAX_BODY:
        raise ApiError(413, error="Request body too large")
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"Invalid JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser can go: far past MAX_DEPTH
        raise _bad("Request body too complex") from None
    if not isinstance(parsed, dict):
        raise _bad("Request body must be a JSON object")
    if _depth(parsed) > MAX_DEPTH:
        raise _bad("Request body too complex")
    return parsed


def hostname(value: str) -> str:
    """Validate a hostname or FQDN and return its short name (the part before the first dot)."""
    if not value:
        raise _bad("Hostname is required")
    if len(value) > 253:
        raise _bad("Hostname too long")
    if not _HOSTNAME.match(value):
        raise _bad("Invalid hostname format")
    return value.split(".", 1)[0]


def pool_name(value: str) -> str:
    if not value:
        raise _bad("Pool name is required")
    if len(value) > 100:
        raise _bad("Pool name too long")
    if not _POOL_NAME.match(value):
        raise _bad("Invalid pool name format")
    return value


def integer(value: Any, name: str, *, low: int, high: int | None) -> int:
    """A whole number given as digits (string or JSON integer) within ``low..high``."""
    if value is None:
        raise _bad(f"{name} is required")
    text = str(value) if not isinstance(value, bool) else "x"
    if not _INTEGER.match(text):
        raise _bad(f"{name} must be a valid integer")
    number = int(text)
    if number < low:
        raise _bad(f"{name} must be at least {low}")
    if high is not None and number > high:
        raise _bad(f"{name} must be at most {high}")
    return number


def vm_count(value: Any) -> int:
    return integer(value, "VM count", low=1, high=100)


def disk_size(value: Any) -> int:
    return integer(value, "Disk size", low=1, high=MAX_DISK_GB)


def tag(key: str, value: Any) -> None:
    """Validate one tag; the value may be any printable text up to 255 characters."""
    if not key:
        raise _bad("Tag key is required")
    if len(key) > 50:
        raise _bad("Tag key too long")
    if not _TAG_KEY.match(key):
        raise _bad("Invalid tag key format")
    if value is None:
        return
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _bad(f"Tag value of {key} must be a string")
    text = str(value)
    if len(text) > 255:
        raise _bad("Tag value too long")
    if _CONTROL.search(text) or _SURROGATE.search(text):
        raise _bad("Tag value contains invalid characters")


def parse_date(value: str) -> _dt.date:
    """A ``YYYY-MM-DD`` date; the error text is the original's."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return _dt.date.fromisoformat(value)
    except ValueError:
        raise _bad(f"Invalid date format '{value}', must match YYYY-MM-DD.") from None
