"""The whole service (``vmpooler --config F``) with two vSphere pools on govmomi's simulator.

It fills both pools in the simulator, serves a checkout over HTTP and destroys the VM in the simulator
when it is returned; restarted against a new, empty simulator it cleans the stale VMs out of Redis and
refills; with the simulator killed, the API keeps answering and no process exits.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.acceptance.conftest import Service, child_pids, is_child_alive
from tests.conftest import wait_for
from tests.integration.providers.vcsim import DATACENTER, PASSWORD, USERNAME, Vcsim, build, prepare_site
from vmpooler import keys

pytestmark = pytest.mark.acceptance

CONFIG = """
:config:
  task_limit: 4
  check_loop_delay_min: 0.2
  check_loop_delay_max: 1
  create_folders: true
  clone_target: DC0_C0
:redis:
  url: {redis_url}
:providers:
  :vsphere:
    provider_class: vsphere
    server: {server}
    username: {username}
    password: {password}
    insecure: true
    ready_check: poweron
    vsphere_timeout: 3
    retry_factor: 1
:dns_configs:
  :example:
    dns_class: dynamic-dns
    domain: example.com
:pools:
  - name: alpha
    template: Templates/tpl
    folder: vmpooler/alpha
    datastore: LocalDS_0
    size: 2
    provider: vsphere
    dns_plugin: example
  - name: beta
    template: Templates/tpl
    folder: vmpooler/beta
    size: 3
    provider: vsphere
    dns_plugin: example
"""
SIZES = {"alpha": 2, "beta": 3}


def config(redis_url: str, sim: Vcsim) -> str:
    return CONFIG.format(redis_url=redis_url, server=sim.server, username=USERNAME, password=PASSWORD)


def in_simulator(sim: Vcsim, pool: str) -> set[str]:
    """The VM names in the pool's folder, read with an admin session of the simulator."""
    with sim.session() as s:
        folder = s.find_by_path(f"{DATACENTER}/vm/vmpooler/{pool}")
        return (
            set()
            if folder is None
            else {p["name"] for p in s.children(folder, "VirtualMachine", ["name"]).values()}
        )


def sets(redis, pool: str) -> dict[str, set[str]]:
    return {state: redis.smembers(keys.state_set(state, pool)) for state in keys.STATES}


def full(redis, sim: Vcsim) -> bool:
    """Both pools hold exactly their size of ready VMs, all in the simulator, and nothing else."""
    for pool, size in SIZES.items():
        state = sets(redis, pool)
        busy = state["pending"] | state["completed"] | state["discovered"] | state["running"]
        if len(state["ready"]) != size or busy or not state["ready"] <= in_simulator(sim, pool):
            return False
    return True


def test_two_vsphere_pools_fill_serve_and_survive_a_lost_vcenter(
    start_service_yaml, redis_url: str, redis, tmp_path: Path
) -> None:
    binary = build()
    first = Vcsim(binary, tmp_path / "vcsim-1").start()
    second = Vcsim(binary, tmp_path / "vcsim-2")
    try:
        prepare_site(first)
        service = start_service_yaml(config(redis_url, first))
        wait_for(lambda: full(redis, first), 30, "both vSphere pools to fill")

        # a checkout over HTTP, and its return destroys the VM in the simulator
        resp = requests.post(service.url("/api/v3/vm/alpha"), timeout=10)
        assert resp.status_code == 200, resp.text
        vm = resp.json()["alpha"]["hostname"]
        vm = vm.split(".", 1)[0]
        assert vm in in_simulator(first, "alpha") and vm in sets(redis, "alpha")["running"]
        assert requests.delete(service.url(f"/api/v3/vm/{vm}"), timeout=10).status_code == 200
        wait_for(lambda: vm not in in_simulator(first, "alpha"), 15, f"{vm} to be destroyed in the simulator")
        wait_for(lambda: full(redis, first), 30, "pool alpha to refill")
        stale = {pool: sets(redis, pool)["ready"] for pool in SIZES}
        assert service.stop() == 0

        # restarted against a new, empty simulator: the stale VMs leave Redis, the pools refill there
        first.stop()
        second.start()
        prepare_site(second)
        service = start_service_yaml(config(redis_url, second))
        wait_for(lambda: full(redis, second), 30, "both pools to refill in the new simulator")
        for pool, names in stale.items():
            assert not names & sets(redis, pool)["ready"], f"stale VMs of {pool} are still ready"

        _lose_vcenter(service, second, redis)
    finally:
        first.stop()
        second.stop()


def _lose_vcenter(service: Service, sim: Vcsim, redis) -> None:
    """The simulator is killed: the API answers all along, no process exits or restarts."""
    pids = child_pids(service)
    assert {"provider-vsphere", "api-1"} <= set(pids)
    ready = {pool: sets(redis, pool)["ready"] for pool in SIZES}
    sim.kill()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert requests.get(service.url("/api/v3/status"), timeout=5).status_code == 200
        assert requests.get(service.url("/healthcheck"), timeout=5).status_code == 200
        time.sleep(0.25)
    assert service.proc.poll() is None, "the supervisor exited"
    assert child_pids(service) == pids, "a child was restarted"
    assert all(is_child_alive(service, pid) for pid in pids.values())
    # with vCenter gone the inventory fails and is skipped: nothing is thrown away meanwhile
    assert {pool: sets(redis, pool)["ready"] for pool in SIZES} == ready
    log = service.log.read_text(errors="replace")
    assert "inventory failed" in log and sim.server in log
