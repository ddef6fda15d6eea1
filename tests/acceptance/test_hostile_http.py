"""Hostile clients against the real service over real sockets: every answer is a 4xx (or a clean
close), never a 500, the server stays up, and a well-behaved client beside them keeps being served.

Inputs: JSON nested deep and bodies too large, malformed JSON and non-JSON bodies, lone surrogates and
invalid UTF-8, digits ``int()`` reads but ASCII does not (``²``, Arabic-Indic), huge and negative numbers,
path tricks (percent-encoded NUL and CR/LF, ``..``, very long segments), unknown methods, garbage request
lines, oversized headers, a request that never finishes (slow loris), and tokens that are not tokens.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.acceptance

DEB = "deb"
_HEALTHY_MAX = 2.0  # seconds: the slowest healthy request tolerated (they take milliseconds alone)


def raw(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` as it is and return the first bytes of the answer (b"" if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


def status_of(reply: bytes) -> int | None:
    """The status code of a raw HTTP answer, None when there was none."""
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


JSON_BODIES: list[tuple[str, str, bytes]] = [
    ("PUT", f"/api/v3/vm/{DEB}-x", nested(500)),
    ("PUT", f"/api/v3/vm/{DEB}-x", nested(50_000)),
    ("POST", "/api/v3/vm", nested(300)),
    ("POST", "/api/v3/vm", b'{"deb": ' + b"9" * 5000 + b"}"),
    ("POST", "/api/v3/vm", b"[" * 100_000),
    ("POST", "/api/v3/vm", b"\xff\xfe\x00garbage"),
    ("POST", "/api/v3/vm", b'{"deb": "\\ud800"}'),
    ("POST", "/api/v3/vm", b"not json at all"),
    ("POST", "/api/v3/vm", json.dumps({DEB: -1}).encode()),
    ("POST", "/api/v3/vm", json.dumps({DEB: 10**30}).encode()),
    ("PUT", f"/api/v3/vm/{DEB}-x", b'{"lifetime": "\xc2\xb2"}'),
    ("PUT", f"/api/v3/vm/{DEB}-x", json.dumps({"lifetime": "١٢"}).encode()),
    ("PUT", f"/api/v3/vm/{DEB}-x", json.dumps({"lifetime": 10**40}).encode()),
    ("PUT", f"/api/v3/vm/{DEB}-x", json.dumps({"tags": {"k": "a\ud800b"}}, ensure_ascii=True).encode()),
    ("PUT", f"/api/v3/vm/{DEB}-x", json.dumps({"tags": {f"t{i}": "v" * 100 for i in range(2000)}}).encode()),
    ("PUT", f"/api/v3/vm/{DEB}-x", json.dumps({"tags": ["not", "an", "object"]}).encode()),
    ("POST", f"/api/v3/vm/{DEB}-x/disk/²", b""),
    ("POST", f"/api/v1/vm/{DEB}-x/disk/{'9' * 25}", b""),
    ("POST", f"/api/v3/vm/{DEB}-x/snapshot", b"x" * 3_000_000),
    ("GET", "/api/v3/status", b"x" * 2_000_000),
]

RAW_REQUESTS: list[bytes] = [
    b"GET /api/v3/vm/%00%0d%0aX-Injected:%20yes HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/vm/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"BREW /api/v3/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello to a plain port\r\n\r\n",
    b"GET /api/v3/token/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /api/v3/token/" + b"t" * 5000 + b" HTTP/1.1\r\nHost: x\r\nX-AUTH-TOKEN: \xff\xfe\r\n\r\n",
    b"POST /api/v3/vm/deb HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /api/v3/vm/deb HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]

# Large but legal: answered normally (200) or refused (4xx), never a 5xx.
LARGE_BUT_LEGAL: list[bytes] = [
    b"GET /api/v3/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 200_000 + b"\r\n\r\n",
    b"GET /api/v3/status HTTP/1.1\r\nHost: x\r\nX-Bigger: " + b"h" * 400_000 + b"\r\n\r\n",
    b"GET /api/v3/vm?" + b"a=1&" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
]


class Healthy(threading.Thread):
    """A well-behaved client: checkout → get → return, and /status, in a loop; records each latency."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def _timed(self, method: str, path: str) -> requests.Response:
        started = time.monotonic()
        resp = requests.request(method, self.base + path, timeout=10)
        self.latencies.append(time.monotonic() - started)
        return resp

    def run(self) -> None:
        with requests.Session():
            while not self.stop.is_set():
                try:
                    got = self._timed("POST", f"/api/v3/vm/{DEB}")
                    if got.status_code == 200:
                        host = got.json()[DEB]["hostname"].split(".")[0]
                        for method, expect in (("GET", 200), ("DELETE", 200)):
                            resp = self._timed(method, f"/api/v3/vm/{host}")
                            if resp.status_code != expect:
                                self.failures.append(f"{method} {host}: {resp.status_code}")
                    elif got.status_code != 503:
                        self.failures.append(f"checkout: {got.status_code} {got.text[:200]}")
                    if self._timed("GET", "/api/v3/status").status_code != 200:
                        self.failures.append("status not 200")
                except requests.RequestException as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")


def test_hostile_clients_get_4xx_and_healthy_ones_stay_served(start_service, redis) -> None:
    service = start_service({DEB: 3}, "api", workers=2)
    vms = [f"{DEB}-h{i}" for i in range(200)]  # the manager is not running: seed ready VMs directly
    redis.sadd(f"vmpooler__ready__{DEB}", *vms)
    for vm in vms:
        redis.hset(f"vmpooler__vm__{vm}", mapping={"template": DEB, "pool": DEB})
    healthy = Healthy(service.url(""))
    healthy.start()
    time.sleep(0.5)
    answers: dict[str, int | None] = {}
    try:
        for method, path, body in JSON_BODIES:
            resp = requests.request(method, service.url(path), data=body, timeout=30)
            answers[f"{method} {path[:40]} {body[:30]!r}"] = resp.status_code
            if resp.status_code >= 400:
                assert resp.headers["content-type"].startswith("application/json"), (path, resp.text[:200])
                assert "error" in resp.json() or resp.json().get("ok") is False, resp.text[:200]
        for data in RAW_REQUESTS:
            answers[repr(data[:50])] = status_of(raw(service.port, data))
        legal = {repr(data[:60]): status_of(raw(service.port, data)) for data in LARGE_BUT_LEGAL}
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as loris:
            loris.sendall(b"POST /api/v3/vm HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            time.sleep(2)  # holds one connection open, half sent, while the healthy client goes on
    finally:
        healthy.stop.set()
        healthy.join(30)

    server_errors = {what: code for what, code in answers.items() if code is not None and code >= 500}
    assert server_errors == {}
    not_4xx = {what: code for what, code in answers.items() if code is not None and not 400 <= code < 500}
    assert not_4xx == {}
    assert all(code is None or code == 200 or 400 <= code < 500 for code in legal.values()), legal
    assert requests.get(service.url("/healthcheck"), timeout=10).status_code == 200  # still up
    assert healthy.failures == []
    assert len(healthy.latencies) > 20, "the healthy client hardly got served"
    assert max(healthy.latencies) < _HEALTHY_MAX, sorted(healthy.latencies)[-5:]
