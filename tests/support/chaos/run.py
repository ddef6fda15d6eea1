"""One chaos run against a running service: load it, let it settle, check it, and report."""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable

from tests.support.chaos.clients import ChaosClient, Outcomes
from tests.support.chaos.inventory import consistency_problems, quiet_inventory
from tests.support.chaos.metrics import (
    CHECKOUT_SUCCESS,
    FATAL_ERRORS,
    DestroyRetries,
    Metrics,
    MetricsError,
    scrape,
)
from tests.support.chaos.plan import PROVIDER, ChaosPlan
from tests.support.chaos.sets import (
    Redis,
    Sampler,
    at_size,
    leak_problems,
    leftover_tasks,
    pool_state,
    settled,
)
from tests.support.service import Service
from tests.support.waiting import poll
from vmpooler import keys

__all__ = ["MAX_DESTROY_WAIT", "Report", "run"]

# A failed destroy is retried after a back-off; a VM may fail several destroys in a row (0.2**6: a few
# times in a thousand returns). Settling may wait this long for retries the service keeps making.
MAX_DESTROY_WAIT = 150.0
_RETRY_GRACE = 5.0  # seconds a due retry may run late (a busy machine) before its VM counts as stuck

# The error counters the summary shows, by the ``kind`` label(s) they add up.
ERROR_GROUPS: dict[str, tuple[str, ...]] = {
    "clone failures": ("clone_failed",),
    "destroy failures": ("destroy_failed",),
    "VMs marked as failed": ("markedasfailed",),
    "duplicate hostnames": ("duplicatehostname",),
    "task failures": ("disk_failed", "snapshot_failed", "snapshot-revert_failed"),
    "pool check failures": ("pool_check_failed",),
    "actor crashes": ("actor_crashed", "pool_actor_crashed"),
}


