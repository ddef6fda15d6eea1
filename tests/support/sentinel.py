"""A real Redis Sentinel deployment on loopback: redis-server processes (one primary, the rest its
replicas) watched by redis-server processes in sentinel mode, on free ports, in a temp dir.

The HA tests and ``scripts/ha_failover.py`` start one, kill its primary and watch the sentinels promote a
replica. Sentinels run as ``redis-server <conf> --sentinel`` (what Debian's ``redis-sentinel`` is), so
nothing beyond ``redis-server`` is needed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_lib

from tests.support.service import free_port
from tests.support.waiting import poll

__all__ = ["SentinelCluster"]

MASTER_NAME = "vmpooler"


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not on PATH (scripts/lib.sh installs it)")
    return found


class SentinelCluster:
    """``servers`` redis-servers (the first the primary) and ``sentinels`` sentinels with a quorum of a
    majority, failing a primary over after ``down_after_ms`` of silence.

    Attributes:
        master_name: the name the sentinels monitor the primary under.
        server_ports: the redis-servers' ports, the first the initial primary.
        sentinel_ports: the sentinels' ports.
    """

    def __init__(self, *, servers: int = 3, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.master_name = MASTER_NAME
        self.dir = Path(tempfile.mkdtemp(prefix="vmpooler-sentinel-"))
        self.server_ports = [free_port() for _ in range(servers)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._down_after_ms = down_after_ms
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> SentinelCluster:
        primary = self.server_ports[0]
        for port in self.server_ports:
            self._start_server(port, None if port == primary else primary)
        for port in self.server_ports[1:]:
            self._wait_replica_synced(port)
        quorum = len(self.sentinel_ports) // 2 + 1
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {primary} {quorum}\n"
                f"sentinel down-after-milliseconds {self.master_name} {self._down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 2\n"
            )
            self._spawn(port, [str(conf), "--sentinel"])
        for port in self.sentinel_ports:
            self._wait_ping(port)
        # every sentinel knows every replica (and the others) before a test may fail the primary over
        if not poll(self._sentinels_see_all, 20, interval=0.1):
            raise RuntimeError("the sentinels did not discover every replica and each other in 20 s")
        return self

    def _start_server(self, port: int, primary: int | None) -> None:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.dir), "--dbfilename", f"dump-{port}.rdb", "--databases", "16"]
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary)]
        self._spawn(port, args)
        self._wait_ping(port)

    def _spawn(self, port: int, args: list[str]) -> None:
        self._procs[port] = subprocess.Popen(
            [_redis_server(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_ping(self, port: int) -> None:
        def pong() -> bool:
            try:
                with redis_lib.Redis(port=port, socket_timeout=0.5) as client:
                    return bool(client.ping())
            except redis_lib.RedisError:
                return False

        if not poll(pong, 10, interval=0.05):
            raise RuntimeError(f"redis on port {port} did not start")

    def _wait_replica_synced(self, port: int) -> None:
        def synced() -> bool:
            with redis_lib.Redis(port=port, socket_timeout=0.5, decode_responses=True) as client:
                return client.info("replication").get("master_link_status") == "up"

        if not poll(synced, 20, interval=0.05):
            raise RuntimeError(f"replica on port {port} did not sync")

    def _sentinels_see_all(self) -> bool:
        for port in self.sentinel_ports:
            with redis_lib.Redis(port=port, socket_timeout=0.5, decode_responses=True) as client:
                try:
                    replicas = client.sentinel_slaves(self.master_name)
                    others = client.sentinel_sentinels(self.master_name)
                except redis_lib.RedisError:
                    return False
            if len(replicas) < len(self.server_ports) - 1 or len(others) < len(self.sentinel_ports) - 1:
                return False
        return True

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs.values():
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test does with it ---------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[str]:
        """``host:port`` of each sentinel, as ``:redis: sentinels`` takes them."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels' majority reports it (None while they do not agree)."""
        seen: list[int] = []
        for port in self.sentinel_ports:
            try:
                with redis_lib.Redis(port=port, socket_timeout=0.5, decode_responses=True) as client:
                    _host, primary = client.sentinel_get_master_addr_by_name(self.master_name)
                    seen.append(int(primary))
            except (redis_lib.RedisError, TypeError):
                continue
        for candidate in set(seen):
            if seen.count(candidate) > len(self.sentinel_ports) // 2:
                return candidate
        return None

    def client(self, port: int, db: int = 0) -> redis_lib.Redis:
        return redis_lib.Redis(port=port, db=db, decode_responses=True, socket_timeout=2)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the redis-server (or sentinel) on ``port``."""
        self._procs[port].send_signal(sig)
        if sig == signal.SIGKILL:
            self._procs[port].wait()

    def wait_failover(self, old_primary: int, timeout: float = 30) -> tuple[int, float]:
        """Wait until the sentinels' majority names a primary other than ``old_primary`` that answers as
        a primary; ``(its port, seconds waited)``."""
        started = time.monotonic()
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port is None or port == old_primary:
                return False
            try:
                with self.client(port) as client:
                    if client.info("replication").get("role") != "master":
                        return False
            except redis_lib.RedisError:
                return False
            found.append(port)
            return True

        if not poll(promoted, timeout, interval=0.05):
            raise RuntimeError(f"no failover from port {old_primary} in {timeout} s")
        return found[-1], time.monotonic() - started

    def restart(self, port: int, primary: int) -> None:
        """Start the server on ``port`` again as a replica of ``primary`` (a killed primary coming back)."""
        self._start_server(port, primary)
