"""``GET /token`` cost against the number of tokens in Redis: the per-user index against a scan.

Starts its own redis-server (scripts/benchlib.py), writes ``--tokens`` token hashes the way the original
writes them (no index) for ``--users`` users, then measures in the same run:

* the baseline: a SCAN of every token hash reading each one's user (what ``GET /token`` did before);
* the first ``store.tokens.of_user``, which builds the index once;
* later calls (median and p99 of ``--repeat``), which read one set and the user's hashes.

Usage: ``python scripts/bench_tokens.py [--tokens 50000] [--users 1000] [--repeat 200]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import pct, redis_server

from vmpooler import keys
from vmpooler.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as (_proc, port):
        client = redis.Redis(port=port, decode_responses=True)
        with client.pipeline(transaction=False) as pipe:
            for n in range(args.tokens):
                pipe.hset(keys.token(f"t{n:07d}"), mapping={"user": f"user{n % args.users}", "created": "x"})
            pipe.execute()
        started = time.perf_counter()
        scanned = [
            key
            for key in client.scan_iter(match=keys.token_pattern(), count=500)
            if client.hget(key, "user") == "user7"
        ]
        baseline = time.perf_counter() - started
        store = Store.from_url(f"redis://127.0.0.1:{port}/0")
        started = time.perf_counter()
        store.tokens.of_user("user7")
        first = time.perf_counter() - started
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            found = store.tokens.of_user("user7")
            times.append(time.perf_counter() - started)
        assert len(found) == len(scanned)
        print(f"{args.tokens} tokens, {args.users} users, {len(found)} tokens of the user asked for")
        print(f"  baseline, scan of every token:     {baseline * 1000:9.1f} ms")
        print(f"  index, first call (builds it once): {first * 1000:9.1f} ms")
        median, p99 = pct(times, 0.5), pct(times, 0.99)
        print(f"  index, later calls: median {median * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
        print(f"  speed-up of a later call over the scan: {baseline / median:.0f}x")
        store.close()


if __name__ == "__main__":
    main()
