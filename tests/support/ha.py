"""High-availability scenarios against real processes, shared by the ``scripts/ha_*.py`` scripts (which
print the figures) and the ``tests/acceptance/test_ha_*.py`` tests (which assert them).

``failover_under_load``: two API supervisors and two managers (the dummy provider with a shared file
inventory) on a Sentinel deployment of three redis-servers and three sentinels; checkout → return
clients spread over the two APIs run while the primary is killed with SIGKILL. It measures how long the
sentinels took to promote a replica, how long after that the first checkout succeeded again, and counts
every HTTP status; then, with the load stopped and the pools settled, whether any VM was handed out twice
and whether the provider's inventory and the new primary's sets agree (no VM leaked or lost).

``managers_share_pools``, ``frozen_manager``: several managers on one Redis (leases, fencing).
``rolling_restart``: SIGHUP under load.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import redis as redis_lib

from tests.support.chaos.inventory import consistency_problems, quiet_inventory
from tests.support.chaos.sets import at_size, pool_sets
from tests.support.sentinel import SentinelCluster
from tests.support.service import start_service
from tests.support.waiting import poll
from vmpooler.ownership import owner_of

__all__ = [
    "FailoverReport",
    "FrozenReport",
    "ManagersReport",
    "RestartReport",
    "failover_under_load",
    "frozen_manager",
    "managers_share_pools",
    "rolling_restart",
    "settled_problems",
    "write_config",
]


def write_config(
    path: Path,
    *,
    redis: str,
    inventory: Path,
    names: list[str],
    size: int,
    clone_time: float = 0.05,
    **settings: Any,
) -> Path:
    """A service config at ``path``: ``:config:`` ``settings`` (task_limit 20 unless given), the
    ``:redis:`` lines ``redis``, the dummy provider on the shared file ``inventory``, pools ``names`` of
    ``size``."""
    settings.setdefault("task_limit", 20)
    lines = "".join(f"  {key}: {value}\n" for key, value in settings.items())
    pools = "".join(f"  - {{name: {n}, template: t/{n}, size: {size}, provider: dummy}}\n" for n in names)
    path.write_text(
        f":config:\n{lines}:redis:\n{redis}:providers:\n  :dummy:\n    filename: '{inventory}'\n"
        f"    createvm_max_time: {clone_time}\n:pools:\n{pools}"
    )
    return path


def _url(redis_url: str) -> str:
    return f"  url: '{redis_url}'\n"


def settled_problems(client: Any, sizes: dict[str, int], inventory: Path, timeout: float = 60) -> list[str]:
    """Where the provider's inventory and Redis disagree once the pools are settled; [] as soon as they
    agree. A VM a stopped process left in the inventory is found by a pass of its pool's manager a few
    seconds later (``discovered``, then destroyed), so disagreement is read again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        quiet = quiet_inventory(client, sizes, [inventory], timeout=max(1.0, deadline - time.monotonic()))
        if quiet is None:
            found = {n: {k: len(v) for k, v in pool_sets(client, n).items()} for n in sizes}
            return [f"the pools never settled: {found}"]
        problems = consistency_problems(client, list(sizes), quiet)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.5)


@attrs.define
class FailoverReport:
    """What one run saw. Times in seconds."""

    failover_seconds: float  # kill → the sentinels' majority names a new primary that answers as one
    recovery_seconds: float  # new primary named → the first checkout answered 200 after it
    statuses: dict[int, int]  # HTTP status → count, over the whole run
    checkouts: int  # checkouts answered 200
    handed_twice: list[str]  # VMs that two checkouts were given
    problems: list[str]  # where the inventory and Redis disagree once settled (leaked, lost, ...)

    def lines(self) -> list[str]:
        return [
            f"failover (kill → new primary): {self.failover_seconds:.2f} s",
            f"recovery (new primary → first checkout): {self.recovery_seconds:.2f} s",
            f"checkouts answered 200: {self.checkouts}",
            "HTTP statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())),
            f"VMs handed out twice: {len(self.handed_twice)} {self.handed_twice[:5]}",
            f"inventory vs Redis problems: {len(self.problems)} {self.problems[:5]}",
        ]


