"""``python -m tests.support.chaos``: a chaos run by hand, on a private Redis (``scripts/chaos.py``).

Starts an embedded redis-server (``vmpooler.redis_server``) and ``vmpooler`` in a temporary directory,
runs :func:`tests.support.chaos.run`, prints the summary and exits 1 when a check failed (2 when the
service did not start).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import redis

from tests.support.chaos.plan import SEED, ChaosPlan, Layout
from tests.support.chaos.run import Report, run
from tests.support.service import ServiceError, start_service
from vmpooler.redis_server import EmbeddedRedis

__all__ = ["main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos.py",
        description="Chaos run: the real service on a dummy provider that fails 20 % of everything, "
        "under random load; checks that nothing is lost, leaked or handed out twice.",
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to load the service")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the provider and the clients")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (log, inventory)")
    parser.add_argument("--pools", type=_positive, help="serve this many pools (default: 3 pools of 5, 4, 3)")
    parser.add_argument("--size", type=_positive, help="of this size each (default with --pools: 5)")
    return parser.parse_args(argv)


def _layout(args: argparse.Namespace) -> Layout:
    if args.pools is None and args.size is None:
        return Layout.default()
    return Layout.scaled(args.pools or 3, args.size or 5)


def chaos(plan: ChaosPlan, *, seconds: float, threads: int) -> Report:
    """Start Redis and the service in ``plan.workdir``, run, stop both.

    Raises:
        ServiceError: the service did not come up.
    """
    with EmbeddedRedis(plan.workdir / "redis") as server:
        config = plan.workdir / "vmpooler.yaml"
        config.write_text(plan.config_yaml(server.url))
        service = start_service(config, plan.workdir / "vmpooler.log")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            return run(service, client, plan, seconds=seconds, threads=threads)
        finally:
            client.close()
            service.stop()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vmpooler-chaos-"))
    try:
        plan = ChaosPlan(layout=_layout(args), workdir=workdir, seed=args.seed)
        try:
            report = chaos(plan, seconds=args.minutes * 60, threads=args.threads)
        except ServiceError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(report.summary())
        return 1 if report.problems else 0
    finally:
        print(f"work directory: {workdir}" + ("" if args.keep else " (removed)"))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
