"""A provider process or an API worker killed with SIGKILL: the rest keeps serving, nothing is lost.

The real service runs two dummy provider instances, each with its own inventory file (so that a
restarted provider process finds its VMs again) and its own pool. While a client keeps checking out and
returning VMs of pool ``b``, the process of the other provider is killed; then one API worker is.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from tests.acceptance.conftest import child_pids, is_child_alive
from tests.conftest import wait_for
from tests.support import chaos
from vmpooler import keys

pytestmark = pytest.mark.acceptance

CONFIG = """
:config:
  api_workers: 2
  check_loop_delay_min: 0.2
  check_loop_delay_max: 1
:redis:
  url: {redis_url}
:providers:
  :dummy1:
    provider_class: dummy
    filename: {tmp}/dummy1.yaml
  :dummy2:
    provider_class: dummy
    filename: {tmp}/dummy2.yaml
:pools:
  - name: a
    template: templates/a
    size: 5
    provider: dummy1
  - name: b
    template: templates/b
    size: 5
    provider: dummy2
"""
SIZES = {"a": 5, "b": 5}


class Churn(threading.Thread):
    """Checks out one VM of a pool and returns it, over and over, on fresh connections.

    About 8 checkouts a second: a pool of 5 keeps up with that even on a busy machine (each one
    starts a replacement clone at once), so a 503 means the pool really stopped being served.
    """

    interval = 0.1

    def __init__(self, base: str, pool: str) -> None:
        super().__init__(name=f"churn-{pool}", daemon=True)
        self.base, self.pool = base, pool
        self.halt = threading.Event()
        self.answers: list[tuple[str, int, str]] = []  # (what, status, detail)
        self.hostnames: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self._cycle()
            except requests.RequestException as exc:  # status 0: no answer at all
                self.answers.append(("request", 0, repr(exc)))
            self.halt.wait(self.interval)

    def _cycle(self) -> None:
        resp = requests.post(f"{self.base}/api/v3/vm/{self.pool}", timeout=10)
        self.answers.append(("checkout", resp.status_code, resp.text))
        if resp.status_code == 200:
            host = resp.json()[self.pool]["hostname"]
            self.hostnames.append(host)
            resp = requests.delete(f"{self.base}/api/v3/vm/{host}", timeout=10)
            self.answers.append(("return", resp.status_code, resp.text))

    def failures(self) -> list[tuple[str, int, str]]:
        return [answer for answer in self.answers if answer[1] != 200]


def _checkout(service, pool: str) -> str:
    resp = requests.post(service.url(f"/api/v3/vm/{pool}"), timeout=5)
    assert resp.status_code == 200, resp.text
    return str(resp.json()[pool]["hostname"])


def _sets(redis, pool: str) -> dict[str, set[str]]:
    return {state: redis.smembers(keys.state_set(state, pool)) for state in keys.STATES}


def _full(redis, pool: str) -> bool:
    sets = _sets(redis, pool)
    return len(sets["ready"]) == SIZES[pool] and not (
        sets["pending"] or sets["completed"] or sets["discovered"]
    )


def _new_pid(service, name: str, old: int) -> int | None:
    pid = child_pids(service).get(name)
    return pid if pid not in (None, old) and is_child_alive(service, pid) else None


def test_sigkill_of_one_provider_and_one_api_worker_loses_nothing(
    start_service_yaml, redis_url, redis, tmp_path
):
    service = start_service_yaml(CONFIG.format(redis_url=redis_url, tmp=tmp_path))
    wait_for(lambda: _full(redis, "a") and _full(redis, "b"), 15, "both pools to fill")
    pids = child_pids(service)
    assert {"api-1", "api-2", "provider-dummy1", "provider-dummy2"} <= set(pids)
    ready_a = _sets(redis, "a")["ready"]

    churn = Churn(service.base, "b")
    churn.start()
    try:
        wait_for(lambda: len(churn.hostnames) >= 10, 10, "pool b to serve checkouts")
        os.kill(pids["provider-dummy1"], signal.SIGKILL)
        killed = time.monotonic()
        # While provider-dummy1 is down its pool's ready VMs are still handed out, and returned; the
        # checkout and return events are lost: the new process must catch up from Redis alone.
        taken = [_checkout(service, "a") for _ in range(2)]
        assert requests.delete(service.url(f"/api/v3/vm/{taken[0]}"), timeout=5).status_code == 200
        new_provider = wait_for(
            lambda: _new_pid(service, "provider-dummy1", pids["provider-dummy1"]),
            10,
            "provider-dummy1 to restart",
        )
        assert isinstance(new_provider, int)
        assert requests.delete(service.url(f"/api/v3/vm/{taken[1]}"), timeout=5).status_code == 200
        wait_for(lambda: _full(redis, "a") and not _sets(redis, "a")["running"], 5, "pool a to be full again")
        recovered = time.monotonic() - killed
        before = len(churn.hostnames)
        wait_for(lambda: len(churn.hostnames) >= before + 10, 10, "pool b to keep serving")
    finally:
        churn.halt.set()
        churn.join(15)

    assert not churn.failures(), f"pool b was not served all along: {churn.failures()[:5]}"
    assert len(churn.hostnames) >= 4 * SIZES["b"], "pool b's replacement clones did not keep coming"
    assert len(set(churn.hostnames)) == len(churn.hostnames), "a VM of pool b was handed out twice"
    assert child_pids(service)["provider-dummy2"] == pids["provider-dummy2"], "provider-dummy2 was restarted"
    assert is_child_alive(service, pids["provider-dummy2"]) and is_child_alive(service, new_provider)
    assert recovered < 5, f"pool a took {recovered:.1f}s to recover"
    ready_now = _sets(redis, "a")["ready"]
    assert ready_a - set(taken) <= ready_now, "the restarted provider lost ready VMs of pool a"
    assert not set(taken) & ready_now

    _kill_one_api_worker(service, pids["api-1"])

    files = [tmp_path / "dummy1.yaml", tmp_path / "dummy2.yaml"]
    inventory = chaos.quiet_inventory(redis, SIZES, files)
    assert inventory is not None, f"the pools never settled: {chaos.pool_state(redis, SIZES)}"
    assert chaos.consistency_problems(redis, SIZES, inventory) == []
    assert sorted(inventory) == ["a", "b"] and all(len(inventory[p]) == SIZES[p] for p in SIZES)
    assert service.proc.poll() is None, "the supervisor stopped"
    assert "halting" not in service.log.read_text()


def _kill_one_api_worker(service, old: int) -> None:
    """SIGKILL api-1: api-2 answers every request meanwhile; api-1 comes back and serves too."""
    os.kill(old, signal.SIGKILL)
    statuses = [requests.get(service.url("/api/v3/status"), timeout=5).status_code for _ in range(30)]
    assert statuses == [200] * 30
    new = wait_for(lambda: _new_pid(service, "api-1", old), 10, "api-1 to restart")
    mark = len(service.log.read_text())

    def new_worker_served() -> bool:
        """A checkout and a return (each logged by the process serving it), at a pace pool a keeps up with."""
        host = _checkout(service, "a")
        assert requests.delete(service.url(f"/api/v3/vm/{host}"), timeout=5).status_code == 200
        time.sleep(Churn.interval)
        return "[api-1/waitress-" in service.log.read_text()[mark:]

    wait_for(new_worker_served, 10, f"the new api-1 (pid {new}) to serve a request")
