"""Helpers shared by the benchmark scripts (never imported by the package or the tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

__all__ = ["bench_workdir", "free_port", "pct", "redis_server", "start_group", "stop_group"]


@contextlib.contextmanager
def bench_workdir(keep: bool) -> Iterator[Path]:
    """A fresh temp dir for one benchmark's config and logs: removed at the end, or kept and named
    (``--keep-workdir``)."""
    workdir = Path(tempfile.mkdtemp(prefix="vmpooler-bench-"))
    try:
        yield workdir
    finally:
        if keep:
            print(f"kept {workdir} (config and logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(
    workdir: Path, unixsocket: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A private redis-server on a free loopback port (and on ``unixsocket`` too when given)."""
    port = free_port()
    unix = ["--unixsocket", str(unixsocket), "--unixsocketperm", "700"] if unixsocket else []
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *unix,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def start_group(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group, stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM the leader ``proc`` (started by ``start_group``; a supervisor stops its own children),
    SIGKILL it after ``grace``; whatever of its process group outlives it is killed too."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
