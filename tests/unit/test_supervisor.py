"""The supervisor, with real spawned processes: start, restart, back-off, boot errors, hangs, signals.

Children record themselves in files under ``tmp_path`` (see ``supervisor_children``). Most tests run the
supervisor in a thread of the test process (no signal handlers there; ``stop()`` ends it), so its children
are ours and "gone from /proc" proves they were reaped. The signal tests run it as a subprocess.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.unit import supervisor_children as kids
from tests.unit.supervisor_children import read_pids
from vmpooler.supervisor import EXIT_BOOT_ERROR, EXIT_OK, ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parents[2]


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` ("Z" for a zombie), or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z")


def gone(pid: int) -> bool:
    """Neither running nor left as a zombie."""
    return _proc_state(pid) is None


def first_pid(out_dir: Path, name: str) -> int:
    return read_pids(out_dir, name)[0][0]


class Running:
    """A supervisor running in a thread of the test process."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.sup.run()

    def join(self, timeout: float = 20) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the supervisor did not return"
        return self.rc

    def finish(self) -> int | None:
        self.sup.stop()
        return self.join()


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    runs: list[Running] = []

    def _start(specs: list[ChildSpec], **kwargs: Any) -> Running:
        runs.append(Running(Supervisor(specs, **kwargs)))
        return runs[-1]

    yield _start
    for run in runs:
        run.sup.stop()
        run.thread.join(30)


@pytest.fixture(autouse=True)
def _supervisor_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vmpooler.supervisor")


def steady(out_dir: Path, name: str, **kwargs: Any) -> ChildSpec:
    return ChildSpec(name=name, target=kids.steady, args=(str(out_dir), name), **kwargs)


EXITED = "%s (pid %s) exited (%s) after %.1fs"
RESTARTING = "restarting %s in %.2fs"
STARTED = "started %s (pid %s)"


def restarts(caplog: pytest.LogCaptureFixture) -> list[tuple[logging.LogRecord, logging.LogRecord]]:
    """Each "restarting" log record paired with the "started" record that followed it."""
    pairs, pending = [], None
    for record in caplog.records:
        if record.msg == RESTARTING:
            pending = record
        elif record.msg == STARTED and pending is not None:
            pairs.append((pending, record))
            pending = None
    return pairs


def logged(caplog: pytest.LogCaptureFixture, template: str) -> list[tuple[Any, ...]]:
    """The args of every supervisor log record made from ``template``."""
    return [tuple(r.args or ()) for r in caplog.records if r.msg == template]


def test_children_start_and_are_reaped_on_stop(tmp_path: Path, start: Callable[..., Running]) -> None:
    run = start([steady(tmp_path, "api-1"), steady(tmp_path, "provider-dummy")])
    wait_for(lambda: read_pids(tmp_path, "api-1") and read_pids(tmp_path, "provider-dummy"), 15, "children")
    pids = {name: first_pid(tmp_path, name) for name in ("api-1", "provider-dummy")}
    wait_for(lambda: run.sup.children() == pids, 5, "children() to show both pids")
    assert all(alive(pid) for pid in pids.values())

    assert run.finish() == EXIT_OK
    assert all(gone(pid) for pid in pids.values()), "children left running or as zombies"
    assert {pid for name in pids for pid, _ in read_pids(tmp_path, name, "stopped")} == set(pids.values())
    assert run.sup.children() == {"api-1": None, "provider-dummy": None}


