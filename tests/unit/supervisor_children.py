"""Child targets for tests/unit/test_supervisor.py (module-level, so that spawn can import them).

Every target appends ``"<pid> <monotonic time>"`` to ``<out_dir>/<name>.started`` once it runs, and the
long-running ones append the same to ``<name>.stopped`` from a ``finally`` block. They also return when
their parent goes away, so a failed test never leaves orphans behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from vmpooler.errors import ConfigError
from vmpooler.supervisor import ChildSpec, Heartbeat, run_supervised

__all__ = [
    "crash_after",
    "fail_boot",
    "hang_after_boot",
    "ignore_sigterm",
    "never_boot",
    "read_pids",
    "steady",
    "supervise_main",
]


def _append(path: Path) -> None:
    with path.open("a") as fh:
        fh.write(f"{os.getpid()} {time.monotonic()}\n")


def read_pids(out_dir: Path, name: str, event: str = "started") -> list[tuple[int, float]]:
    """Every ``(pid, monotonic time)`` that child ``name`` recorded for ``event``, oldest first."""
    path = out_dir / f"{name}.{event}"
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(pid), float(at)) for pid, at in rows]


def _idle(heartbeat: Heartbeat | None, seconds: float = 120) -> None:
    """Sleep in small steps, beating if given a heartbeat, until the parent goes away or time is up."""
    parent, deadline = os.getppid(), time.monotonic() + seconds
    while os.getppid() == parent and time.monotonic() < deadline:
        if heartbeat is not None:
            heartbeat.beat()
        time.sleep(0.05)


def steady(out_dir: str, name: str, *, heartbeat: Heartbeat) -> None:
    """A well-behaved child: beats until SIGTERM, then records that its ``finally`` ran."""
    _append(Path(out_dir) / f"{name}.started")
    try:
        _idle(heartbeat)
    finally:
        _append(Path(out_dir) / f"{name}.stopped")


def ignore_sigterm(out_dir: str, name: str, *, heartbeat: Heartbeat) -> None:
    """Ignores SIGTERM (set before its pid is recorded), so only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    steady(out_dir, name, heartbeat=heartbeat)


def crash_after(out_dir: str, name: str, up: float, *, heartbeat: Heartbeat) -> None:
    """Boots, stays up ``up`` seconds, then exits with code 1."""
    _append(Path(out_dir) / f"{name}.started")
    heartbeat.beat()
    time.sleep(up)
    sys.exit(1)


def fail_boot(out_dir: str, name: str, others: tuple[str, ...], error: str, *, heartbeat: Heartbeat) -> None:
    """Waits (bounded) until every child in ``others`` has started, then fails before its first beat."""
    _append(Path(out_dir) / f"{name}.started")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(read_pids(Path(out_dir), o) for o in others):
        time.sleep(0.02)
    if error == "config":
        raise ConfigError("pools.0.size: must be an integer")
    raise ValueError("a boot failure that is not a ConfigError")


def hang_after_boot(out_dir: str, name: str, *, heartbeat: Heartbeat) -> None:
    """Beats for a moment, then hangs without beating."""
    _append(Path(out_dir) / f"{name}.started")
    for _ in range(3):
        heartbeat.beat()
        time.sleep(0.05)
    _idle(None)


def never_boot(out_dir: str, name: str, *, heartbeat: Heartbeat) -> None:
    """Never sends its first beat."""
    _append(Path(out_dir) / f"{name}.started")
    _idle(None)


def supervise_main(out_dir: str, mode: str, stop_timeout: str) -> int:
    """Run a supervisor in this (main) process, for the signal tests; logs go to stderr."""
    logging.basicConfig(level=logging.INFO, format="%(processName)s %(levelname)s %(message)s")
    names = {"graceful": ("a", "b"), "reload": ("a", "b", "c")}[mode]
    specs = [ChildSpec(name=n, target=steady, args=(out_dir, n), heartbeat_timeout=1) for n in names]
    if mode == "graceful":
        specs.append(ChildSpec(name="stubborn", target=ignore_sigterm, args=(out_dir, "stubborn")))
    # a large back-off: a SIGHUP replacement that waited for it would be seen by the test
    return run_supervised(specs, stop_timeout=float(stop_timeout), backoff_initial=20)
