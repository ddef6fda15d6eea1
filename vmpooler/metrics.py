"""Every metric, declared once: the original's Prometheus names (prefix ``vmpooler_``), and for each
metric the original also sent to statsd or graphite, its dotted name there (reference §6.1).

API workers and provider processes are separate processes; when ``PROMETHEUS_MULTIPROC_DIR`` is set
(the supervisor sets it), prometheus-client writes every process's samples there and the API's
``/prometheus`` endpoint serves the sum of all of them.

With a ``:statsd:`` or ``:graphite:`` section, each process also sends every update of a metric with a
dotted name to that sink (:func:`configure_sink`, once at the start of each process; see
:mod:`vmpooler.metrics_sinks`). Call sites do not change: ``CHECKOUT_SUCCESS.labels(pool).inc()`` adds
to the Prometheus counter and sends ``<prefix>.checkout.success.<pool>:1|c``. The label values fill the
name's ``{}`` in order, as they are, dots included (the original replaced dots by ``_`` only in the
usage names, which ``vmpooler.http.usage`` already does); characters that would break a statsd datagram
or a graphite line (white space, ``:``, ``|``, ``@``, control characters) become ``_``. Durations keep
the original's types and units: ``vmpooler_clone``/``vmpooler_destroy`` are gauges in seconds (3.8+),
``time_to_ready_state`` is a statsd timing whose value is in seconds, as the original sent it.

§6.1 names not sent, for want of the event or of a metric: ``checkout.nonresponsive``/
``checkout.smove.failed`` (v1 only; our checkout is one atomic script without a port probe);
``vmpooler_errors.staledns`` (no DNS records are managed); ``ondemandrequest_*``, ``config.invalid``,
``poolreset.invalid`` (no metric yet); ``vmpooler_purge.*``, ``vmpooler_health.*`` other than the
pending queue's ``oldest_age``/``stuck_count`` (``health_check_enabled`` is not acted on);
``connection_available``/``connection_waited`` (per connection checkout: only the monitor's
``connection_pool.*`` samples are sent); ``circuit_breaker.failures``/``.half_open``/``.closed`` (only
the state and the openings are counted); ``connect.*``, ``migrate*`` (vSphere internals). Ours beside
the original's: more ``vmpooler_errors.<kind>`` kinds (``clone_failed``, ``destroy_failed``,
``actor_crashed``, …).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import os
import re
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from vmpooler.metrics_sinks import COUNTER, GAUGE, TIMING, Sink, make_sink

if TYPE_CHECKING:
    from vmpooler.config import Config

__all__ = [
    "CHECKOUT_EMPTY",
    "CHECKOUT_INVALID",
    "CHECKOUT_SUCCESS",
    "CHECK_POOL",
    "CLONE",
    "CONTENT_TYPE_LATEST",
    "DELETE_FAILED",
    "DELETE_SUCCESS",
    "DESTROY",
    "ERRORS",
    "FLUSH_INTERVAL",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "HTTP_REQUESTS_VM",
    "READY",
    "RUNNING",
    "TIME_TO_READY",
    "DeferredUpdates",
    "Mirrored",
    "add",
    "configure_sink",
    "defer_updates",
    "exposition",
    "flush_updates",
    "observe",
    "process_exited",
    "statsd_name",
    "stop_deferring",
    "use_sink",
]

log = logging.getLogger(__name__)

_sink: Sink | None = None  # this process's statsd or graphite sink
_UNSAFE = re.compile(r"[\s:|@\x00-\x1f\x7f]")


def configure_sink(config: Config | None) -> Sink | None:
    """Open this process's sink as ``config.metrics`` chooses (statsd, else graphite, else none).

    Called once at the start of every API worker and provider process; a later call (tests) closes the
    earlier sink. ``None`` turns the sink off.

    Returns:
        The sink now in use, if any.
    """
    sink = make_sink(config.metrics) if config is not None else None
    if sink is not None and config is not None:
        log.info("metrics also go to %r, prefix %r", sink, config.metrics.prefix)
    previous = use_sink(sink)
    if previous is not None and previous is not sink:
        previous.close()
    return sink


def use_sink(sink: Sink | None) -> Sink | None:
    """Send the mirrored updates to ``sink`` from now on (tests pass a recording one); returns the
    previous sink, which stays open."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def statsd_name(template: str, values: Sequence[object]) -> str:
    """The dotted name of one label-value tuple: ``template``'s ``{}`` filled with the values in order,
    each with white space, ``:``, ``|``, ``@`` and control characters replaced by ``_``."""
    return template.format(*(_UNSAFE.sub("_", str(value)) for value in values))


