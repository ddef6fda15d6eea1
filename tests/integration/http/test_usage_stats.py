"""``:config: usage_stats``: a checkout and a ``DELETE /vm`` count per user, pool and Jenkins job.

The counters live in this process's Prometheus registry: each test compares a sample before and after.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from tests.integration.http.conftest import (
    AUTH_ENV,
    DEB,
    WIN,
    Api,
    add_ready,
    add_token,
    with_auth,
    with_config,
)

pytestmark = pytest.mark.integration

BUILD_URL = (
    "https://jenkins.example.com/job/platform_puppet-agent_integration_main/"
    "RMM_COMPONENT_TO_TEST_NAME=puppet,SLAVE_LABEL=beaker/42/"
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def user_count(user: str, operation: str, pool: str) -> float:
    return value("vmpooler_usage_total", user=user, operation=operation, pool=pool)


@pytest.fixture
def usage_api(make_api: Callable[..., Api]) -> Api:
    return make_api(with_auth(with_config("usage_stats: true")), env=AUTH_ENV)


def test_checkout_and_delete_count_the_user_and_the_jenkins_job(usage_api, redis):
    add_ready(redis, DEB, "d1")
    add_token(redis, "tok1", "usage.tester")
    headers = {"X-AUTH-TOKEN": "tok1"}
    jenkins = {"instance": "jenkins_example_com", "value_stream": "platform", "pool": DEB}
    before = {
        "allocate": user_count("usage_tester", "allocate", DEB),
        "destroy": user_count("usage_tester", "destroy", DEB),
        "jenkins_allocate": value("vmpooler_usage_jenkins_total", operation="allocate", **jenkins),
        "jenkins": value("vmpooler_usage_jenkins_total", operation="destroy", **jenkins),
        "branch": value(
            "vmpooler_usage_branch_project_total",
            branch="main",
            project="puppet-agent",
            operation="destroy",
            pool=DEB,
        ),
        "component": value(
            "vmpooler_usage_job_component_total",
            job_name="integration",
            component="puppet",
            operation="destroy",
            pool=DEB,
        ),
    }
    assert usage_api.post(f"/api/v3/vm/{DEB}", headers=headers).status_code == 200
    assert user_count("usage_tester", "allocate", DEB) == before["allocate"] + 1
    assert (
        value("vmpooler_usage_jenkins_total", operation="allocate", **jenkins) == before["jenkins_allocate"]
    )

    tags = {"tags": {"jenkins_build_url": BUILD_URL}}
    assert usage_api.put("/api/v3/vm/d1", body=json.dumps(tags), headers=headers).status_code == 200
    assert usage_api.delete("/api/v3/vm/d1", headers=headers).status_code == 200
    assert user_count("usage_tester", "destroy", DEB) == before["destroy"] + 1
    assert value("vmpooler_usage_jenkins_total", operation="destroy", **jenkins) == before["jenkins"] + 1
    assert (
        value(
            "vmpooler_usage_branch_project_total",
            branch="main",
            project="puppet-agent",
            operation="destroy",
            pool=DEB,
        )
        == before["branch"] + 1
    )
    assert (
        value(
            "vmpooler_usage_job_component_total",
            job_name="integration",
            component="puppet",
            operation="destroy",
            pool=DEB,
        )
        == before["component"] + 1
    )
    exposition = usage_api.get("/prometheus").text
    assert f'vmpooler_usage_total{{operation="destroy",pool="{DEB}",user="usage_tester"}}' in exposition
    usage_lines = [line for line in exposition.splitlines() if line.startswith("vmpooler_usage")]
    assert not [line for line in usage_lines if "tok1" in line or '"d1"' in line]  # no token, no VM name


def test_several_vms_count_once_each_and_a_checkout_without_a_token_is_unauthenticated(usage_api, redis):
    add_ready(redis, WIN, "w1", "w2")
    pool = WIN.replace(".", "_")
    before = user_count("unauthenticated", "allocate", pool)
    assert usage_api.post(f"/api/v3/vm/{WIN}+{WIN}").status_code == 200
    assert user_count("unauthenticated", "allocate", pool) == before + 2


def test_a_failed_delete_counts_nothing(usage_api, redis):
    add_ready(redis, DEB, "d9")  # ready, not running: 404
    before = user_count("unauthenticated", "destroy", DEB)
    assert usage_api.delete("/api/v3/vm/d9").status_code == 404
    assert user_count("unauthenticated", "destroy", DEB) == before


def test_nothing_is_counted_without_usage_stats(make_api, redis):
    api = make_api()
    add_ready(redis, DEB, "d1")
    allocated = user_count("unauthenticated", "allocate", DEB)
    destroyed = user_count("unauthenticated", "destroy", DEB)
    assert api.post(f"/api/v3/vm/{DEB}").status_code == 200
    assert api.delete("/api/v3/vm/d1").status_code == 200
    assert user_count("unauthenticated", "allocate", DEB) == allocated
    assert user_count("unauthenticated", "destroy", DEB) == destroyed
