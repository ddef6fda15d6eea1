"""An API worker's responses leave in one send: header and body together (``http/serve.py``'s task).

waitress sends each piece the moment it is written, so a header and body written apart left as two
segments, two system calls and two wake-ups of the client. A real waitress server on a loopback port
serves a small WSGI app through the worker's channel class; a subclass of it records each ``send``,
and a wrapper of ``vmpooler.nogil.send_now`` the task's own (a whole response sent at once).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import waitress

from tests.support.waiting import poll
from vmpooler import nogil
from vmpooler.http.serve import WorkerChannel, quick_trigger

LIBC_SEND = nogil.send_now  # libc's send, as vmpooler.nogil found it
BODY = b'{"ok": true, "bench": {"hostname": "bench-0000001.example.com"}}'


class CountingChannel(WorkerChannel):
    """The worker's channel, recording what each ``send`` carried: waitress's own, and the task's
    direct one (``vmpooler.nogil.send_now``, wrapped by the ``port`` fixture)."""

    sent: list[bytes] = []

    def send(self, data: Any, do_close: bool = True) -> int:
        CountingChannel.sent.append(bytes(data))
        return int(super().send(data, do_close))


def recording(send_now: Any, fraction: float = 1.0) -> Any:
    """``send_now`` that records what it sent; with ``fraction`` < 1 it offers only that part of the
    data (as a full send buffer would take only part of it)."""

    def send(fd: int, data: bytes, length: int, flags: int) -> int:
        offered = data[: max(1, int(length * fraction))]
        sent = int(send_now(fd, offered, len(offered), flags))
        if sent > 0:
            CountingChannel.sent.append(offered[:sent])
        return sent

    return send


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/pieces":  # a declared length, written in two parts
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"abc", b"def"]
    if path == "/unsized":  # no length: waitress chunks it
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"abc", b"def"]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A waitress server serving ``app`` as an API worker does (its channel, its trigger), running."""
    CountingChannel.sent.clear()
    monkeypatch.setattr(nogil, "send_now", recording(LIBC_SEND))
    server: Any = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    server.channel_class = CountingChannel
    quick_trigger(server)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)


@pytest.fixture
def port(server: Any) -> int:
    return int(server.effective_port)


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_a_whole_body_leaves_with_its_header_in_one_send(port: int) -> None:
    status, headers, body = request(port, "GET", "/vm")
    assert (status, body, headers["Content-Length"]) == (200, BODY, str(len(BODY)))
    [sent] = CountingChannel.sent
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and sent.endswith(BODY)


def test_what_a_full_send_buffer_leaves_goes_out_after_it(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nogil, "send_now", recording(LIBC_SEND, fraction=0.5))
    status, _headers, body = request(port, "GET", "/vm")
    assert (status, body) == (200, BODY)
    first, rest = CountingChannel.sent
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and (first + rest).endswith(BODY)


def test_waitress_sends_it_without_the_c_library(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nogil, "send_now", None)
    status, _headers, body = request(port, "GET", "/vm")
    assert (status, body) == (200, BODY)
    [sent] = CountingChannel.sent
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and sent.endswith(BODY)


def test_other_responses_are_what_waitress_writes(port: int) -> None:
    assert request(port, "HEAD", "/vm")[::2] == (200, b"")
    assert request(port, "GET", "/empty")[::2] == (204, b"")
    assert request(port, "GET", "/pieces")[::2] == (200, b"abcdef")
    status, headers, body = request(port, "GET", "/unsized")
    assert (status, body, headers.get("Transfer-Encoding")) == (200, b"abcdef", "chunked")


# -- what the I/O thread reads, and its trigger ---------------------------------------------------------


def raw_exchange(port: int, pieces: list[bytes], responses: int) -> bytes:
    """Send ``pieces`` on one connection, a little apart, and read until ``responses`` bodies came."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        got = b""
        while got.count(BODY) < responses:
            data = sock.recv(65536)
            if not data:
                break
            got += data
        return got


def test_a_request_read_in_pieces_and_two_in_one_segment(port: int) -> None:
    request = b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_exchange(port, [request[:7], request[7:20], request[20:]], 1).count(BODY) == 1
    assert raw_exchange(port, [request + request], 2).count(BODY) == 2


def test_the_io_thread_reads_without_the_c_library(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nogil, "recv_now", None)
    assert request(port, "GET", "/vm")[::2] == (200, BODY)
    assert raw_exchange(port, [b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n"], 1).count(BODY) == 1


def test_a_client_that_leaves_is_closed(server: Any, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n")
        assert BODY in sock.recv(65536)

    def channels() -> int:
        return sum(isinstance(c, WorkerChannel) for c in list(server._map.values()))

    assert poll(lambda: channels() == 0, 5)


FILL_THE_TRIGGER = """
import waitress
from vmpooler.http.serve import quick_trigger
server = waitress.create_server(lambda environ, start_response: [], host="127.0.0.1", port=0)
quick_trigger(server)
for _ in range(200_000):  # nobody drains it: a pipe holds 64 KiB, a blocking write with the GIL held hangs
    server.trigger.pull_trigger()
print("pulled")
"""


def test_a_full_trigger_pipe_drops_the_pull() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FILL_THE_TRIGGER], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "pulled\n"), done.stderr


def test_the_quick_trigger_wakes_the_loop(server: Any, port: int) -> None:
    for _ in range(1000):
        server.trigger.pull_trigger()
    assert request(port, "GET", "/unsized")[::2] == (200, b"abcdef")  # sent by the I/O loop, woken
    assert request(port, "GET", "/vm")[::2] == (200, BODY)