# API workers' request path: counter increments and histogram observations are summed in memory and
# written to prometheus-client every FLUSH_INTERVAL seconds (DeferredUpdates).
FLUSH_INTERVAL = 0.1
_deferred: DeferredUpdates | None = None


class DeferredUpdates:
    """Counter increments and histogram observations, kept in memory and written in sums.

    In multiprocess mode every prometheus-client update is a write to a memory-mapped file under one
    process-wide lock, a histogram observation two; an API request made five, 14 % of its instructions
    (docs/performance.md). Here (:func:`add`, :func:`observe`) nothing takes a lock and nothing is lost
    between threads: an increment by 1 (nearly all of them) is a ``next()`` of the child's own
    ``itertools.count``, atomic in C; an observation is an append to the child's own list; any other
    increment an append to a queue (:meth:`queue`).
    :meth:`flush` writes each child once: a counter's increments since the last flush (its count's
    advance), a histogram's sum and its per-bucket counts. A flush happens every ``interval`` seconds (a
    daemon thread), before this process's exposition is read, and when deferral stops, so a scrape shows
    another process's updates at most ``interval`` seconds late and none is lost at exit. Gauges are
    never deferred (a ``set`` is the latest value, its order matters).
    """

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        # child -> its count; child -> what that count's next() answered at the last flush, plus one
        self.counts: dict[Any, itertools.count[int]] = {}
        self._flushed: dict[Any, int] = {}
        self.observed: dict[Any, list[float]] = {}  # child -> its observations since the last flush
        self._queued: collections.deque[tuple[Any, float]] = collections.deque()  # other increments
        self._flushing = threading.Lock()  # one flush at a time: a scrape's waits for the timer's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="metrics-flush")

    def start(self) -> None:
        self._thread.start()

    def count_of(self, child: Any) -> itertools.count[int]:
        """``child``'s count, made on its first increment (``setdefault``: one, whichever thread wins)."""
        return self.counts.setdefault(child, itertools.count())

    def values_of(self, child: Any) -> list[float]:
        """``child``'s list of observations, made on its first one."""
        return self.observed.setdefault(child, [])

    def queue(self, child: Any, amount: float) -> None:
        """An increment by other than 1 (:func:`add` counts those by 1 itself)."""
        if amount < 0:  # prometheus-client's own check, which the deferred write would meet too late
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._queued.append((child, amount))

    def flush(self) -> None:
        """Write what was counted, queued and observed since the last flush."""
        with self._flushing:
            totals: dict[Any, float] = {}
            flushed = self._flushed
            for child, count in list(self.counts.items()):
                now = next(count)  # every increment so far took one number, each flush one more
                done = now - flushed.get(child, 0)
                flushed[child] = now + 1
                if done:
                    totals[child] = done
            pop = self._queued.popleft
            while True:
                try:
                    child, amount = pop()
                except IndexError:
                    break
                totals[child] = totals.get(child, 0.0) + amount
            for child, total in totals.items():
                child.inc(total)
            for child, values in list(self.observed.items()):
                taken = len(values)
                if taken:
                    batch = values[:taken]
                    del values[:taken]  # appends only go after the end: none made meanwhile is lost
                    _observe_all(child, batch)

    def stop(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # a metric's write must not end the timer: the next flush tries again
                log.exception("writing the queued metric updates failed")


def _observe_all(child: Any, values: list[float]) -> None:
    """Observations of one histogram child: its sum once and each bucket's count once, as that many
    ``observe`` calls would have left them (the first bucket whose bound is >= the value); through
    ``observe`` itself if this prometheus-client keeps them otherwise."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        index = bisect.bisect_left(bounds, value)
        if index < len(counts):  # NaN falls in no bucket, as observe leaves it
            counts[index] += 1
    total.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


def add(child: Any, amount: float = 1) -> None:
    """``child.inc(amount)`` for a Prometheus counter child, kept for the next flush while this process
    defers."""
    deferred = _deferred
    if deferred is None:
        child.inc(amount)
    elif amount == 1:
        next(deferred.counts.get(child) or deferred.count_of(child))
    else:
        deferred.queue(child, amount)


def observe(child: Any, value: float) -> None:
    """``child.observe(value)`` for a Prometheus histogram child, kept for the next flush while this
    process defers."""
    deferred = _deferred
    if deferred is None:
        child.observe(value)
        return
    values = deferred.observed.get(child)
    if values is None:
        values = deferred.values_of(child)
    values.append(value)


def defer_updates(interval: float = FLUSH_INTERVAL) -> DeferredUpdates:
    """Queue counter and histogram updates from now on, written every ``interval`` seconds (an API
    worker, for its request path); stop with :func:`stop_deferring`."""
    global _deferred
    stop_deferring()
    deferred = DeferredUpdates(interval)
    deferred.start()
    _deferred = deferred
    return deferred


def flush_updates() -> None:
    """Write this process's queued updates now (before its exposition is read)."""
    deferred = _deferred
    if deferred is not None:
        deferred.flush()


def stop_deferring() -> None:
    """Write what is queued and update directly again (an API worker's exit)."""
    global _deferred
    deferred, _deferred = _deferred, None
    if deferred is not None:
        deferred.stop()


class _MirroredChild:
    """One labelled child: updates the Prometheus child (through :func:`add`/:func:`observe` for
    counters and histograms, so queued while the process defers), then sends the dotted name to the
    sink at once."""

    __slots__ = ("_child", "_count", "_deferrable", "_kind", "_name")

    def __init__(self, child: Any, name: str, kind: str, count: bool, deferrable: bool = False) -> None:
        self._child, self._name, self._kind, self._count = child, name, kind, count
        self._deferrable = deferrable

    def inc(self, amount: float = 1) -> None:
        if self._deferrable:
            add(self._child, amount)
        else:
            self._child.inc(amount)
        self._send(amount)

    def set(self, value: float) -> None:
        self._child.set(value)
        self._send(value)

    def observe(self, value: float) -> None:
        if self._deferrable:
            observe(self._child, value)
        else:
            self._child.observe(value)
        self._send(value)

    def _send(self, value: float) -> None:
        sink = _sink
        if sink is not None:
            sink.send(self._name, 1 if self._count else value, self._kind)

    def __getattr__(self, attr: str) -> Any:  # anything else: the Prometheus child's, not mirrored
        if attr == "_child":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self._child, attr)


