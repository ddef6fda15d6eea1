"""Keep-alive connections spread evenly over the API workers (``vmpooler/http/balance.py``).

The real service with two API workers; connections opened one after another, each making a request.
Which worker holds a connection is read from ``/proc``: the socket inode of the server's end of it
(``/proc/net/tcp``) among each worker's open files.
"""

from __future__ import annotations

import http.client
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Service
from tests.support.waiting import poll

pytestmark = pytest.mark.acceptance


def api_workers(service: Service) -> list[int]:
    return sorted(pid for pid, title in service.children().items() if title.startswith("vmpooler: api-"))


def server_inodes(port: int) -> dict[int, str]:
    """The server's end of each established connection to ``port``: client port → socket inode."""
    found: dict[int, str] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port:  # 01: ESTABLISHED
            found[int(remote.split(":")[1], 16)] = inode
    return found


def owners(service: Service, conns: list[http.client.HTTPConnection]) -> Counter[int]:
    """How many of ``conns`` each API worker holds (pid → connections)."""
    inodes = server_inodes(service.port)
    held: dict[str, int] = {}
    for pid in api_workers(service):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                held[target[8:-1]] = pid
    return Counter(held[inodes[conn.sock.getsockname()[1]]] for conn in conns)


Connect = Callable[[Service, int], list[http.client.HTTPConnection]]


@pytest.fixture
def connect(start_service: Callable[..., Service]) -> Iterator[Connect]:
    """Open connections to a service, each after a request; all closed at teardown, before the service
    stops (so its workers need not wait for idle connections as they drain)."""
    opened: list[http.client.HTTPConnection] = []

    def open_conns(service: Service, count: int) -> list[http.client.HTTPConnection]:
        conns = []
        for _ in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
            conn.request("GET", "/api/v3/status")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            conns.append(conn)
        opened.extend(conns)
        return conns

    yield open_conns
    for conn in opened:
        conn.close()


def every_worker_serves(service: Service, connect: Connect) -> bool:
    """True once two connections held together land on two workers: both workers' loops run (the
    service answers as soon as one does; until the other writes its slot it takes every connection).
    Then the two stay open, one on each worker (a probe closed would linger in one worker's count
    until its loop reads the close); else they are closed."""
    probes = connect(service, 2)
    if len(owners(service, probes)) == 2:
        return True
    for probe in probes:
        probe.close()
    return False


@pytest.fixture
def service(start_service: Callable[..., Service], connect: Connect) -> Service:
    """The API alone with two workers, both serving."""
    started = start_service({"pool": 0}, "api", workers=2)
    assert poll(lambda: every_worker_serves(started, connect), 20)
    return started


def test_connections_opened_together_spread_evenly(service: Service, connect: Connect) -> None:
    conns = connect(service, 16)
    assert sorted(owners(service, conns).values()) == [8, 8]


def test_a_restarted_worker_takes_the_next_connections(service: Service, connect: Connect) -> None:
    first = connect(service, 8)
    assert sorted(owners(service, first).values()) == [4, 4]
    survivor, killed = api_workers(service)
    os.kill(killed, signal.SIGKILL)
    assert poll(lambda: len(api_workers(service)) == 2 and killed not in api_workers(service), 20)
    [replacement] = [pid for pid in api_workers(service) if pid != survivor]

    def replacement_serves() -> bool:  # a new connection goes to it once its loop runs; it stays open
        [probe] = connect(service, 1)
        if owners(service, [probe]) == Counter({replacement: 1}):
            return True
        probe.close()
        return False

    assert poll(replacement_serves, 20)
    # the survivor holds its 4 and a probe; the replacement, with its probe alone, takes the next 4
    second = connect(service, 4)
    assert owners(service, second) == Counter({replacement: 4})
    still_open = server_inodes(service.port)
    assert owners(service, [c for c in first if c.sock.getsockname()[1] in still_open]) == Counter(
        {survivor: 4}
    )
