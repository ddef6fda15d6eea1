"""One scrape endpoint for every process of the real service, checked by Prometheus's own ``promtool``.

The service runs two dummy provider instances (two provider processes, one pool each) and two API
workers; ``/prometheus`` on the API port serves the multiprocess sum of every process's metrics files.
"Each one's metrics" is shown without a pid label (a label per process would start new series at every
restart): each pool's gauges come from its provider's process (read from that process's own file), and
each API worker has counted requests in its own file, whose counts the exposition adds up exactly.

``promtool check metrics`` must report nothing at all: neither a parse error (exit 1) nor a lint
problem (exit 3, e.g. a counter without ``_total``), so the §6.2 names are kept as they are.
``vmpooler manager`` alone serves the same on ``:config: manager_metrics_port``. The contrib alert rules
pass ``promtool check rules``, their expressions select what they should, and every dashboard query
parses as PromQL.

``:auth: provider: dummy`` needs ``VMPOOLER_DEBUG``, which ``tests.support.service.start_service``
leaves out: the service with tokens is started here, waited for and stopped with the same helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.acceptance.conftest import child_pids
from tests.support.service import BOOT_TIMEOUT, Service, free_port
from tests.support.waiting import poll, wait_for
from vmpooler import keys, metrics

pytestmark = pytest.mark.acceptance

CONTRIB = Path(__file__).parents[2] / "contrib"

CONFIG = """
:config:
  api_workers: 2
  usage_stats: true
  check_loop_delay_min: 0.2
  check_loop_delay_max: 1
:redis:
  url: {redis_url}
:auth:
  provider: dummy
:providers:
  :dummy1:
    provider_class: dummy
  :dummy2:
    provider_class: dummy
:pools:
  - name: a
    template: templates/a
    size: 3
    provider: dummy1
  - name: b
    template: templates/b
    size: 2
    provider: dummy2
