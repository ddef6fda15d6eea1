"""Several managers on one Redis (issue 15): three real ``vmpooler manager`` processes split the pools by
rendezvous hashing, each pool held by one lease; a SIGKILLed manager's pools are adopted within the lease
plus 5 s and refilled; a fourth manager takes about a quarter of the pools and nothing else moves
(``tests.support.ha.managers_share_pools``; ``scripts/ha_managers.py`` prints the figures)."""

from __future__ import annotations

import pytest

from tests.support.ha import frozen_manager, managers_share_pools

pytestmark = pytest.mark.acceptance


def test_managers_share_adopt_and_rebalance_the_pools(redis_url: str) -> None:
    report = managers_share_pools(redis_url, pools=24, lease=3.0)
    print("\n".join(report.lines()))
    assert sum(report.split.values()) == 24 and all(n > 0 for n in report.split.values()), report.lines()
    assert report.adoption_seconds <= report.lease_seconds + 5, report.lines()
    assert report.refilled_seconds < 30, report.lines()
    assert report.moved_elsewhere == 0, report.lines()
    assert 2 <= report.moved_to_fourth <= 12, report.lines()  # about a quarter of 24
    assert report.problems == []


def test_a_manager_frozen_past_its_lease_writes_nothing_when_continued(redis_url: str) -> None:
    report = frozen_manager(redis_url, pools=12, size=2, lease=3.0)
    print("\n".join(report.lines()))
    assert report.frozen_pools > 0
    assert report.adoption_seconds <= report.lease_seconds + 5, report.lines()
    # it rejoins and gets its share back by rendezvous, but only by taking new leases: its old token
    # (the one its actors wrote with) is dead
    assert report.stale_tokens == [], report.lines()
    assert all(n <= report.size for n in report.most_vms.values()), report.lines()  # nothing cloned twice
    assert report.problems == []
