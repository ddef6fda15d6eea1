"""The dotted names the metrics send to statsd and graphite (reference §6.1), their values on the wire,
and the request middleware's path labels (§6.2); a recording sink stands in for the network."""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from vmpooler import metrics
from vmpooler.config import load_config_text
from vmpooler.http.app import create_app
from vmpooler.http.middleware import metric_path, route_metric_path
from vmpooler.http.usage import _COUNTERS, record, usage_counts
from vmpooler.metrics_sinks import Sink, StatsdSink, format_value


class Recorder(Sink):
    def __init__(self) -> None:
        self.sent: list[tuple[str, float, str]] = []

    def send(self, name: str, value: float, kind: str) -> None:
        self.sent.append((name, value, kind))

    def close(self) -> None:
        pass


@pytest.fixture
def sent() -> Iterator[list[tuple[str, float, str]]]:
    recorder = Recorder()
    previous = metrics.use_sink(recorder)
    yield recorder.sent
    metrics.use_sink(previous)


def test_each_metric_sends_its_original_name_type_and_value(sent):
    metrics.CHECKOUT_SUCCESS.labels("debian-7").inc()
    metrics.CHECKOUT_EMPTY.labels("debian-7").inc()
    metrics.CHECKOUT_INVALID.labels("unknown").inc()
    metrics.DELETE_SUCCESS.inc()
    metrics.DELETE_FAILED.inc()
    metrics.HTTP_REQUESTS_VM.labels("post", "vm", "checkout").inc()
    metrics.READY.labels("debian-7").set(3)
    metrics.RUNNING.labels("debian-7").set(2)
    metrics.CLONE.labels("debian-7").observe(12.5)
    metrics.DESTROY.labels("debian-7").observe(1.25)
    metrics.TIME_TO_READY.labels("debian-7").observe(40.0)
    metrics.ERRORS.labels("markedasfailed", "debian-7").inc()
    metrics.CHECK_POOL.labels("debian-7").set(0.004)
    metrics.BREAKER_STATE.labels("vsphere").set(0.5)
    metrics.BREAKER_OPENED.labels("vsphere").inc()
    metrics.DLQ_ENTRIES.labels("clone").set(17)  # the size after a write: one write counted
    metrics.PENDING_OLDEST.labels("debian-7").set(75.5)
    metrics.PENDING_STUCK.labels("debian-7").set(1)
    assert sent == [
        ("checkout.success.debian-7", 1, "c"),
        ("checkout.empty.debian-7", 1, "c"),
        ("checkout.invalid.unknown", 1, "c"),
        ("delete.success", 1, "c"),
        ("delete.failed", 1, "c"),
        ("http_requests_vm_total.post.vm.checkout", 1, "c"),
        ("ready.debian-7", 3, "g"),
        ("running.debian-7", 2, "g"),
        ("vmpooler_clone.debian-7", 12.5, "g"),  # 3.8+: a gauge in seconds
        ("vmpooler_destroy.debian-7", 1.25, "g"),
        ("time_to_ready_state.debian-7", 40.0, "ms"),  # a timing whose value is seconds, as sent
        ("vmpooler_errors.markedasfailed.debian-7", 1, "c"),
        ("vmpooler_performance.check_pool.debian-7", 0.004, "g"),
        ("circuit_breaker.state.vsphere", 0.5, "g"),
        ("circuit_breaker.opened.vsphere", 1, "c"),
        ("vmpooler_dlq.clone.count", 1, "c"),
        ("vmpooler_health.queue.debian-7.pending.oldest_age", 75.5, "g"),
        ("vmpooler_health.queue.debian-7.pending.stuck_count", 1, "g"),
    ]


def test_prometheus_still_counts_under_its_own_names(sent):
    before = REGISTRY.get_sample_value("vmpooler_checkout_success_total", {"poolname": "names.unit"}) or 0
    metrics.CHECKOUT_SUCCESS.labels("names.unit").inc()
    metrics.CHECKOUT_SUCCESS.labels(poolname="names.unit").inc()
    assert (
        REGISTRY.get_sample_value("vmpooler_checkout_success_total", {"poolname": "names.unit"}) == before + 2
    )
    metrics.READY.labels("names.unit").set(4)
    assert REGISTRY.get_sample_value("vmpooler_ready", {"poolname": "names.unit"}) == 4


