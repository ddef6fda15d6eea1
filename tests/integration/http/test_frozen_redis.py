"""A frozen Redis (SIGSTOP: a hung host, a partition) neither hangs requests nor strands a VM.

Requests give up after ``:redis: api_timeout`` and answer 503. A checkout whose script reaches Redis
only when it wakes up again finds its deadline passed (Redis's own clock) and changes nothing: every
VM in ``running`` afterwards was handed to a client that got a 200.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis as redis_lib
from falcon import testing

from tests.conftest import RedisServer, wait_for
from tests.integration.http.conftest import BASE_CONFIG, DEB
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.http.app import create_app
from vmpooler.store import Store

pytestmark = pytest.mark.integration

TIMEOUT = 0.3  # seconds: the API's reply timeout in this test


@pytest.fixture
def private_redis() -> RedisServer:
    server = RedisServer()  # its own: it is frozen, so no other test may share it
    server.start()
    yield server
    os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    server.stop()


def test_a_frozen_redis_answers_503_in_time_and_strands_no_vm(private_redis: RedisServer) -> None:
    admin = redis_lib.Redis.from_url(private_redis.url(), decode_responses=True)
    vms = [f"vm{i:05d}" for i in range(20_000)]  # never runs out: every checkout could take one
    admin.sadd(keys.ready_set(DEB), *vms)
    store = Store.from_url(private_redis.url(), max_connections=16, socket_timeout=TIMEOUT)
    client = testing.TestClient(create_app(load_config_text(BASE_CONFIG, env={}), store))
    results: list[tuple[int, str | None, float]] = []
    lock, stop = threading.Lock(), threading.Event()

    def checkouts() -> None:
        while not stop.is_set():
            started = time.monotonic()
            resp = client.simulate_post(f"/api/v3/vm/{DEB}")
            elapsed = time.monotonic() - started
            host = resp.json[DEB]["hostname"].split(".")[0] if resp.status_code == 200 else None
            with lock:
                results.append((resp.status_code, host, elapsed))

    threads = [threading.Thread(target=checkouts) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    time.sleep(3)
    os.kill(private_redis.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    store.close()

    statuses = {status for status, _host, _elapsed in results}
    assert statuses <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    slowest = max(elapsed for _status, _host, elapsed in results)
    # one reply timeout plus a reconnect, with room for a loaded machine: far below the 3 s freeze and
    # the 10 s a request waited before api_timeout existed
    assert slowest < TIMEOUT + 2.0, f"a request waited {slowest:.2f} s"
    handed = [host for status, host, _elapsed in results if status == 200]
    assert len(handed) == len(set(handed)), "a VM was handed out twice"
    # the scripts queued while frozen run once Redis thaws; each either handed its VM out or changed nothing
    wait_for(lambda: admin.smembers(keys.running_set(DEB)) == set(handed), 5, "running = handed out")
    assert admin.smembers(keys.ready_set(DEB)) == set(vms) - set(handed)
    admin.close()
