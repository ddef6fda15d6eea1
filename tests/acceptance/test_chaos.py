"""Chaos: the real service on a dummy provider that fails 20 % of everything, under random API load.

Runs ``scripts/chaos.py``'s :func:`run` for ``VMPOOLER_CHAOS_SECONDS`` (default 45) against the suite's
Redis, then up to 30 s of settling; see that script for what is loaded and checked. For a longer run
use the script: ``python scripts/chaos.py --minutes 10``.
"""

from __future__ import annotations

import os

import pytest

from tests.acceptance.conftest import load_script

pytestmark = pytest.mark.acceptance

# Read at import: the suite's autouse fixture removes VMPOOLER_* variables before each test runs.
CHAOS_SECONDS = float(os.environ.get("VMPOOLER_CHAOS_SECONDS", "45"))


def test_chaos_pools_recover_and_nothing_is_lost_or_handed_out_twice(
    start_service_yaml, redis_url, redis, tmp_path
):
    chaos = load_script("chaos")
    service = start_service_yaml(chaos.chaos_config(redis_url, tmp_path))
    report = chaos.run(
        service.port,
        redis,
        tmp_path,
        service.log,
        lambda: service.proc.poll() is None,
        seconds=CHAOS_SECONDS,
    )
    print(report.summary())
    assert report.problems == [], report.summary()
    out = report.outcomes
    assert out.count("return", 200) == len(out.handed_out) > 0
    assert report.log["clone failures"] > 0 and report.log["destroy failures"] > 0, "no chaos happened"
