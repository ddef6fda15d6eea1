"""Dashboard history read from a graphite server, as the original's stats feeds did.

The original asked ``http://<graphs server>/render?target=<prefix>.<metric>.*&from=-1hour&format=json``
while the request waited, without a timeout, and ignored any failure. Here connecting and each read
wait at most ``TIMEOUT``, the whole body must arrive within twice that, the answer is capped in size
and validated; on any failure the caller falls back to the current value.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import time
import urllib.request
from collections.abc import Callable, Collection
from typing import Any

import attrs

__all__ = ["MAX_BYTES", "TIMEOUT", "Series", "fetch", "pool_history", "running_history"]

log = logging.getLogger(__name__)

TIMEOUT = 2.0  # seconds; an API thread waits this long at most per socket operation
MAX_BYTES = 4 * 1024 * 1024  # one hour of every pool is far smaller
_CHUNK = 65536
_EXPANSION = 8  # the original repeated each pool datapoint 8 times


@attrs.frozen
class Series:
    """One graphite series: the last dot-separated segment of its target, and its values (None: no data)."""

    name: str
    values: tuple[float | None, ...]


def _read(url: str, timeout: float) -> bytes:
    deadline = time.monotonic() + 2 * timeout
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        while chunk := answer.read1(_CHUNK):  # read1: at most one recv, so the deadline is checked
            size += len(chunk)
            if size > MAX_BYTES:
                raise ValueError(f"answer larger than {MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError("answer too slow")
            chunks.append(chunk)
    return b"".join(chunks)


def _value(point: Any) -> float | None:
    if not isinstance(point, list) or not point:
        raise ValueError("datapoint is not a [value, timestamp] list")
    value = point[0]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"datapoint value {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN or Infinity: as good as no data
    return value


def _parse(raw: bytes) -> list[Series]:
    document = json.loads(raw)
    if not isinstance(document, list):
        raise ValueError("render answer is not a list")
    series = []
    for entry in document:
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
            raise ValueError("series without a target")
        points = entry.get("datapoints")
        if not isinstance(points, list):
            raise ValueError("series without datapoints")
        target = entry["target"]
        name = target.rsplit(".", 1)[1] if "." in target else ""  # "" matches no pool
        series.append(Series(name, tuple(_value(p) for p in points)))
    return series


def fetch(server: str, prefix: str, metric: str, *, timeout: float | None = None) -> list[Series] | None:
    """The last hour of ``<prefix>.<metric>.*``, or None when graphite cannot give it.

    Args:
        server: ``host`` or ``host:port`` of the graphite web server (``:graphs: server``).
        prefix: the metric prefix (``:graphs: prefix``).
        metric: ``ready`` or ``running``.
        timeout: seconds per socket operation; default ``TIMEOUT``.
    """
    url = f"http://{server}/render?target={prefix}.{metric}.*&from=-1hour&format=json"
    try:
        return _parse(_read(url, TIMEOUT if timeout is None else timeout))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        log.warning("no dashboard history from graphite %s: %s", url, exc)
        return None


def pool_history(series: list[Series], sizes: dict[str, int]) -> dict[str, list[int]]:
    """Per pool: every datapoint repeated 8 times, a gap repeating the previous value (the original's).

    Before the first value a gap counts as the pool's size. Series of unknown pools are ignored.
    """
    history: dict[str, list[int]] = {}
    for one in series:
        if one.name not in sizes:
            continue
        last = sizes[one.name]
        points = history.setdefault(one.name, [])
        for value in one.values:
            if value is not None:
                last = int(value)
            points.extend([last] * _EXPANSION)
    return history


def running_history(
    series: list[Series], groups: Collection[str], group_of: Callable[[str], str]
) -> dict[str, list[int]]:
    """Per group: its pools' datapoints summed index by index, a gap counting the pool's last value.

    As in the original every sum has one more entry than the longest series, repeating the last
    values; a series counts towards a group even when its pool is no longer configured.

    Args:
        series: the ``running`` series.
        groups: the groups answered; series of other groups are ignored (the original crashed).
        group_of: pool name → group.
    """
    history: dict[str, list[int]] = {}
    for one in series:
        group = group_of(one.name)
        if group not in groups:
            continue
        sums = history.setdefault(group, [])
        last = 0
        for at, value in enumerate((*one.values, None)):
            if value is not None:
                last = int(value)
            if at == len(sums):
                sums.append(0)
            sums[at] += last
    return history
