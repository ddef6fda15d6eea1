"""Timestamps in the format the original vmpooler stores (Ruby ``Time#to_s``).

The original writes local time with an offset, e.g. ``2015-04-28 19:17:47 -0700``. We write the same
and read that, ISO 8601, or a bare epoch number, so that a Redis written by either can be read.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import time

__all__ = ["format_time", "now_str", "parse_time", "rfc3339", "today"]

_RUBY_FORMAT = "%Y-%m-%d %H:%M:%S %z"


_last_formatted: tuple[int, tuple[str, str], str] = (-1, ("", ""), "")


def format_time(epoch: float) -> str:
    """Format an epoch in the original's format, in local time.

    The text has whole seconds, so the last one is kept (per second and time zone): every API request
    formats "now", and ``strftime`` was 3 % of a request's CPU (docs/performance.md).
    """
    global _last_formatted
    second, zone = math.floor(epoch), time.tzname
    cached = _last_formatted
    if cached[0] == second and cached[1] == zone:
        return cached[2]
    text = _dt.datetime.fromtimestamp(second).astimezone().strftime(_RUBY_FORMAT)
    _last_formatted = (second, zone, text)
    return text


def now_str() -> str:
    return format_time(time.time())


def parse_time(value: str | bytes | None) -> float | None:
    """Parse a stored timestamp into an epoch; None for missing or unparsable values."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip()
    if not text:
        return None
    fast = _parse_ruby(text)
    if fast is not None:
        return fast
    try:
        return float(text)
    except ValueError:
        pass
    for parse in (
        lambda s: _dt.datetime.strptime(s, _RUBY_FORMAT),
        lambda s: _dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S %Z"),
        _dt.datetime.fromisoformat,
    ):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()
        return parsed.timestamp()
    return None


# A pool pass reads a few timestamps of every VM and a GET of a VM one; VMs checked out or made ready
# in the same second share theirs, so recent answers are kept (the text carries its own offset: the
# answer does not depend on the local time zone).
@functools.lru_cache(maxsize=1024)
def _parse_ruby(text: str) -> float | None:
    """``YYYY-MM-DD HH:MM:SS +HHMM`` without ``strptime`` (a tenth of its cost); None when ``text`` is
    not exactly that."""
    if len(text) != 25 or text[20] not in "+-" or not text[21:].isdigit():
        return None
    try:
        date, clock = _dt.date.fromisoformat(text[:10]), _dt.time.fromisoformat(text[11:19])
    except ValueError:
        return None
    if text[10] != " " or text[19] != " ":
        return None
    offset = int(text[21:23]) * 3600 + int(text[23:25]) * 60
    if offset >= 86400:  # no time zone is a day or more away (datetime.timezone would raise)
        return None
    zone = _dt.timezone(_dt.timedelta(seconds=offset if text[20] == "+" else -offset))
    return _dt.datetime.combine(date, clock, zone).timestamp()


def rfc3339(epoch: float) -> str:
    """RFC 3339 in local time with offset, as the API's ``start_time``/``end_time``; a time past what a
    calendar can print (a lifetime of 10^15 hours) is the last second of year 9999, never an error.

    Recent answers are kept by epoch and time zone: a GET of a running VM prints two (its start and
    end), shared by every VM checked out in the same second, and the local time conversion was a
    quarter of that request's instructions (docs/performance.md).
    """
    return _rfc3339(epoch, time.tzname)


@functools.lru_cache(maxsize=1024)
def _rfc3339(epoch: float, _zone: tuple[str, str]) -> str:
    try:
        moment = _dt.datetime.fromtimestamp(epoch)
    except (OverflowError, OSError, ValueError):
        moment = _dt.datetime.max.replace(microsecond=0) if epoch > 0 else _dt.datetime.min
    try:
        return moment.astimezone().isoformat(timespec="seconds")
    except (OverflowError, ValueError):  # the offset pushes it past the calendar's end
        return moment.isoformat(timespec="seconds")


def today(epoch: float | None = None) -> str:
    """The local date ``YYYY-MM-DD`` used in the date-keyed stats hashes."""
    return _dt.datetime.fromtimestamp(time.time() if epoch is None else epoch).strftime("%Y-%m-%d")