class Mirrored:
    """A Prometheus metric that also sends its §6.1 dotted name to the process's sink.

    ``labels(...)`` answers a child with ``inc``/``set``/``observe`` as prometheus-client's do; the
    children are kept per label-value tuple with their names built once, so an update costs one dict
    lookup and the sink's send. A metric without labels is updated directly (``DELETE_SUCCESS.inc()``).

    Args:
        metric: the Prometheus counter, gauge or histogram.
        template: the dotted name, with one ``{}`` per label in label order (``checkout.success.{}``).
        kind: the statsd type; by default counters count, gauges are gauges, histograms are timings.
        count_updates: send each update as an increment of 1 whatever its value (a gauge set once per
            event, as the dead-letter queue size is, mirrors the original's counter of those events).
    """

    def __init__(
        self, metric: Any, template: str, *, kind: str | None = None, count_updates: bool = False
    ) -> None:
        default = COUNTER if isinstance(metric, Counter) else GAUGE if isinstance(metric, Gauge) else TIMING
        self._metric = metric
        self._template = template
        self._kind = COUNTER if count_updates else kind or default
        self._count = count_updates
        self._labelnames: tuple[str, ...] = tuple(metric._labelnames)
        self._children: dict[tuple[object, ...], _MirroredChild] = {}
        self._deferrable = isinstance(metric, (Counter, Histogram))  # never a gauge: see DeferredUpdates
        self._self = (
            None
            if self._labelnames
            else _MirroredChild(metric, template, self._kind, count_updates, self._deferrable)
        )

    @property
    def template(self) -> str:
        """The dotted name with ``{}`` for the label values."""
        return self._template

    def labels(self, *values: object, **named: object) -> _MirroredChild:
        """The child of these label values (positional, or all by name), as prometheus-client's
        ``labels``; wrong labels raise its ``ValueError``."""
        if named:
            if values or len(named) != len(self._labelnames) or not all(n in named for n in self._labelnames):
                self._metric.labels(*values, **named)  # raises prometheus-client's error
            values = tuple(named[n] for n in self._labelnames)
        child = self._children.get(values)
        if child is None:
            prometheus = self._metric.labels(*values)
            name = statsd_name(self._template, values)
            child = _MirroredChild(prometheus, name, self._kind, self._count, self._deferrable)
            self._children[values] = child
        return child

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def remove(self, *values: object) -> None:
        self._metric.remove(*values)
        self._children.pop(values, None)

    def clear(self) -> None:
        self._metric.clear()
        self._children.clear()

    def _unlabelled(self) -> _MirroredChild:
        if self._self is None:
            raise ValueError(f"{self._metric._name}: a labelled metric is updated through labels(...)")
        return self._self

    def __getattr__(self, attr: str) -> Any:  # describe, collect, _name ...: the Prometheus metric's
        if attr == "_metric":
            raise AttributeError(attr)
        return getattr(self._metric, attr)