def test_dots_in_label_values_stay_as_the_original_sent_them(sent):
    metrics.CHECKOUT_SUCCESS.labels("win-2019.core").inc()
    metrics.READY.labels("win-2019.core").set(1)
    assert [name for name, _, _ in sent] == ["checkout.success.win-2019.core", "ready.win-2019.core"]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("a b", "a_b"),
        ("evil:1|c\nother:9|c", "evil_1_c_other_9_c"),  # no second metric in a statsd datagram
        ("x\ty@z\x7f", "x_y_z_"),
        ("ok-name_1/2", "ok-name_1/2"),
    ],
)
def test_characters_that_break_a_datagram_or_a_line_become_underscores(sent, value, name):
    metrics.CHECKOUT_INVALID.labels(value).inc()
    assert sent == [(f"checkout.invalid.{name}", 1, "c")]


def test_labels_by_name_and_wrong_labels():
    assert metrics.HTTP_REQUESTS_VM.labels(method="get", subpath="vm", operation="hostname") is (
        metrics.HTTP_REQUESTS_VM.labels("get", "vm", "hostname")
    )
    with pytest.raises(ValueError):
        metrics.HTTP_REQUESTS_VM.labels("get", "vm")
    with pytest.raises(ValueError):
        metrics.HTTP_REQUESTS_VM.labels(method="get", subpath="vm", op="hostname")
    with pytest.raises(ValueError):
        metrics.CHECKOUT_SUCCESS.inc()  # a labelled metric


def test_without_a_sink_nothing_is_sent(sent):
    previous = metrics.use_sink(None)
    try:
        metrics.CHECKOUT_SUCCESS.labels("quiet").inc()
        metrics.DELETE_SUCCESS.inc()
    finally:
        metrics.use_sink(previous)
    assert sent == []


# -- usage names ---------------------------------------------------------------------------------------

JOB_URL = (
    "https://jenkins.example.com/job/platform_puppet-agent-extra_puppet-agent-integration-suite_pr/"
    "RMM_COMPONENT_TO_TEST_NAME=puppet,SLAVE_LABEL=beaker/824/"
)


@pytest.mark.parametrize(
    "fields",
    [
        {"token:user": "a.b", "template": "win-2019.core"},
        {"token:user": "alice", "template": "debian-7", "tag:jenkins_build_url": JOB_URL},
        {"template": "debian-7", "tag:jenkins_build_url": "https://ci.example.com/job/litmus_x/1/"},
    ],
)
def test_usage_counts_send_the_names_of_usage_py(sent, fields):
    counts = usage_counts("destroy", fields)
    record("destroy", fields)
    assert [name for name, _, _ in sent] == [count.statsd for count in counts]
    for count in counts:
        assert metrics.statsd_name(_COUNTERS[count.family].template, list(count.labels.values())) == (
            count.statsd
        )


def test_usage_names_replace_dots_like_the_original(sent):
    record("allocate", {"token:user": "j.doe", "template": "win-2019.core"})
    record("destroy", {"template": "p", "tag:jenkins_build_url": JOB_URL})
    assert [name for name, _, _ in sent] == [
        "user.j_doe.allocate.win-2019_core",
        "user.unauthenticated.destroy.p",
        "usage_jenkins_instance.jenkins_example_com.platform.destroy.p",
        "usage_branch_project.pr.puppet-agent-extra.destroy.p",
        "usage_job_component.puppet-agent-integration-suite.puppet.destroy.p",
    ]


