"""The whole service started on a config written for the original, with every dummy key it reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from tests.acceptance.conftest import Service
from vmpooler import keys

pytestmark = pytest.mark.acceptance

ORIGINAL_DUMMY = """
:providers:
  :dummy:
    filename: '{inventory}'
    connection_pool_size: 20
    connection_pool_timeout: 10
    migratevm_couldmove_percent: 0
    migratevm_max_time: 1
    migratevm_fail_percent: 0
    getvm_poweroff_percent: 0
    getvm_rename_percent: 0
    createvm_max_time: 1
    createvm_fail_percent: 0
    createdisk_max_time: 1
    createdisk_fail_percent: 0
    createsnapshot_max_time: 1
    createsnapshot_fail_percent: 0
    revertsnapshot_max_time: 1
    revertsnapshot_fail_percent: 0
    destroyvm_max_shutdown_time: 1
    destroyvm_max_time: 1
    destroyvm_fail_percent: 0
    vmready_fail_percent: 0
    is_ready_timeout: 10
:dns_configs:
  :example:
    dns_class: dynamic-dns
    domain: 'example.com'
:redis:
  url: '{redis_url}'
:config:
  site_name: 'vmpooler'
  task_limit: 4
  timeout: 15
  timeout_notification: 5
  vm_checktime: 1
  vm_lifetime: 12
  vm_lifetime_auth: 24
  allowed_tags:
    - 'created_by'
    - 'project'
  prefix: 'poolvm-'
  check_loop_delay_min: 1
:pools:
  - name: 'debian-7-i386'
    alias: [ 'debian-7-32' ]
    template: 'Templates/debian-7-i386'
    folder: 'Pooled VMs/debian-7-i386'
    datastore: 'vmstorage'
    size: 2
    timeout: 15
    timeout_notification: 5
    ready_ttl: 1440
    provider: dummy
    dns_plugin: 'example'
  - name: 'debian-7-x86_64'
    alias: 'debian-7-64, debian-7-amd64'
    template: 'Templates/debian-7-x86_64'
    folder: 'Pooled VMs/debian-7-x86_64'
    datastore: 'vmstorage'
    size: 2
    ready_ttl: 1440
    provider: dummy
    dns_plugin: 'example'
"""


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def _children(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_the_service_runs_on_an_original_dummy_config(
    start_service_yaml: Callable[..., Service], redis_url: str, redis: redis_lib.Redis, tmp_path: Path
) -> None:
    text = ORIGINAL_DUMMY.format(inventory=tmp_path / "dummy.yaml", redis_url=redis_url)
    service = start_service_yaml(text)
    deadline = time.monotonic() + 60
    pools = ("debian-7-i386", "debian-7-x86_64")
    while not all(redis.scard(keys.ready_set(pool)) == 2 for pool in pools):
        assert time.monotonic() < deadline, {pool: redis.scard(keys.ready_set(pool)) for pool in pools}
        time.sleep(0.2)
    # Each clone took a whole second inside create_vm (createvm_max_time: 1): recorded per VM.
    for vm in redis.smembers(keys.ready_set(pools[1])):
        assert float(redis.hget(keys.vm_hash(vm), "clone_time") or 0) >= 1.0
    reply = requests.post(service.url("/api/v3/vm/debian-7-amd64"), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["debian-7-amd64"]["hostname"].startswith("poolvm-")
    # Every process says what it is in ps/top.
    titles = sorted(_title(pid) for pid in _children(service.proc.pid))
    titles = [title for title in titles if "multiprocessing.resource_tracker" not in title]
    assert _title(service.proc.pid) == "vmpooler: supervisor"
    assert titles == ["vmpooler: api-1", "vmpooler: api-2", "vmpooler: provider dummy"]
