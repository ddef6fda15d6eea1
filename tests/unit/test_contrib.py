"""``contrib/``: the Grafana dashboard is an importable dashboard on a ``${DS_PROMETHEUS}`` input, and
every metric the dashboard and the alert rules query is one ``vmpooler.metrics`` declares, by the name
the exposition gives it (``_total`` on counters, ``_bucket``/``_sum``/``_count`` on histograms).

promtool checks the PromQL itself (``tests/acceptance/test_prometheus_scrape.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import prometheus_client
import yaml

from vmpooler import metrics

CONTRIB = Path(__file__).parents[2] / "contrib"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_NAME = re.compile(r"\bvmpooler_[a-z0-9_]+")


def exposed_names() -> set[str]:
    """Every sample name of the metrics ``vmpooler.metrics`` declares."""
    assert metrics.READY is not None  # declared on import, in the default registry
    return {
        family.name + suffix
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("vmpooler_")
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def dashboard() -> dict[str, Any]:
    return dict(json.loads((CONTRIB / "grafana-dashboard.json").read_text()))


def queries() -> list[str]:
    board = dashboard()
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return found


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((CONTRIB / "prometheus-alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def test_the_dashboard_uses_the_datasource_input_everywhere() -> None:
    board = dashboard()
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_the_dashboard_shows_what_operators_ask_for() -> None:
    used = {name for query in queries() for name in _NAME.findall(query)}
    assert {
        *("vmpooler_ready", "vmpooler_running", "vmpooler_pending", "vmpooler_pool_size"),
        *("vmpooler_clone_bucket", "vmpooler_time_to_ready_state_bucket", "vmpooler_errors_total"),
        *("vmpooler_circuit_breaker_state", "vmpooler_dlq_entries", "vmpooler_http_requests_total"),
        "vmpooler_http_request_duration_seconds_bucket",
        *(
            "vmpooler_queue_depth",
            "vmpooler_queue_oldest_wait_seconds",
            "vmpooler_checkout_wait_seconds_bucket",
        ),
    } <= used


def test_every_metric_queried_is_declared() -> None:
    declared = exposed_names()
    for query in [*queries(), *alert_exprs().values()]:
        unknown = set(_NAME.findall(query)) - declared
        assert not unknown, f"{query}: {sorted(unknown)} not in vmpooler.metrics"


def test_the_alerts_cover_an_empty_pool_an_open_breaker_and_a_stuck_clone_queue() -> None:
    exprs = alert_exprs()
    assert "vmpooler_ready == 0 and vmpooler_pool_size > 0" in exprs["VmpoolerPoolEmpty"]
    assert "vmpooler_circuit_breaker_state == 1" in exprs["VmpoolerCircuitBreakerOpen"]
    assert "vmpooler_pending_stuck > 0" in exprs["VmpoolerPendingStuck"]
    assert "vmpooler_pending_oldest_seconds" in exprs["VmpoolerPendingTooOld"]
    assert "vmpooler_queue_oldest_wait_seconds" in exprs["VmpoolerCheckoutsWaitLong"]