# -- the wire ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (0, "0"), (17, "17"), (3.0, "3"), (0.5, "0.5"), (12.3456, "12.346"), (0.0001, "0.0")],
)
def test_values_on_the_wire(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_values_the_wire_cannot_carry(value):
    with pytest.raises(ValueError):
        format_value(value)


def receive_lines(server: socket.socket, count: int) -> list[bytes]:
    """``count`` lines from the datagrams arriving at ``server``; each datagram is checked whole."""
    lines: list[bytes] = []
    while len(lines) < count:
        lines.extend(server.recv(65536).split(b"\n"))
    return lines


def test_statsd_lines_go_out_batched_in_datagrams():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sink = StatsdSink("127.0.0.1", server.getsockname()[1], "vmp")
        try:
            sink.send("checkout.success.debian-7", 1, "c")
            sink.send("ready.debian-7", 3, "g")
            sink.send("bad.value", math.nan, "g")  # dropped, not raised
            sink.send("time_to_ready_state.debian-7", 40.25, "ms")
            received = receive_lines(server, 3)
        finally:
            sink.close()
        sink.send("after.close", 1, "c")  # dropped, not raised
    assert received == [
        b"vmp.checkout.success.debian-7:1|c",
        b"vmp.ready.debian-7:3|g",
        b"vmp.time_to_ready_state.debian-7:40.25|ms",
    ]
    assert sink.dropped == 2


def test_a_statsd_datagram_holds_the_lines_that_fit():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sink = StatsdSink("127.0.0.1", server.getsockname()[1], "p", max_datagram=30, interval=3600)
        for name in ("a" * 8, "b" * 8, "c" * 8, "d" * 40):
            sink.send(name, 1, "c")  # 14 bytes a line, the last one 46
        sink.close()  # writes what is buffered
        datagrams = [server.recv(65536) for _ in range(3)]
    assert datagrams == [b"p.aaaaaaaa:1|c\np.bbbbbbbb:1|c", b"p.cccccccc:1|c", b"p." + b"d" * 40 + b":1|c"]


# -- the request middleware's path label (§6.2) --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/api/v3/vm/host1", "/api/v3/vm"),
        ("/api/v3/vm/host1/snapshot/abc", "/api/v3/vm"),
        ("/api/v3/vm", "/api/v3/vm"),
        ("/api/v3/ondemandvm/7a5b", "/api/v3/ondemandvm"),
        ("/api/v3/token/abc", "/api/v3/token"),
        ("/api/v1/token/abc", "/api/v1/token"),
        ("/dashboard/lib/x.js", "/dashboard/lib"),
        ("/img/logo.png", "/img"),
        ("/token/a/vm/b", "/token"),  # the first segment wins, as the original's gsubs in a row
        ("/api/v3/status", "/api/v3/status"),
        ("/api/v3/vm/", "/api/v3/vm/"),  # nothing after: unchanged (the app strips trailing slashes)
        ("/api/v3/vm/a\nb/vm/c", "/api/v3/vm\nb/vm"),  # each line cut, as Ruby's $ ends a line
    ],
)
def test_metric_path(path, label):
    assert metric_path(path) == label


@pytest.mark.parametrize(
    ("template", "label"),
    [
        ("/api/v3/vm/{name}", "/api/v3/vm"),
        ("/api/v3/vm/{name}/snapshot/{snapshot}", "/api/v3/vm"),
        ("/api/v1/token/{token}", "/api/v1/token"),
        ("/api/v3/ondemandvm/{name}", "/api/v3/ondemandvm"),
        ("/api/v3/vm", None),  # nothing cut: the path is its own label
        ("/api/v3/status", None),
        ("/api/v3/summary/{route}/{key}", None),  # /summary/vm/x is cut, /summary/pool/x is not
        ("/api/v3/{kind}/vm/{name}", None),
    ],
)
def test_route_metric_path(template, label):
    assert route_metric_path(template) == label


def _templates() -> list[str]:
    """Every route template of the API."""
    config = load_config_text(":pools:\n  - name: deb\n    template: t/deb\n    size: 1\n", env={})
    app = create_app(config, store=None)  # type: ignore[arg-type]  # routes only: nothing is called
    found: list[str] = []
    nodes = list(app._router._roots)
    while nodes:
        node = nodes.pop()
        if node.uri_template:
            found.append(node.uri_template)
        nodes.extend(node.children)
    return sorted(set(found))


@pytest.mark.parametrize("value", ["x", "vm", "token", "a.b", "vm/", "%2F"])
def test_a_route_label_is_every_matching_paths_label(value):
    """A route's fixed label is what metric_path makes of any path it matches, whatever its fields."""
    templates = _templates()
    assert any(route_metric_path(t) is not None for t in templates)
    for template in templates:
        label = route_metric_path(template)
        if label is not None:
            path = re.sub(r"\{[^}]*\}", value, template)
            assert metric_path(path) == label, (template, path)