"""
SIZES = {"a": 3, "b": 2}
JENKINS_URL = "https://jenkins.example.com/job/platform_puppet-agent_intn-sys_suite-daily-main/7/"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool``; fail (with the fix) when it is not installed."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not on PATH: apt-get install prometheus (scripts/test.sh installs it)")
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def service(redis_url: str, tmp_path: Path) -> Iterator[Service]:
    """The whole service (two providers, two API workers) with dummy auth; stopped after."""
    config = tmp_path / "vmpooler.yaml"
    config.write_text(CONFIG.format(redis_url=redis_url))
    log = tmp_path / "vmpooler.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    env |= {"VMPOOLER_DEBUG": "1", "VMPOOLER_LOG_LEVEL": "INFO"}
    port = free_port()
    command = [sys.executable, "-m", "vmpooler", "--config", str(config), "--bind", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    running = Service(proc, port, log)
    try:
        if (
            not poll(lambda: not running.alive() or running.healthy(), BOOT_TIMEOUT, 0.1)
            or not running.alive()
        ):
            pytest.fail(f"vmpooler did not come up:\n{log.read_text(errors='replace')}")
        yield running
    finally:
        running.stop()


def scrape(url: str) -> str:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return resp.text


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def label_values(found: list[Sample], name: str, label: str) -> set[str]:
    return {s.labels[label] for s in found if s.name == name}


def metrics_dir_of(pid: int) -> Path:
    """The service's metrics directory (it made it in the temp dir): the one holding ``pid``'s files."""
    for directory in Path(tempfile.gettempdir()).glob("vmpooler-metrics-*"):
        if list(directory.glob(f"*_{pid}.db")):
            return directory
    pytest.fail(f"no metrics files of pid {pid}")


def samples_of(directory: Path, pid: int) -> list[Sample]:
    """What process ``pid`` alone wrote, read from its own files."""
    files = [str(path) for path in directory.glob(f"*_{pid}.db")]
    return [s for family in MultiProcessCollector.merge(files, accumulate=False) for s in family.samples]


def vm_requests(found: list[Sample]) -> float:
    """The ``GET /api/v3/vm`` requests counted in ``found`` (the method label's case aside)."""

    def wanted(labels: dict[str, str]) -> bool:
        return (labels["code"], labels["method"].upper(), labels["path"]) == ("200", "GET", "/api/v3/vm")

    return sum(s.value for s in found if s.name == "vmpooler_http_requests_total" and wanted(s.labels))


def assert_promtool_is_silent(text: str) -> None:
    result = promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr


def use_the_api(service: Service, redis: Any) -> tuple[str, str]:
    """A token, a checkout with it, tags, a lookup, a return, and refusals; returns (token, VM name)."""
    token = requests.post(service.url("/api/v3/token"), auth=("alice", "s3cr3t"), timeout=10).json()["token"]
    auth = {"X-AUTH-TOKEN": token}
    taken = requests.post(service.url("/api/v3/vm/a"), headers=auth, timeout=10)
    assert taken.status_code == 200, taken.text
    vm = taken.json()["a"]["hostname"]
    tags = {"tags": {"jenkins_build_url": JENKINS_URL}}
    assert requests.put(service.url(f"/api/v3/vm/{vm}"), json=tags, headers=auth, timeout=10).ok
    assert requests.get(service.url(f"/api/v3/vm/{vm}"), timeout=10).ok
    assert requests.get(service.url(f"/api/v3/token/{token}"), timeout=10).ok
    assert requests.delete(service.url(f"/api/v3/vm/{vm}"), headers=auth, timeout=10).ok
    assert requests.post(service.url("/api/v3/vm/nosuchpool"), timeout=10).status_code == 404
    assert requests.get(service.url("/api/v3/vm/nosuchvm-at-all"), timeout=10).status_code == 404
    assert redis.exists(keys.vm_hash(vm))
    return token, vm


def test_every_process_on_one_endpoint_and_promtool_is_satisfied(service: Service, redis: Any) -> None:
    wait_for(
        lambda: all(redis.scard(keys.ready_set(p)) == n for p, n in SIZES.items()), 30, "both pools full"
    )
    token, vm = use_the_api(service, redis)
    pids = child_pids(service)
    workers = [pids["api-1"], pids["api-2"]]
    directory = metrics_dir_of(pids["provider-dummy1"])

    def both_workers_served() -> bool:
        with ThreadPoolExecutor(8) as pool:  # a new connection per request: either worker accepts it
            list(pool.map(lambda _: requests.get(service.url("/api/v3/vm"), timeout=10), range(16)))
        return all(vm_requests(samples_of(directory, pid)) > 0 for pid in workers)

    wait_for(both_workers_served, 30, "both API workers to have served GET /api/v3/vm")
    # each worker writes its queued request counts every FLUSH_INTERVAL: after this, both files hold
    # every request above, and the scrape below reads the same counts as the files read after it
    time.sleep(3 * metrics.FLUSH_INTERVAL)

    def both_pools_full() -> str | None:  # as the last pass of each pool saw it
        text = scrape(service.url("/prometheus"))
        ready = {s.labels["poolname"]: s.value for s in samples(text) if s.name == "vmpooler_ready"}
        return text if ready == {pool: float(size) for pool, size in SIZES.items()} else None

    text = wait_for(both_pools_full, 30, "the exposition to show both pools full")
    found = samples(text)

    assert_promtool_is_silent(text)
    # Each API worker's requests, each counted in its own file, added up in the one exposition.
    per_worker = [vm_requests(samples_of(directory, pid)) for pid in workers]
    assert all(count > 0 for count in per_worker) and vm_requests(found) == sum(per_worker)
    # Each provider process's pool gauges and breaker, from that process alone.
    for name, pool in (("provider-dummy1", "a"), ("provider-dummy2", "b")):
        own = samples_of(directory, pids[name])
        assert label_values(own, "vmpooler_ready", "poolname") == {pool}
        assert label_values(own, "vmpooler_circuit_breaker_state", "provider") == {name.split("-")[1]}
    for metric in ("vmpooler_ready", "vmpooler_running", "vmpooler_check_pool_seconds"):
        assert label_values(found, metric, "poolname") == {"a", "b"}, metric
    assert label_values(found, "vmpooler_circuit_breaker_state", "provider") == {"dummy1", "dummy2"}
    assert label_values(found, "vmpooler_clone_count", "poolname") == {"a", "b"}
    assert label_values(found, "vmpooler_checkout_success_total", "poolname") == {"a"}
    assert label_values(found, "vmpooler_usage_total", "user") == {"alice"}
    assert len(label_values(found, "vmpooler_usage_jenkins_total", "instance")) == 1

    # No VM name and no token anywhere: not as a label value, not in any part of the text.
    names = {key.removeprefix(keys.vm_hash("")) for key in redis.scan_iter(keys.vm_hash("") + "*")}
    assert vm in names and len(names) >= sum(SIZES.values())
    for secret in (*names, token, "nosuchvm-at-all"):
        assert secret not in text, secret
    values = {value for s in found for value in s.labels.values()}
    assert not {v for v in values for secret in (*names, token) if secret in v}


def test_the_manager_alone_serves_every_process_on_its_own_port(
    start_service_yaml: Any, redis_url: str, redis: Any
) -> None:
    port = free_port()
    text = CONFIG.format(redis_url=redis_url).replace(":auth:\n  provider: dummy\n", "")
    text = text.replace(":config:\n", f":config:\n  manager_metrics_port: {port}\n")
    service = start_service_yaml(text, "manager")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: poll(lambda: requests.get(base + "/healthcheck", timeout=1).ok, 1), 20, "the port")
    assert requests.get(base + "/healthcheck", timeout=10).json() == {"ok": True}
    assert requests.get(base + "/api/v3/status", timeout=10).status_code == 404
    assert not service.healthy()  # no API: nothing answers on the API port
    wait_for(
        lambda: all(redis.scard(keys.ready_set(p)) == n for p, n in SIZES.items()), 30, "both pools full"
    )

    def pools_shown() -> list[Sample] | None:
        found = samples(scrape(base + "/prometheus"))
        return found if label_values(found, "vmpooler_ready", "poolname") == {"a", "b"} else None

    found = wait_for(pools_shown, 20, "both providers' pools on the manager's port")
    assert label_values(found, "vmpooler_circuit_breaker_state", "provider") == {"dummy1", "dummy2"}
    assert_promtool_is_silent(scrape(base + "/prometheus"))

    first = child_pids(service)["provider-dummy1"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: child_pids(service)["provider-dummy1"] != first, 20, "provider-dummy1 restarted")

    def restarts() -> float:
        found = samples(scrape(base + "/prometheus"))
        return sum(s.value for s in found if s.name == "vmpooler_process_restarts_total")

    wait_for(lambda: restarts() == 1, 20, "the restart counted")
    final = samples(scrape(base + "/prometheus"))
    assert label_values(final, "vmpooler_process_restarts_total", "kind") == {"provider"}


