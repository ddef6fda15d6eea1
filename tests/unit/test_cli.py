"""The command line: check-config, component words, config errors (run as real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "config"


def vmpooler(*args: str, cwd: Path = ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmpooler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_check_config_accepts_the_example():
    result = vmpooler("check-config", "config/vmpooler.example.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_check_config_prints_every_problem():
    result = vmpooler("check-config", str(FIXTURES / "broken_many.yaml"))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(problems) == 7
    assert all(":" in line for line in problems)


def test_check_config_without_a_path_is_a_usage_error():
    assert vmpooler("check-config").returncode == 2


def test_unknown_component_is_a_usage_error():
    result = vmpooler("apii")
    assert result.returncode == 2
    assert "unknown component 'apii'" in result.stderr


def test_bad_config_fails_at_start_naming_the_key(tmp_path: Path):
    config = tmp_path / "vmpooler.yaml"
    config.write_text(":config:\n  task_limit: many\n:pools:\n  - name: a\n    template: t/a\n    size: 1\n")
    result = vmpooler("api", "--config", str(config), "--port", "0", cwd=tmp_path)
    assert result.returncode == 3
    assert ":config:.task_limit" in result.stderr


def test_missing_config_file_fails_with_its_path(tmp_path: Path):
    result = vmpooler("api", cwd=tmp_path)
    assert result.returncode == 3
    assert "vmpooler.yaml" in result.stderr
