"""Command line: ``vmpooler [api] [manager] [--config PATH] [--bind HOST] [--port N]``.

No component word runs both, as the original. ``vmpooler check-config [--strict] PATH`` validates a file
(the provider plugins' options included) and prints every problem and warning. Config comes from
``--config``, else ``VMPOOLER_CONFIG`` (inline YAML), else ``VMPOOLER_CONFIG_FILE``, else
``./vmpooler.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence

from vmpooler import __version__, metrics
from vmpooler.config import Config, check_config, env_value, load_config
from vmpooler.errors import ConfigError, VmpoolerError
from vmpooler.http.balance import ConnectionBoard
from vmpooler.http.serve import ApiWorkerArgs, listen, run_api_worker
from vmpooler.log import LOG_FORMATS, setup_logging
from vmpooler.proctitle import set_title
from vmpooler.redis_server import resolve_redis_url
from vmpooler.supervisor import EXIT_BOOT_ERROR, ChildSpec, Supervisor
from vmpooler.worker import ProviderWorkerArgs, publish_pools, run_provider_worker

__all__ = ["main"]

log = logging.getLogger("vmpooler")

EXIT_USAGE = 2
COMPONENTS = ("api", "manager")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmpooler", description="Pools of ready VMs behind a REST API.")
    parser.add_argument(
        "components",
        nargs="*",
        metavar="api|manager",
        help="what to run (default: both); or `check-config PATH`",
    )
    parser.add_argument(
        "--config",
        "-c",
        help="config file (default: $VMPOOLER_CONFIG, $VMPOOLER_CONFIG_FILE, ./vmpooler.yaml)",
    )
    parser.add_argument(
        "--bind",
        default=None,
        help="address to listen on (default: $VMPOOLER_BIND, else 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on (default: $VMPOOLER_PORT, else 4567)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="API worker processes (default: :config: api_workers)"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--strict", action="store_true", help="check-config: warnings (unknown keys, ...) count as errors"
    )
    parser.add_argument("--version", action="version", version=f"vmpooler {__version__}")
    return parser


def _check_config(paths: Sequence[str], *, strict: bool) -> int:
    """``vmpooler check-config [--strict] PATH``: every problem and warning; exit 1 if it would not start."""
    if len(paths) != 1:
        print("usage: vmpooler check-config [--strict] PATH", file=sys.stderr)
        return EXIT_USAGE
    result = check_config(paths[0])
    for problem in result.problems:
        print(f"{paths[0]}: error: {problem}")
    for warning in result.warnings:
        print(f"{paths[0]}: warning: {warning}")
    if not result.ok(strict=strict):
        label = "problem(s)" if not strict else "problem(s) and warning(s) (--strict)"
        count = len(result.problems) + (len(result.warnings) if strict else 0)
        print(f"{count} {label} found", file=sys.stderr)
        return 1
    print(f"{paths[0]}: OK" + (f" ({len(result.warnings)} warning(s))" if result.warnings else ""))
    return 0


def _api_children(
    config: Config, args: argparse.Namespace, redis_url: str, made: list[str]
) -> list[ChildSpec]:
    """The API workers on one listening socket, with their connection board (its path added to
    ``made``, the files to remove at exit)."""
    workers = args.workers or config.globals.api_workers
    bind = args.bind or env_value("VMPOOLER_BIND", "0.0.0.0")
    port = args.port if args.port is not None else env_value("VMPOOLER_PORT", 4567, minimum=0)
    sock = listen(bind, port)
    log.info("API listening on http://%s:%d with %d worker(s)", bind, sock.getsockname()[1], workers)
    board = ConnectionBoard.create(workers)
    made.append(board)
    env = dict(os.environ)
    return [
        ChildSpec(
            name=f"api-{i + 1}",
            target=run_api_worker,
            args=(ApiWorkerArgs(args.config, env, redis_url, sock, board=(board, i, workers)),),
        )
        for i in range(workers)
    ]


def _manager_children(config: Config, args: argparse.Namespace, redis_url: str) -> list[ChildSpec]:
    """One provider process per provider instance that serves a pool; publishes the pools first.

    A config without ``:pools:`` has nothing to manage: no provider process starts, and the pools
    another manager published are left in Redis (its API nodes serve them).
    """
    if not config.pools_given:
        log.warning("manager: no :pools: in the config: nothing to manage, no provider process started")
        return []
    publish_pools(config, redis_url)
    providers = sorted({pool.provider for pool in config.pools})
    instance = secrets.token_hex(6)  # this supervisor among managers of the same id (see Ownership)
    log.info("manager: %d pool(s) on provider(s) %s", len(config.pools), ", ".join(providers) or "none")
    return [
        ChildSpec(
            name=f"provider-{name}",
            target=run_provider_worker,
            args=(ProviderWorkerArgs(name, args.config, dict(os.environ), redis_url, instance),),
        )
        for name in providers
    ]


def _metrics_dir() -> str | None:
    """Let every child write its metrics where the API's /prometheus endpoint reads them.

    Returns:
        The directory when this process made it (it is removed when the service stops); None when
        ``PROMETHEUS_MULTIPROC_DIR`` came from the environment (the operator's to keep).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    made = tempfile.mkdtemp(prefix="vmpooler-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def _check_operations(config: Config) -> None:
    """The ``:config:`` keys only the supervisor reads: a bad value stops the start with exit code 3.

    Raises:
        ConfigError: every problem found.
    """
    g, problems = config.globals, []
    if g.log_format not in LOG_FORMATS:
        problems.append(f":config:.log_format: must be one of {', '.join(LOG_FORMATS)}, got {g.log_format!r}")
    if g.manager_metrics_port is not None and g.manager_metrics_port > 65535:
        problems.append(f":config:.manager_metrics_port: must be a port number, got {g.manager_metrics_port}")
    if problems:
        raise ConfigError(problems)


def _metrics_endpoint(
    config: Config, args: argparse.Namespace, components: set[str]
) -> metrics.ExpositionServer | None:
    """The supervisor's own scrape endpoint when it runs no API worker (``:config: manager_metrics_port``)."""
    port = config.globals.manager_metrics_port
    if port is None:
        return None
    path = config.metrics.prometheus_endpoint
    if "api" in components:
        log.info(
            "manager_metrics_port %d not opened: the API's %s serves every process's metrics", port, path
        )
        return None
    bind = args.bind or env_value("VMPOOLER_BIND", "0.0.0.0")
    server = metrics.ExpositionServer(bind, port, path)
    log.info("metrics of every process on http://%s:%d%s (and /healthcheck)", bind, server.port, path)
    return server


def _serve(args: argparse.Namespace, components: set[str]) -> int:
    config = load_config(args.config)
    _check_operations(config)
    setup_logging(args.log_level, config.globals.logfile, config.globals.log_format)
    # The children are spawned: they read these from the environment they inherit.
    os.environ["VMPOOLER_LOG_FORMAT"] = config.globals.log_format
    if args.log_level:
        os.environ["VMPOOLER_LOG_LEVEL"] = args.log_level
    for warning in config.warnings:
        log.warning("config: %s", warning)
    redis_url, embedded = resolve_redis_url(config.redis)
    made = _metrics_dir()
    made_files: list[str] = []
    endpoint = None
    try:
        children: list[ChildSpec] = []
        if "api" in components:
            children += _api_children(config, args, redis_url, made_files)
        if "manager" in components:
            children += _manager_children(config, args, redis_url)
        if not children:
            log.error("nothing to run")
            return 1
        endpoint = _metrics_endpoint(config, args, components)
        set_title("vmpooler: supervisor")
        return Supervisor(children, on_exit=metrics.process_exited).run()
    finally:
        if endpoint is not None:
            endpoint.close()
        if embedded is not None:
            embedded.stop()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for path in made_files:
            with contextlib.suppress(OSError):
                os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vmpooler`` console script and ``python -m vmpooler``."""
    args = _parser().parse_intermixed_args(argv)
    words = list(args.components)
    if words and words[0] == "check-config":
        return _check_config(words[1:], strict=args.strict)
    unknown = [w for w in words if w not in COMPONENTS]
    if unknown:
        print(f"vmpooler: unknown component {unknown[0]!r}; expected api and/or manager", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _serve(args, set(words) or set(COMPONENTS))
    except ConfigError as exc:
        print("vmpooler: configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BOOT_ERROR
    except VmpoolerError as exc:
        print(f"vmpooler: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vmpooler: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
