"""The dummy provider's inventory: its records in memory and, given a ``filename``, the file that holds
them. Nothing here sleeps.

:class:`Inventory` holds the records behind one thread lock and, given a ``filename``, shares them
with every process that names the same file, as a hypervisor would:

* Every read first compares ``os.stat`` of the file with the version this process last read or wrote
  (device, inode, size, mtime) and reloads only when they differ. Writers never change the file in
  place, and the process keeps the version it saw open, so its inode cannot be reused by a newer one.
* Every change takes ``fcntl.flock`` on the file itself, reloads it if another process changed it,
  applies the change, writes a temporary file and renames it over the file, then unlocks. A lock
  taken on a file that was renamed over meanwhile excludes nobody, so it is taken again on the new
  one. Changes of concurrent threads share one such write (a group commit), and each call returns once
  its change is on disk, so nothing is left to write at stop.

We write the file as JSON (one VM per line; JSON is YAML, so YAML readers keep working) and read
JSON or YAML, so the original's backing file loads too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs
import yaml

from vmpooler.errors import ProviderError
from vmpooler.providers.dummy_state import DummyVM, InitialVM, to_initial_state

__all__ = ["Inventory", "InventoryFile", "Records", "by_pool"]


T = TypeVar("T")

Records = dict[str, dict[str, DummyVM]]
"""The VMs in memory: pool → VM name → record."""

# libyaml's safe loader where PyYAML was built with it, else the pure-Python one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def by_pool(vms: Iterable[DummyVM]) -> Records:
    records: Records = {}
    for vm in vms:
        records.setdefault(vm.pool, {})[vm.name] = vm
    return records


def _dump(data: dict[str, Any]) -> str:
    """The file's text: JSON with one VM per line. JSON is YAML, so whatever read the YAML file still
    reads it, and it costs a twentieth of PyYAML's emitter (32 ms instead of 650 ms for 2,000 VMs; the
    file is rewritten after every change)."""
    return '{"vms": [\n' + ",\n".join(json.dumps(vm, sort_keys=True) for vm in data["vms"]) + "\n]}\n"


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    """What tells one version of the file from another. A writer always renames a new file over it, and
    the version a process saw stays open there, so its inode is not reused while it is compared."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


_MISSING: tuple[int, ...] = ()  # the stamp of a file that does not exist


class InventoryFile:
    """The inventory file, shared by every process that names it. Not thread-safe: its ``read``,
    ``changed``, ``forget`` and the end of ``write`` run under the :class:`Inventory` lock."""

    def __init__(self, path: str, log: logging.Logger, seed: Callable[[InitialVM], DummyVM]) -> None:
        """Follow the inventory file at ``path``.

        Args:
            seed: turns a VM of the original dummy's backing file into a record (the pool's defaults).
        """
        self.path = path
        self._log = log
        self._seed = seed
        self._stamp: tuple[int, ...] | None = None  # of the version in memory; None: none yet
        self._held: weakref.finalize | None = None  # closes the descriptor that keeps that version

    def changed(self) -> bool:
        """Whether the file may differ from the version last read or written here (one ``stat``)."""
        try:
            now = _stamp(os.stat(self.path))
        except FileNotFoundError:
            now = _MISSING
        return now != self._stamp

    def forget(self) -> None:
        """Stop holding the version seen; the next ``changed`` is True."""
        self._remember(None, None)

    def read(self) -> list[DummyVM] | None:
        """The file's VMs, or None when it is missing or empty (being created); remembered as seen.

        The file is ours (``{"vms": [...]}``) or the original dummy's backing file (``{"pool": {...}}``,
        read like ``initial_state``).

        Raises:
            ProviderError: non-transient, the file cannot be read or is not an inventory.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._log.info("inventory file %s does not exist yet", self.path)
            self._remember(None, _MISSING)
            return None
        except OSError as exc:
            raise _unusable(self.path, exc) from exc
        try:
            stamp = _stamp(os.fstat(fd))
            with open(fd, "rb", closefd=False) as handle:
                text = handle.read().decode("utf-8")
            records = self._parse(text) if text.strip() else None
        except BaseException:
            os.close(fd)
            raise
        self._remember(fd, stamp)
        return records

    def _parse(self, text: str) -> list[DummyVM]:
        try:
            try:
                data = json.loads(text)  # what we write
            except ValueError:
                data = yaml.load(text, Loader=_Loader) or {}  # the original's YAML, or a hand-written file
            if isinstance(data, Mapping) and "pool" in data:
                return [self._seed(entry) for entry in to_initial_state({"pool": data["pool"]})]
            return [DummyVM(**entry) for entry in data.get("vms", [])]
        except (yaml.YAMLError, TypeError, ValueError, AttributeError) as exc:
            raise _unusable(self.path, exc) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock every process takes to change the file: ``flock`` on the file itself (created
        empty if missing). A writer renames a new file over it, so after the wait the lock is checked to
        be on the file that is there now, else taken again on that one.

        Raises:
            OSError: the file cannot be opened (its directory is missing, no permission).
        """
        while True:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    continue
                mine = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    yield
                    return
            finally:
                os.close(fd)  # and with it the lock

    def write(self, data: dict[str, Any], guard: threading.Lock) -> None:
        """Replace the file by ``data`` (a ``snapshot``) atomically: a temporary file, fsync, rename.
        The caller holds ``locked()``. The rename and remembering the new version happen under ``guard``
        (the records' lock), so that no reader in this process takes our own write for another's."""
        fd, tmp = tempfile.mkstemp(
            prefix=".dummy-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(self.path))
        )
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(_dump(data).encode("utf-8"))
            os.fsync(fd)
            stamp = _stamp(os.fstat(fd))
            with guard:
                os.replace(tmp, self.path)
                self._remember(fd, stamp)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def snapshot(vms: Iterable[DummyVM]) -> dict[str, Any]:
        """The file form of ``vms``, a deep copy: take it while the records cannot change."""
        return {"vms": [attrs.asdict(vm) for vm in vms]}

    def _remember(self, fd: int | None, stamp: tuple[int, ...] | None) -> None:
        if self._held is not None:
            self._held()  # closes the descriptor of the previous version
        self._held = None if fd is None else weakref.finalize(self, os.close, fd)
        self._stamp = stamp