# API side.
CHECKOUT_SUCCESS = Mirrored(
    Counter("vmpooler_checkout_success", "VMs handed out", ["poolname"]), "checkout.success.{}"
)
CHECKOUT_EMPTY = Mirrored(
    Counter("vmpooler_checkout_empty", "Checkouts refused: no ready VM", ["poolname"]), "checkout.empty.{}"
)
CHECKOUT_INVALID = Mirrored(
    Counter("vmpooler_checkout_invalid", "Checkouts of unknown pools", ["poolname"]), "checkout.invalid.{}"
)
DELETE_SUCCESS = Mirrored(Counter("vmpooler_delete_success", "VMs returned"), "delete.success")
DELETE_FAILED = Mirrored(
    Counter("vmpooler_delete_failed", "Returns of VMs that were not running"), "delete.failed"
)
HTTP_REQUESTS_VM = Mirrored(
    Counter("vmpooler_http_requests_vm_total", "VM endpoint calls", ["method", "subpath", "operation"]),
    "http_requests_vm_total.{}.{}.{}",
)
# The request middleware's (Prometheus only, as in the original).
HTTP_REQUESTS = Counter("vmpooler_http_requests", "HTTP requests", ["code", "method", "path"])
HTTP_DURATION = Histogram(
    "vmpooler_http_request_duration_seconds", "HTTP request latency", ["method", "path"]
)

