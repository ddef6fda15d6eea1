"""Chaos: the real service on a dummy provider that fails 20 % of everything, under random API load.

Runs ``tests.support.chaos``'s :func:`run` for ``VMPOOLER_CHAOS_SECONDS`` (default 45) against the suite's
Redis, then up to 30 s of settling; see that package for what is loaded and checked. For a longer or
larger run use the script: ``python scripts/chaos.py --minutes 10 [--pools 100 --size 20]``.
"""

from __future__ import annotations

import os

import pytest

from tests.support import chaos

pytestmark = pytest.mark.acceptance

# Read at import: the suite's autouse fixture removes VMPOOLER_* variables before each test runs.
CHAOS_SECONDS = float(os.environ.get("VMPOOLER_CHAOS_SECONDS", "45"))


def test_chaos_pools_recover_and_nothing_is_lost_or_handed_out_twice(
    start_service_yaml, redis_url, redis, tmp_path
):
    plan = chaos.ChaosPlan(workdir=tmp_path)
    service = start_service_yaml(plan.config_yaml(redis_url))
    report = chaos.run(service, redis, plan, seconds=CHAOS_SECONDS)
    print(report.summary())
    assert report.problems == [], report.summary()
    out = report.outcomes
    assert out.count("return", 200) == len(out.handed_out) > 0
    assert report.error_count("clone_failed") > 0, "no clone failed: no chaos happened"
    assert report.error_count("destroy_failed") > 0, "no destroy failed: no chaos happened"
