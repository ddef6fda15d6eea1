"""A configuration that cannot run stops ``vmpooler`` before any child process is started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from vmpooler import keys

pytestmark = pytest.mark.acceptance

CASES = {
    "unloadable provider": (
        ":providers:\n  broken:\n    provider_class: no_such_provider\n",
        ":providers:.broken.provider_class: provider_class 'no_such_provider': unknown provider"
        " (known: dummy, vsphere)",
    ),
    "bad provider option": (
        ":providers:\n  broken:\n    provider_class: dummy\n    createvm_fail_percent: 500\n",
        ":providers:.broken.createvm_fail_percent: must be a number from 0 to 100, got 500.0",
    ),
}


@pytest.mark.parametrize(("section", "expected"), CASES.values(), ids=CASES.keys())
def test_a_provider_that_cannot_run_stops_vmpooler_before_any_child(
    redis_url: str, redis: redis_lib.Redis, tmp_path: Path, section: str, expected: str
) -> None:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(
        f":redis:\n  url: {redis_url}\n"
        + section
        + ":pools:\n  - name: a\n    template: t/a\n    size: 1\n    provider: broken\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "vmpooler", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert problems == [expected], result.stderr  # named once: the pool's provider is not blamed again
    # The manager publishes its pools just before it starts the provider children: nothing got that far.
    assert not redis.exists(keys.POOLS)
    assert not (tmp_path / ".vmpooler").exists()  # nor was an embedded Redis or any state dir made
    check = subprocess.run(
        [sys.executable, "-m", "vmpooler", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1
    assert f"{config}: error: {expected}" in check.stdout
