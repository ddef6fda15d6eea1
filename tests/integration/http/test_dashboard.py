"""``/dashboard/`` and its stats feeds (reference §1.14)."""

from __future__ import annotations

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
    assert not re.search(r"<(link|img|iframe)\b", page)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "http://" not in page and "https://" not in page
    assert "{{" not in page


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


@pytest.mark.parametrize("query", ["", "?history=1"])
def test_pool_stats(api, redis, query):
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    add_running(redis, CENTOS, "c2")
    redis.hset(keys.config_override("poolsize"), CENTOS, "5")
    resp = api.get(f"/dashboard/stats/vmpooler/pool{query}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json == {
        DEB: {"size": 3, "ready": 2, "history": [2]},
        CENTOS: {"size": 5, "ready": 1, "history": [1]},
        WIN: {"size": 1, "ready": 0, "history": [0]},
        NODOMAIN: {"size": 0, "ready": 0, "history": [0]},
    }
    assert list(resp.json) == [DEB, CENTOS, WIN, NODOMAIN]  # config order


@pytest.mark.parametrize("query", ["", "?history=1"])
def test_running_stats_group_by_leading_word(make_api, redis, query):
    api = make_api(GROUPED_CONFIG)
    add_running(redis, "centos-7-x86_64", "a1")
    add_running(redis, "centos-7-x86_64", "a2")
    add_running(redis, "centos-8-x86_64", "b1")
    add_running(redis, "win.2019-core", "w1")
    add_ready(redis, "ubuntu", "u1")
    resp = api.get(f"/dashboard/stats/vmpooler/running{query}")
    assert resp.status_code == 200
    assert resp.json == {
        "centos": {"running": 3, "history": [3]},
        "win.2019": {"running": 1, "history": [1]},
        "ubuntu": {"running": 0, "history": [0]},
    }


def test_stats_without_pools(make_api):
    api = make_api(":config:\n  site_name: empty\n")
    assert api.get("/dashboard/stats/vmpooler/pool").json == {}
    assert api.get("/dashboard/stats/vmpooler/running").json == {}
    assert api.get("/dashboard/").status_code == 200


def test_unknown_dashboard_path_is_json_404(api):
    resp = api.get("/dashboard/stats/vmpooler/nothing")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}