# Manager side.
_PROVIDER_CALL_BUCKETS = (10, 20, 30, 40, 50, 60, 120, 180, 240, 300, 600)  # seconds: clones and destroys
READY = Mirrored(Gauge("vmpooler_ready", "Ready VMs", ["poolname"], multiprocess_mode="livemax"), "ready.{}")
RUNNING = Mirrored(
    Gauge("vmpooler_running", "Running VMs", ["poolname"], multiprocess_mode="livemax"), "running.{}"
)
CLONE = Mirrored(
    Histogram(
        "vmpooler_clone",
        "Seconds a clone took",
        ["poolname"],
        buckets=_PROVIDER_CALL_BUCKETS,
    ),
    "vmpooler_clone.{}",
    kind=GAUGE,
)
DESTROY = Mirrored(
    Histogram(
        "vmpooler_destroy",
        "Seconds a destroy took",
        ["poolname"],
        buckets=_PROVIDER_CALL_BUCKETS,
    ),
    "vmpooler_destroy.{}",
    kind=GAUGE,
)
TIME_TO_READY = Mirrored(
    Histogram(
        "vmpooler_time_to_ready_state",
        "Seconds from clone start to ready",
        ["poolname"],
        buckets=(30, 60, 120, 180, 240, 300, 500, 800, 1200, 1600),
    ),
    "time_to_ready_state.{}",
    kind=TIMING,
)
ERRORS = Mirrored(
    Counter(
        "vmpooler_errors",
        "Manager errors by kind (markedasfailed, duplicatehostname, clone_failed, destroy_failed, ...)",
        ["kind", "poolname"],
    ),
    "vmpooler_errors.{}.{}",
)
CHECK_POOL = Mirrored(
    Gauge(
        "vmpooler_check_pool_seconds",
        "Duration of the last pool check",
        ["poolname"],
        multiprocess_mode="livemax",
    ),
    "vmpooler_performance.check_pool.{}",
)


def exposition() -> bytes:
    """The text exposition of every metric of every process (multiprocess mode when configured).

    A child that exits (its live gauges' files removed) or starts (its files created) while the files
    are read can make one reading fail; it is read again, up to three times in all. This process's
    queued updates (:func:`defer_updates`) are written first.
    """
    flush_updates()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    for _ in range(2):
        try:
            return _read_process_files()
        except (OSError, ValueError, struct.error) as exc:  # a file gone or half-made under the reader
            log.debug("metrics files changed while read (%s): reading them again", exc)
    return _read_process_files()


def _read_process_files() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges from the multiprocess directory (its counters and histograms
    stay: they count what happened), so that a restarted child does not show next to its ghost."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


# Reliability (provider processes; reference §4.11).
BREAKER_STATE = Mirrored(
    Gauge(
        "vmpooler_circuit_breaker_state",
        "Circuit breaker of a provider: 0 closed, 0.5 half-open, 1 open",
        ["provider"],
        multiprocess_mode="livemax",
    ),
    "circuit_breaker.state.{}",
)
BREAKER_OPENED = Mirrored(
    Counter("vmpooler_circuit_breaker_opened", "Times a provider's breaker opened", ["provider"]),
    "circuit_breaker.opened.{}",
)
# Set to the queue's size after each write: statsd counts the writes, as the original did.
DLQ_ENTRIES = Mirrored(
    Gauge(
        "vmpooler_dlq_entries",
        "Failed VMs in a dead-letter queue (clone, pending, ready)",
        ["queue"],
        multiprocess_mode="mostrecent",
    ),
    "vmpooler_dlq.{}.count",
    count_updates=True,
)
PENDING_OLDEST = Mirrored(
    Gauge(
        "vmpooler_pending_oldest_seconds",
        "Age of the oldest pending VM",
        ["poolname"],
        multiprocess_mode="livemax",
    ),
    "vmpooler_health.queue.{}.pending.oldest_age",
)
PENDING_STUCK = Mirrored(
    Gauge(
        "vmpooler_pending_stuck",
        "Pending VMs older than health_thresholds.stuck_vm_age_threshold",
        ["poolname"],
        multiprocess_mode="livemax",
    ),
    "vmpooler_health.queue.{}.pending.stuck_count",
)
__all__ += ["BREAKER_OPENED", "BREAKER_STATE", "DLQ_ENTRIES", "PENDING_OLDEST", "PENDING_STUCK"]


