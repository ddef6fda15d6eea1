"""Request bodies over the limit are refused over real HTTP, without taking the server down."""

from __future__ import annotations

import socket
import time

import pytest
import requests

pytestmark = pytest.mark.acceptance


def test_an_oversized_body_is_refused_and_the_server_stays_up(start_service) -> None:
    service = start_service({"deb": 1}, "api", workers=1)
    over = requests.get(service.url("/api/v3/status"), data=b"x" * 2_000_000, timeout=10)
    assert over.status_code == 413
    assert over.json() == {"ok": False, "error": "Request body too large"}
    # 50 MB announced: refused by waitress from the headers alone, before the body is read
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v3/status HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        started = time.monotonic()
        reply = sock.recv(200)
        assert reply.startswith(b"HTTP/1.1 413"), reply
        assert time.monotonic() - started < 5
    assert requests.get(service.url("/api/v3/status"), timeout=10).status_code == 200