class Report:
    """What a run saw and what its checks found.

    Attributes:
        outcomes: every answer the clients got.
        problems: every failed check; empty when the run passed.
        errors: the service's ``vmpooler_errors_total`` by kind at the end (kinds never counted absent).
        plan: the service's pools and settings.
    """

    def __init__(self, plan: ChaosPlan) -> None:
        self.plan = plan
        self.outcomes = Outcomes()
        self.problems: list[str] = []
        self.errors: dict[str, float] = {}
        self.checkouts_counted: float | None = None  # the service's vmpooler_checkout_success
        self.seconds = 0.0
        self.settle_seconds: float | None = None
        self.at_size_seconds: float | None = None
        self.retry_waits: set[str] = set()  # pools whose completed VMs settling waited for past the timeout
        self.leftover_tasks = 0
        self.samples = 0
        self.children: dict[int, str] = {}  # the supervisor's children when the load started

    def error_count(self, *kinds: str) -> int:
        """The service's error counters of ``kinds`` added up."""
        return int(sum(self.errors.get(kind, 0.0) for kind in kinds))

    def summary(self) -> str:
        out = self.outcomes
        checkout_ops = {o for o, _ in out.counts if o.startswith("checkout")}
        checkouts = sum(out.count(op, 200) for op in checkout_ops)
        empty = sum(out.count(op, 503) for op in checkout_ops)
        pools = self.plan.pools
        shown = dict(pools) if len(pools) <= 5 else f"{len(pools)} pools, {sum(pools.values())} VMs"
        errors = ", ".join(f"{what} {self.error_count(*kinds)}" for what, kinds in ERROR_GROUPS.items())
        children = ", ".join(sorted(title[:40] for title in self.children.values()))
        others = sorted(set(self.errors) - {k for kinds in ERROR_GROUPS.values() for k in kinds})
        lines = [
            f"chaos run: {self.seconds:.0f} s of load, pools {shown}",
            f"  requests: {sum(out.counts.values())}, checkouts ok {checkouts} "
            f"({len(out.handed_out)} VMs, {len(set(out.handed_out))} distinct; the service counted "
            f"{_count(self.checkouts_counted)}), pool empty (503) {empty}, "
            f"returns {out.count('return', 200)}",
            "  by call: "
            + ", ".join(f"{op} {status}: {n}" for (op, status), n in sorted(out.counts.items())),
            f"  transport errors: {len(out.transport_errors)}, unexpected answers: {len(out.unexpected)}, "
            f"atomic samples of every set: {self.samples}",
            f"  back at size in {_seconds(self.at_size_seconds)}, settled (all destroyed) in "
            f"{_seconds(self.settle_seconds)}"
            + (
                f", waiting for the destroy retries in {sorted(self.retry_waits)}" if self.retry_waits else ""
            ),
            f"  task requests left unclaimed in Redis: {self.leftover_tasks}",
            "  service errors: " + errors + "".join(f", {k} {self.error_count(k)}" for k in others),
            f"  child processes: {len(self.children)} ({children})",
            f"  problems: {len(self.problems)}",
        ]
        lines += [f"    - {p}" for p in self.problems[:50]]
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "NEVER (timed out)" if value is None else f"{value:.1f} s"


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def run(
    service: Service,
    client: Redis,
    plan: ChaosPlan,
    *,
    seconds: float,
    threads: int = 4,
    settle_timeout: float | None = None,
) -> Report:
    """Load a running service for ``seconds``, let it settle, and check it (see ``tests.support.chaos``).

    Args:
        service: the service, started on ``plan.config_yaml(...)``.
        client: a ``decode_responses`` Redis client on the service's DB.
        plan: what the service serves; its seed also seeds the clients.
        seconds: how long the clients load the service.
        threads: client threads.
        settle_timeout: seconds to be back at size and settled after the load (``plan.settle_timeout``).
    """
    report = Report(plan)
    pools = plan.pools
    rng = random.Random(plan.seed)
    children = poll(lambda: _booted_children(service, plan), plan.fill_timeout, interval=0.1)
    if children is None:
        report.problems.append(
            f"the service's children never all booted: {sorted(service.children().values())}"
        )
    report.children = children or {}
    fill = plan.fill_timeout
    _wait(lambda: settled(client, pools), fill, "the pools to fill before the run", report, plan, client)
    stop, quiet = threading.Event(), threading.Event()
    sampler = Sampler(client, pools, quiet)
    sampler.start()
    clients = [
        ChaosClient(
            service.port, plan.layout, random.Random(rng.random()), report.outcomes, stop, name=f"chaos-{i}"
        )
        for i in range(threads)
    ]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in clients:
        thread.join(60)
        if thread.is_alive():
            report.problems.append(f"{thread.name} did not finish returning its VMs")
    report.seconds = time.monotonic() - started
    _settle(report, service, client, settle_timeout or plan.settle_timeout)
    quiet.set()
    sampler.join(10)
    report.samples = sampler.samples
    report.problems += sorted(sampler.overlaps)
    _check(report, service, client)
    return report


def _booted_children(service: Service, plan: ChaosPlan) -> dict[int, str] | None:
    """The supervisor's children once every one has booted and named itself, else None."""
    children = service.children()
    titles = set(children.values())
    wanted = {f"vmpooler: api-{i}" for i in range(1, plan.api_workers + 1)}
    wanted.add(f"vmpooler: provider {PROVIDER}")
    return children if wanted <= titles else None


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, report: Report, plan: ChaosPlan, client: Redis
) -> bool:
    """Wait for ``predicate``; on a timeout, record a problem with the pools' state and return False."""
    if poll(predicate, timeout, interval=0.1):
        return True
    state = pool_state(client, plan.pools)
    report.problems.append(f"timed out after {timeout:.0f} s waiting for {what}: {state}")
    return False