def _unusable(path: str, exc: BaseException) -> ProviderError:
    error = ProviderError(f"cannot load dummy inventory {path}: {exc}")
    error.transient = False
    return error


@attrs.define
class _Change:
    update: Callable[[Records], Any]
    done: bool = False
    result: Any = None
    error: Exception | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Inventory:
    """The VM records of one provider, behind one thread lock, and with a file, shared through it with
    every process that uses the same file (how: in the module docstring)."""

    def __init__(self, vms: Iterable[DummyVM], file: InventoryFile | None, log: logging.Logger) -> None:
        self._lock = threading.Lock()
        self._vms = by_pool(vms)
        self._file = file
        self._log = log
        self._cond = threading.Condition()  # the group commit: a queue of changes and one writer
        self._queue: list[_Change] = []
        self._writing = False

    def open(self) -> None:
        """At start: take the file's VMs; when there is no file yet, write ours (``initial_state``).

        Raises:
            ProviderError: non-transient, the file cannot be read or is not an inventory.
        """
        if self._file is None:
            return
        with self._lock:
            self._file.forget()
            records = self._file.read()
            if records is not None:
                self._vms = by_pool(records)
            seed = records is None and any(self._vms.values())
        if seed:  # under the file lock, unless another process created the file meanwhile
            self.change(lambda _vms: None)

    def close(self) -> None:
        """Stop following the file; nothing is written, every change already is."""
        if self._file is not None:
            with self._lock:
                self._file.forget()

    def read(self, query: Callable[[Records], T]) -> T:
        """``query(records)`` on the newest records, under the thread lock. It must not change them.

        Raises:
            ProviderError: non-transient, the file changed and cannot be read.
        """
        with self._lock:
            self._refresh()
            return query(self._vms)

    def change(self, update: Callable[[Records], T]) -> T:
        """Apply ``update(records)`` to the newest records and return its result once it is on disk.

        With a file, ``update`` runs under its lock after any other process's change was reloaded, and
        maybe on another caller's thread (the one writing for a group of concurrent changes). It must
        raise before it changes anything; its exception is raised here. Write errors are logged, and the
        change is kept in memory.
        """
        if self._file is None:
            with self._lock:
                return update(self._vms)
        change = _Change(update)
        with self._cond:
            self._queue.append(change)
            while self._writing and not change.done:
                self._cond.wait()
            lead = not change.done
            if lead:
                self._writing = True
                batch, self._queue = self._queue, []
        if lead:
            try:
                self._commit(batch)
            except Exception as exc:  # a bug; every change of the batch hears of it
                for item in batch:
                    item.error = exc
            finally:
                with self._cond:
                    for item in batch:
                        item.done = True
                    self._writing = False
                    self._cond.notify_all()
        return change.outcome()

    def _commit(self, batch: list[_Change]) -> None:
        """Lock the file, reload it if changed, apply ``batch`` in order, write once, unlock."""
        assert self._file is not None
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._file.locked())
                shared = True
            except OSError as exc:
                self._log.error(
                    "cannot write dummy inventory %s (%s); keeping changes in memory", self._file.path, exc
                )
                shared = False
            with self._lock:
                try:
                    if shared:
                        self._refresh()
                except ProviderError as exc:
                    for item in batch:
                        item.error = exc
                    return
                applied = [self._apply(item) for item in batch]
                vms = (vm for pool in sorted(self._vms) for _, vm in sorted(self._vms[pool].items()))
                data = InventoryFile.snapshot(vms) if shared and any(applied) else None
            if data is not None:
                try:
                    self._file.write(data, self._lock)
                except (OSError, TypeError, ValueError):
                    self._log.exception(
                        "cannot write dummy inventory %s; keeping it in memory", self._file.path
                    )

    def _apply(self, change: _Change) -> bool:
        try:
            change.result = change.update(self._vms)
        except Exception as exc:
            change.error = exc
            return False
        return True

    def _refresh(self) -> None:
        """Reload the records if another process changed the file; the caller holds ``self._lock``."""
        if self._file is not None and self._file.changed():
            records = self._file.read()
            if records is not None:  # a missing or empty file: keep what we have
                self._vms = by_pool(records)
