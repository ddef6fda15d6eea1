"""A rolling restart under load (issue 15): SIGHUP replaces every child of the service one at a time (API
workers drain: no new connections, ``Connection: close`` on their last responses; the provider process
releases its leases and its replacement takes them) while keep-alive clients check out and return VMs:
no request fails, no VM is handed out twice, inventory and Redis agree (``tests.support.ha``)."""

from __future__ import annotations

import pytest

from tests.support.ha import rolling_restart

pytestmark = pytest.mark.acceptance


def test_a_rolling_restart_under_load_fails_no_request(redis_url: str) -> None:
    report = rolling_restart(redis_url, threads=4)
    print("\n".join(report.lines()))
    assert report.replaced == 6, report.lines()  # api-1 and api-2 of each API node, each manager's provider
    assert report.checkouts > 0
    assert report.failures == {}, report.lines()
    assert report.handovers == 0, report.lines()  # a manager being replaced keeps its pools for its successor
    assert report.handed_twice == []
    assert report.problems == []