# Usage statistics (API, ``:config: usage_stats``; ``vmpooler.http.usage``). Never a VM name or token.
# The label order is the order of the dotted name's segments (``UsageCount.statsd``).
USAGE = Mirrored(
    Counter("vmpooler_usage_total", "VMs checked out and returned, by user", ["user", "operation", "pool"]),
    "user.{}.{}.{}",
)
USAGE_LITMUS = Mirrored(
    Counter(
        "vmpooler_usage_litmus_total",
        "Usage by Litmus jobs (jenkins_build_url tag)",
        ["user", "operation", "pool"],
    ),
    "usage_litmus.{}.{}.{}",
)
USAGE_JENKINS = Mirrored(
    Counter(
        "vmpooler_usage_jenkins_total",
        "Usage by Jenkins instance and value stream (jenkins_build_url tag)",
        ["instance", "value_stream", "operation", "pool"],
    ),
    "usage_jenkins_instance.{}.{}.{}.{}",
)
USAGE_BRANCH_PROJECT = Mirrored(
    Counter(
        "vmpooler_usage_branch_project_total",
        "Usage by Jenkins job branch and project (jenkins_build_url tag)",
        ["branch", "project", "operation", "pool"],
    ),
    "usage_branch_project.{}.{}.{}.{}",
)
USAGE_JOB_COMPONENT = Mirrored(
    Counter(
        "vmpooler_usage_job_component_total",
        "Usage by Jenkins job name and component tested (jenkins_build_url tag)",
        ["job_name", "component", "operation", "pool"],
    ),
    "usage_job_component.{}.{}.{}.{}",
)
__all__ += ["USAGE", "USAGE_BRANCH_PROJECT", "USAGE_JENKINS", "USAGE_JOB_COMPONENT", "USAGE_LITMUS"]


# Operations (issue 12). Restarts are counted by the restarted child itself, at its start
# (``vmpooler.supervisor``): the supervisor imported prometheus-client before it made the metrics
# directory, so samples of its own would never reach the files. The pool size, pending and clone slot
# gauges are set by the provider processes (the pool pass, the slots).
PROCESS_RESTARTS = Counter(
    "vmpooler_process_restarts_total",
    "Children the supervisor started again after they exited, by kind (api, provider)",
    ["kind"],
)
CLONE_SLOTS_IN_USE = Gauge(
    "vmpooler_clone_slots_in_use",
    "Clone slots taken, over every provider process (lane clone: of task_limit; ondemand: of "
    "ondemand_clone_limit)",
    ["lane"],
    multiprocess_mode="livemostrecent",
)
POOL_SIZE = Gauge(
    "vmpooler_pool_size",
    "Size of a pool, its override applied",
    ["poolname"],
    multiprocess_mode="livemax",
)
PENDING = Gauge(
    "vmpooler_pending",
    "Pending VMs: cloning or booting",
    ["poolname"],
    multiprocess_mode="livemax",
)
__all__ += ["CLONE_SLOTS_IN_USE", "PENDING", "POOL_SIZE", "PROCESS_RESTARTS", "ExpositionServer"]


