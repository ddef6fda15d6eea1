"""The gunicorn-style arbiter: keeps a desired set of spawned child processes alive.

Signal handlers only enqueue. The loop dispatches ``_handle_<sig>``, reaps, SIGKILLs hung children, starts
missing children whose back-off has expired, and waits on a wake-up pipe and the children's sentinels.
Reaping is per pid (``Process.exitcode`` is ``waitpid(pid, WNOHANG)``): ``waitpid(-1)`` would also reap
processes we do not own (multiprocessing's resource tracker, or a test's servers).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vmpooler import metrics
from vmpooler.errors import ConfigError
from vmpooler.proctitle import set_title, title_for

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["EXIT_BOOT_ERROR", "EXIT_OK", "ChildSpec", "Heartbeat", "Supervisor", "run_supervised"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BOOT_ERROR = 3


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@attrs.frozen
class ChildSpec:
    """One desired child: ``target(*args, heartbeat=Heartbeat)`` runs in a fresh spawned process.

    Attributes:
        name: process name and identity, e.g. ``"api-1"`` or ``"provider-vsphere1"``.
        target: a module-level (picklable) function; ``args`` must be picklable too.
        boot_timeout: seconds from start to the first ``heartbeat.beat()`` before the child counts as hung.
        heartbeat_timeout: seconds between beats before it counts as hung; None: no hang detection at all.
    """

    name: str
    target: Callable[..., None]
    args: tuple[Any, ...] = ()
    boot_timeout: float = 30
    heartbeat_timeout: float | None = 30

    @property
    def kind(self) -> str:
        """What the child is, the name's first word: ``api``, ``provider``; the restart metric's label."""
        return self.name.partition("-")[0]


class Heartbeat:
    """The child's side of hang detection; the first ``beat()`` also marks the end of the boot.

    An exception before the first beat (and a ``ConfigError`` at any time) exits with
    :data:`EXIT_BOOT_ERROR`, so a child should beat once booted even when it has no heartbeat timeout.
    """

    __slots__ = ("booted", "path")

    def __init__(self, path: str) -> None:
        self.path, self.booted = Path(path), False

    def beat(self) -> None:
        """Touch the file the supervisor watches; cheap enough to call every second."""
        self.path.touch()
        self.booted = True


def _die_with(parent: int) -> None:
    """Get SIGTERM when the supervisor dies, however it dies (SIGKILL, the OOM killer): no child
    serves unsupervised, and no listener outlives it. Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat and the supervisor's stop remain
        return
    if os.getppid() != parent:  # it died before we asked
        sys.exit(EXIT_OK)


_replaced = False  # in a child: its stop is a SIGHUP replacement (SIGUSR2), not the service stopping


def being_replaced() -> bool:
    """In a child: whether it stops to be replaced by a new process of the same kind (SIGHUP), so that
    it may keep what its successor takes over at once (a manager's place among the managers)."""
    return _replaced


def _replace(*_: object) -> None:
    """A child's SIGUSR2: the supervisor replaces it (SIGHUP); otherwise a stop like SIGTERM."""
    global _replaced
    _replaced = True
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    _terminate()