def test_the_alert_rules_pass_promtool_and_select_what_they_name(tmp_path: Path) -> None:
    rules = CONTRIB / "prometheus-alerts.yml"
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = {r["alert"]: r["expr"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # a: empty; b: size 0, empty (not an alert); c: 1 of 8 ready (low)
                    {"series": 'vmpooler_ready{poolname="a"}', "values": "0x20"},
                    {"series": 'vmpooler_pool_size{poolname="a"}', "values": "5x20"},
                    {"series": 'vmpooler_ready{poolname="b"}', "values": "0x20"},
                    {"series": 'vmpooler_pool_size{poolname="b"}', "values": "0x20"},
                    {"series": 'vmpooler_ready{poolname="c"}', "values": "1x20"},
                    {"series": 'vmpooler_pool_size{poolname="c"}', "values": "8x20"},
                    # p1 open, p2 closed, p3 flapping between open and half-open
                    {"series": 'vmpooler_circuit_breaker_state{provider="p1"}', "values": "1x20"},
                    {"series": 'vmpooler_circuit_breaker_state{provider="p2"}', "values": "0x20"},
                    {"series": 'vmpooler_circuit_breaker_state{provider="p3"}', "values": "1 0.5 1 0.5x17"},
                    {"series": 'vmpooler_pending_stuck{poolname="a"}', "values": "2x20"},
                    {"series": 'vmpooler_pending_oldest_seconds{poolname="a"}', "values": "0+120x20"},
                ],
                "promql_expr_test": [
                    {
                        "expr": alerts["VmpoolerPoolEmpty"],
                        "eval_time": "10m",
                        "exp_samples": [{"labels": 'vmpooler_ready{poolname="a"}', "value": 0}],
                    },
                    {
                        "expr": alerts["VmpoolerPoolLow"],
                        "eval_time": "10m",
                        "exp_samples": [{"labels": 'vmpooler_ready{poolname="c"}', "value": 1}],
                    },
                    {
                        "expr": alerts["VmpoolerCircuitBreakerOpen"],
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": 'vmpooler_circuit_breaker_state{provider="p1"}', "value": 1}
                        ],
                    },
                    {
                        "expr": alerts["VmpoolerCircuitBreakerNotClosing"],
                        "eval_time": "18m",
                        "exp_samples": [
                            {"labels": '{provider="p1"}', "value": 1},
                            {"labels": '{provider="p3"}', "value": 0.5},
                        ],
                    },
                    {
                        "expr": alerts["VmpoolerPendingTooOld"],
                        "eval_time": "20m",
                        "exp_samples": [
                            {"labels": 'vmpooler_pending_oldest_seconds{poolname="a"}', "value": 2400}
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts-test.yml"
    test_file.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    dashboard = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs = [q.replace("$__rate_interval", "5m").replace("$pool", ".*") for q in queries]
    records = [{"record": f"dashboard:q{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboard", "rules": records}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
