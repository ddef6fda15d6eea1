"""``/dashboard/`` in a real browser: headless Chromium loads the page from the real service, and what the
page shows is compared with ``/api/v3/status``.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-terminated JSON
on file descriptors 3 and 4), so no WebDriver, websocket library or browser download is needed, only the
Debian package ``chromium`` (``scripts/lib.sh`` installs it). Without it the tests fail, saying so.

A screenshot of the page is saved in the test's ``tmp_path`` and, when ``VMPOOLER_TEST_ARTIFACTS`` names
a directory, copied there; its path is printed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
import yaml

from tests.acceptance.conftest import Service
from tests.support.waiting import TIMEOUT_SCALE, poll, wait_for
from vmpooler import keys

pytestmark = pytest.mark.acceptance

# Read at import: the suite's autouse fixture removes VMPOOLER_* variables before each test runs.
ARTIFACTS = os.environ.get("VMPOOLER_TEST_ARTIFACTS", "")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = (1280, 860)
INTERVAL = 5.0  # the page's refresh interval, seconds


# -- the browser ------------------------------------------------------------------------------------


class BrowserError(Exception):
    """Chromium did not start, exited, or answered a command with an error."""


def chromium_binary() -> str:
    """The Chromium executable; fails the test, saying how to install one, when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.fail(
        "no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH and /usr/bin/chromium): "
        "install it as root with `DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "chromium`, or run scripts/test.sh (its vmp_ensure_chromium step does)"
    )


class Chromium:
    """Headless Chromium and its DevTools protocol on a pipe.

    Commands and events are read on the calling thread: events that arrive while waiting for an answer
    are kept in ``events``.
    """

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def protocol_fds() -> None:  # in the child: Chromium reads fd 3 and writes fd 4
            high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(answers_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)
            os.close(high_read)
            os.close(high_write)

        command = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # the suite runs as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.log = log
        with log.open("wb") as out:
            try:
                self.proc = subprocess.Popen(  # preexec_fn: the fds move between fork and exec
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    close_fds=False,  # our other fds are close-on-exec; 3 and 4 must stay open
                    preexec_fn=protocol_fds,
                )
            except OSError as exc:
                raise BrowserError(f"cannot start {binary}: {exc}") from exc
            finally:
                os.close(commands_read)
                os.close(answers_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def _messages(self, deadline: float) -> list[dict[str, Any]]:
        """The messages that arrive before ``deadline`` (at least one, unless the deadline passes)."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            ready, _, _ = select.select([self._answers], [], [], left)
            if not ready:
                return []
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited ({self.proc.poll()}):\n{self._log_tail()}")
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(raw) for raw in complete]

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer; the events meanwhile go to ``events``."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._commands, data) :]
        except BrokenPipeError as exc:
            raise BrowserError(f"chromium exited ({self.proc.poll()}):\n{self._log_tail()}") from exc
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            for answer in self._messages(deadline):
                if answer.get("id") != self._last_id:
                    self.events.append(answer)
                elif "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                else:
                    return dict(answer.get("result", {}))
        raise BrowserError(f"no answer to {method} within {timeout * TIMEOUT_SCALE}s:\n{self._log_tail()}")

    def pump(self, seconds: float) -> None:
        """Read the events that arrive within ``seconds`` into ``events``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.events.extend(self._messages(deadline))

    def new_page(self, width: int, height: int) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=5)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self._commands)
        os.close(self._answers)


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def events(self, method: str) -> list[dict[str, Any]]:
        """The params of this page's events named ``method`` so far."""
        return [
            e["params"]
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def navigate(self, url: str, timeout: float = 15) -> None:
        """Load ``url`` and wait for its load event (so that scripts find the new document)."""
        loads = len(self.events("Page.loadEventFired"))
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"cannot load {url}: {answer['errorText']}")
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while len(self.events("Page.loadEventFired")) == loads:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading in {timeout * TIMEOUT_SCALE}s")
            self.browser.pump(0.05)

    def evaluate(self, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression[:80]}…: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll ``expression`` until it is truthy; an exception (the document is being replaced right
        after a navigation) counts as not yet, and the last one is named if time runs out."""
        failed: list[str] = []

        def check() -> Any:
            try:
                return self.evaluate(expression)
            except BrowserError as exc:
                failed[:] = [str(exc)]
                return None

        value = poll(check, timeout * TIMEOUT_SCALE, interval=0.05)
        if not value:
            pytest.fail(
                f"timed out after {timeout * TIMEOUT_SCALE}s waiting for {what}"
                + (f" (last error: {failed[0]})" if failed else "")
            )
        return value

    def errors(self) -> list[str]:
        """Script exceptions, console errors and the browser's own errors (CSP violations, failed loads)."""
        found = [str(e["exceptionDetails"]) for e in self.events("Runtime.exceptionThrown")]
        found += [str(e["args"]) for e in self.events("Runtime.consoleAPICalled") if e["type"] == "error"]
        found += [e["entry"]["text"] for e in self.events("Log.entryAdded") if e["entry"]["level"] == "error"]
        return found

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        if ARTIFACTS:
            target = Path(ARTIFACTS)
            target.mkdir(parents=True, exist_ok=True)
            copy = target / path.name
            shutil.copyfile(path, copy)
            print(f"dashboard screenshot: {copy}")
        print(f"dashboard screenshot: {path}")
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    """A headless Chromium with a profile in ``tmp_path``; fails the test when it cannot start."""
    binary = chromium_binary()
    try:
        chromium = Chromium(binary, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    except BrowserError as exc:
        pytest.fail(str(exc))
    try:
        version = chromium.send("Browser.getVersion", timeout=30)
    except BrowserError as exc:
        chromium.close()
        pytest.fail(f"{binary} did not answer on its DevTools pipe: {exc}")
    print(f"browser: {version.get('product')}")
    yield chromium
    chromium.close()


# -- what the page shows ----------------------------------------------------------------------------

# The pool rows in the window, top to bottom, and the tiles' figures, as text turned into numbers.
READ_PAGE = """(() => {
  const text = (node, sel) => node.querySelector(sel).textContent;
  const field = (name) => text(document, '[data-field="' + name + '"]');
  const rows = Array.from(document.querySelectorAll("#rows .row"));
  return {
    refreshes: Number(document.documentElement.dataset.refreshes || 0),
    title: document.title,
    heading: text(document, "h1"),
    health: text(document, "#health"),
    summary: text(document, "#summary"),
    capacity: {current: field("capacity.current"), total: field("capacity.total"),
               percent: field("capacity.percent")},
    queue: Object.fromEntries(["requested", "pending", "cloning", "booting", "ready", "running", "completed",
      "waiting"]
      .map((k) => [k, field("queue." + k)])),
    breakers: Array.from(document.querySelectorAll("#breakers li")).map((li) => li.textContent),
    dlq: Array.from(document.querySelectorAll("#dlqs li")).map((li) => li.textContent),
    pools: rows.map((row) => ({
      name: text(row, ".name"),
      state: ["empty", "low", "ok", "idle"].find((c) => row.classList.contains(c)),
      flag: text(row, ".flag"),
      ready: Number(text(row, ".readyn")), pending: Number(text(row, ".pendingn")),
      running: Number(text(row, ".runningn")), size: Number(text(row, ".sizen")),
      samples: (row.querySelector(".spark .area").getAttribute("d").match(/L/g) || []).length,
    })),
  };
})()"""


def shown_pools(page_view: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {p["name"]: {k: p[k] for k in ("ready", "pending", "running", "size")} for p in page_view["pools"]}


def status_pools(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        name: {"ready": p["ready"], "pending": p["pending"], "running": p["running"], "size": p["max"]}
        for name, p in status["pools"].items()
    }


def differences(page_view: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """How the page's figures differ from a ``/status`` body (empty when they agree)."""
    found = []
    if shown_pools(page_view) != status_pools(status):
        found.append(f"pools: page {shown_pools(page_view)} != status {status_pools(status)}")
    capacity = status["capacity"]
    shown = page_view["capacity"]
    if (int(shown["current"]), int(shown["total"]), float(shown["percent"])) != (
        capacity["current"],
        capacity["total"],
        capacity["percent"],
    ):
        found.append(f"capacity: page {shown} != status {capacity}")
    queue = {k: int(v) for k, v in page_view["queue"].items()}
    if queue != {k: status["queue"][k] for k in queue}:
        found.append(f"queue: page {queue} != status {status['queue']}")
    return found


def agreeing_view(page: Page, service: Service, attempts: int = 5) -> tuple[dict[str, Any], dict[str, Any]]:
    """The page's figures and a ``/status`` body fetched right after, once they agree; a refresh of the
    page (or a VM changing state) between the two readings is retried."""
    problems: list[str] = []
    for _ in range(attempts):
        view = page.evaluate(READ_PAGE)
        status = requests.get(service.url("/api/v3/status"), timeout=10).json()
        problems = differences(view, status)
        if not problems:
            return view, status
        seen = view["refreshes"]
        page.wait_for(f"Number(document.documentElement.dataset.refreshes) > {seen}", 15, "the next refresh")
    pytest.fail(f"the page never agreed with /api/v3/status: {problems}")


def status_requests(page: Page) -> list[tuple[float, float | None]]:
    """(sent, finished) monotonic times of the page's ``/api/v3/status`` requests."""
    ended = {
        e["requestId"]: e["timestamp"]
        for name in ("Network.loadingFinished", "Network.loadingFailed")
        for e in page.events(name)
    }
    return [
        (e["timestamp"], ended.get(e["requestId"]))
        for e in page.events("Network.requestWillBeSent")
        if e["request"]["url"].endswith("/api/v3/status")
    ]


# -- a service with a manager: pools that fill, one that never does ------------------------------------

POOLS = {"debian-12-x86_64": 4, "centos-9-x86_64": 2, "win-2022": 1, "retired": 0}
BROKEN_POOL = "never-fills"


def manager_config(redis_url: str) -> str:
    pools = [{"name": name, "template": f"templates/{name}", "size": size} for name, size in POOLS.items()]
    pools.append({"name": BROKEN_POOL, "template": "templates/x", "size": 2, "provider": "broken"})
    config = {
        ":config": {"api_workers": 1, "site_name": "Acceptance farm", "dlq_enabled": True},
        ":redis": {"url": redis_url},
        ":providers": {
            ":dummy": {"provider_class": "dummy"},
            ":broken": {"provider_class": "dummy", "createvm_fail_percent": 100},
        },
        ":pools": pools,
    }
    return yaml.safe_dump(config, sort_keys=False)


def test_the_dashboard_shows_what_status_says(
    start_service_yaml: Callable[..., Service], redis_url: str, browser: Chromium, tmp_path: Path
) -> None:
    service = start_service_yaml(manager_config(redis_url))

    def filled() -> bool:
        pools = requests.get(service.url("/api/v3/status"), timeout=10).json()["pools"]
        return all(pools[name]["ready"] == size for name, size in POOLS.items())

    wait_for(filled, 30, "the dummy pools to fill")
    checkout = requests.post(service.url("/api/v3/vm/win-2022"), timeout=10)
    assert checkout.status_code == 200, checkout.text

    page = browser.new_page(*VIEWPORT)
    page.navigate(service.url("/dashboard/"))
    page.wait_for("Number(document.documentElement.dataset.refreshes) >= 1", 15, "the first render")
    view, status = agreeing_view(page, service)

    assert view["title"] == "Acceptance farm dashboard"
    assert view["heading"] == "Acceptance farm"
    assert view["health"] == status["health"]["status"]
    # the empty pool first, then the others by name; colours by fill
    assert view["pools"][0]["name"] == BROKEN_POOL
    states = {p["name"]: p["state"] for p in view["pools"]}
    assert states[BROKEN_POOL] == "empty"
    assert states["retired"] == "idle"
    assert {states[name] for name in POOLS if name != "retired"} <= {"ok", "low"}
    assert f"{len(POOLS) + 1} pools" in view["summary"]
    assert any(line.startswith("dummy") and "closed" in line for line in view["breakers"]), view["breakers"]
    assert any(line.startswith("clone") for line in view["dlq"]), view["dlq"]

    # two more refreshes: one request at a time, each 5 s after the previous one ended
    seen = view["refreshes"]
    page.wait_for(
        f"Number(document.documentElement.dataset.refreshes) >= {seen + 2}", 3 * INTERVAL, "two refreshes"
    )
    view, _ = agreeing_view(page, service)
    assert min(p["samples"] for p in view["pools"]) >= 3, "each chart has a point per refresh"
    requests_made = status_requests(page)
    assert len(requests_made) >= 3
    # a request's end is sometimes not reported by Chromium (seen on the first one, on a loaded
    # machine): such a pair cannot be timed; every pair that can must keep the interval
    timed = [(finished, sent) for (_, finished), (sent, _) in itertools.pairwise(requests_made) if finished]
    assert timed, requests_made
    for finished, sent in timed:
        assert sent - finished >= INTERVAL - 0.1, requests_made
    other = [
        e["request"]["url"]
        for e in page.events("Network.requestWillBeSent")
        if not e["request"]["url"].startswith(service.base + "/")
    ]
    assert other == [], "the page asked for something not served by the service"
    assert page.errors() == []

    page.screenshot(tmp_path / "dashboard.png")


# -- many pools, API only, on a seeded Redis ----------------------------------------------------------


def ready_count(i: int) -> int:
    """The ready VMs of the ``i``-th of many pools of size 5: every 7th empty, every 3rd below size."""
    return 0 if i % 7 == 0 else 2 if i % 3 == 0 else 5


def seed_many(redis: redis_lib.Redis, count: int) -> dict[str, int]:
    """``count`` pools of size 5, filled as ``ready_count`` says, each with a running and a pending VM."""
    pools = {f"pool-{i:04d}": 5 for i in range(count)}
    with redis.pipeline(transaction=False) as pipe:
        for i, name in enumerate(pools):
            ready = ready_count(i)
            if ready:
                pipe.sadd(keys.ready_set(name), *(f"{name}-vm{n}" for n in range(ready)))
            pipe.sadd(keys.running_set(name), f"{name}-run")
            pipe.sadd(keys.pending_set(name), f"{name}-new")
        pipe.execute()
    return pools


@pytest.mark.parametrize("count", [300, 1000])
def test_many_pools_render_within_seconds(
    start_service: Callable[..., Service],
    redis: redis_lib.Redis,
    browser: Chromium,
    tmp_path: Path,
    count: int,
) -> None:
    pools = seed_many(redis, count)
    service = start_service(pools, "api", workers=1)
    page = browser.new_page(*VIEWPORT)

    started = time.monotonic()
    page.navigate(service.url("/dashboard/"))
    done = poll(
        lambda: page.evaluate(
            f"document.documentElement.dataset.pools === '{count}' && "
            "document.querySelectorAll('#rows .row').length > 0"
        ),
        10 * TIMEOUT_SCALE,
        interval=0.02,
    )
    seconds = time.monotonic() - started
    assert done, f"{count} pools not rendered in {seconds:.1f}s"
    timing = page.evaluate(
        """(() => {
          const nav = performance.getEntriesByType("navigation")[0];
          const render = performance.getEntriesByName("vmpooler-render")[0];
          return {loaded: nav.domContentLoadedEventEnd, rendered: render.startTime + render.duration,
                  render: render.duration, rows: document.querySelectorAll("#rows .row").length};
        })()"""
    )
    print(
        f"{count} pools: shown {seconds:.2f}s after navigating (measured by the test); in the page: "
        f"first render done {timing['rendered']:.0f} ms after navigation start, the render itself "
        f"{timing['render']:.1f} ms, {timing['rows']} row elements"
    )
    assert seconds < 5 * TIMEOUT_SCALE
    assert timing["render"] < 500, "one render blocks the page too long"
    assert timing["rows"] < 100, "only the rows near the window are in the document"

    # the empty pools first, then those below size, then the full ones; by name within each
    order = sorted(pools, key=lambda name: ({0: 0, 2: 1}.get(ready_count(int(name[5:])), 2), name))
    view = page.evaluate(READ_PAGE)
    assert [p["name"] for p in view["pools"][:10]] == order[:10]
    assert view["pools"][0]["state"] == "empty"
    empty = sum(1 for i in range(count) if ready_count(i) == 0)
    low = sum(1 for i in range(count) if ready_count(i) == 2)
    assert f"{count} pools · {empty} empty · {low} below size" in view["summary"]
    status = requests.get(service.url("/api/v3/status"), timeout=10).json()
    assert int(view["capacity"]["current"]) == status["capacity"]["current"]
    for row in view["pools"]:
        assert row["ready"] == status["pools"][row["name"]]["ready"]

    # the last pool is drawn once scrolled to
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for(
        "Array.from(document.querySelectorAll('#rows .row')).some((r) => "
        f"r.getBoundingClientRect().bottom <= innerHeight && r.dataset.pool === {json.dumps(order[-1])})",
        5,
        f"the last pool ({order[-1]}) drawn at the bottom",
    )
    page.screenshot(tmp_path / f"dashboard-{count}-pools-bottom.png")

    # the filter box narrows the rows to the matching pools
    wanted = order[-1]
    page.evaluate(
        "(() => { const box = document.getElementById('filter'); "
        f"box.value = {json.dumps(wanted)}; box.dispatchEvent(new Event('input')); }})()"
    )
    page.wait_for(
        "(() => { const rows = document.querySelectorAll('#rows .row'); "
        f"return rows.length === 1 && rows[0].dataset.pool === {json.dumps(wanted)}; }})()",
        5,
        f"only {wanted} shown",
    )
    assert "1 shown" in page.evaluate(READ_PAGE)["summary"]
    assert page.errors() == []


# -- hostile data is shown as text ----------------------------------------------------------------------

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>&amp;"


def test_pool_names_are_shown_as_text(
    start_service: Callable[..., Service], browser: Chromium, tmp_path: Path
) -> None:
    """Pool names come from the config, which allows no markup; a status answer that had some (rewritten
    here in the browser) is still shown as text."""
    service = start_service({"deb": 1}, "api", workers=1)
    page = browser.new_page(*VIEWPORT)
    page.send("Fetch.enable", {"patterns": [{"urlPattern": "*/api/v3/status*", "requestStage": "Request"}]})
    body = {
        "status": {"ok": False, "message": HOSTILE},
        "capacity": {"current": 0, "total": 1, "percent": 0},
        "pools": {HOSTILE: {"ready": 0, "running": 0, "pending": 0, "max": 1, "lastBoot": ""}},
        "health": {
            "status": HOSTILE,
            "providers": {HOSTILE: {"breaker": HOSTILE, "failures": 1}},
            "dlq": {HOSTILE: 1},
            "pools": {HOSTILE: "unhealthy"},
        },
    }
    answered = 0

    def answer_paused() -> bool:
        nonlocal answered
        for paused in page.events("Fetch.requestPaused")[answered:]:
            page.send(
                "Fetch.fulfillRequest",
                {
                    "requestId": paused["requestId"],
                    "responseCode": 200,
                    "responseHeaders": [{"name": "Content-Type", "value": "application/json"}],
                    "body": base64.b64encode(json.dumps(body).encode()).decode(),
                },
            )
            answered += 1
        return bool(page.evaluate("Number(document.documentElement.dataset.refreshes) >= 1"))

    page.navigate(service.url("/dashboard/"))
    wait_for(answer_paused, 15, "the page to render the rewritten status")
    view = page.evaluate(READ_PAGE)
    assert view["pools"][0]["name"] == HOSTILE
    assert view["pools"][0]["flag"] == "provider unhealthy"
    assert view["health"] == HOSTILE
    assert page.evaluate("document.querySelectorAll('body img, body b').length") == 0
    assert page.evaluate("document.title") == "vmpooler dashboard"
    assert page.errors() == []
    page.screenshot(tmp_path / "dashboard-hostile.png")
