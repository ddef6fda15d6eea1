"""A child that cannot boot halts the whole tree instead of crash-looping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance


def test_unloadable_provider_halts_the_supervisor(redis_url: str, tmp_path: Path):
    config = tmp_path / "vmpooler.yaml"
    config.write_text(
        f":redis:\n  url: {redis_url}\n"
        ":providers:\n  broken:\n    provider_class: no_such_provider\n"
        ":pools:\n  - name: a\n    template: t/a\n    size: 1\n    provider: broken\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "vmpooler", "manager", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "no_such_provider" in result.stderr
    assert result.stderr.count("started provider-broken") == 1, "the broken child was restarted"
