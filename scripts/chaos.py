#!/usr/bin/env python3
"""Chaos run: the real service on a dummy provider that fails 20 % of everything, under random load.

Starts a private redis-server and ``vmpooler`` (API + manager) on free ports, with one dummy provider
instance whose every operation fails 20 % of the time (``getvm_poweroff``/``getvm_rename`` 5 %) after a
random delay, serving three pools of sizes 5, 4 and 3. Client threads then check out VMs at random (one
pool, several pools by path and by JSON body, an alias), return them, tag them, and ask for disks,
snapshots and reverts, for the given time, while a sampler reads every set of every pool atomically
five times a second. At the end the clients return what they hold and the run checks:

* every pool is back at its size (ready = size, nothing pending, running or discovered) within 30 s,
  and every returned VM is destroyed (``completed`` empty) within 30 s too, or later only while the
  service waits for a destroy retry it scheduled (the back-off doubles after each failure);
* no VM was ever in two sets; the provider's inventory file and Redis agree (no VM lost or leaked); no
  clone slot, checkout time or migration entry is left behind;
* no hostname was handed out twice; the API never answered 500 nor anything unexpected;
* the supervisor never halted, no child process died, no actor crashed, no traceback was logged.

Usage: ``python scripts/chaos.py [--minutes M] [--seed N] [--threads N] [--keep]``; it prints a summary
with the numbers and exits 1 when a check failed. ``tests/acceptance/test_chaos.py`` runs the same
:func:`run` for a bounded time against the test suite's Redis.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import http.client
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import redis
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vmpooler import keys  # noqa: E402

# A ``redis.Redis`` with ``decode_responses=True``: its replies are str, which redis-py's types miss.
Redis = Any

__all__ = [
    "POOLS",
    "Report",
    "chaos_config",
    "consistency_problems",
    "load_inventory",
    "main",
    "pool_state",
    "quiet_inventory",
    "run",
]

POOLS: dict[str, int] = {"alpha": 5, "beta": 4, "gamma": 3}
ALIAS = "linux"  # alpha and beta answer to it too
PROVIDER = "chaos"
_POOL_WEIGHTS = {"alpha": 5, "beta": 4, "gamma": 0.05}
SEED = 20261121
SETTLE_SECONDS = 30.0
# A failed destroy is retried after 1, 2, 4, … s: six failures in a row (0.2**6, a few times in a
# thousand returns) take 63 s. Settling may wait that long for retries the service has scheduled.
MAX_DESTROY_WAIT = 150.0
_RETRY_GRACE = 5.0  # seconds a scheduled retry may run late (a busy machine) before it counts as stuck

CHAOS_OPTIONS: dict[str, Any] = {
    "createvm_fail_percent": 20,
    "destroyvm_fail_percent": 20,
    "vmready_fail_percent": 20,
    "createdisk_fail_percent": 20,
    "createsnapshot_fail_percent": 20,
    "revertsnapshot_fail_percent": 20,
    "migratevm_fail_percent": 20,
    "migratevm_couldmove_percent": 50,
    "getvm_poweroff_percent": 5,
    "getvm_rename_percent": 5,
    "createvm_max_time": 0.5,
    "destroyvm_max_time": 0.3,
    "destroyvm_max_shutdown_time": 0.2,
    "createdisk_max_time": 0.3,
    "createsnapshot_max_time": 0.3,
    "revertsnapshot_max_time": 0.3,
    "migratevm_max_time": 0.2,
    "connection_pool_size": 4,
}

# A revert is asked for snapshots requested at least this long ago (by then most are taken).
_SNAPSHOT_TIME = 0.6
# The sets a VM of a pool can be in (``migrating`` is a side set of ``running``).
_SETS = ("pending", "ready", "running", "completed", "discovered")

# What the service logs when chaos strikes (or when something is wrong), for the summary.
LOG_PATTERNS: dict[str, str] = {
    "clone failures": r"clone failed: ",
    "destroy failures": r"destroy failed, retrying",
    "failed VM checks": r"(check of \w+ VM|readiness check) failed: ",
    "ready VMs found unreachable": r"moved from 'ready' to 'completed': is unreachable",
    "hostname mismatches": r"has mismatched hostname",
    "pending timeouts": r"marked as 'failed'",
    "task failures": r"(disk|snapshot|snapshot-revert) \S+ failed: ",
    "tasks done": r"(disk|snapshot|snapshot-revert) \S+ done",
    "migration failures": r"migration failed: ",
    "chaos power-offs/renames": r"chaos: \S+ is now",
    "pool check failures": r"pool check failed: ",
    "event handling failures": r"handling \w+ event failed",
    "redis operation failures": r"redis operation \S+ failed",
    "actor crashes": r"crashed",
    "tracebacks": r"^Traceback",
    "tasks run on destroyed VMs": r"(disk|snapshot|snapshot-revert) \S+ failed: no VM called",
    "child exits": r"WARNING .*vmpooler\.supervisor: \S+ \(pid \d+\) exited",
    "halts": r"halting",
}
# Log lines that must never appear: a check fails when they do.
FATAL_LOG = ("actor crashes", "tracebacks", "child exits", "halts")


# -- config ---------------------------------------------------------------------------------------


def chaos_config(redis_url: str, workdir: Path, *, seed: int = SEED, api_workers: int = 2) -> str:
    """The service config: one chaotic dummy provider (inventory file in ``workdir``), three pools."""
    options = {"provider_class": "dummy", "filename": str(inventory_path(workdir)), "seed": seed}
    options.update(CHAOS_OPTIONS)
    config: dict[str, Any] = {
        ":config": {
            "api_workers": api_workers,
            "check_loop_delay_min": 0.2,
            "check_loop_delay_max": 1,
            "vm_checktime": 0.25,  # ready VMs are checked every 15 s, so vmready failures bite
        },
        ":redis": {"url": redis_url},
        ":providers": {f":{PROVIDER}": options},
        ":pools": [
            {
                "name": name,
                "template": f"templates/{name}",
                "size": size,
                "provider": PROVIDER,
                **({"alias": [ALIAS]} if name in ("alpha", "beta") else {}),
            }
            for name, size in POOLS.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def inventory_path(workdir: Path) -> Path:
    return workdir / f"{PROVIDER}-inventory.yaml"


# -- the client -------------------------------------------------------------------------------------


class Outcomes:
    """Every response the clients saw, and every hostname handed out (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self.unexpected: list[str] = []
        self.transport_errors: list[str] = []
        self.handed_out: list[str] = []

    def record(self, op: str, status: int, expected: Iterable[int], detail: str) -> None:
        with self.lock:
            self.counts[(op, status)] += 1
            if status not in expected:
                self.unexpected.append(f"{op}: HTTP {status} {detail}")

    def count(self, op: str, status: int | None = None) -> int:
        with self.lock:
            return sum(n for (o, s), n in self.counts.items() if o == op and status in (None, s))


class _Held:
    """A VM a client thread has checked out."""

    __slots__ = ("host", "pool", "snapshots")

    def __init__(self, host: str, pool: str) -> None:
        self.host, self.pool = host, pool
        self.snapshots: list[tuple[float, str]] = []  # (requested at, name)


class ChaosClient(threading.Thread):
    """One client: random API calls on one keep-alive connection until ``stop`` is set.

    Args:
        port: the API's port on 127.0.0.1.
        rng: this client's randomness (seeded by the run).
        outcomes: where every response is recorded.
        stop: set to end the loop; the client then returns every VM it still holds.
        max_held: the most VMs it holds at once (so the pools are not simply emptied).
    """

    def __init__(
        self,
        port: int,
        rng: random.Random,
        outcomes: Outcomes,
        stop: threading.Event,
        *,
        name: str,
        max_held: int = 3,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._port = port
        self._rng = rng
        self._out = outcomes
        self._halt = stop
        self._max_held = max_held
        self._held: list[_Held] = []
        self._conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._step()
                self._halt.wait(self._rng.uniform(0.01, 0.15))
            while self._held:
                self._return(self._held[0])
        finally:
            if self._conn is not None:
                self._conn.close()

    # -- HTTP --------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request; status 0 when the connection failed (recorded; never retried: not idempotent)."""
        data = b"" if body is None else json.dumps(body).encode()
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        try:
            self._conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            self._conn = None
            with self._out.lock:
                self._out.transport_errors.append(f"{method} {path}: {exc!r}")
            return 0, None
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw[:200]

    # -- operations ----------------------------------------------------------------------------------

    def _step(self) -> None:
        ops: list[tuple[Callable[[], None], int]] = [(self._checkout, 4)]
        if self._held:
            ops += [
                (lambda: self._return(self._rng.choice(self._held)), 2),
                (self._tag, 2),
                (self._disk, 1),
                (self._snapshot, 1),
                (self._revert, 1),
                (self._look, 1),
            ]
        ops.append((self._status, 1))
        choice = self._rng.choices([op for op, _ in ops], weights=[w for _, w in ops])[0]
        choice()

    def _checkout(self) -> None:
        if len(self._held) >= self._max_held:
            self._return(self._held[0])
            return
        kind = self._rng.choice(("single", "single", "path", "body", "alias"))
        if kind == "single":
            names = self._pools(1)
            status, body = self._call("POST", f"/api/v3/vm/{names[0]}")
        elif kind == "path":
            names = self._pools(2)
            status, body = self._call("POST", "/api/v3/vm/" + "+".join(names))
        elif kind == "body":
            names = self._pools(self._rng.choice((1, 2)))
            status, body = self._call("POST", "/api/v3/vm", {name: 1 for name in names})
        else:
            names = [ALIAS]
            status, body = self._call("POST", f"/api/v3/vm/{ALIAS}")
        self._out.record(f"checkout ({kind})", status, (200, 503), f"{names} {body}")
        if status != 200 or not isinstance(body, dict):
            return
        for requested in names:
            hosts = body.get(requested, {}).get("hostname")
            for host in [hosts] if isinstance(hosts, str) else hosts or []:
                short = host.split(".", 1)[0]
                with self._out.lock:
                    self._out.handed_out.append(short)
                self._held.append(_Held(short, requested))

    def _pools(self, count: int) -> list[str]:
        """``count`` distinct pools, gamma seldom: its VMs stay ready long enough (> 60 s) for the
        hostname-mismatch check, and so for the provider's power-off and rename chaos."""
        left = dict(_POOL_WEIGHTS)
        picked = []
        for _ in range(count):
            pool = self._rng.choices(list(left), weights=list(left.values()))[0]
            picked.append(pool)
            del left[pool]
        return picked

    def _return(self, held: _Held) -> None:
        self._held.remove(held)
        status, body = self._call("DELETE", f"/api/v3/vm/{held.host}")
        self._out.record("return", status, (200,), f"{held.host} {body}")

    def _tag(self) -> None:
        held = self._rng.choice(self._held)
        tags = {"jenkins_build_url": f"https://ci.example.com/job/x/{self._rng.randint(1, 999)}/"}
        status, body = self._call("PUT", f"/api/v3/vm/{held.host}", {"tags": tags})
        self._out.record("tag", status, (200,), f"{held.host} {body}")

    def _disk(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/disk/{self._rng.randint(1, 20)}")
        self._out.record("disk", status, (202,), f"{held.host} {body}")

    def _snapshot(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/snapshot")
        self._out.record("snapshot", status, (202,), f"{held.host} {body}")
        if status == 202 and isinstance(body, dict):
            held.snapshots.append((time.monotonic(), body[held.host]["snapshot"]))

    def _revert(self) -> None:
        held = self._rng.choice(self._held)
        taken = [name for at, name in held.snapshots if time.monotonic() - at > _SNAPSHOT_TIME]
        if not taken:
            self._snapshot()
            return
        snapshot = self._rng.choice(taken)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/snapshot/{snapshot}")
        # 404 until the manager has taken the snapshot (or when taking it failed: chaos).
        self._out.record("revert", status, (202, 404), f"{held.host} {snapshot} {body}")

    def _look(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("GET", f"/api/v3/vm/{held.host}")
        self._out.record("get vm", status, (200,), f"{held.host} {body}")

    def _status(self) -> None:
        status, body = self._call("GET", "/api/v3/status")
        self._out.record("status", status, (200,), str(body)[:200])


# -- checks ---------------------------------------------------------------------------------------


def load_inventory(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Pool → VM names (duplicates kept) in the dummy providers' inventory files."""
    pools: dict[str, list[str]] = collections.defaultdict(list)
    for path in paths:
        if not path.exists():
            continue
        data = yaml.safe_load(path.read_text()) or {}
        for vm in data.get("vms", []):
            pools[vm["pool"]].append(vm["name"])
    return dict(pools)


def pool_sets(client: Redis, pool: str) -> dict[str, set[str]]:
    """The members of each state set of ``pool`` (plus ``migrating``)."""
    return {state: set(client.smembers(keys.state_set(state, pool))) for state in (*_SETS, "migrating")}


def consistency_problems(
    client: Redis, pools: Iterable[str], inventory: Mapping[str, list[str]]
) -> list[str]:
    """Where Redis and the provider's inventory disagree. Call it when the pools are quiet.

    Checked: no VM in two sets (in one pool or across pools) and no name twice in the inventory; every
    inventory VM is in exactly one of its pool's pending/ready/running/completed sets; every pending,
    ready or running VM is in the inventory; ``migrating`` only holds running VMs; no inventory VM
    belongs to a pool that is not configured.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    names = list(pools)
    for pool in names:
        sets = pool_sets(client, pool)
        for state in _SETS:
            for vm in sets[state]:
                where = f"{pool}/{state}"
                if vm in seen:
                    problems.append(f"{vm} is in two sets: {seen[vm]} and {where}")
                seen[vm] = where
        stray = sets["migrating"] - sets["running"]
        if stray:
            problems.append(f"{pool}: migrating but not running: {sorted(stray)}")
        listed = inventory.get(pool, [])
        twice = sorted(vm for vm, n in collections.Counter(listed).items() if n > 1)
        if twice:
            problems.append(f"{pool}: listed twice in the inventory: {twice}")
        tracked = sets["pending"] | sets["ready"] | sets["running"] | sets["completed"]
        leaked = sorted(set(listed) - tracked)
        if leaked:
            problems.append(f"{pool}: in the provider but in no set (leaked): {leaked}")
        lost = sorted((sets["pending"] | sets["ready"] | sets["running"]) - set(listed))
        if lost:
            problems.append(f"{pool}: in Redis but not in the provider (lost): {lost}")
    for pool, listed in inventory.items():
        if pool not in names and listed:
            problems.append(f"VMs of unconfigured pool {pool} in the inventory: {sorted(listed)}")
    return problems


def sets_overlap(client: Redis, pools: Iterable[str]) -> list[str]:
    """VMs that are in two state sets at one instant (all sets read in one MULTI)."""
    names = list(pools)
    with client.pipeline(transaction=True) as pipe:
        for pool in names:
            for state in _SETS:
                pipe.smembers(keys.state_set(state, pool))
        members = iter(pipe.execute())
    where: dict[str, list[str]] = collections.defaultdict(list)
    for pool in names:
        for state in _SETS:
            for vm in next(members):
                where[vm].append(f"{pool}/{state}")
    return [f"{vm} is in {' and '.join(places)} at once" for vm, places in where.items() if len(places) > 1]


class Sampler(threading.Thread):
    """Reads every set of every pool atomically a few times a second; keeps each overlap seen."""

    def __init__(self, client: Redis, stop: threading.Event, interval: float = 0.2) -> None:
        super().__init__(name="chaos-sampler", daemon=True)
        self._client, self._halt, self._interval = client, stop, interval
        self.samples = 0
        self.overlaps: set[str] = set()

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            self.overlaps.update(sets_overlap(self._client, POOLS))
            self.samples += 1


def leak_problems(client: Redis, pools: Iterable[str]) -> list[str]:
    """Bookkeeping left behind once nothing is running or cloning: clone slots, active and migrating."""
    problems = []
    leases = client.zrange(keys.CLONE_LEASES, 0, -1)
    if leases or int(client.get(keys.TASKS_CLONE) or 0):
        problems.append(
            f"clone slots still held: {leases}, {keys.TASKS_CLONE}={client.get(keys.TASKS_CLONE)}"
        )
    for pool in pools:
        active = client.hkeys(keys.active_hash(pool))
        if active:
            problems.append(f"{pool}: checkout times of VMs no longer running: {sorted(active)}")
        migrating = client.smembers(keys.migrating_set(pool))
        if migrating:
            problems.append(f"{pool}: still migrating: {sorted(migrating)}")
    return problems


def quiet_inventory(
    client: Redis, pools: Mapping[str, int], paths: Iterable[Path], timeout: float = 10.0
) -> dict[str, list[str]] | None:
    """The inventory files, read while every pool is settled and no set changes (None if never).

    Redis is read before and after the files: the provider writes its file before the manager records
    a change in Redis, so equal settled reads on both sides mean the files show that same moment.
    """
    paths = list(paths)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [pool_sets(client, pool) for pool in pools]
        inventory = load_inventory(paths)
        if settled(client, pools) and before == [pool_sets(client, pool) for pool in pools]:
            return inventory
        time.sleep(0.05)
    return None


def at_size(client: Redis, pools: Mapping[str, int]) -> bool:
    """Every pool back at its size: ready = size, nothing pending, running or discovered."""
    for pool, size in pools.items():
        sets = pool_sets(client, pool)
        if len(sets["ready"]) != size or any(sets[s] for s in ("pending", "running", "discovered")):
            return False
    return True


def settled(client: Redis, pools: Mapping[str, int]) -> bool:
    """Every pool at its size with nothing in flight: ready = size, no other set has members."""
    return at_size(client, pools) and not any(client.scard(keys.completed_set(pool)) for pool in pools)


def pool_state(client: Redis, pools: Iterable[str]) -> str:
    parts = []
    for pool in pools:
        sets = pool_sets(client, pool)
        parts.append(pool + " " + " ".join(f"{s}={len(sets[s])}" for s in _SETS if sets[s]))
    return "; ".join(parts)


def log_counts(text: str) -> dict[str, int]:
    return {what: len(re.findall(pattern, text, re.MULTILINE)) for what, pattern in LOG_PATTERNS.items()}


# -- the run ----------------------------------------------------------------------------------------


class Report:
    """What a run saw and what its checks found."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()
        self.problems: list[str] = []
        self.log: dict[str, int] = {}
        self.seconds = 0.0
        self.settle_seconds: float | None = None
        self.at_size_seconds: float | None = None
        self.retry_waits: set[str] = set()  # VMs settling waited for past the timeout
        self.leftover_tasks = 0
        self.samples = 0

    def summary(self) -> str:
        out = self.outcomes
        checkouts = sum(out.count(op, 200) for op in {o for o, _ in out.counts if o.startswith("checkout")})
        empty = sum(out.count(op, 503) for op in {o for o, _ in out.counts if o.startswith("checkout")})
        lines = [
            f"chaos run: {self.seconds:.0f} s of load, pools {POOLS}",
            f"  requests: {sum(out.counts.values())}, checkouts ok {checkouts} "
            f"({len(out.handed_out)} VMs, {len(set(out.handed_out))} distinct), pool empty (503) {empty}, "
            f"returns {out.count('return', 200)}",
            "  by call: "
            + ", ".join(f"{op} {status}: {n}" for (op, status), n in sorted(out.counts.items())),
            f"  transport errors: {len(out.transport_errors)}, unexpected answers: {len(out.unexpected)}, "
            f"atomic samples of every set: {self.samples}",
            f"  back at size in {_seconds(self.at_size_seconds)}, settled (all destroyed) in "
            f"{_seconds(self.settle_seconds)}"
            + (
                f", waiting for the destroy retries of {sorted(self.retry_waits)}" if self.retry_waits else ""
            ),
            f"  task requests left unclaimed in Redis: {self.leftover_tasks}",
            "  service log: " + ", ".join(f"{what} {n}" for what, n in self.log.items()),
        ]
        lines.append(f"  problems: {len(self.problems)}")
        lines += [f"    - {p}" for p in self.problems[:50]]
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "NEVER (timed out)" if value is None else f"{value:.1f} s"


def run(
    port: int,
    client: Redis,
    workdir: Path,
    log_path: Path,
    service_alive: Callable[[], bool],
    *,
    seconds: float,
    seed: int = SEED,
    threads: int = 4,
    settle_timeout: float = SETTLE_SECONDS,
) -> Report:
    """Load a running service for ``seconds``, let it settle, and check it (see the module docstring).

    Args:
        port: the API port on 127.0.0.1.
        client: a ``decode_responses`` Redis client on the service's DB.
        workdir: where :func:`chaos_config` put the inventory file.
        log_path: the service's log (stdout and stderr).
        service_alive: True while the supervisor process runs.
    """
    report = Report()
    rng = random.Random(seed)
    _wait(lambda: settled(client, POOLS), 30, "the pools to fill before the run", report, client)
    stop, quiet = threading.Event(), threading.Event()
    sampler = Sampler(client, quiet)
    sampler.start()
    clients = [
        ChaosClient(port, random.Random(rng.random()), report.outcomes, stop, name=f"chaos-client-{i}")
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
    _settle(report, client, log_path, settle_timeout)
    quiet.set()
    sampler.join(10)
    report.samples = sampler.samples
    report.problems += sorted(sampler.overlaps)
    _check(report, client, workdir, log_path, service_alive)
    return report


def _wait(predicate: Callable[[], bool], timeout: float, what: str, report: Report, client: Redis) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            report.problems.append(
                f"timed out after {timeout:.0f} s waiting for {what}: {pool_state(client, POOLS)}"
            )
            return False
        time.sleep(0.1)
    return True


def _settle(report: Report, client: Redis, log_path: Path, timeout: float) -> None:
    """Wait for the pools to be back at size, then for every returned or failed VM to be destroyed.

    Both within ``timeout``, except that a VM still in ``completed`` may take longer while the service
    waits for a destroy retry it scheduled (its back-off doubles after each failure), up to
    ``MAX_DESTROY_WAIT``; a completed VM with no retry due is stuck, and that is a problem.
    """
    start = time.monotonic()
    if _wait(lambda: at_size(client, POOLS), timeout, "the pools to be back at size", report, client):
        report.at_size_seconds = time.monotonic() - start
    deadline, hard = start + timeout, start + MAX_DESTROY_WAIT
    while not settled(client, POOLS):
        now = time.monotonic()
        if now > deadline:
            waiting = _awaiting_destroy_retry(client, log_path)
            if waiting is None or now > hard:
                state = pool_state(client, POOLS)
                report.problems.append(f"not settled {now - start:.0f} s after the load stopped: {state}")
                return
            report.retry_waits |= waiting
        time.sleep(0.1)
    report.settle_seconds = time.monotonic() - start


_RETRY = re.compile(r"^(\S+ \S+) .*\[pool=\S+ vm=(\S+)\] destroy failed, retrying in (\d+) seconds", re.M)


def _awaiting_destroy_retry(client: Redis, log_path: Path) -> set[str] | None:
    """The completed VMs, if the service scheduled a destroy retry of each one that is not yet overdue
    (read from its log); None when anything else keeps the pools unsettled, or a completed VM has none."""
    if not at_size(client, POOLS):
        return None
    due: dict[str, float] = {}
    for stamp, vm, seconds in _RETRY.findall(log_path.read_text(errors="replace")):
        due[vm] = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() + int(seconds)
    completed = set().union(*(client.smembers(keys.completed_set(pool)) for pool in POOLS))
    if all(due.get(vm, 0.0) > time.time() - _RETRY_GRACE for vm in completed):
        return completed
    return None


def _check(report: Report, client: Redis, workdir: Path, log_path: Path, alive: Callable[[], bool]) -> None:
    out = report.outcomes
    inventory = quiet_inventory(client, POOLS, [inventory_path(workdir)])
    if inventory is None:
        report.problems.append(
            f"never quiet long enough to compare with the provider: {pool_state(client, POOLS)}"
        )
    else:
        report.problems += consistency_problems(client, POOLS, inventory)
    twice = sorted(vm for vm, n in collections.Counter(out.handed_out).items() if n > 1)
    if twice:
        report.problems.append(f"hostnames handed out more than once: {twice}")
    if not out.handed_out:
        report.problems.append("no VM was ever checked out")
    report.problems += [f"unexpected answer: {u}" for u in out.unexpected[:20]]
    if len(out.unexpected) > 20:
        report.problems.append(f"... and {len(out.unexpected) - 20} more unexpected answers")
    report.problems += [f"transport error: {e}" for e in out.transport_errors[:20]]
    text = log_path.read_text(errors="replace")
    report.log = log_counts(text)
    for what in FATAL_LOG:
        if report.log[what]:
            report.problems.append(f"service log shows {report.log[what]} {what}")
    if not alive():
        report.problems.append("the supervisor is no longer running")
    report.problems += leak_problems(client, POOLS)
    report.leftover_tasks = sum(
        int(client.scard(key)) for key in (keys.TASKS_DISK, keys.TASKS_SNAPSHOT, keys.TASKS_SNAPSHOT_REVERT)
    )


# -- by hand ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, redis.ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthcheck")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to load the service")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the provider and the clients")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (log, inventory)")
    args = parser.parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="vmpooler-chaos-"))
    redis_port, api_port = _free_port(), _free_port()
    redis_proc = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    service: subprocess.Popen[bytes] | None = None
    client = redis.Redis(port=redis_port, decode_responses=True)
    try:
        _wait_up(client.ping, 10, "redis-server")
        config = workdir / "vmpooler.yaml"
        config.write_text(chaos_config(f"redis://127.0.0.1:{redis_port}/0", workdir, seed=args.seed))
        log_path = workdir / "vmpooler.log"
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vmpooler",
                "--config",
                str(config),
                "--bind",
                "127.0.0.1",
                "--port",
                str(api_port),
            ],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        _wait_up(lambda: _healthy(api_port), 20, "vmpooler")
        proc = service
        report = run(
            api_port,
            client,
            workdir,
            log_path,
            lambda: proc.poll() is None,
            seconds=args.minutes * 60,
            seed=args.seed,
            threads=args.threads,
        )
        print(report.summary())
        print(f"work directory: {workdir}" + ("" if args.keep else " (removed)"))
        return 1 if report.problems else 0
    finally:
        client.close()
        for proc_ in (service, redis_proc):
            if proc_ is not None and proc_.poll() is None:
                proc_.terminate()
                try:
                    proc_.wait(20)
                except subprocess.TimeoutExpired:
                    proc_.kill()
                    proc_.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
