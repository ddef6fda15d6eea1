"""What the service counts: its Prometheus exposition (``GET /prometheus`` on the API port).

The API serves the sum over every process of the service (prometheus-client's multiprocess mode), so
the manager's error counters (``vmpooler_errors_total{kind, poolname}``, see ``vmpooler.metrics``) show
what the chaos did, and whether anything crashed.
"""

from __future__ import annotations

import collections
import http.client
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "CHECKOUT_SUCCESS",
    "ERRORS",
    "FATAL_ERRORS",
    "DestroyRetries",
    "Metrics",
    "MetricsError",
    "scrape",
]

ERRORS = "vmpooler_errors_total"
CHECKOUT_SUCCESS = "vmpooler_checkout_success_total"
# Error kinds that fail a run whenever they were counted (a kind never counted is absent: 0).
FATAL_ERRORS = ("actor_crashed", "pool_actor_crashed")
PATH = "/prometheus"


class MetricsError(Exception):
    """The exposition could not be read or parsed."""


class Metrics:
    """One scrape: the samples of every metric family, by sample name.

    Args:
        samples: sample name (``vmpooler_errors_total``) → ``(labels, value)`` of each series.
    """

    def __init__(self, samples: Mapping[str, list[tuple[dict[str, str], float]]]) -> None:
        self._samples = samples

    def total(self, name: str, **labels: str) -> float:
        """The sum of the series of sample ``name`` whose labels include ``labels``; 0 when none."""
        return sum(
            value
            for series, value in self._samples.get(name, [])
            if all(series.get(key) == want for key, want in labels.items())
        )

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``total(name, **labels)`` for every value of ``label``."""
        sums: dict[str, float] = collections.defaultdict(float)
        for series, value in self._samples.get(name, []):
            if all(series.get(key) == want for key, want in labels.items()):
                sums[series.get(label, "")] += value
        return dict(sums)

    def errors(self, kind: str, pool: str | None = None) -> float:
        """``vmpooler_errors_total`` of ``kind`` (in ``pool``, or in all pools)."""
        return self.total(ERRORS, kind=kind) if pool is None else self.total(ERRORS, kind=kind, poolname=pool)

    def error_kinds(self) -> dict[str, float]:
        """Every error kind counted so far → its count over all pools."""
        return self.by_label(ERRORS, "kind")


def parse(text: str) -> Metrics:
    """Parse a text exposition.

    Raises:
        MetricsError: the text is not an exposition.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name].append((dict(sample.labels), float(sample.value)))
    except ValueError as exc:
        raise MetricsError(f"cannot parse the exposition: {exc}") from exc
    return Metrics(samples)


def scrape(port: int, timeout: float = 10.0) -> Metrics:
    """``GET /prometheus`` from the API on 127.0.0.1:``port``, parsed.

    Raises:
        MetricsError: no answer, an answer other than 200, or not an exposition.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", PATH)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise MetricsError(f"GET {PATH}: {exc!r}") from exc
    finally:
        conn.close()
    if resp.status != 200:
        raise MetricsError(f"GET {PATH}: HTTP {resp.status} {body[:200]}")
    return parse(body)


class DestroyRetries:
    """Watches the ``destroy_failed`` counter of every pool: when did each last rise?

    A failed destroy leaves its VM in ``completed`` and is retried after a back-off (doubling from 1 s,
    capped at the pool's ``check_loop_delay_max``); each retry that fails again counts once more. So a
    completed VM is explained by a pending retry while its pool's counter keeps rising, at most ``window``
    seconds apart.

    Args:
        read: a scrape of the service's metrics.
        window: the longest a retry may be due after the last failure counted (back-off cap + grace).
        interval: the least seconds between two scrapes.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        read: Callable[[], Metrics],
        window: float,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._window, self._interval, self._clock = read, window, interval, clock
        self._counts: dict[str, float] | None = None  # the last scrape's; None before the first
        self._rose: dict[str, float] = {}  # pool → when its counter was last seen higher
        self._scraped = -float("inf")
        self.error: str | None = None  # the last scrape's failure, if it failed

    def update(self) -> None:
        """Scrape (at most every ``interval`` seconds) and note the pools whose counter rose since."""
        now = self._clock()
        if now - self._scraped < self._interval:
            return
        self._scraped = now
        try:
            counts = self._read().by_label(ERRORS, "poolname", kind="destroy_failed")
        except MetricsError as exc:
            self.error = str(exc)
            return
        self.error = None
        if self._counts is not None:  # the first scrape is the baseline
            for pool, count in counts.items():
                if count > self._counts.get(pool, 0.0):
                    self._rose[pool] = now
        self._counts = counts

    def explains(self, pools: Iterable[str]) -> bool:
        """True when the last scrape worked and each of ``pools`` saw a destroy fail within the window."""
        now = self._clock()
        return self.error is None and all(
            now - self._rose.get(pool, -float("inf")) <= self._window for pool in pools
        )
