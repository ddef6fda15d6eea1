"""An API worker process: waitress serving ``create_app`` on a listening socket shared by all workers."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

import waitress

from vmpooler.config import load_config
from vmpooler.config.env import env_value
from vmpooler.http.app import create_app
from vmpooler.log import setup_logging
from vmpooler.store import Store

if TYPE_CHECKING:
    from vmpooler.supervisor import Heartbeat

__all__ = ["ApiWorkerArgs", "listen", "run_api_worker"]

log = logging.getLogger(__name__)


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Bind the listening socket once, in the supervisor; the workers inherit it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class ApiWorkerArgs:
    """What an API worker needs, picklable for a spawned process."""

    def __init__(
        self,
        config_path: str | None,
        config_env: dict[str, str],
        redis_url: str,
        sock: socket.socket,
        threads: int | None = None,
    ) -> None:
        self.config_path = config_path
        self.config_env = config_env
        self.redis_url = redis_url
        self.sock = sock
        self.threads = threads if threads is not None else env_value("VMPOOLER_API_THREADS", 8, minimum=1)


def _beat(heartbeat: Heartbeat, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        heartbeat.beat()


def run_api_worker(args: ApiWorkerArgs, heartbeat: Heartbeat | Any = None) -> None:
    """The API child's main: load config, open Redis, serve until SIGTERM."""
    # waitress hands each request between its I/O thread and a worker thread; with CPython's default
    # 5 ms GIL switch interval, concurrent connections wait out whole intervals (p90 6 ms at two
    # clients). A short interval keeps the hand-over prompt (see docs/performance.md).
    sys.setswitchinterval(float(env_value("VMPOOLER_SWITCH_INTERVAL", 0.0005, minimum=0.000001)))
    config = load_config(args.config_path, env=args.config_env)
    setup_logging(logfile=config.globals.logfile)
    store = Store.from_url(
        args.redis_url,
        max_connections=max(args.threads + 2, config.redis.connection_pool_size),
        socket_timeout=config.redis.api_timeout,
    )
    app = create_app(config, store)
    server = waitress.create_server(
        app,
        sockets=[args.sock],
        threads=args.threads,
        ident="vmpooler",
        connection_limit=1000,
        channel_timeout=60,
        # Bodies up to 4x the limit reach BodyLimit (a JSON 413); waitress refuses larger ones itself,
        # without reading them, with a plain-text 413 (its error pages cannot be JSON).
        max_request_body_size=4 * config.globals.max_request_body,
    )
    stop = threading.Event()
    if heartbeat is not None:
        heartbeat.beat()
        threading.Thread(target=_beat, args=(heartbeat, stop), daemon=True, name="heartbeat").start()
    log.info("API worker serving on %s", args.sock.getsockname())
    try:
        server.run()
    finally:
        stop.set()
        server.close()
        store.close()
