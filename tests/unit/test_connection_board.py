"""The API workers' connection board (``vmpooler/http/balance.py``): two or three boards on one real
file stand for workers in separate processes, as each worker maps the same file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmpooler.http.balance import ConnectionBoard, balance_accepts


@pytest.fixture
def board_path(tmp_path: Path) -> Iterator[str]:
    path = ConnectionBoard.create(3, directory=str(tmp_path))
    yield path
    os.unlink(path)


def workers(path: str, count: int = 3, stale: float = 1.0) -> list[ConnectionBoard]:
    return [ConnectionBoard(path, slot, 3, stale=stale) for slot in range(count)]


def test_a_new_board_counts_no_worker(board_path: str) -> None:
    assert os.path.getsize(board_path) == 3 * 2 * 8
    assert ConnectionBoard(board_path, 0, 3).counts() == [None, None, None]


def test_the_worker_with_the_fewest_connections_accepts(board_path: str) -> None:
    a, b, c = workers(board_path)
    assert a.may_accept(5)  # alone on the board so far
    assert b.may_accept(3)
    assert not a.may_accept(5)  # b has fewer
    assert c.may_accept(3)  # as few as b: both may
    assert b.may_accept(3)
    assert not b.may_accept(4)  # c has fewer now
    assert a.counts() == [5, 4, 3]


def test_a_worker_that_left_or_went_quiet_does_not_count(board_path: str) -> None:
    a, b, _ = workers(board_path, stale=0.2)
    b.may_accept(0)
    assert not a.may_accept(4)
    b.leave()  # b drains
    assert a.may_accept(4)
    assert a.counts() == [4, None, None]
    b.may_accept(0)
    assert not a.may_accept(4)
    time.sleep(0.3)  # b stops writing (dead, hung)
    assert a.may_accept(4)
    assert a.counts() == [4, None, None]


def test_a_slot_must_be_on_the_board(board_path: str) -> None:
    with pytest.raises(ValueError, match="slot 3 is not one of the board's 3"):
        ConnectionBoard(board_path, 3, 3)


class FakeServer:
    """Fake of waitress's server: only its ``readable`` (which also closes timed-out connections) and
    its ``handle_accept``, counted."""

    def __init__(self, listening: bool) -> None:
        self.listening = listening
        self.calls = 0
        self.accepted = 0

    def readable(self) -> bool:
        self.calls += 1
        return self.listening

    def handle_accept(self) -> None:
        self.accepted += 1


def test_the_listener_is_polled_only_while_the_board_allows(board_path: str) -> None:
    a, b, _ = workers(board_path)
    server: Any = FakeServer(listening=True)
    channels = dict.fromkeys(range(6))  # listener, trigger, 4 connections
    balance_accepts(server, channels, a)
    assert server.readable()
    b.may_accept(2)
    assert not server.readable()
    assert server.calls == 2  # waitress's own readable ran both times
    assert a.counts()[0] == 6
    server.listening = False  # at waitress's connection limit: the count is still written
    channels.popitem()
    b.leave()
    assert not server.readable()
    assert a.counts()[0] == 5


def test_a_connection_is_accepted_only_if_the_board_still_allows(board_path: str) -> None:
    a, b, _ = workers(board_path)
    server: Any = FakeServer(listening=True)
    channels = dict.fromkeys(range(6))
    balance_accepts(server, channels, a)
    assert server.readable()  # the loop polls the listener...
    b.may_accept(2)  # ...another worker falls behind meanwhile
    server.handle_accept()
    assert server.accepted == 0  # left queued for it
    b.may_accept(6)
    server.handle_accept()
    assert server.accepted == 1
