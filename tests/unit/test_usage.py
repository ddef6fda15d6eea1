"""``vmpooler.http.usage``: the usage counts of a VM (behaviour reference §4.10, names of §6.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import REGISTRY

from vmpooler.http.usage import UsageCount, record, usage_counts

DOCS_URL = (  # the example of the original's docs/configuration.md
    "https://jenkins.example.com/job/platform_puppet-agent-extra_puppet-agent-integration-suite_pr/"
    "RMM_COMPONENT_TO_TEST_NAME=puppet,SLAVE_LABEL=beaker,TEST_TARGET=redhat7-64a/824/"
)


def vm(url: str | None = None, user: str | None = "alice", pool: str = "debian-7") -> dict[str, str]:
    fields = {"template": pool, "pool": pool}
    if user is not None:
        fields["token:user"] = user
    if url is not None:
        fields["tag:jenkins_build_url"] = url
    return fields


def names(counts: list[UsageCount]) -> list[str]:
    return [count.statsd for count in counts]


def test_the_user_and_pool_of_a_vm():
    assert usage_counts("allocate", vm()) == [
        UsageCount("user", {"user": "alice", "operation": "allocate", "pool": "debian-7"})
    ]
    assert names(usage_counts("destroy", vm())) == ["user.alice.destroy.debian-7"]


def test_dots_in_user_and_pool_become_underscores():
    assert names(usage_counts("allocate", vm(user="a.b", pool="win-2019.core"))) == [
        "user.a_b.allocate.win-2019_core"
    ]


@pytest.mark.parametrize("user", [None, ""])
def test_a_vm_without_a_token_user_is_unauthenticated(user):
    assert names(usage_counts("allocate", vm(user=user))) == ["user.unauthenticated.allocate.debian-7"]


def test_the_pool_given_wins_then_template_then_pool():
    assert names(usage_counts("allocate", {}, "given.pool")) == ["user.unauthenticated.allocate.given_pool"]
    assert names(usage_counts("allocate", {"template": "t", "pool": "p"})) == [
        "user.unauthenticated.allocate.t"
    ]
    assert names(usage_counts("allocate", {"pool": "p"})) == ["user.unauthenticated.allocate.p"]


def test_a_vm_without_a_pool_counts_nothing():
    assert usage_counts("destroy", {"token:user": "alice"}) == []


def test_the_documented_jenkins_url():
    counts = usage_counts("destroy", vm(DOCS_URL, pool="deb.7"))
    assert names(counts) == [
        "user.alice.destroy.deb_7",
        "usage_jenkins_instance.jenkins_example_com.platform.destroy.deb_7",
        "usage_branch_project.pr.puppet-agent-extra.destroy.deb_7",
        "usage_job_component.puppet-agent-integration-suite.puppet.destroy.deb_7",
    ]
    assert [count.labels for count in counts[1:]] == [
        {
            "instance": "jenkins_example_com",
            "value_stream": "platform",
            "operation": "destroy",
            "pool": "deb_7",
        },
        {"branch": "pr", "project": "puppet-agent-extra", "operation": "destroy", "pool": "deb_7"},
        {
            "job_name": "puppet-agent-integration-suite",
            "component": "puppet",
            "operation": "destroy",
            "pool": "deb_7",
        },
    ]


def test_a_long_job_name_keeps_its_middle_parts_and_dots_become_underscores():
    url = "http://ci.example.org/job/vs_proj_a.b_c_main/RMM_COMPONENT_TO_TEST_NAME=x.y/1"
    assert names(usage_counts("allocate", vm(url)))[1:] == [
        "usage_jenkins_instance.ci_example_org.vs.allocate.debian-7",
        "usage_branch_project.main.proj.allocate.debian-7",
        "usage_job_component.a_b_c.x.y.allocate.debian-7",  # the component is kept as written
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://jenkins.example.com/job/litmus_module_pr/1/",
        "https://litmus.example.com/anything",
        "litmus",
    ],
)
def test_a_litmus_url_counts_only_under_usage_litmus(url):
    assert names(usage_counts("destroy", vm(url, user="bob.smith"))) == [
        "user.bob_smith.destroy.debian-7",
        "usage_litmus.bob_smith.destroy.debian-7",
    ]
    assert usage_counts("destroy", vm(url))[1].labels == {
        "user": "alice",
        "operation": "destroy",
        "pool": "debian-7",
    }


@pytest.mark.parametrize(
    ("segment", "component"),
    [
        ("RMM_COMPONENT_TO_TEST_NAME=puppet", "puppet"),
        ("SLAVE_LABEL=beaker,RMM_COMPONENT_TO_TEST_NAME=facter", "facter"),
        ("SLAVE_LABEL=beaker,TEST_TARGET=el7", "none"),  # the key is missing
        ("RMM_COMPONENT_TO_TEST_NAME=,SLAVE_LABEL=x", "none"),  # no value: skipped
        ("RMM_COMPONENT_TO_TEST_NAME=a=b", "a"),  # Ruby's split: the second field
        ("824", "none"),  # a build number, no k=v list
        (",,RMM_COMPONENT_TO_TEST_NAME=c,", "c"),
    ],
)
def test_the_component_to_test(segment, component):
    url = f"https://j.example.com/job/vs_proj_job_br/{segment}/"
    assert usage_counts("destroy", vm(url))[3].labels["component"] == component


def test_no_segment_after_the_job_is_component_none():
    """the original counted an empty component name here"""
    counts = usage_counts("destroy", vm("https://j.example.com/job/vs_proj_job_br/"))
    assert counts[3].statsd == "usage_job_component.job.none.destroy.debian-7"


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("single", ("single", "", "", "")),  # value stream only; the rest empty, as the original
        ("vs_br", ("vs", "br", "", "")),  # the last part is the branch before the project is taken
        ("vs_proj_br", ("vs", "br", "proj", "")),
        ("vs_proj_x_y_br", ("vs", "br", "proj", "x_y")),
        ("vs_proj_br_", ("vs", "br", "proj", "")),  # Ruby's split drops trailing empty fields
        ("_proj_br", ("", "br", "proj", "")),
        ("", ("", "", "", "")),
    ],
)
def test_job_segments_of_any_shape(job, expected):
    counts = usage_counts("allocate", vm(f"https://j.example.com/job/{job}/RMM_COMPONENT_TO_TEST_NAME=c"))
    value_stream, branch, project, job_name = expected
    assert counts[1].labels["value_stream"] == value_stream
    assert (counts[2].labels["branch"], counts[2].labels["project"]) == (branch, project)
    assert counts[3].labels["job_name"] == job_name


@pytest.mark.parametrize(
    "url",
    [
        "",  # an empty tag
        "not a url",
        "https://jenkins.example.com",
        "https://jenkins.example.com/",
        "https://jenkins.example.com/job",
        "https://jenkins.example.com/job/",
        "jenkins.example.com/job/vs_proj_br",  # no scheme: the parts are counted from the wrong place
        "////",
    ],
)
def test_a_url_without_a_job_segment_counts_only_the_user(url):
    assert names(usage_counts("destroy", vm(url))) == ["user.alice.destroy.debian-7"]


def test_a_url_without_a_scheme_is_read_as_the_original_read_it():
    counts = usage_counts(
        "destroy", vm("jenkins.example.com/job/vs_proj_br/extra/RMM_COMPONENT_TO_TEST_NAME=c")
    )
    assert counts[1].labels["instance"] == "vs_proj_br"
    assert counts[1].labels["value_stream"] == "RMM"


# -- record: the Prometheus counters ----------------------------------------------------------------------


def sample(name: str, labels: Mapping[str, str]) -> float:
    return REGISTRY.get_sample_value(name, dict(labels)) or 0.0


def test_record_adds_every_count_to_its_counter():
    counts = usage_counts("destroy", vm(DOCS_URL, user="unit.recorder"))
    metric_names = [
        "vmpooler_usage_total",
        "vmpooler_usage_jenkins_total",
        "vmpooler_usage_branch_project_total",
        "vmpooler_usage_job_component_total",
    ]
    before = [sample(name, count.labels) for name, count in zip(metric_names, counts, strict=True)]
    record("destroy", vm(DOCS_URL, user="unit.recorder"))
    after = [sample(name, count.labels) for name, count in zip(metric_names, counts, strict=True)]
    assert [b + 1 for b in before] == after


def test_record_of_a_litmus_job():
    labels = {"user": "unit_litmus", "operation": "allocate", "pool": "debian-7"}
    before = sample("vmpooler_usage_litmus_total", labels)
    record("allocate", vm("https://ci/litmus/1", user="unit_litmus"))
    assert sample("vmpooler_usage_litmus_total", labels) == before + 1


class Broken(Mapping[str, str]):
    """VM fields that cannot be read."""

    def __getitem__(self, key: str) -> str:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_record_never_raises_and_logs_at_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="vmpooler.http.usage"):
        record("destroy", Broken())
    assert [r.levelno for r in caplog.records if r.name == "vmpooler.http.usage"] == [logging.DEBUG]
    assert "usage: counting destroy failed" in caplog.text
