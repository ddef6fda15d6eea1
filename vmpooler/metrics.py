"""Every Prometheus metric, declared once (the original's Prometheus names, prefix ``vmpooler_``).

API workers and provider processes are separate processes; when ``PROMETHEUS_MULTIPROC_DIR`` is set
(the supervisor sets it), prometheus-client writes every process's samples there and the API's
``/prometheus`` endpoint serves the sum of all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "HTTP_REQUESTS_VM",
    "READY",
    "RUNNING",
    "TIME_TO_READY",
    "exposition",
    "process_exited",
]

CHECKOUT_SUCCESS = Counter("vmpooler_checkout_success", "VMs handed out", ["poolname"])
CHECKOUT_EMPTY = Counter("vmpooler_checkout_empty", "Checkouts refused: no ready VM", ["poolname"])
CHECKOUT_INVALID = Counter("vmpooler_checkout_invalid", "Checkouts of unknown pools", ["poolname"])
DELETE_SUCCESS = Counter("vmpooler_delete_success", "VMs returned")
DELETE_FAILED = Counter("vmpooler_delete_failed", "Returns of VMs that were not running")
HTTP_REQUESTS_VM = Counter(
    "vmpooler_http_requests_vm_total", "VM endpoint calls", ["method", "subpath", "operation"]
)
HTTP_REQUESTS = Counter("vmpooler_http_requests", "HTTP requests", ["code", "method", "path"])
HTTP_DURATION = Histogram(
    "vmpooler_http_request_duration_seconds", "HTTP request latency", ["method", "path"]
)

# Manager side.
READY = Gauge("vmpooler_ready", "Ready VMs", ["poolname"], multiprocess_mode="livemax")
RUNNING = Gauge("vmpooler_running", "Running VMs", ["poolname"], multiprocess_mode="livemax")
CLONE = Histogram(
    "vmpooler_clone",
    "Seconds a clone took",
    ["poolname"],
    buckets=(10, 20, 30, 40, 50, 60, 120, 180, 240, 300, 600),
)
DESTROY = Histogram(
    "vmpooler_destroy",
    "Seconds a destroy took",
    ["poolname"],
    buckets=(10, 20, 30, 40, 50, 60, 120, 180, 240, 300, 600),
)
TIME_TO_READY = Histogram(
    "vmpooler_time_to_ready_state",
    "Seconds from clone start to ready",
    ["poolname"],
    buckets=(30, 60, 120, 180, 240, 300, 500, 800, 1200, 1600),
)
ERRORS = Counter(
    "vmpooler_errors",
    "Manager errors by kind (markedasfailed, duplicatehostname, clone_failed, destroy_failed, ...)",
    ["kind", "poolname"],
)
CHECK_POOL = Gauge(
    "vmpooler_check_pool_seconds",
    "Duration of the last pool check",
    ["poolname"],
    multiprocess_mode="livemax",
)


def exposition() -> bytes:
    """The text exposition of every metric of every process (multiprocess mode when configured)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges from the multiprocess directory (its counters and histograms
    stay: they count what happened), so that a restarted child does not show next to its ghost."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


# Reliability (provider processes; reference §4.11).
BREAKER_STATE = Gauge(
    "vmpooler_circuit_breaker_state",
    "Circuit breaker of a provider: 0 closed, 0.5 half-open, 1 open",
    ["provider"],
    multiprocess_mode="livemax",
)
BREAKER_OPENED = Counter("vmpooler_circuit_breaker_opened", "Times a provider's breaker opened", ["provider"])
DLQ_ENTRIES = Gauge(
    "vmpooler_dlq_entries",
    "Failed VMs in a dead-letter queue (clone, pending, ready)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
PENDING_OLDEST = Gauge(
    "vmpooler_pending_oldest_seconds",
    "Age of the oldest pending VM",
    ["poolname"],
    multiprocess_mode="livemax",
)
PENDING_STUCK = Gauge(
    "vmpooler_pending_stuck",
    "Pending VMs older than health_thresholds.stuck_vm_age_threshold",
    ["poolname"],
    multiprocess_mode="livemax",
)
__all__ += ["BREAKER_OPENED", "BREAKER_STATE", "DLQ_ENTRIES", "PENDING_OLDEST", "PENDING_STUCK"]


# Usage statistics (API, ``:config: usage_stats``; ``vmpooler.http.usage``). Never a VM name or token.
USAGE = Counter(
    "vmpooler_usage_total", "VMs checked out and returned, by user", ["user", "operation", "pool"]
)
USAGE_LITMUS = Counter(
    "vmpooler_usage_litmus_total",
    "Usage by Litmus jobs (jenkins_build_url tag)",
    ["user", "operation", "pool"],
)
USAGE_JENKINS = Counter(
    "vmpooler_usage_jenkins_total",
    "Usage by Jenkins instance and value stream (jenkins_build_url tag)",
    ["instance", "value_stream", "operation", "pool"],
)
USAGE_BRANCH_PROJECT = Counter(
    "vmpooler_usage_branch_project_total",
    "Usage by Jenkins job branch and project (jenkins_build_url tag)",
    ["branch", "project", "operation", "pool"],
)
USAGE_JOB_COMPONENT = Counter(
    "vmpooler_usage_job_component_total",
    "Usage by Jenkins job name and component tested (jenkins_build_url tag)",
    ["job_name", "component", "operation", "pool"],
)
__all__ += ["USAGE", "USAGE_BRANCH_PROJECT", "USAGE_JENKINS", "USAGE_JOB_COMPONENT", "USAGE_LITMUS"]
