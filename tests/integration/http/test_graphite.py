"""Dashboard history from a graph server, against a small real HTTP server.

The server answers ``/render`` with canned graphite JSON per ``target`` and records every request, so
the tests see what was asked and what the stats feeds made of the answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.http.conftest import add_ready, add_running
from vmpooler.http import graphite

pytestmark = pytest.mark.integration

CONFIG = """
:graphs:
  server: {server}
  prefix: vmp
:pools:
  - name: centos-7-x86_64
    template: t/c7
    size: 4
  - name: centos-8-x86_64
    template: t/c8
    size: 2
  - name: ubuntu
    template: t/u
    size: 1
"""

READY_SERIES = [
    {"target": "vmp.ready.centos-7-x86_64", "datapoints": [[1, 100], [None, 160], [3.7, 220]]},
    {"target": "vmp.ready.centos-8-x86_64", "datapoints": [[None, 100], [0, 160]]},
    {"target": "vmp.ready.retired-pool", "datapoints": [[5, 100]]},
]
RUNNING_SERIES = [
    {"target": "vmp.running.centos-7-x86_64", "datapoints": [[1, 100], [None, 160], [2, 220]]},
    {"target": "vmp.running.centos-8-x86_64", "datapoints": [[None, 100], [4.9, 160]]},
    {"target": "vmp.running.centos-9-x86_64", "datapoints": [[7, 100]]},  # not configured, same group
    {"target": "vmp.running.debian-10", "datapoints": [[9, 100]]},  # no such group: ignored
]


class Graphite(ThreadingHTTPServer):
    """``answers``: target → (status, body bytes, seconds to wait first, seconds between bytes)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: dict[str, tuple[int, bytes, float, float]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def answer(self, target: str, body: Any, *, status: int = 200, wait: float = 0, drip: float = 0) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[target] = (status, raw, wait, drip)


class _Handler(BaseHTTPRequestHandler):
    server: Graphite

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append((url.path, query))
        status, body, wait, drip = self.server.answers.get(query.get("target", [""])[0], (404, b"", 0, 0))
        time.sleep(wait)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for at in range(len(body)) if drip else ():
                self.wfile.write(body[at : at + 1])
                self.wfile.flush()
                time.sleep(drip)
            if not drip:
                self.wfile.write(body)
        except OSError:  # the client gave up
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[Graphite]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    graphite_server = Graphite()
    thread = threading.Thread(target=graphite_server.serve_forever, daemon=True)
    thread.start()
    yield graphite_server
    graphite_server.shutdown()
    graphite_server.server_close()


@pytest.fixture
def api(make_api, redis, server):
    add_ready(redis, "centos-7-x86_64", "a1", "a2")
    add_ready(redis, "ubuntu", "u1")
    add_running(redis, "centos-7-x86_64", "a3")
    add_running(redis, "ubuntu", "u2")
    return make_api(CONFIG.format(server=server.address))


def test_pool_history_expands_each_datapoint_eight_times(api, server):
    server.answer("vmp.ready.*", READY_SERIES)
    resp = api.get("/dashboard/stats/vmpooler/pool?history=1")
    assert resp.status_code == 200
    assert resp.json == {
        # a gap repeats the last value; values are truncated to integers
        "centos-7-x86_64": {"size": 4, "ready": 2, "history": [1] * 8 + [1] * 8 + [3] * 8},
        # a gap before the first value counts as the pool's size
        "centos-8-x86_64": {"size": 2, "ready": 0, "history": [2] * 8 + [0] * 8},
        # no series for the pool: the current value
        "ubuntu": {"size": 1, "ready": 1, "history": [1]},
    }
    assert server.requests == [
        ("/render", {"target": ["vmp.ready.*"], "from": ["-1hour"], "format": ["json"]})
    ]


def test_running_history_sums_the_pools_of_a_group(api, server):
    server.answer("vmp.running.*", RUNNING_SERIES)
    resp = api.get("/dashboard/stats/vmpooler/running?history=true")
    assert resp.status_code == 200
    # centos-7 gives [1, 1, 2, 2], centos-8 [0, 4, 4], centos-9 [7, 7]: one more entry than datapoints
    assert resp.json == {
        "centos": {"running": 1, "history": [8, 12, 6, 2]},
        "ubuntu": {"running": 1, "history": [1]},
    }
    assert server.requests == [
        ("/render", {"target": ["vmp.running.*"], "from": ["-1hour"], "format": ["json"]})
    ]


@pytest.mark.parametrize(
    "path", ["/dashboard/stats/vmpooler/pool", "/dashboard/stats/vmpooler/running?history"]
)
def test_graphite_is_not_asked_without_history(api, server, path):
    server.answer("vmp.ready.*", READY_SERIES)
    server.answer("vmp.running.*", RUNNING_SERIES)
    resp = api.get(path)
    assert resp.status_code == 200
    assert all("history" not in entry for entry in resp.json.values())
    assert server.requests == []


FALLBACK_POOL = {
    "centos-7-x86_64": {"size": 4, "ready": 2, "history": [2]},
    "centos-8-x86_64": {"size": 2, "ready": 0, "history": [0]},
    "ubuntu": {"size": 1, "ready": 1, "history": [1]},
}
FALLBACK_RUNNING = {"centos": {"running": 1, "history": [1]}, "ubuntu": {"running": 1, "history": [1]}}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (READY_SERIES, 500),
        (b"{not json", 200),
        ({"target": "x"}, 200),
        ([{"target": "vmp.ready.ubuntu", "datapoints": [["3", 1]]}], 200),
        ([{"target": "vmp.ready.ubuntu", "datapoints": 5}], 200),
        ([{"datapoints": []}], 200),
    ],
    ids=["http-500", "not-json", "not-a-list", "string-value", "datapoints-not-a-list", "no-target"],
)
def test_a_bad_graphite_answer_falls_back_to_the_current_value(api, server, body, status):
    server.answer("vmp.ready.*", body, status=status)
    server.answer("vmp.running.*", body, status=status)
    assert api.get("/dashboard/stats/vmpooler/pool?history=1").json == FALLBACK_POOL
    assert api.get("/dashboard/stats/vmpooler/running?history=1").json == FALLBACK_RUNNING
    assert len(server.requests) == 2


def test_graphite_down_falls_back_to_the_current_value(make_api, redis, server):
    add_ready(redis, "ubuntu", "u1")
    address = server.address
    server.shutdown()
    server.server_close()
    api = make_api(CONFIG.format(server=address))
    resp = api.get("/dashboard/stats/vmpooler/pool?history=1")
    assert resp.status_code == 200
    assert resp.json["ubuntu"] == {"size": 1, "ready": 1, "history": [1]}


@pytest.mark.parametrize(("wait", "drip"), [(5.0, 0.0), (0.0, 0.1)], ids=["no-answer", "slow-body"])
def test_slow_graphite_is_given_up_on(api, server, monkeypatch, wait, drip):
    monkeypatch.setattr(graphite, "TIMEOUT", 0.3)
    server.answer("vmp.running.*", RUNNING_SERIES, wait=wait, drip=drip)  # the body takes > 40 s dripped
    started = time.monotonic()
    resp = api.get("/dashboard/stats/vmpooler/running?history=1")
    elapsed = time.monotonic() - started
    assert resp.json == FALLBACK_RUNNING
    assert elapsed < 4.0, f"waited {elapsed:.1f} s for graphite"
