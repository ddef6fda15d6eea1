"""High-availability scenarios against real processes, shared by ``scripts/ha_failover.py`` (which prints
the figures) and ``tests/acceptance/test_ha_failover.py`` (which asserts them, on shorter runs).

``failover_under_load``: the service (API and manager, the dummy provider with a file inventory) on a
Sentinel deployment of three redis-servers and three sentinels; checkout → return clients run while the
primary is killed with SIGKILL. It measures how long the sentinels took to promote a replica, how long
after that the first checkout succeeded again, and counts every HTTP status; then, with the load
stopped and the pools settled, whether any VM was handed out twice and whether the provider's inventory
and the new primary's sets agree (no VM leaked or lost).
"""

from __future__ import annotations

import collections
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from tests.support.chaos.inventory import consistency_problems, quiet_inventory
from tests.support.chaos.sets import pool_sets
from tests.support.sentinel import SentinelCluster
from tests.support.service import start_service
from tests.support.waiting import poll

__all__ = ["FailoverReport", "failover_under_load"]

CONFIG = """
:config:
  api_workers: 2
  task_limit: 10
:redis:
  sentinels: [{sentinels}]
  master_name: {master}
  api_timeout: 1
:providers:
  :dummy:
    filename: '{inventory}'
    createvm_max_time: 0.1
:pools:
{pools}
"""


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

    def __init__(self, port: int, pools: list[str], threads: int) -> None:
        self._port = port
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
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
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
                conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
                time.sleep(0.05)


def failover_under_load(
    *, before: float = 3.0, after: float = 5.0, threads: int = 4, pools: int = 2, size: int = 8
) -> FailoverReport:
    """Run the scenario: ``before`` seconds of load, SIGKILL the primary, ``after`` seconds of load past
    the recovery, then the checks."""
    names = [f"ha{i}" for i in range(pools)]
    with tempfile.TemporaryDirectory(prefix="vmpooler-ha-") as tmp, SentinelCluster() as cluster:
        workdir = Path(tmp)
        config = workdir / "vmpooler.yaml"
        config.write_text(
            CONFIG.format(
                sentinels=", ".join(f"'{s}'" for s in cluster.sentinel_addresses),
                master=cluster.master_name,
                inventory=workdir / "dummy.yaml",
                pools="\n".join(
                    f"  - {{name: {n}, template: t/{n}, size: {size}, provider: dummy}}" for n in names
                ),
            )
        )
        service = start_service(config, workdir / "vmpooler.log")
        try:
            primary = cluster.server_ports[0]
            with cluster.client(primary) as redis_client:
                ready = poll(
                    lambda: all(redis_client.scard(f"vmpooler__ready__{n}") >= size for n in names), 60
                )
            if not ready:
                raise RuntimeError("the pools did not fill")
            load = _Load(service.port, names, threads)
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
                counts = {n: size for n in names}
                inventory = quiet_inventory(redis_client, counts, [workdir / "dummy.yaml"], timeout=60)
                if inventory is None:
                    sizes = {n: {k: len(v) for k, v in pool_sets(redis_client, n).items()} for n in names}
                    problems = [f"the pools never settled: {sizes}"]
                else:
                    problems = consistency_problems(redis_client, names, inventory)
        finally:
            service.stop()
    return FailoverReport(
        failover_seconds=failover,
        recovery_seconds=first - promoted_at,
        statuses=dict(load.statuses),
        checkouts=sum(load.handed.values()),
        handed_twice=sorted(vm for vm, n in load.handed.items() if n > 1),
        problems=problems,
    )
