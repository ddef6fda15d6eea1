"""An API-only node: ``vmpooler api`` on a config without ``:pools:`` serves the pools a manager published
in Redis (``vmpooler__pools`` and ``vmpooler__pool__<name>``), as the original does."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from tests.support.service import Service, ServiceError, start_service
from tests.support.waiting import TIMEOUT_SCALE, poll
from vmpooler import keys

pytestmark = pytest.mark.acceptance

NO_POOLS = """
:config:
  api_workers: 1
:redis:
  url: '{redis_url}'
"""

# Written as a manager writes them: strings, alias comma-joined, the resolved domain; the provider is
# one this node does not configure.
PUBLISHED = {
    "debian-12-x86_64": {
        "name": "debian-12-x86_64",
        "template": "Templates/debian-12",
        "size": "3",
        "alias": "debian,linux",
        "provider": "vsphere",
        "folder": "Pooled VMs/debian-12",
        "dns_plugin": "example",
        "domain": "example.com",
    },
    "win-2022": {"name": "win-2022", "template": "Templates/win-2022", "size": "1", "provider": "vsphere"},
}
WAITING = "no :pools: in the config and none published in redis yet; waiting"


def publish(redis: redis_lib.Redis) -> None:
    for name, fields in PUBLISHED.items():
        redis.sadd(keys.POOLS, name)
        redis.hset(keys.pool_hash(name), mapping=fields)


@pytest.fixture
def node(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``node(*components)``: start ``vmpooler`` on a config without ``:pools:``; stopped at teardown."""
    config = tmp_path / "vmpooler.yaml"
    config.write_text(NO_POOLS.format(redis_url=redis_url))
    started: list[Service] = []

    def start(*components: str) -> Service:
        try:
            started.append(start_service(config, tmp_path / "vmpooler.log", *components))
        except ServiceError as exc:
            pytest.fail(str(exc))
        return started[-1]

    yield start
    for service in started:
        service.stop()


def test_the_api_serves_the_published_pools(node: Callable[..., Service], redis: redis_lib.Redis) -> None:
    publish(redis)
    redis.sadd(keys.ready_set("debian-12-x86_64"), "vm-abc")
    service = node("api")

    pools = requests.get(service.url("/api/v3/status"), timeout=10).json()["pools"]
    assert {name: pool["max"] for name, pool in pools.items()} == {"debian-12-x86_64": 3, "win-2022": 1}
    reply = requests.post(service.url("/api/v3/vm/linux"), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["linux"]["hostname"] == "vm-abc.example.com"
    assert redis.sismember(keys.running_set("debian-12-x86_64"), "vm-abc")


def test_an_api_started_first_serves_the_pools_once_published(
    node: Callable[..., Service], redis: redis_lib.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "vmpooler.log"
    published_at: list[float] = []

    def publish_once_waiting() -> None:
        if poll(lambda: log.exists() and WAITING in log.read_text(errors="replace"), 20 * TIMEOUT_SCALE):
            publish(redis)
            published_at.append(time.monotonic())

    publisher = threading.Thread(target=publish_once_waiting, daemon=True)
    publisher.start()
    service = node("api")  # returns once /healthcheck answers
    publisher.join()

    assert published_at, "the API never said it was waiting for published pools"
    assert time.monotonic() - published_at[0] < 5 * TIMEOUT_SCALE
    pools = requests.get(service.url("/api/v3/status"), timeout=10).json()["pools"]
    assert sorted(pools) == ["debian-12-x86_64", "win-2022"]


def test_a_manager_without_pools_starts_no_provider_and_keeps_the_published_ones(
    node: Callable[..., Service], redis: redis_lib.Redis
) -> None:
    publish(redis)
    service = node()  # api and manager

    assert sorted(title for title in service.children().values() if title.startswith("vmpooler: ")) == [
        "vmpooler: api-1"
    ]
    assert redis.smembers(keys.POOLS) == set(PUBLISHED)
    pools = requests.get(service.url("/api/v3/status"), timeout=10).json()["pools"]
    assert sorted(pools) == ["debian-12-x86_64", "win-2022"]
    assert "nothing to manage" in service.log.read_text(errors="replace")


def test_the_manager_alone_without_pools_has_nothing_to_run(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(NO_POOLS.format(redis_url=redis_url))
    done = subprocess.run(
        [sys.executable, "-m", "vmpooler", "manager", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30 * TIMEOUT_SCALE,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "nothing to manage" in done.stderr