def _terminate(*_: object) -> None:
    """A child's SIGTERM: stop once. ``SystemExit`` unwinds through the ``finally`` blocks that stop the
    child's work; a second SIGTERM (the supervisor's, just after a process-group SIGTERM from systemd
    or a shell) is ignored, or it would interrupt that stop half-way. SIGKILL after the deadline remains."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(EXIT_OK)


def _child_main(name: str, payload: bytes, heartbeat_path: str, parent: int, restart_of: str = "") -> None:
    """Run one child (in the spawned process): reset signals, then call the target.

    ``restart_of`` (the child's kind) when the supervisor starts it again after its predecessor exited:
    the child counts the restart in ``vmpooler_process_restarts_total``, in its own metrics file, which
    outlives it (the supervisor's samples would not reach the files, see ``vmpooler.metrics``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGUSR2, _replace)
    _die_with(parent)
    multiprocessing.current_process().name = name
    set_title(title_for(name))
    if restart_of:
        metrics.PROCESS_RESTARTS.labels(restart_of).inc()
    heartbeat = Heartbeat(heartbeat_path)
    try:
        spec: ChildSpec = pickle.loads(payload)  # imports the target's module: part of the boot
        spec.target(*spec.args, heartbeat=heartbeat)
    except ConfigError as exc:
        log.error("%s: configuration error: %s", name, exc)
        sys.exit(EXIT_BOOT_ERROR)
    except Exception:
        log.exception("%s %s", name, "crashed" if heartbeat.booted else "failed to boot")
        sys.exit(1 if heartbeat.booted else EXIT_BOOT_ERROR)


@attrs.define
class _Child:
    spec: ChildSpec
    heartbeat_path: str = ""
    proc: BaseProcess | None = None
    pid: int | None = None
    started: float = 0.0
    last_beat: float | None = None  # monotonic time the last beat was seen; None while booting
    seen_mtime: int = 0
    kill_at: float = float("inf")  # SIGKILL deadline after a SIGTERM
    killed: bool = False
    failures: int = 0
    next_start: float = 0.0
    reload_pid: int | None = None  # SIGHUP: the pid being replaced
    restarting: bool = False  # the next start follows an exit (not a SIGHUP replacement): a restart

    @property
    def booted(self) -> bool:
        return self.last_beat is not None or self.spec.heartbeat_timeout is None


def _describe(code: int | None) -> str:
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


class Supervisor:
    """Keeps one spawned process per :class:`ChildSpec` alive until stopped.

    Args:
        specs: the desired children; names must be unique.
        stop_timeout: seconds a child gets between SIGTERM and SIGKILL.
        backoff_initial: restart delay after a crash; doubles per further crash, up to ``backoff_max``.
        backoff_max: the longest restart delay.
        backoff_reset: a child that was up this long restarts with ``backoff_initial`` again.
        on_boot_error: ``"halt"`` (stop all, :meth:`run` returns :data:`EXIT_BOOT_ERROR`) or ``"restart"``.
        on_exit: called with the pid of every child that exited, once it is reaped (e.g. to drop a
            dead process's metrics files).

    Raises:
        ValueError: duplicate names or an unknown ``on_boot_error``.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        stop_timeout: float = 10,
        backoff_initial: float = 0.5,
        backoff_max: float = 30,
        backoff_reset: float = 60,
        on_boot_error: str = "halt",
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        if on_boot_error not in ("halt", "restart") or len({s.name for s in specs}) != len(specs):
            raise ValueError(f"duplicate child names, or on_boot_error {on_boot_error!r} not halt|restart")
        self._stop_timeout, self._on_boot_error = stop_timeout, on_boot_error
        self._on_exit = on_exit
        self._backoff = (backoff_initial, backoff_max, backoff_reset)
        timeouts = [t for s in specs for t in (s.boot_timeout, s.heartbeat_timeout) if t is not None]
        self._tick = min([1.0, *(t / 2 for t in timeouts)])
        self._children = {s.name: _Child(s) for s in specs}
        self._signals: collections.deque[int] = collections.deque()
        self._reload_queue: collections.deque[str] = collections.deque()
        self._wake_r = self._wake_w = -1
        self._stop_requested = False
        self._result: int | None = None

    def children(self) -> dict[str, int | None]:
        """Name → pid of every desired child (None while it is not running); safe from any thread."""
        return {name: child.pid for name, child in self._children.items()}

    def stop(self) -> None:
        """Ask :meth:`run` to stop gracefully; callable from any thread, or before :meth:`run`."""
        self._stop_requested = True
        with contextlib.suppress(OSError):  # not running (yet), or the pipe is full: it wakes anyway
            os.write(self._wake_w, b"\0")

    def run(self) -> int:
        """Run until stopped or halted; every child is stopped and reaped before this returns.

        Signal handlers (SIGTERM, SIGINT, SIGHUP, SIGCHLD) are installed only in the main thread.

        Returns:
            :data:`EXIT_OK` after a stop, :data:`EXIT_BOOT_ERROR` after a child failed to boot.
        """
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        hb_dir = tempfile.mkdtemp(prefix="vmpooler-heartbeat-")
        for index, child in enumerate(self._children.values()):
            child.heartbeat_path = os.path.join(hb_dir, f"{index}.heartbeat")
        restore = self._install_signals()
        log.info("supervisor (pid %d) starting %d children", os.getpid(), len(self._children))
        try:
            while self._dispatch_signals() is None and self._reap() is None:
                self._kill_hung()
                self._reload_step()
                self._reconcile()
                self._wait()
        finally:
            self._stop_children()
            restore()
            wake_w, self._wake_w = self._wake_w, -1  # first, so that a late stop() writes nowhere
            os.close(wake_w)
            os.close(self._wake_r)
            shutil.rmtree(hb_dir, ignore_errors=True)
        log.info("supervisor stopped (exit code %s)", self._result)
        return EXIT_OK if self._result is None else self._result

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        old = {sig: signal.signal(sig, lambda signum, _: self._signals.append(signum)) for sig in sigs}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)

        return restore

    def _wait(self) -> None:
        now = time.monotonic()
        pending = [c.next_start - now for c in self._children.values() if c.proc is None]
        sentinels = [c.proc.sentinel for c in self._children.values() if c.proc is not None]
        multiprocessing.connection.wait([self._wake_r, *sentinels], max(0.0, min([self._tick, *pending])))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _dispatch_signals(self) -> int | None:
        while self._signals:
            getattr(self, f"_handle_{signal.Signals(self._signals.popleft()).name.lower()}")()
        if self._stop_requested and self._result is None:
            log.info("stop requested")
            self._result = EXIT_OK
        return self._result

    def _handle_sigterm(self) -> None:
        log.info("SIGTERM or SIGINT received: stopping gracefully")
        self._result = EXIT_OK

    _handle_sigint = _handle_sigterm

    def _handle_sighup(self) -> None:
        log.info("SIGHUP received: replacing every child, one at a time")
        self._reload_queue.extend(n for n in self._children if n not in self._reload_queue)

    def _handle_sigchld(self) -> None:
        pass  # the reap after every dispatch does the work

    def _reap(self) -> int | None:
        now = time.monotonic()
        for child in self._children.values():
            if child.proc is None or child.proc.exitcode is None:
                continue
            code, pid = child.proc.exitcode, child.pid
            child.proc.close()
            child.proc = child.pid = None
            up = now - child.started
            level = logging.INFO if pid == child.reload_pid else logging.WARNING
            log.log(level, "%s (pid %s) exited (%s) after %.1fs", child.spec.name, pid, _describe(code), up)
            self._exited(pid)
            if code == EXIT_BOOT_ERROR and self._on_boot_error == "halt":
                log.error("%s failed to boot: halting, stopping every child", child.spec.name)
                self._result = EXIT_BOOT_ERROR
                return self._result
            if pid == child.reload_pid:  # replaced on SIGHUP: no back-off
                child.next_start = now
                continue
            child.restarting = True
            self._back_off(child, now, up)
        return None

    def _back_off(self, child: _Child, now: float, up: float) -> None:
        initial, most, reset = self._backoff
        child.failures = 0 if up >= reset else child.failures
        delay = min(initial * 2**child.failures, most)
        child.failures += 1
        child.next_start = now + delay
        log.info("restarting %s in %.2fs", child.spec.name, delay)

    def _kill_hung(self) -> None:
        now = time.monotonic()
        for child in self._children.values():
            if child.proc is None or child.killed:
                continue
            with contextlib.suppress(OSError):
                mtime = os.stat(child.heartbeat_path).st_mtime_ns
                if mtime != child.seen_mtime:
                    child.seen_mtime, child.last_beat = mtime, now
            boot, beat = child.spec.boot_timeout, child.spec.heartbeat_timeout
            if now > child.kill_at:
                why = f"did not stop within {self._stop_timeout}s"
            elif beat is not None and child.last_beat is None and now - child.started > boot:
                why = f"did not boot within {boot}s"
            elif beat is not None and child.last_beat is not None and now - child.last_beat > beat:
                why = f"sent no heartbeat for {now - child.last_beat:.1f}s"
            else:
                continue
            log.error("%s (pid %s) %s: SIGKILL", child.spec.name, child.pid, why)
            child.proc.kill()
            child.killed = True

    def _reload_step(self) -> None:
        """After SIGHUP: SIGTERM the next child once the previous one's replacement has booted."""
        for child in self._children.values():
            if child.reload_pid is not None:
                if child.pid in (None, child.reload_pid) or not child.booted:
                    return  # the old one still runs, or its replacement is not up yet
                child.reload_pid = None
        while self._reload_queue:
            child = self._children[self._reload_queue.popleft()]
            if child.proc is not None:
                log.info("replacing %s (pid %s)", child.spec.name, child.pid)
                child.reload_pid, child.kill_at = child.pid, time.monotonic() + self._stop_timeout
                if child.pid is not None:  # a stop that says "a successor follows" (it may have exited)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGUSR2)
                return

    def _reconcile(self) -> None:
        now = time.monotonic()
        for child in self._children.values():
            if child.proc is not None or now < child.next_start:
                continue
            proc = multiprocessing.get_context("spawn").Process(
                name=child.spec.name,
                target=_child_main,
                args=(
                    child.spec.name,
                    bytes(ForkingPickler.dumps(child.spec)),
                    child.heartbeat_path,
                    os.getpid(),
                    child.spec.kind if child.restarting else "",
                ),
            )
            try:
                Path(child.heartbeat_path).touch()
                os.utime(child.heartbeat_path, ns=(0, 0))  # mtime 0: no beat yet
                proc.start()
            except OSError:  # e.g. EAGAIN from fork(): try again later, as after a crash
                log.exception("could not start %s", child.spec.name)
                self._back_off(child, now, 0.0)
                continue
            child.proc, child.pid, child.started, child.last_beat = proc, proc.pid, now, None
            child.seen_mtime, child.kill_at, child.killed = 0, float("inf"), False
            child.restarting = False
            log.info("started %s (pid %s)", child.spec.name, proc.pid)

    def _stop_children(self) -> None:
        """Graceful stop: SIGTERM all, wait up to ``stop_timeout``, SIGKILL the rest, reap all."""
        live = [(c, c.proc) for c in self._children.values() if c.proc is not None]
        for child, proc in live:
            if proc.exitcode is None:
                log.info("stopping %s (pid %s)", child.spec.name, child.pid)
                proc.terminate()
        deadline = time.monotonic() + self._stop_timeout
        while (busy := [p.sentinel for _, p in live if p.exitcode is None]) and time.monotonic() < deadline:
            multiprocessing.connection.wait(busy, max(0.0, deadline - time.monotonic()))
        for child, proc in live:
            if proc.exitcode is None:
                log.warning("%s did not stop within %ss: SIGKILL", child.spec.name, self._stop_timeout)
                proc.kill()
            proc.join()
            log.info("%s (pid %s) exited (%s)", child.spec.name, child.pid, _describe(proc.exitcode))
            proc.close()
            self._exited(child.pid)
            child.proc = child.pid = None

    def _exited(self, pid: int | None) -> None:
        if self._on_exit is None or pid is None:
            return
        try:
            self._on_exit(pid)
        except Exception:  # a failing hook must never take the supervisor down
            log.exception("the exit hook failed for pid %s", pid)


def run_supervised(specs: Sequence[ChildSpec], **kwargs: Any) -> int:
    """Build a :class:`Supervisor` from ``specs`` and ``kwargs``, run it and return its exit code."""
    return Supervisor(specs, **kwargs).run()