class _Load:
    """Client threads doing checkout → return cycles on keep-alive connections."""

    def __init__(self, ports: list[int], pools: list[str], threads: int) -> None:
        self._ports = ports
        self._pools = pools
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.handed: collections.Counter[str] = collections.Counter()
        self.successes: list[float] = []  # monotonic times of checkouts answered 200
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _call(self, conn: http.client.HTTPConnection, method: str, path: str) -> tuple[int, Any]:
        conn.request(method, path, headers={"Content-Length": "0"})
        resp = conn.getresponse()
        body = resp.read()
        with self._lock:
            self.statuses[resp.status] += 1
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, None

    def _give_back(self, conn: http.client.HTTPConnection, vm: str) -> None:
        """DELETE until it is done (200) or the VM is gone (404), as a client that means it would: a
        503 while there is no primary is retried, not taken as returned."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, _ = self._call(conn, "DELETE", f"/api/v3/vm/{vm}")
            if status in (200, 404):
                return
            time.sleep(0.05)

    def _run(self, index: int) -> None:
        pool = self._pools[index % len(self._pools)]
        port = self._ports[index % len(self._ports)]  # the clients spread over the API nodes
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not self._stop.is_set():
            try:
                status, body = self._call(conn, "POST", f"/api/v3/vm/{pool}")
                if status != 200:
                    time.sleep(0.05)
                    continue
                vm = body[pool]["hostname"].split(".")[0]
                with self._lock:
                    self.handed[vm] += 1
                    self.successes.append(time.monotonic())
                time.sleep(0.02)  # hold it a moment
                self._give_back(conn, vm)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.05)


def failover_under_load(
    *, before: float = 3.0, after: float = 5.0, threads: int = 4, pools: int = 2, size: int = 8
) -> FailoverReport:
    """Run the scenario: ``before`` seconds of load, SIGKILL the primary, ``after`` seconds of load past
    the recovery, then the checks."""
    names = [f"ha{i}" for i in range(pools)]
    with tempfile.TemporaryDirectory(prefix="vmpooler-ha-") as tmp, SentinelCluster() as cluster:
        workdir = Path(tmp)
        services = []
        for index, component in enumerate(("api", "api", "manager", "manager")):
            sentinels = ", ".join(f"'{s}'" for s in cluster.sentinel_addresses)
            config = write_config(
                workdir / f"{component}-{index}.yaml",
                redis=f"  sentinels: [{sentinels}]\n  master_name: {cluster.master_name}\n  api_timeout: 1\n",
                inventory=workdir / "dummy.yaml",
                names=names,
                size=size,
                clone_time=0.1,
                api_workers=2,
                task_limit=10,
                manager_id=f"m-{index}",
                manager_lease_seconds=5,
            )
            services.append(start_service(config, workdir / f"{component}-{index}.log", component))
        try:
            primary = cluster.server_ports[0]
            with cluster.client(primary) as redis_client:
                ready = poll(
                    lambda: all(redis_client.scard(f"vmpooler__ready__{n}") >= size for n in names), 60
                )
            if not ready:
                raise RuntimeError("the pools did not fill")
            load = _Load([service.port for service in services[:2]], names, threads)
            load.start()
            time.sleep(before)
            killed_at = time.monotonic()
            cluster.kill(primary)
            new_primary, failover = cluster.wait_failover(primary, timeout=60)
            promoted_at = killed_at + failover
            recovered = poll(lambda: any(t > promoted_at for t in list(load.successes)), 60, interval=0.02)
            first = min((t for t in load.successes if t > promoted_at), default=float("nan"))
            time.sleep(after if recovered else 0)
            load.stop()
            with cluster.client(new_primary) as redis_client:
                problems = settled_problems(redis_client, {n: size for n in names}, workdir / "dummy.yaml")
        finally:
            for service in services:
                service.stop()
    return FailoverReport(
        failover_seconds=failover,
        recovery_seconds=first - promoted_at,
        statuses=dict(load.statuses),
        checkouts=sum(load.handed.values()),
        handed_twice=sorted(vm for vm, n in load.handed.items() if n > 1),
        problems=problems,
    )


@attrs.define
class ManagersReport:
    """What the several-managers scenario saw. Times in seconds."""

    pools: int
    split: dict[str, int]  # manager -> pools it held with three managers
    adoption_seconds: float  # SIGKILL of one manager -> every one of its pools held by another
    lease_seconds: float
    refilled_seconds: float  # SIGKILL -> every pool back at its size
    moved_to_fourth: int  # pools that changed hands when a fourth manager joined
    moved_elsewhere: int  # ... of those, pools that went to a manager other than the new one
    problems: list[str]  # inventory vs Redis, once settled

    def lines(self) -> list[str]:
        return [
            f"{self.pools} pools over 3 managers: {self.split}",
            f"one manager SIGKILLed: its pools adopted in {self.adoption_seconds:.2f} s "
            f"(lease {self.lease_seconds:g} s); every pool full again after {self.refilled_seconds:.2f} s",
            f"a fourth manager joined: {self.moved_to_fourth} of {self.pools} pools moved to it "
            f"({self.moved_to_fourth / self.pools:.0%}), {self.moved_elsewhere} elsewhere",
            f"inventory vs Redis problems: {len(self.problems)} {self.problems[:5]}",
        ]


def _owners(client: Any, names: list[str]) -> dict[str, str | None]:
    """Pool -> the manager whose lease on it is live now."""
    now_ms = int(float(client.time()[0]) * 1000)
    owners: dict[str, str | None] = {}
    for name in names:
        lease = client.hgetall(f"vmpooler__lease__{name}")
        live = lease and int(lease.get("expires", 0)) > now_ms
        owners[name] = lease["owner"] if live else None
    return owners


def managers_share_pools(redis_url: str, *, pools: int = 24, lease: float = 3.0) -> ManagersReport:
    """Three ``vmpooler manager`` processes (ids m-0..m-2) on one Redis and one shared dummy inventory:
    how they split the pools, how fast the others adopt a SIGKILLed one's pools, and how many pools a
    fourth manager takes."""
    names = [f"mp{i:02d}" for i in range(pools)]
    sizes = {name: 1 for name in names}
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    services = []
    with tempfile.TemporaryDirectory(prefix="vmpooler-managers-") as tmp:
        workdir = Path(tmp)
        inventory = workdir / "dummy.yaml"

        def start(index: int) -> Any:
            config = write_config(
                workdir / f"m-{index}.yaml",
                redis=_url(redis_url),
                inventory=inventory,
                names=names,
                size=1,
                manager_id=f"m-{index}",
                manager_lease_seconds=lease,
            )
            service = start_service(config, workdir / f"m-{index}.log", "manager", new_session=True)
            services.append(service)
            return service

        try:
            first = [start(i) for i in range(3)]
            spread = poll(
                lambda: (
                    (o := _owners(client, names)) and None not in o.values() and len(set(o.values())) == 3
                ),
                60,
            )
            if not spread:
                raise RuntimeError(f"the three managers did not share the pools: {_owners(client, names)}")
            owners = _owners(client, names)
            split = {m: sum(1 for o in owners.values() if o == m) for m in ("m-0", "m-1", "m-2")}
            if not poll(lambda: at_size(client, sizes), 60):
                raise RuntimeError("the pools did not fill")
            victim = [n for n, o in owners.items() if o == "m-1"]
            killed_at = time.monotonic()
            os.killpg(first[1].proc.pid, signal.SIGKILL)
            first[1].proc.wait()
            adopted = poll(
                lambda: all(o not in (None, "m-1") for o in _owners(client, victim).values()),
                lease * 10,
                interval=0.05,
            )
            adoption = time.monotonic() - killed_at if adopted else float("inf")
            full = poll(lambda: at_size(client, sizes), 60, interval=0.05)
            refilled = time.monotonic() - killed_at if full else float("inf")
            before = _owners(client, names)
            start(3)
            poll(lambda: "m-3" in _owners(client, names).values(), lease * 10, interval=0.05)
            time.sleep(lease)  # every manager has beaten at least twice since: the handover is done
            after = _owners(client, names)
            moved = [n for n in names if after[n] != before[n]]
            problems = settled_problems(client, sizes, inventory)
        finally:
            for service in services:
                service.stop()
            client.close()
    return ManagersReport(
        pools=pools,
        split=split,
        adoption_seconds=adoption,
        lease_seconds=lease,
        refilled_seconds=refilled,
        moved_to_fourth=sum(1 for n in moved if after[n] == "m-3"),
        moved_elsewhere=sum(1 for n in moved if after[n] != "m-3"),
        problems=problems,
    )


@attrs.define
class FrozenReport:
    """What the frozen-manager scenario saw."""

    frozen_pools: int  # pools the frozen manager held when it was stopped
    adoption_seconds: float  # SIGSTOP -> every one of them held by the other manager
    lease_seconds: float
    owners_after: dict[str, str | None]  # pool -> lease owner once the frozen one ran again a while
    stale_tokens: list[str]  # pools the frozen one holds again with the token it had when frozen
    most_vms: dict[str, int]  # pool -> the most VMs (pending + ready + running) seen at once, sampled
    size: int
    problems: list[str]  # inventory vs Redis, once settled

    def lines(self) -> list[str]:
        over = {pool: n for pool, n in self.most_vms.items() if n > self.size}
        return [
            f"frozen manager held {self.frozen_pools} pools; the other took them in "
            f"{self.adoption_seconds:.2f} s (lease {self.lease_seconds:g} s)",
            f"after SIGCONT it rejoined and holds {sum(1 for o in self.owners_after.values() if o == 'm-1')} "
            f"pools again, {len(self.stale_tokens)} of them with its old token",
            f"pools ever above size {self.size}: {len(over)} {over}",
            f"inventory vs Redis problems: {len(self.problems)} {self.problems[:5]}",
        ]


def frozen_manager(redis_url: str, *, pools: int = 12, size: int = 2, lease: float = 3.0) -> FrozenReport:
    """Two managers (m-0, m-1) share the pools; m-1 is frozen with SIGSTOP past its lease, the other adopts
    its pools, then m-1 is continued. Sampled all along: no pool ever holds more VMs than its size (a
    pool cloned for by both would)."""
    names = [f"fz{i:02d}" for i in range(pools)]
    sizes = {name: size for name in names}
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    most = {name: 0 for name in names}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            for name in names:
                sets = pool_sets(client, name)
                most[name] = max(most[name], len(sets["pending"] | sets["ready"] | sets["running"]))

    services = []
    with tempfile.TemporaryDirectory(prefix="vmpooler-frozen-") as tmp:
        workdir = Path(tmp)
        inventory = workdir / "dummy.yaml"
        sampler = threading.Thread(target=sample, daemon=True)
        try:
            for index in range(2):
                config = write_config(
                    workdir / f"m-{index}.yaml",
                    redis=_url(redis_url),
                    inventory=inventory,
                    names=names,
                    size=size,
                    manager_id=f"m-{index}",
                    manager_lease_seconds=lease,
                )
                services.append(
                    start_service(config, workdir / f"m-{index}.log", "manager", new_session=True)
                )
            if not poll(lambda: set(_owners(client, names).values()) == {"m-0", "m-1"}, 60):
                raise RuntimeError(f"the managers did not share the pools: {_owners(client, names)}")
            if not poll(lambda: at_size(client, sizes), 60):
                raise RuntimeError("the pools did not fill")
            sampler.start()
            held = [n for n, o in _owners(client, names).items() if o == "m-1"]
            tokens = {n: client.hget(f"vmpooler__lease__{n}", "token") for n in held}
            frozen_at = time.monotonic()
            os.killpg(services[1].proc.pid, signal.SIGSTOP)
            adopted = poll(
                lambda: all(o == "m-0" for o in _owners(client, held).values()), lease * 10, interval=0.05
            )
            adoption = time.monotonic() - frozen_at if adopted else float("inf")
            for (
                name
            ) in held:  # work for both: the VMs of the adopted pools are returned (destroyed, cloned again)
                for vm in client.smembers(f"vmpooler__ready__{name}"):
                    client.smove(f"vmpooler__ready__{name}", f"vmpooler__completed__{name}", vm)
            time.sleep(lease)
            os.killpg(services[1].proc.pid, signal.SIGCONT)
            time.sleep(lease * 2)  # its timers fire, its actors try their passes, its next beat gives up
            owners_after = _owners(client, names)
            stale = [n for n in held if client.hget(f"vmpooler__lease__{n}", "token") == tokens[n]]
            problems = settled_problems(client, sizes, inventory)
        finally:
            stop.set()
            if sampler.is_alive():
                sampler.join(5)
            for service in services:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.proc.pid, signal.SIGCONT)
                service.stop()
            client.close()
    return FrozenReport(
        frozen_pools=len(held),
        adoption_seconds=adoption,
        lease_seconds=lease,
        owners_after=owners_after,
        stale_tokens=stale,
        most_vms=most,
        size=size,
        problems=problems,
    )


@attrs.define
class RestartReport:
    """What a rolling restart (SIGHUP: every child replaced, one at a time) under load saw."""

    replaced: int  # children replaced (pids that changed), over every supervisor
    handovers: int  # times a pool's lease went from one manager to the other during the restarts
    seconds: float  # the SIGHUPs' durations: signal -> every child of that supervisor replaced
    checkouts: int  # checkouts answered 200
    failures: dict[str, int]  # what went wrong: HTTP status or exception name -> count
    handed_twice: list[str]
    problems: list[str]  # inventory vs Redis, once settled
    log_errors: list[str]  # the service's ERROR lines, to diagnose a failure (not an oracle)

    def lines(self) -> list[str]:
        return [
            *self.log_errors[:10],
            f"SIGHUP to each of 4 supervisors in turn: {self.replaced} children replaced one at a time "
            f"in {self.seconds:.1f} s",
            f"checkouts answered 200 meanwhile: {self.checkouts}; failed requests: {self.failures or 0}",
            f"pools handed from one manager to the other meanwhile: {self.handovers}",
            f"VMs handed out twice: {len(self.handed_twice)}",
            f"inventory vs Redis problems: {len(self.problems)} {self.problems[:5]}",
        ]


def _titled(service: Any) -> dict[int, str]:
    """A supervisor's vmpooler children (not multiprocessing's resource tracker): pid → title."""
    return {pid: title for pid, title in service.children().items() if title.startswith("vmpooler: ")}


def rolling_restart(redis_url: str, *, threads: int = 4, pools: int = 2, size: int = 20) -> RestartReport:
    """Two API supervisors (two workers each) and two managers under checkout → return load from
    keep-alive clients spread over the APIs (``requests`` sessions, which reconnect when an idle
    connection was closed, as HTTP clients do); each supervisor in turn gets SIGHUP and replaces its
    children one at a time; every request's outcome is counted."""
    import requests

    names = [f"rr{i}" for i in range(pools)]
    sizes = {name: size for name in names}
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    stop = threading.Event()
    lock = threading.Lock()
    failures: collections.Counter[str] = collections.Counter()
    handed: collections.Counter[str] = collections.Counter()

    def work(index: int, base: str) -> None:
        pool = names[index % len(names)]
        session = requests.Session()
        while not stop.is_set():
            try:
                resp = session.post(f"{base}/api/v3/vm/{pool}", timeout=30)
                if resp.status_code == 503 and resp.json() == {"ok": False}:
                    time.sleep(0.05)  # the pool is empty for a moment: not a failure of the service
                    continue
                if resp.status_code != 200:
                    with lock:
                        failures[f"checkout {resp.status_code}"] += 1
                    time.sleep(0.05)
                    continue
                vm = resp.json()[pool]["hostname"].split(".")[0]
                with lock:
                    handed[vm] += 1
                time.sleep(0.02)  # hold it a moment
                resp = session.delete(f"{base}/api/v3/vm/{vm}", timeout=30)
                if resp.status_code != 200:
                    with lock:
                        failures[f"return {resp.status_code}"] += 1
            except requests.RequestException as exc:
                with lock:
                    failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                time.sleep(0.05)

    with tempfile.TemporaryDirectory(prefix="vmpooler-restart-") as tmp:
        workdir = Path(tmp)
        inventory = workdir / "dummy.yaml"
        services: list[Any] = []
        for index, component in enumerate(("api", "api", "manager", "manager")):
            config = write_config(
                workdir / f"{component}-{index}.yaml",
                redis=_url(redis_url),
                inventory=inventory,
                names=names,
                size=size,
                api_workers=2,
                manager_id=f"m-{index}",
                manager_lease_seconds=5,
            )
            services.append(start_service(config, workdir / f"{component}-{index}.log", component))
        apis = [service.base for service in services[:2]]
        workers = [
            threading.Thread(target=work, args=(i, apis[i % len(apis)]), daemon=True) for i in range(threads)
        ]
        replaced = 0
        seconds = 0.0
        handovers = 0

        def watch_owners() -> None:  # samples the pools' lease owners while the supervisors restart
            nonlocal handovers
            last: dict[str, str | None] = {}
            while not stop.is_set():
                for pool, owner in _owners(client, names).items():
                    if owner is not None:
                        handovers += int(last.get(pool) not in (None, owner))
                        last[pool] = owner
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_owners, daemon=True)
        try:
            if not poll(lambda: at_size(client, sizes), 60):
                raise RuntimeError("the pools did not fill")
            managers = ["m-2", "m-3"]  # the manager_ids of services[2:]
            if not poll(lambda: _owners(client, names) == {n: owner_of(n, managers) for n in names}, 60):
                raise RuntimeError(f"the managers did not settle on their shares: {_owners(client, names)}")
            for worker in workers:
                worker.start()
            watcher.start()
            time.sleep(1.0)
            for service in services:  # one supervisor after the other, as an operator would
                before = _titled(service)
                started = time.monotonic()
                service.proc.send_signal(signal.SIGHUP)

                def renewed(service: Any = service, before: dict[int, str] = before) -> bool:
                    now = _titled(service)
                    return not (set(now) & set(before)) and sorted(now.values()) == sorted(before.values())

                if not poll(renewed, 60, interval=0.1):
                    raise RuntimeError(f"{service.log.name}: SIGHUP did not replace every child")
                seconds += time.monotonic() - started
                replaced += len(before)
            time.sleep(1.0)
            stop.set()
            for worker in workers:
                worker.join(60)
            problems = settled_problems(client, sizes, inventory)
        finally:
            stop.set()
            errors = []
            for service in services:
                service.stop()
                text = service.log.read_text(errors="replace").splitlines()
                failing = [i for i, line in enumerate(text) if "Exception while serving" in line]
                errors += ["\n".join(text[i : i + 25]) for i in failing]
            client.close()
    return RestartReport(
        replaced=replaced,
        handovers=handovers,
        seconds=seconds,
        checkouts=sum(handed.values()),
        failures=dict(failures),
        handed_twice=sorted(vm for vm, n in handed.items() if n > 1),
        problems=problems,
        log_errors=errors,
    )
