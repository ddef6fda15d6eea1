"""The API workers' connection board: keep-alive connections spread evenly over the workers.

The workers share one listening socket and whichever wakes first accepts, so connections opened
together land unevenly (5 and 11 of 16 on two workers), and the clients of the fuller worker queue
longer behind its one GIL. Each worker writes its open connections and the time into its slot of a
small shared file; a worker looks for new connections only while no other live worker has fewer
(docs/architecture.md, "The API").
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from typing import Any

__all__ = ["STALE_SECONDS", "ConnectionBoard", "balance_accepts"]

STALE_SECONDS = 1.0  # a slot not written for this long is a dead or hung worker's: it does not count
_SLOT = 2  # doubles a slot: open connections, monotonic time written


class ConnectionBoard:
    """One worker's view of the board: ``slots`` slots of two doubles in a file all workers map; a slot
    not written for ``stale`` seconds does not count."""

    def __init__(self, path: str, slot: int, slots: int, *, stale: float = STALE_SECONDS) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} is not one of the board's {slots}")
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, slots * _SLOT * 8)
        finally:
            os.close(fd)
        self._cells: Any = memoryview(self._map).cast("d")
        self._stale = stale
        self._mine = slot * _SLOT
        self._others = [i for i in range(0, slots * _SLOT, _SLOT) if i != self._mine]

    @staticmethod
    def create(slots: int, directory: str | None = None) -> str:
        """A new board of ``slots`` empty slots (no worker counts yet); returns its path."""
        fd, path = tempfile.mkstemp(prefix="vmpooler-connections-", dir=directory)
        try:
            os.write(fd, bytes(slots * _SLOT * 8))
        finally:
            os.close(fd)
        return path

    def may_accept(self, connections: int) -> bool:
        """Write this worker's ``connections``; True unless a live worker has fewer."""
        cells, now = self._cells, time.monotonic()
        cells[self._mine] = connections
        cells[self._mine + 1] = now
        for other in self._others:
            if cells[other] < connections and now - cells[other + 1] < self._stale:
                return False
        return True

    def counts(self) -> list[int | None]:
        """Each slot's connections, None for a slot that does not count (empty, stale, left)."""
        now = time.monotonic()
        cells = self._cells
        return [
            int(cells[i]) if now - cells[i + 1] < self._stale else None for i in range(0, len(cells), _SLOT)
        ]

    def leave(self) -> None:
        """This worker stops counting (it drains): the others no longer wait for it to fill up."""
        self._cells[self._mine + 1] = 0.0

    def close(self) -> None:
        self._cells.release()
        self._map.close()


def balance_accepts(server: Any, channels: dict[int, Any], board: ConnectionBoard) -> None:
    """Make waitress's ``server`` poll its listener only while ``board`` lets this worker accept, and
    accept a connection only if the board still lets it when the connection arrives (the loop may wait
    in its poll for a while after it looked; meanwhile another worker may have fallen behind: the
    connection stays queued for it).

    ``channels`` is the server's socket map: the listener and its trigger (the same in every worker)
    and the connections; its size is what the worker writes.
    """
    readable, handle_accept = server.readable, server.handle_accept

    def readable_when_fewest() -> bool:
        # both always: waitress's closes timed-out connections, and a worker that may not accept
        # (at its connection limit, draining) still writes its count
        listening = readable()
        return board.may_accept(len(channels)) and listening

    def accept_when_fewest() -> None:
        if board.may_accept(len(channels)):
            handle_accept()

    server.readable = readable_when_fewest
    server.handle_accept = accept_when_fewest