def _settle(report: Report, service: Service, client: Redis, timeout: float) -> None:
    """Wait for the pools to be back at size, then for every returned or failed VM to be destroyed.

    Both within ``timeout``, except that completed VMs may take longer, up to ``MAX_DESTROY_WAIT``, while
    the pools are otherwise at size and the service's ``destroy_failed`` counter explains them: it keeps
    rising in each pool that still has completed VMs, as the retries of a failing destroy fail again. A
    completed VM that nothing retries is stuck, and that is a problem.
    """
    plan = report.plan
    pools = plan.pools
    start = time.monotonic()
    retries = DestroyRetries(lambda: scrape(service.port), plan.check_loop_delay_max + _RETRY_GRACE)

    def back_at_size() -> bool:
        retries.update()  # the counters are watched from the start, so a rise is timed when it happens
        return at_size(client, pools)

    if _wait(back_at_size, timeout, "the pools to be back at size", report, plan, client):
        report.at_size_seconds = time.monotonic() - start
    deadline, hard = start + timeout, start + MAX_DESTROY_WAIT
    while not settled(client, pools):
        retries.update()
        now = time.monotonic()
        if now > deadline:
            waiting = [pool for pool in pools if client.scard(keys.completed_set(pool))]
            if now > hard or not at_size(client, pools) or not retries.explains(waiting):
                state = pool_state(client, pools)
                why = f" (metrics: {retries.error})" if retries.error else ""
                report.problems.append(
                    f"not settled {now - start:.0f} s after the load stopped: {state}{why}"
                )
                return
            report.retry_waits.update(waiting)
        time.sleep(0.1)
    report.settle_seconds = time.monotonic() - start


def _check(report: Report, service: Service, client: Redis) -> None:
    """Every check made once the run settled (see ``tests.support.chaos``)."""
    plan, out = report.plan, report.outcomes
    inventory = quiet_inventory(client, plan.pools, [plan.provider_options()], plan.quiet_timeout)
    if inventory is None:
        report.problems.append(
            f"never quiet long enough to compare with the provider: {pool_state(client, plan.pools)}"
        )
    else:
        report.problems += consistency_problems(client, plan.pools, inventory)
    twice = sorted(vm for vm, n in collections.Counter(out.handed_out).items() if n > 1)
    if twice:
        report.problems.append(f"hostnames handed out more than once: {twice}")
    if not out.handed_out:
        report.problems.append("no VM was ever checked out")
    report.problems += [f"unexpected answer: {u}" for u in out.unexpected[:20]]
    if len(out.unexpected) > 20:
        report.problems.append(f"... and {len(out.unexpected) - 20} more unexpected answers")
    report.problems += [f"transport error: {e}" for e in out.transport_errors[:20]]
    _check_metrics(report, service)
    _check_processes(report, service)
    report.problems += leak_problems(client, plan.pools)
    report.leftover_tasks = leftover_tasks(client)


def _check_metrics(report: Report, service: Service) -> None:
    """No fatal error counted (an absent kind counts 0), and the metrics saw the clients' checkouts."""
    try:
        metrics: Metrics = scrape(service.port)
    except MetricsError as exc:
        report.problems.append(f"cannot read the service's metrics, so nor its crash counters: {exc}")
        return
    report.errors = metrics.error_kinds()
    for kind in FATAL_ERRORS:
        if report.error_count(kind):
            report.problems.append(f"the service counted {report.error_count(kind)} {kind} errors")
    report.checkouts_counted = metrics.total(CHECKOUT_SUCCESS)
    handed_out = len(report.outcomes.handed_out)
    if report.checkouts_counted < handed_out:
        report.problems.append(
            f"the service's metrics count {report.checkouts_counted:.0f} checkouts, the clients got "
            f"{handed_out} VMs: the metrics miss processes, so their crash counters cannot be trusted"
        )


def _check_processes(report: Report, service: Service) -> None:
    """The supervisor runs, and its children are the ones it had when the load started."""
    if not service.alive():
        report.problems.append("the supervisor is no longer running")
    now = service.children()
    for pid, title in sorted(report.children.items()):
        if pid not in now:
            report.problems.append(f"child process {title!r} (pid {pid}) died")
    for pid, title in sorted(now.items()):
        if pid not in report.children:
            report.problems.append(f"new child process {title!r} (pid {pid}): one was restarted")
