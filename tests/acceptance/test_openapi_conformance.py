"""The OpenAPI document matches the behaviour: schemathesis against the real server, bounded.

Every operation of ``/api/v3/openapi.json`` (the dashboard has its own server, ``/``, and its own
tests) is called with generated data, in example, coverage, fuzzing and stateful phases: no answer may
be a server error, and every status code, content type, header and body must be one the document
declares. A seed keeps the run reproducible; ``VMPOOLER_SCHEMATHESIS_EXAMPLES`` raises its size.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "use_after_free",
        "ensure_resource_availability",
    )
)


# 503 is a documented answer (a pool with no ready VM, the same as the original): any other 5xx fails.
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


def test_the_api_conforms_to_its_openapi_document(start_service, tmp_path: Path) -> None:
    # an API alone: nothing refills the pools, so a generated `wait` would hold its request; 1 s at most
    service = start_service({"deb": 5, "centos": 2}, "api", workers=1, settings="max_checkout_wait: 1")
    runner = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            runner,
            "--config-file",
            str(config),
            "run",
            service.url("/api/v3/openapi.json"),
            "--url",
            service.url("/api/v3"),
            "--exclude-path-regex",
            "^/dashboard",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("VMPOOLER_SCHEMATHESIS_EXAMPLES", "25"),
            "--seed",
            "20261130",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failure" not in result.stdout.split("SUMMARY")[-1].lower()
