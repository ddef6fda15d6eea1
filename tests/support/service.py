"""The real ``vmpooler`` command as a subprocess: start it on a config file, wait until it serves, see its
child processes, stop it. The acceptance fixtures and the chaos run both start the service here."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.waiting import poll

__all__ = [
    "Service",
    "ServiceError",
    "child_processes",
    "free_port",
    "is_child_of",
    "start_service",
]

BOOT_TIMEOUT = 20.0  # seconds for the service to answer /healthcheck (or start a provider child)
STOP_TIMEOUT = 20.0  # seconds a SIGTERM gets before SIGKILL


class ServiceError(Exception):
    """The service did not come up; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of ``pid`` from ``/proc``, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def is_child_of(pid: int, parent: int) -> bool:
    """True while ``pid`` runs (not a zombie) as a child of ``parent``."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == parent


def child_processes(parent: int) -> dict[int, str]:
    """The live (not zombie) children of ``parent``: pid → command line, from ``/proc``.

    A vmpooler child's command line is its process title once it has booted (``vmpooler: api-1``,
    ``vmpooler: provider dummy``).
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not is_child_of(int(entry.name), parent):
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


class Service:
    """A running ``vmpooler`` process tree (supervisor + children).

    Attributes:
        proc: the supervisor process.
        port: the API port on 127.0.0.1.
        log: the file holding the service's stdout and stderr.
        base: the API's base URL.
    """

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def alive(self) -> bool:
        """True while the supervisor runs."""
        return self.proc.poll() is None

    def children(self) -> dict[int, str]:
        """The supervisor's live children: pid → process title (see :func:`child_processes`)."""
        return child_processes(self.proc.pid)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request on a new connection: (status, decoded JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def healthy(self) -> bool:
        """True when ``/healthcheck`` answers 200 within a second."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/healthcheck")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):  # not listening yet, or too busy booting to answer
            return False
        finally:
            conn.close()

    def stop(self) -> int:
        """SIGTERM the supervisor, SIGKILL it after ``STOP_TIMEOUT``; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_service(
    config: Path,
    log: Path,
    *components: str,
    port: int | None = None,
    new_session: bool = False,
    timeout: float = BOOT_TIMEOUT,
) -> Service:
    """Start ``vmpooler [components] --config config`` on 127.0.0.1 and wait until it serves.

    It serves when ``/healthcheck`` answers 200, or, when only the manager runs, when a provider child
    has booted (named itself). The process runs in ``config``'s directory, without the caller's
    ``VMPOOLER_*`` variables.

    Args:
        config: the config file.
        log: where the service's stdout and stderr go.
        components: ``api``, ``manager`` or nothing (both).
        port: the API port; a free one by default.
        new_session: give the service a process group of its own (for ``os.killpg``).
        timeout: seconds to wait for it to serve.

    Returns:
        The running service.

    Raises:
        ServiceError: it exited or did not serve in time (it is stopped first).
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    command = [sys.executable, "-m", "vmpooler", *components, "--config", str(config)]
    command += ["--bind", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
            start_new_session=new_session,
        )
    service = Service(proc, port, log)
    with_api = not components or "api" in components

    def serving() -> bool:
        if not service.alive():
            return True  # stop waiting: it exited
        if with_api:
            return service.healthy()
        return any(title.startswith("vmpooler: provider ") for title in service.children().values())

    if not poll(serving, timeout, interval=0.1) or not service.alive():
        service.stop()
        raise ServiceError(f"vmpooler did not come up:\n{log.read_text(errors='replace')}")
    return service