class ExpositionServer:
    """:func:`exposition` at ``path`` and ``/healthcheck`` on a port of their own, answered by a daemon
    thread: the scrape endpoint of a process that runs no API worker (``vmpooler manager`` alone,
    ``:config: manager_metrics_port``). Any other path is a 404.

    Args:
        host: the address to listen on.
        port: the port (0: any free one, see :attr:`port`).
        path: the exposition's path, the API's ``prometheus_endpoint``.

    Raises:
        OSError: the port cannot be bound.
    """

    def __init__(self, host: str, port: int, path: str = "/prometheus") -> None:
        import http.server  # here: only a process without API workers opens one
        import socket
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = self.path.split("?", 1)[0]
                status, kind, body = 404, "application/json", b'{"ok": false}'
                if route == "/healthcheck":
                    status, body = 200, b'{"ok": true}'
                elif route == path:
                    try:
                        status, kind, body = 200, CONTENT_TYPE_LATEST, exposition()
                    except Exception:  # e.g. a file of a child that exits right now: the next scrape
                        log.exception("metrics exposition failed")
                        status, body = 500, b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics endpoint: %s", format % args)

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self._server = Server((host, port), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="metrics-http"
        )
        self._thread.start()

    def close(self) -> None:
        """Stop answering and close the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# Connection pool monitor and adaptive timeout (provider processes; reference §4.11,
# ``vmpooler.providers.monitor``), sampled every ``connection_pool_monitor_interval`` seconds.
def _pool_gauge(name: str, doc: str, template: str) -> Mirrored:
    return Mirrored(Gauge(name, doc, ["provider"], multiprocess_mode="livemax"), template)


CONNECTION_POOL_IN_USE = _pool_gauge(
    "vmpooler_connection_pool_in_use",
    "Backend connections of a provider lent to a call",
    "connection_pool.{}.in_use",
)
CONNECTION_POOL_AVAILABLE = _pool_gauge(
    "vmpooler_connection_pool_available",
    "Backend connections of a provider free",
    "connection_pool.{}.available",
)
CONNECTION_POOL_WAITING = _pool_gauge(
    "vmpooler_connection_pool_waiting",
    "Calls waiting for a backend connection of a provider",
    "connection_pool.{}.waiting",
)
CONNECTION_POOL_UTILIZATION = _pool_gauge(
    "vmpooler_connection_pool_utilization",
    "Percent of a provider's backend connections in use",
    "connection_pool.{}.utilization",
)
# One per monitor sample in that state: the original's connection_pool.<provider>.critical/.warning.
CONNECTION_POOL_UNHEALTHY = Mirrored(
    Counter(
        "vmpooler_connection_pool_unhealthy",
        "Connection pool monitor samples that found a provider's pool busy (state warning or critical)",
        ["provider", "state"],
    ),
    "connection_pool.{}.{}",
)
ADAPTIVE_TIMEOUT = _pool_gauge(
    "vmpooler_adaptive_timeout_seconds",
    "Seconds a provider call waits for a free backend connection now",
    "adaptive_timeout.current.{}",
)
ADAPTIVE_TIMEOUT_P95 = _pool_gauge(
    "vmpooler_adaptive_timeout_p95_seconds",
    "95th percentile of a provider's recent waits for a backend connection",
    "adaptive_timeout.p95.{}",
)
__all__ += [
    "ADAPTIVE_TIMEOUT",
    "ADAPTIVE_TIMEOUT_P95",
    "CONNECTION_POOL_AVAILABLE",
    "CONNECTION_POOL_IN_USE",
    "CONNECTION_POOL_UNHEALTHY",
    "CONNECTION_POOL_UTILIZATION",
    "CONNECTION_POOL_WAITING",
]


def slots_in_use(lane: str, in_use: int) -> None:
    """Set the clone slot gauge of ``lane`` (``clone`` or ``ondemand``: ``store.slots.lane_of``)."""
    CLONE_SLOTS_IN_USE.labels(lane).set(in_use)


__all__ += ["slots_in_use"]


HEALTH_STATUS = Gauge(
    "vmpooler_health_status",
    "The /status health verdict: 0 healthy, 1 degraded, 2 unhealthy (computed by /status and each scrape)",
    multiprocess_mode="mostrecent",
)
__all__ += ["HEALTH_STATUS"]
HTTP_EXCEPTIONS = Counter(
    "vmpooler_http_exceptions",
    "Requests that raised an unexpected exception (answered 500), by exception class",
    ["exception"],
)
__all__ += ["HTTP_EXCEPTIONS"]

QUEUE_WAIT = Histogram(
    "vmpooler_checkout_wait_seconds",
    "Seconds a waiting checkout waited, by outcome: served, timeout, disconnected",
    ["outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
QUEUE_DEPTH = Gauge(
    "vmpooler_queue_depth",
    "Waiting checkouts, by priority (computed by GET /queue and each scrape)",
    ["priority"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST = Gauge(
    "vmpooler_queue_oldest_wait_seconds",
    "Seconds the oldest waiting checkout has waited (computed by GET /queue and each scrape)",
    multiprocess_mode="mostrecent",
)
__all__ += ["QUEUE_DEPTH", "QUEUE_OLDEST", "QUEUE_WAIT"]