def test_killed_child_is_restarted(
    tmp_path: Path, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    run = start([steady(tmp_path, "a"), steady(tmp_path, "b")], backoff_initial=0.05)
    wait_for(lambda: read_pids(tmp_path, "a") and read_pids(tmp_path, "b"), 15, "children")
    old_a, b = first_pid(tmp_path, "a"), first_pid(tmp_path, "b")

    os.kill(old_a, signal.SIGKILL)
    wait_for(lambda: len(read_pids(tmp_path, "a")) == 2, 15, "a restarted")
    new_a = read_pids(tmp_path, "a")[1][0]
    assert new_a != old_a and gone(old_a) and alive(new_a)
    wait_for(lambda: run.sup.children()["a"] == new_a, 5, "children() to show the new pid")
    assert run.sup.children()["b"] == b and len(read_pids(tmp_path, "b")) == 1
    assert ("a", old_a, "signal SIGKILL") in [args[:3] for args in logged(caplog, EXITED)]
    assert run.finish() == EXIT_OK
    assert gone(new_a) and gone(b)


def test_repeated_crashes_back_off_exponentially(
    tmp_path: Path, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    spec = ChildSpec(name="crashy", target=kids.crash_after, args=(str(tmp_path), "crashy", 0.0))
    run = start([spec], backoff_initial=0.2, backoff_max=0.8)
    wait_for(lambda: len(read_pids(tmp_path, "crashy")) >= 5, 20, "five starts")
    assert run.finish() == EXIT_OK

    delays = [delay for _, delay in logged(caplog, RESTARTING)][:4]
    assert delays == [0.2, 0.4, 0.8, 0.8]  # doubling, capped at backoff_max
    # as the children saw it (spawn time included): never sooner than the back-off
    starts = [at for _, at in read_pids(tmp_path, "crashy")][:5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True)), (gaps, delays)
    # as the supervisor saw it (decision to restart → start), free of spawn-time jitter: growing
    waits = [started.created - restarting.created for restarting, started in restarts(caplog)][:4]
    assert all(wait >= delay for wait, delay in zip(waits, delays, strict=True)), (waits, delays)
    assert waits[0] < waits[1] < waits[2], waits


def test_back_off_resets_after_a_long_uptime(
    tmp_path: Path, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    spec = ChildSpec(name="flaky", target=kids.crash_after, args=(str(tmp_path), "flaky", 0.4))
    run = start([spec], backoff_initial=0.1, backoff_reset=0.3)
    wait_for(lambda: len(read_pids(tmp_path, "flaky")) >= 4, 20, "four starts")
    assert run.finish() == EXIT_OK
    assert [delay for _, delay in logged(caplog, RESTARTING)][:3] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize("error", ["config", "other"])
def test_boot_error_halts_the_whole_tree(tmp_path: Path, start: Callable[..., Running], error: str) -> None:
    bad = ChildSpec(name="bad", target=kids.fail_boot, args=(str(tmp_path), "bad", ("a", "b"), error))
    run = start([steady(tmp_path, "a"), bad, steady(tmp_path, "b")], backoff_initial=0.05)

    assert run.join(30) == EXIT_BOOT_ERROR
    others = [first_pid(tmp_path, "a"), first_pid(tmp_path, "b")]
    assert all(gone(pid) for pid in others), "the other children were not stopped and reaped"
    assert len(read_pids(tmp_path, "bad")) == 1, "a boot error must not be retried"
    assert read_pids(tmp_path, "a", "stopped") and read_pids(tmp_path, "b", "stopped")  # gracefully


def test_boot_error_restarts_when_asked(tmp_path: Path, start: Callable[..., Running]) -> None:
    bad = ChildSpec(name="bad", target=kids.fail_boot, args=(str(tmp_path), "bad", (), "config"))
    run = start([bad], backoff_initial=0.05, on_boot_error="restart")
    wait_for(lambda: len(read_pids(tmp_path, "bad")) >= 2, 15, "a restart after the boot error")
    assert run.finish() == EXIT_OK


@pytest.mark.parametrize(
    ("target", "timeouts"),
    [(kids.hang_after_boot, {"heartbeat_timeout": 0.5}), (kids.never_boot, {"boot_timeout": 1.5})],
    ids=["stops-beating", "never-boots"],
)
def test_hung_child_is_killed_and_restarted(
    tmp_path: Path,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
    target: Callable[..., None],
    timeouts: dict[str, float],
) -> None:
    run = start(
        [ChildSpec(name="stuck", target=target, args=(str(tmp_path), "stuck"), **timeouts)],
        backoff_initial=0.05,
    )
    wait_for(lambda: len(read_pids(tmp_path, "stuck")) >= 2, 15, "the hung child to be replaced")
    first, second = (pid for pid, _ in read_pids(tmp_path, "stuck")[:2])
    assert first != second and gone(first)
    assert ("stuck", first, "signal SIGKILL") in [args[:3] for args in logged(caplog, EXITED)]
    assert run.finish() == EXIT_OK
    assert gone(second)


def test_stop_before_run_and_bad_arguments() -> None:
    supervisor = Supervisor([])
    supervisor.stop()
    assert supervisor.run() == EXIT_OK
    spec = ChildSpec(name="a", target=kids.steady)
    with pytest.raises(ValueError):
        Supervisor([spec, spec])
    with pytest.raises(ValueError):
        Supervisor([spec], on_boot_error="ignore")


# --- the supervisor as its own process, driven by signals -------------------------------------------

_MAIN = (
    "import sys; from tests.unit.supervisor_children import supervise_main as m; sys.exit(m(*sys.argv[1:]))"
)


@pytest.fixture
def supervisor_process(tmp_path: Path) -> Iterator[Callable[[str, float], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def _start(mode: str, stop_timeout: float) -> subprocess.Popen[bytes]:
        with (tmp_path / "supervisor.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _MAIN, str(tmp_path), mode, str(stop_timeout)],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return procs[-1]

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_and_kills_the_stubborn(
    tmp_path: Path, supervisor_process: Callable[[str, float], subprocess.Popen[bytes]], sig: signal.Signals
) -> None:
    proc = supervisor_process("graceful", 1.0)
    names = ("a", "b", "stubborn")
    wait_for(lambda: all(read_pids(tmp_path, n) for n in names), 20, "all children")
    pids = {name: first_pid(tmp_path, name) for name in names}

    began = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(15) == EXIT_OK
    took = time.monotonic() - began
    assert 1.0 <= took < 5.0, f"stop took {took:.2f}s with stop_timeout=1.0"
    assert all(gone(pid) for pid in pids.values())
    assert read_pids(tmp_path, "a", "stopped") and read_pids(tmp_path, "b", "stopped")  # finally ran
    assert not read_pids(tmp_path, "stubborn", "stopped")
    log = (tmp_path / "supervisor.log").read_text()
    assert "stubborn did not stop within 1.0s: SIGKILL" in log, log
    assert "Traceback" not in log, log


def test_sighup_replaces_children_one_at_a_time(
    tmp_path: Path, supervisor_process: Callable[[str, float], subprocess.Popen[bytes]]
) -> None:
    proc = supervisor_process("reload", 5.0)
    names = ("a", "b", "c")
    wait_for(lambda: all(read_pids(tmp_path, n) for n in names), 20, "all children")
    old = {name: first_pid(tmp_path, name) for name in names}

    proc.send_signal(signal.SIGHUP)
    # backoff_initial is 20 s: replacements that waited for a back-off would time out here
    wait_for(lambda: all(len(read_pids(tmp_path, n)) == 2 for n in names), 15, "every child replaced")
    for name in names:
        assert gone(old[name])
        assert read_pids(tmp_path, name, "stopped")[0][0] == old[name]  # SIGTERM: graceful
    # one at a time: each old child stopped only after the previous one's replacement was up
    for previous, following in itertools.pairwise(names):
        assert read_pids(tmp_path, following, "stopped")[0][1] >= read_pids(tmp_path, previous)[1][1]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == EXIT_OK
    assert all(gone(pid) for name in names for pid, _ in read_pids(tmp_path, name))
