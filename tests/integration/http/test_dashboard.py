"""``/dashboard/`` and its stats feeds."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from tests.integration.http.conftest import (
    BASE_CONFIG,
    CENTOS,
    DEB,
    NODOMAIN,
    WIN,
    add_ready,
    add_running,
    with_config,
)
from vmpooler import keys

pytestmark = pytest.mark.integration

GROUPED_CONFIG = """
:pools:
  - name: centos-7-x86_64
    template: t/c7
    size: 4
  - name: centos-8-x86_64
    template: t/c8
    size: 2
  - name: win.2019-core
    template: t/w
    size: 1
  - name: ubuntu
    template: t/u
    size: 1
"""


# -- the page ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard"])
def test_dashboard_page(api, path):
    resp = api.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "<title>vmpooler dashboard</title>" in resp.text
    assert "<h1>vmpooler</h1>" in resp.text
    assert '"/api/v3/status"' in resp.text
    assert "5000" in resp.text  # polls every 5 s
    assert "default-src 'none'" in resp.headers["content-security-policy"]


def test_dashboard_is_self_contained(api):
    page = api.get("/dashboard/").text
    assert not re.search(r"<(link|img|iframe|object|embed|base)\b", page)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"\b(src|href|action|srcset)=", page)  # no markup loads or links anything
    assert not re.search(r"url\(|@import|@font-face", page)  # nor does the CSS
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.IGNORECASE)  # no other host at all
    assert "http://" not in page and "https://" not in page
    assert "{{" not in page


def test_dashboard_fetches_only_served_json(api, redis):
    """Every path the page's script requests is served by this app, as JSON."""
    page = api.get("/dashboard/").text
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    paths = set(re.findall(r"""["'](/[^"'\s]*)["']""", script))
    assert paths == {"/api/v3/status", "/dashboard/stats/vmpooler/pool?history=1"}
    for path in paths:
        resp = api.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"] == "application/json", path
    status = api.get("/api/v3/status").json
    assert {"capacity", "queue", "clone", "boot", "pools", "health", "status"} <= set(status)


def test_dashboard_inserts_data_as_text_only(api):
    """Pool names and every other figure reach the page through textContent, never parsed as HTML."""
    page = api.get("/dashboard/").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in page, sink
    assert "textContent" in page


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_dashboard_csp_allows_only_its_own_inline_blocks(make_api):
    api = make_api(with_config('site_name: "</script><script>alert(1)</script>"'))
    resp = api.get("/dashboard/")
    page, csp = resp.text, resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)  # the site name added none
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert directives["script-src"] == _sha256(script)
    assert directives["style-src"] == _sha256(style)
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe" not in csp


def test_dashboard_site_name_from_config_escaped(make_api):
    api = make_api(with_config('site_name: "<b>Pool & Co</b>"'))
    page = api.get("/dashboard/").text
    assert "<title>&lt;b&gt;Pool &amp; Co&lt;/b&gt; dashboard</title>" in page
    assert "<b>Pool" not in page


def test_dashboard_site_name_from_env(make_api):
    api = make_api(BASE_CONFIG, env={"SITE_NAME": "Build Farm"})
    assert "<h1>Build Farm</h1>" in api.get("/dashboard/").text


def test_root_redirects_to_the_dashboard(api):
    resp = api.get("/")
    assert resp.status_code == 302
    assert resp.headers["location"].endswith("/dashboard/")


def test_dashboard_needs_no_token_with_auth(auth_api):
    assert auth_api.get("/dashboard/").status_code == 200
    assert auth_api.get("/dashboard/stats/vmpooler/pool").status_code == 200


# -- stats ------------------------------------------------------------------------------------------


# What the original's ``if params[:history]`` makes of the query (Rack 2.2 parsing, Ruby truthiness).
WITH_HISTORY = ["?history=1", "?history=true", "?history=false", "?history=0", "?history=", "?a=1;history=1"]
WITHOUT_HISTORY = ["", "?history", "?historyx=1", "?history=1&history", "?x=history"]


def _seed_pools(redis) -> None:
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    add_running(redis, CENTOS, "c2")
    redis.hset(keys.config_override("poolsize"), CENTOS, "5")


POOL_STATS = {
    DEB: {"size": 3, "ready": 2},
    CENTOS: {"size": 5, "ready": 1},
    WIN: {"size": 1, "ready": 0},
    NODOMAIN: {"size": 0, "ready": 0},
}


@pytest.mark.parametrize("query", WITHOUT_HISTORY)
def test_pool_stats_without_history(api, redis, query):
    _seed_pools(redis)
    resp = api.get(f"/dashboard/stats/vmpooler/pool{query}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json == POOL_STATS
    assert list(resp.json) == [DEB, CENTOS, WIN, NODOMAIN]  # config order
    assert list(resp.json[DEB]) == ["size", "ready"]


@pytest.mark.parametrize("query", WITH_HISTORY)
def test_pool_stats_with_history_is_the_ready_count_without_graph_server(api, redis, query):
    _seed_pools(redis)
    resp = api.get(f"/dashboard/stats/vmpooler/pool{query}")
    assert resp.status_code == 200
    assert resp.json == {name: {**entry, "history": [entry["ready"]]} for name, entry in POOL_STATS.items()}
    assert list(resp.json[DEB]) == ["size", "ready", "history"]


def _seed_running(redis) -> None:
    add_running(redis, "centos-7-x86_64", "a1")
    add_running(redis, "centos-7-x86_64", "a2")
    add_running(redis, "centos-8-x86_64", "b1")
    add_running(redis, "win.2019-core", "w1")
    add_ready(redis, "ubuntu", "u1")


RUNNING_STATS = {"centos": {"running": 3}, "win.2019": {"running": 1}, "ubuntu": {"running": 0}}


@pytest.mark.parametrize("query", WITHOUT_HISTORY)
def test_running_stats_group_by_leading_word(make_api, redis, query):
    api = make_api(GROUPED_CONFIG)
    _seed_running(redis)
    resp = api.get(f"/dashboard/stats/vmpooler/running{query}")
    assert resp.status_code == 200
    assert resp.json == RUNNING_STATS


@pytest.mark.parametrize("query", WITH_HISTORY)
def test_running_stats_with_history_without_graph_server(make_api, redis, query):
    api = make_api(GROUPED_CONFIG)
    _seed_running(redis)
    resp = api.get(f"/dashboard/stats/vmpooler/running{query}")
    assert resp.status_code == 200
    assert resp.json == {
        name: {**entry, "history": [entry["running"]]} for name, entry in RUNNING_STATS.items()
    }


def test_stats_without_pools(make_api):
    api = make_api(":config:\n  site_name: empty\n")
    assert api.get("/dashboard/stats/vmpooler/pool").json == {}
    assert api.get("/dashboard/stats/vmpooler/running?history=1").json == {}
    assert api.get("/dashboard/").status_code == 200


def test_unknown_dashboard_path_is_json_404(api):
    resp = api.get("/dashboard/stats/vmpooler/nothing")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
