"""The statsd and graphite sinks end to end: real listeners on loopback receive the original's names
(reference §6.1) from the API (``create_app`` on the real redis-server) and from a running manager;
a sink with nothing listening, or a graphite server down or unreachable, neither raises nor blocks."""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from falcon import testing
from prometheus_client import REGISTRY

from tests.conftest import TIMEOUT_SCALE, wait_for
from tests.integration.http.conftest import BASE_CONFIG, CENTOS, DEB, WIN, add_ready
from tests.integration.manager.helpers import fast_config
from tests.support.service import free_port
from vmpooler import keys, metrics
from vmpooler.config import load_config_text
from vmpooler.http.app import create_app
from vmpooler.metrics_sinks import GraphiteSink, StatsdSink
from vmpooler.store import Pick, Store
from vmpooler.timeutil import format_time
from vmpooler.worker import start_manager

pytestmark = pytest.mark.integration


class Listener:
    """Collects what a sink sends: statsd datagrams (UDP) or graphite lines (TCP), one entry each."""

    def __init__(self, kind: int, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._got: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if kind == socket.SOCK_STREAM:
            self.sock.listen()
            target = self._accept
        else:
            target = self._receive
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self._got.extend(data.decode().split("\n"))  # lines are batched in datagrams

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            rest = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                *lines, rest = (rest + data).split(b"\n")
                with self._lock:
                    self._got.extend(line.decode() for line in lines)

    def got(self) -> list[str]:
        with self._lock:
            return list(self._got)

    def matching(self, pattern: str) -> list[str]:
        return [entry for entry in self.got() if re.fullmatch(pattern, entry)]

    def wait(self, *patterns: str, timeout: float = 10) -> None:
        """Until an entry matches each of ``patterns`` (regular expressions)."""
        missing: list[str] = []

        def done() -> bool:
            missing[:] = [p for p in patterns if not self.matching(p)]
            return not missing

        if not done():
            wait_for(done, timeout, f"{missing} among {self.got()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _sink_server(section: str, kind: int) -> Iterator[Listener]:
    """A listener that is this process's ``section`` (statsd, graphite) server, prefix ``vmp``."""
    listener = Listener(kind)
    metrics.configure_sink(
        load_config_text(f":{section}:\n  server: 127.0.0.1\n  port: {listener.port}\n  prefix: vmp\n")
    )
    yield listener
    metrics.configure_sink(None)
    listener.close()


@pytest.fixture
def statsd() -> Iterator[Listener]:
    """A UDP listener that is this process's statsd server (prefix ``vmp``) for the test."""
    yield from _sink_server("statsd", socket.SOCK_DGRAM)


@pytest.fixture
def graphite() -> Iterator[Listener]:
    """A TCP listener that is this process's graphite server (prefix ``vmp``) for the test."""
    yield from _sink_server("graphite", socket.SOCK_STREAM)


@pytest.fixture
def api(redis_url: str) -> Iterator[testing.TestClient]:
    config = load_config_text(BASE_CONFIG.replace(":config:\n", ":config:\n  usage_stats: true\n"), env={})
    store = Store.from_url(redis_url)
    yield testing.TestClient(create_app(config, store, rng=random.Random(7)))
    store.close()


@pytest.fixture
def manager(redis_url: str) -> Iterator[Callable[..., object]]:
    """``manager(config)`` starts the dummy provider's actor tree; stopped at teardown."""
    stores: list[Store] = []
    started = []

    def start(config):
        stores.append(Store.from_url(redis_url, max_connections=50))
        started.append(start_manager(config, "dummy", stores[-1], rng=random.Random(1)))
        return stores[-1]

    yield start
    for running in started:
        running.stop()
    for store in stores:
        store.close()


# -- the API -------------------------------------------------------------------------------------------


def requests_total(**labels: str) -> float:
    return REGISTRY.get_sample_value("vmpooler_http_requests_total", labels) or 0.0


def test_a_checkout_and_a_return_send_the_original_statsd_names(statsd, api, redis):
    posts = requests_total(code="200", method="post", path="/api/v3/vm")
    add_ready(redis, DEB, "vm1")
    add_ready(redis, WIN, "vm2")
    assert api.simulate_post("/api/v3/vm", json={DEB: "1"}).status_code == 200
    assert api.simulate_post(f"/api/v3/vm/{WIN}").status_code == 200
    assert api.simulate_post(f"/api/v3/vm/{CENTOS}").status_code == 503  # nothing ready
    assert api.simulate_post("/api/v3/vm/no-such-pool").status_code == 404
    assert api.simulate_delete("/api/v3/vm/vm1").status_code == 200
    assert api.simulate_delete("/api/v3/vm/vm1").status_code == 404  # not running any more

    statsd.wait(
        r"vmp\.http_requests_vm_total\.post\.vm\.checkout:1\|c",
        r"vmp\.http_requests_vm_total\.get\.vm\.template:1\|c",  # POST /vm/<pool>, the original's name
        rf"vmp\.checkout\.success\.{DEB}:1\|c",
        r"vmp\.checkout\.success\.win-2019\.core:1\|c",  # dots kept, as the original sent them
        rf"vmp\.checkout\.empty\.{CENTOS}:1\|c",
        r"vmp\.checkout\.invalid\.no-such-pool:1\|c",
        rf"vmp\.user\.unauthenticated\.allocate\.{DEB}:1\|c",
        r"vmp\.user\.unauthenticated\.allocate\.win-2019_core:1\|c",  # usage names replace dots
        r"vmp\.http_requests_vm_total\.delete\.vm\.hostname:1\|c",
        r"vmp\.delete\.success:1\|c",
        rf"vmp\.user\.unauthenticated\.destroy\.{DEB}:1\|c",
        r"vmp\.delete\.failed:1\|c",
    )
    assert not statsd.matching(r".*http_requests_total.*|.*request_duration.*")  # Prometheus only
    # The request middleware as the original's: lower-case method, the path cut after /vm/.
    assert requests_total(code="200", method="post", path="/api/v3/vm") == posts + 2
    assert requests_total(code="404", method="delete", path="/api/v3/vm") >= 1


def test_graphite_receives_plaintext_lines(graphite, api, redis):
    add_ready(redis, DEB, "vm1")
    before = int(time.time())
    assert api.simulate_post(f"/api/v3/vm/{DEB}").status_code == 200
    graphite.wait(
        rf"vmp\.checkout\.success\.{DEB} 1 \d+", rf"vmp\.user\.unauthenticated\.allocate\.{DEB} 1 \d+"
    )
    (line,) = graphite.matching(rf"vmp\.checkout\.success\.{DEB} .*")
    assert before <= int(line.split()[2]) <= time.time()
    assert graphite.connections == 1  # one connection for every line


# -- the manager -----------------------------------------------------------------------------------


def test_a_clone_and_a_destroy_send_the_original_statsd_names(statsd, manager, redis):
    config = fast_config({"a": 1}, extra_config="  vm_lifetime: 1\n")
    store = manager(config)
    wait_for(lambda: redis.scard(keys.ready_set("a")) == 1, 10, "the pool filled")
    (picked,) = store.vms.checkout([Pick("a", ("a",))], now=format_time(time.time() - 2 * 3600))

    seconds = r"\d+(\.\d{1,3})?"
    statsd.wait(
        r"vmp\.circuit_breaker\.state\.dummy:0\|g",
        rf"vmp\.vmpooler_clone\.a:{seconds}\|g",
        rf"vmp\.time_to_ready_state\.a:{seconds}\|ms",
        r"vmp\.ready\.a:\d+\|g",
        r"vmp\.running\.a:\d+\|g",
        rf"vmp\.vmpooler_performance\.check_pool\.a:{seconds}\|g",
        rf"vmp\.vmpooler_destroy\.a:{seconds}\|g",  # the checked-out VM expired (lifetime 1 h)
    )
    assert not redis.sismember(keys.running_set("a"), picked.vm)


def test_failed_clones_count_errors_and_dead_letters(statsd, manager):
    config = fast_config(
        {"a": 1},
        task_limit=1,
        extra_config="  dlq_enabled: true\n  circuit_breaker_enabled: false\n",
        provider_options="    createvm_fail_percent: 100\n",
    )
    manager(config)
    statsd.wait(r"vmp\.vmpooler_errors\.clone_failed\.a:1\|c", r"vmp\.vmpooler_dlq\.clone\.count:1\|c")


# -- never raise, never block --------------------------------------------------------------------------

BURST = 10_000


def burst() -> float:
    """Seconds for BURST updates of mirrored metrics through the active sink."""
    started = time.perf_counter()
    for i in range(BURST):
        metrics.CHECKOUT_SUCCESS.labels("burst").inc()
        metrics.READY.labels("burst").set(i)
    return time.perf_counter() - started


def test_statsd_with_nothing_listening_neither_raises_nor_blocks():
    port = free_port()  # a UDP port nothing listens on: the kernel refuses the datagrams
    sink = StatsdSink("127.0.0.1", port, "vmp")
    previous = metrics.use_sink(sink)
    try:
        elapsed = burst()
    finally:
        metrics.use_sink(previous)
        sink.close()
    assert elapsed < 1.0 * TIMEOUT_SCALE, elapsed
    assert sink.dropped > 0  # the refusals of earlier datagrams were seen and counted


def test_statsd_that_does_not_resolve_drops_without_blocking():
    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sink = StatsdSink("statsd.invalid", 8125, "vmp", resolve=unknown)
    previous = metrics.use_sink(sink)
    try:
        elapsed = burst()
    finally:
        metrics.use_sink(previous)
        sink.close()
    assert elapsed < 1.0 * TIMEOUT_SCALE
    assert sink.dropped == 2 * BURST


@pytest.mark.parametrize("server", ["127.0.0.1", "192.0.2.1"], ids=["refused", "unreachable"])
def test_graphite_down_neither_raises_nor_blocks(server):
    sink = GraphiteSink(server, free_port(), "vmp", capacity=1000, timeout=0.5)
    previous = metrics.use_sink(sink)
    try:
        elapsed = burst()
    finally:
        metrics.use_sink(previous)
        sink.close(timeout=1)
    assert elapsed < 1.0 * TIMEOUT_SCALE, elapsed
    assert sink.dropped >= 2 * BURST - 1000 - GraphiteSink._BATCH  # the buffer and the batch in hand


def test_graphite_reconnects_and_sends_what_waited():
    port = free_port()
    sink = GraphiteSink("127.0.0.1", port, "vmp", clock=lambda: 1795255200.0)
    try:
        sink.send("early", 1, "c")
        time.sleep(0.3)  # the first connect fails: the writer backs off for 1 s
        listener = Listener(socket.SOCK_STREAM, port)
        try:
            sink.send("late", 2.5, "g")
            listener.wait(r"vmp\.early 1 1795255200", r"vmp\.late 2\.5 1795255200")
        finally:
            listener.close()
    finally:
        sink.close()
