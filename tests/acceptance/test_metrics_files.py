"""The metrics files of the service's processes: a dead child's live gauges go with it, and the
directory the service made goes when it stops (it used to be left in /tmp)."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.acceptance


def metrics_dir_of(pid: int) -> Path | None:
    """The service's metrics directory: the one in the temp dir holding files of child ``pid`` (the
    environment in /proc does not show it: the supervisor set it after exec, and process titles
    overwrite a child's)."""
    for directory in Path(tempfile.gettempdir()).glob("vmpooler-metrics-*"):
        if list(directory.glob(f"*_{pid}.db")):
            return directory
    return None


def live_gauge_files(directory: Path, pid: int) -> list[str]:
    return sorted(p.name for p in directory.glob(f"gauge_live*_{pid}.db"))


def provider_pid(service) -> int | None:
    pids = [pid for pid, cmd in service.children().items() if cmd.startswith("vmpooler: provider")]
    return pids[0] if pids else None


def test_a_dead_childs_gauges_are_dropped_and_the_directory_goes_with_the_service(start_service):
    service = start_service({"deb": 2}, workers=1)
    wait_for(lambda: provider_pid(service), 20, "a provider child")
    first = provider_pid(service)
    assert first is not None
    wait_for(lambda: metrics_dir_of(first), 20, "the provider's metrics files")
    directory = metrics_dir_of(first)
    assert directory is not None
    wait_for(lambda: live_gauge_files(directory, first), 20, "the provider's live gauges")

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: provider_pid(service) not in (None, first), 20, "a new provider child")
    wait_for(lambda: not live_gauge_files(directory, first), 10, "the dead child's gauges dropped")
    second = provider_pid(service)
    assert second is not None
    wait_for(lambda: live_gauge_files(directory, second), 20, "the new provider's live gauges")

    assert service.stop() == 0
    assert not directory.exists()
