"""LeanRedis (``connect(..., lean=True)``) against a real redis-server: the same replies as redis-py,
scripts and their reload, errors, dead and timed-out connections, threads, AUTH/SELECT, unix sockets,
fork, and the pipelines and pub/sub it leaves to redis-py's pool."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_lib

from tests.conftest import redis_server_binary
from tests.support.service import free_port
from vmpooler import nogil
from vmpooler.store import lean as lean_module
from vmpooler.store.connection import connect
from vmpooler.store.lean import LeanRedis

pytestmark = pytest.mark.integration

# one script answering each kind of Lua reply: a table (nested), nil, an integer, a status
KINDS_SCRIPT = """
if ARGV[1] == 'table' then return {1, 'a', {2, 'b'}, redis.call('GET', KEYS[1])} end
if ARGV[1] == 'nil' then return nil end
if ARGV[1] == 'int' then return 42 end
if ARGV[1] == 'status' then return redis.status_reply('FINE') end
return redis.error_reply('unknown kind')
"""

# holds the server for ARGV[1] microseconds (DEBUG SLEEP is refused by Redis 7's default
# enable-debug-command no); other clients' commands wait until it ends
BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1])
return 1
"""


def lean_connect(url: str, **kwargs: Any) -> LeanRedis:
    """``connect(url, lean=True, ...)``, which must have taken the lean path."""
    client = connect(url, lean=True, **kwargs)
    assert isinstance(client, LeanRedis)
    return client


@pytest.fixture
def plain(redis_url: str) -> Iterator[redis_lib.Redis]:
    """redis-py as the reference: decoding, RESP2 (as ``connect`` configures both paths)."""
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    yield client
    client.close()


@pytest.fixture
def lean(redis_url: str) -> Iterator[LeanRedis]:
    client = lean_connect(redis_url)
    yield client
    client.close()


def shape(value: Any) -> Any:
    """A value's type, recursively: equal replies of different Python types must not compare equal."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), shape(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(shape(v) for v in value))
    return type(value).__name__


def local_port(client: LeanRedis) -> int:
    """The local TCP port of the client's only idle lean connection."""
    assert len(client._idle) == 1
    return int(client._idle[0].sock.getsockname()[1])


_QUIET_SERVER = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


@contextmanager
def extra_redis(*args: str, probe: Callable[[], redis_lib.Redis]) -> Iterator[str]:
    """A redis-server of its own with ``args`` (a short data dir, also for unix sockets); yields the dir.

    ``probe`` builds the client that tells when it serves (with its password or socket path).
    """
    data_dir = tempfile.mkdtemp(prefix="vmp-lean-", dir="/tmp")
    proc = subprocess.Popen(
        [redis_server_binary(), *_QUIET_SERVER, "--dir", data_dir, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server {args} exited with {proc.returncode}")
            client = None
            try:
                client = probe()
                client.ping()
                break
            except (redis_lib.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                if client is not None:
                    client.close()
        yield data_dir
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


# -- 1. the same replies as redis-py ------------------------------------------------------------------


def _seed(client: redis_lib.Redis) -> None:
    client.hset("h", mapping={"a": "1", "b": "two", "ü": "ß"})
    client.sadd("s", "x", "y", "z")
    client.zadd("z", {"m1": 1.5, "m2": 2, "m3": -3.25})
    client.set("str", "value")
    client.set("ttl", "v", ex=100)
    client.set("n1", 10)
    client.set("n2", 10)
    client.rpush("list", "l1", "l2")
    for i in range(30):
        client.set(f"scan:{i}", i)


SAME_REPLIES: list[tuple[str, Callable[[redis_lib.Redis], Any]]] = [
    ("hgetall", lambda c: c.hgetall("h")),
    ("hgetall-missing", lambda c: c.hgetall("nope")),
    ("hget", lambda c: c.hget("h", "ü")),
    ("hget-missing", lambda c: c.hget("h", "nope")),
    ("hmget", lambda c: c.hmget("h", ["a", "nope", "b"])),
    ("hlen", lambda c: c.hlen("h")),
    ("smembers", lambda c: c.smembers("s")),
    ("smembers-missing", lambda c: c.smembers("nope")),
    ("sismember-yes", lambda c: c.sismember("s", "x")),
    ("sismember-no", lambda c: c.sismember("s", "q")),
    ("zrange-withscores", lambda c: c.zrange("z", 0, -1, withscores=True)),
    ("zrange", lambda c: c.zrange("z", 0, -1)),
    ("zscore", lambda c: c.zscore("z", "m3")),
    ("zscore-missing", lambda c: c.zscore("z", "nope")),
    ("exists", lambda c: c.exists("h", "s", "nope")),
    ("get", lambda c: c.get("str")),
    ("get-missing", lambda c: c.get("nope")),
    ("type", lambda c: [c.type(k) for k in ("h", "s", "z", "str", "list", "nope")]),
    ("lrange", lambda c: c.lrange("list", 0, -1)),
    ("scan_iter", lambda c: sorted(c.scan_iter(match="scan:*", count=7))),
    ("set", lambda c: c.set("str", "value")),
    ("set-nx-existing", lambda c: c.set("str", "other", nx=True)),
    ("delete-missing", lambda c: c.delete("nope")),
    ("expire-missing", lambda c: c.expire("nope", 10)),
    ("ping", lambda c: c.ping()),
    ("config_get", lambda c: c.config_get("maxmemory-policy")),  # a two-word command name
    ("script_exists", lambda c: c.script_exists("0" * 40)),
    ("kinds-table", lambda c: c.register_script(KINDS_SCRIPT)(keys=["str"], args=["table"])),
    ("kinds-nil", lambda c: c.register_script(KINDS_SCRIPT)(keys=["str"], args=["nil"])),
    ("kinds-int", lambda c: c.register_script(KINDS_SCRIPT)(keys=["str"], args=["int"])),
    ("kinds-status", lambda c: c.register_script(KINDS_SCRIPT)(keys=["str"], args=["status"])),
]


@pytest.mark.parametrize(("name", "call"), SAME_REPLIES, ids=[name for name, _ in SAME_REPLIES])
def test_replies_equal_redis_py(plain: redis_lib.Redis, lean: LeanRedis, name: str, call: Callable) -> None:
    _seed(plain)
    expected = call(plain)
    got = call(lean)
    assert got == expected
    assert shape(got) == shape(expected)


def test_reply_shapes_of_counters_clock_and_ttl(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    _seed(plain)
    assert isinstance(lean, LeanRedis)
    # incr on two keys seeded alike: same value, same type
    expected, got = plain.incr("n1"), lean.incr("n2")
    assert (got, type(got)) == (expected, type(expected)) == (11, int)
    assert lean.incr("n2", 5) == 16
    assert plain.get("n2") == "16"

    clock = lean.time()
    assert isinstance(clock, tuple) and len(clock) == 2
    assert all(type(part) is int for part in clock)
    assert abs(clock[0] - plain.time()[0]) <= 2

    assert type(lean.ttl("ttl")) is int and 90 <= lean.ttl("ttl") <= 100
    assert lean.ttl("str") == plain.ttl("str") == -1
    assert lean.ttl("nope") == plain.ttl("nope") == -2

    # the reply shapes the store relies on, independently of the comparison
    assert lean.hgetall("nope") == {}
    assert lean.smembers("s") == {"x", "y", "z"}
    assert lean.zrange("z", 0, 0, withscores=True) == [("m3", -3.25)]
    assert lean.hget("h", "nope") is None


# -- 2. scripts ---------------------------------------------------------------------------------------


def test_registered_script_survives_script_flush(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    lean.set("k", "v")
    kinds = lean.register_script(KINDS_SCRIPT)
    assert kinds(keys=["k"], args=["int"]) == 42  # first call: NOSCRIPT, loaded, run
    assert plain.script_exists(kinds.sha) == [True]

    plain.script_flush()
    assert plain.script_exists(kinds.sha) == [False]

    assert kinds(keys=["k"], args=["table"]) == [1, "a", [2, "b"], "v"]
    assert plain.script_exists(kinds.sha) == [True]
    assert kinds(keys=["k"], args=["status"]) == "FINE"


def test_script_load_and_evalsha(lean: LeanRedis) -> None:
    sha = lean.script_load("return ARGV[1] .. '!'")
    assert isinstance(sha, str) and len(sha) == 40
    assert lean.evalsha(sha, 0, "hi") == "hi!"
    with pytest.raises(redis_lib.exceptions.NoScriptError):
        lean.evalsha("f" * 40, 0)


# -- 3. errors ----------------------------------------------------------------------------------------


def test_wrongtype_raises_and_keeps_the_connection(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    plain.rpush("list", "x")
    assert lean.ping()
    assert len(lean._idle) == 1
    conn = lean._idle[0]

    with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE"):
        lean.hget("list", "f")

    assert lean._idle == [conn]  # given back, not closed: the error was a reply
    assert lean.lrange("list", 0, -1) == ["x"]
    assert lean._idle == [conn]


def test_script_error_reply_raises(lean: LeanRedis) -> None:
    with pytest.raises(redis_lib.ResponseError, match="custom failure"):
        lean.eval("return redis.error_reply('MYERR custom failure')", 0)
    with pytest.raises(redis_lib.ResponseError, match="unknown kind"):
        lean.register_script(KINDS_SCRIPT)(keys=["k"], args=["other"])
    assert lean.eval("return 7", 0) == 7
    assert len(lean._idle) == 1


def test_unknown_command_raises(lean: LeanRedis) -> None:
    with pytest.raises(redis_lib.ResponseError, match="unknown command"):
        lean.execute_command("NOSUCHCOMMAND", "x")
    assert lean.ping()


@pytest.mark.parametrize("value", [True, False, None], ids=["true", "false", "none"])
def test_unencodable_argument_raises_dataerror_and_sends_nothing(
    plain: redis_lib.Redis, lean: LeanRedis, value: Any
) -> None:
    assert lean.ping()
    with pytest.raises(redis_lib.DataError):
        lean.set("k", value)
    assert plain.exists("k") == 0
    assert lean.set("k", "fine")  # the connection is in sync: this reply is SET's, not a leftover
    assert lean.get("k") == "fine"
    assert len(lean._idle) <= 1


# -- 4. argument and value round-trips ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("café ☕", "café ☕"),
        ("", ""),
        ("a\r\nb", "a\r\nb"),
        (42, "42"),
        (-7, "-7"),
        (3.5, "3.5"),
        (0.1, "0.1"),
        (b"caf\xc3\xa9", "café"),
    ],
    ids=["unicode", "empty", "crlf", "int", "negative", "float", "float-repr", "bytes"],
)
def test_values_round_trip(plain: redis_lib.Redis, lean: LeanRedis, value: Any, stored: str) -> None:
    assert lean.set("k", value)
    assert lean.get("k") == stored
    assert plain.get("k") == stored
    plain.set("p", value)
    assert lean.get("p") == plain.get("p")


def test_equal_values_of_other_types_pack_as_their_own(lean: LeanRedis) -> None:
    """The packer keeps the wire form of integers it has seen: 1.0 (equal to 1, and hashed alike) is
    still sent as "1.0", and True still refused as redis-py refuses it."""
    assert lean.set("k", 1)
    assert lean.set("k", 1.0)
    assert lean.get("k") == "1.0"
    with pytest.raises(redis_lib.DataError):
        lean.set("k", True)
    assert lean.set("k", 1)
    assert lean.get("k") == "1"


def test_packer_memory_is_bounded(lean: LeanRedis) -> None:
    """Names seen once (VMs, claims, times) fill the packer's memory; full, it starts again."""
    for i in range(lean_module._MAX_SEGMENTS + 50):
        assert lean.set(f"once-{i}", i)
        assert len(lean_module._SEGMENTS) <= lean_module._MAX_SEGMENTS
    assert lean.mget("once-7", f"once-{lean_module._MAX_SEGMENTS + 49}") == [
        "7",
        str(lean_module._MAX_SEGMENTS + 49),
    ]


def test_a_response_callback_set_later_applies(lean: LeanRedis) -> None:
    assert lean.set("k", "v")
    assert lean.get("k") == "v"
    lean.set_response_callback("GET", lambda reply, **_: f"<{reply}>")
    assert lean.get("k") == "<v>"


def test_raw_bytes_and_unicode_keys(redis_url: str, lean: LeanRedis) -> None:
    raw = b"\x00\xff\xfe binary \r\n"
    assert lean.set(b"bin", raw)
    assert lean.hset("hash ☕", "clé", 1) == 1
    with redis_lib.Redis.from_url(redis_url) as undecoded:
        assert undecoded.get(b"bin") == raw
        assert undecoded.hgetall("hash ☕".encode()) == {"clé".encode(): b"1"}
    assert lean.hgetall("hash ☕") == {"clé": "1"}


def test_replies_larger_than_the_read_buffer(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    big = "x" * 300_000 + "é"
    assert lean.set("big", big)
    assert lean.get("big") == big
    plain.hset("wide", mapping={f"field{i}": f"value{i}" for i in range(5000)})
    assert lean.hgetall("wide") == plain.hgetall("wide")
    assert lean.ping()


def test_undecodable_reply_raises_like_redis_py(
    redis_url: str, plain: redis_lib.Redis, lean: LeanRedis
) -> None:
    with redis_lib.Redis.from_url(redis_url) as undecoded:
        undecoded.set("bad", b"\xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        plain.get("bad")
    with pytest.raises(UnicodeDecodeError):
        lean.get("bad")
    plain.set("good", "fine")
    assert lean.get("good") == "fine"  # not a leftover of the failed reply


def test_large_values_are_not_retained(lean: LeanRedis) -> None:
    """The packer may remember short strings (keys, SHAs), not the values it sent."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            lean.set(f"big{i}", "x" * 100_000 + str(i))  # 2 MB of values, no reference kept here
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 500_000


# -- 5. a connection Redis closed ---------------------------------------------------------------------


def test_connection_killed_by_redis_is_replaced(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    assert lean.set("k", "v")
    port = local_port(lean)
    assert plain.execute_command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}") == 1

    assert lean.get("k") == "v"  # no ConnectionError: the dead idle connection was noticed and replaced
    assert local_port(lean) != port
    assert lean.incr("n") == 1


def test_the_socket_methods_do_it_all_without_the_c_library(
    plain: redis_lib.Redis, lean: LeanRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # where libc's send and recv cannot be called through ctypes, sends and the idle check are Python's
    monkeypatch.setattr(nogil, "send_now", None)
    monkeypatch.setattr(nogil, "recv_now", None)
    assert lean.set("k", "v")
    port = local_port(lean)
    assert plain.execute_command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}") == 1
    assert lean.get("k") == "v"
    assert local_port(lean) != port


def test_a_command_larger_than_the_send_buffer_is_sent_whole(lean: LeanRedis) -> None:
    # the send made with the GIL held never waits: what does not fit at once goes the usual way
    value = os.urandom(12 << 20).hex()  # 24 MB
    assert lean.set("huge", value)
    assert lean.get("huge") == value
    assert lean.strlen("huge") == len(value)


def test_every_idle_connection_killed(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    # several idle connections, all closed by Redis: each is dropped in turn, one new one serves
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for _ in range(50):
            lean.incr("n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ports = [conn.sock.getsockname()[1] for conn in lean._idle]
    assert ports
    for port in ports:
        assert plain.execute_command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}") == 1
    assert lean.get("n") == "200"
    assert len(lean._idle) == 1


# -- 6. a reply that comes too late -------------------------------------------------------------------


def server_busy(port: int) -> bool:
    """Whether the server leaves a PING on a new connection unanswered for 50 ms (a script runs)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(0.05)
        sock.sendall(b"PING\r\n")
        try:
            sock.recv(16)
        except TimeoutError:
            return True
    return False


def test_timeout_closes_the_connection(redis_server: Any, redis_url: str, plain: redis_lib.Redis) -> None:
    plain.set("a", "first")
    plain.set("b", "second")
    lean = lean_connect(redis_url, socket_timeout=0.2)
    blocker = redis_lib.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    try:
        assert lean.get("b") == "second"
        result: list[Any] = []
        busy = threading.Thread(target=lambda: result.append(blocker.eval(BUSY_SCRIPT, 0, 1_000_000)))
        busy.start()
        deadline = time.monotonic() + 5
        while not server_busy(redis_server.port):  # the script runs: Redis answers nobody until it ends
            assert time.monotonic() < deadline, "the busy script never started"

        started = time.monotonic()
        with pytest.raises(redis_lib.TimeoutError):
            lean.get("a")  # its reply ("first") arrives once the script ends
        assert time.monotonic() - started < 0.8  # the socket timeout, not the script's end
        assert lean._idle == []  # the timed-out connection was closed, not given back

        busy.join(10)
        assert result == [1]
        # a new connection: a reused one would read GET a's late reply, "first"
        assert lean.get("b") == "second"
        assert lean.get("a") == "first"
    finally:
        lean.close()
        blocker.close()


# -- 7. threads ---------------------------------------------------------------------------------------


def test_threads_share_one_client(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    threads_n, rounds = 16, 500
    barrier = threading.Barrier(threads_n)
    crossed: list[str] = []
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for n in range(rounds):
                lean.incr("counter")
                mine = f"{i}:{n}"
                lean.hset("h", f"t{i}", mine)
                got = lean.hget("h", f"t{i}")
                if got != mine:
                    crossed.append(f"thread {i} round {n} read {got!r}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert crossed == []
    assert plain.get("counter") == str(threads_n * rounds)
    assert plain.hgetall("h") == {f"t{i}": f"{i}:{rounds - 1}" for i in range(threads_n)}
    assert 1 <= len(lean._idle) <= lean._max_idle
    assert lean.get("counter") == "8000"


# -- 8. password and database -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_port() -> Iterator[int]:
    port = free_port()
    with extra_redis(
        *("--port", str(port), "--requirepass", "s3cret", "--databases", "16"),
        *("--user", "alice", "on", ">alicepw", "~lean:*", "+@all"),  # an ACL user limited to lean:*
        probe=lambda: redis_lib.Redis(port=port, password="s3cret", socket_timeout=2),
    ):
        yield port


def test_password_and_db_from_the_url(password_port: int) -> None:
    lean = lean_connect(f"redis://:s3cret@127.0.0.1:{password_port}/5")
    try:
        assert isinstance(lean, LeanRedis)
        assert lean.set("landed", "in five")
        assert lean.get("landed") == "in five"
        with redis_lib.Redis(port=password_port, password="s3cret", db=5, decode_responses=True) as db5:
            assert db5.get("landed") == "in five"
        with redis_lib.Redis(port=password_port, password="s3cret", db=0) as db0:
            assert db0.exists("landed") == 0
        assert lean.delete("landed") == 1
    finally:
        lean.close()


@pytest.mark.parametrize("auth", [":wrong@", ""], ids=["wrong-password", "no-password"])
def test_bad_credentials_fail_the_first_command(password_port: int, auth: str) -> None:
    lean = lean_connect(f"redis://{auth}127.0.0.1:{password_port}/0")
    try:
        assert isinstance(lean, LeanRedis)
        with pytest.raises(redis_lib.AuthenticationError):
            lean.set("k", "v")
        with pytest.raises(redis_lib.AuthenticationError):
            lean.get("k")
    finally:
        lean.close()
    with redis_lib.Redis(port=password_port, password="s3cret") as check:
        assert check.exists("k") == 0


def test_db_index_out_of_range_raises(redis_server: Any) -> None:
    """SELECT's error reply fails the command, as in redis-py, instead of leaving it on DB 0."""
    key = "lean:out-of-range"
    with redis_lib.Redis(port=redis_server.port, db=0) as db0:
        db0.delete(key)
        # redis-py's behaviour (the session server has 64 DBs)
        with pytest.raises(redis_lib.RedisError), redis_lib.Redis.from_url(redis_server.url(64)) as reference:
            reference.set(key, "v")
        lean = lean_connect(redis_server.url(64))
        try:
            with pytest.raises(redis_lib.ResponseError, match="out of range"):
                lean.set(key, "v")
            assert lean._idle == []
        finally:
            lean.close()
            wrote_db0 = db0.delete(key)
    assert wrote_db0 == 0


def test_acl_user_from_the_url(password_port: int) -> None:
    """``user:password@``: AUTH with both, as that user (not the default one); a wrong password fails."""
    url = f"redis://alice:alicepw@127.0.0.1:{password_port}/3"
    lean = lean_connect(url)
    try:
        assert lean.set("lean:mine", "ok")
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            lean.set("other", "denied")  # alice may only touch lean:*
        assert lean.get("lean:mine") == "ok"
    finally:
        lean.close()
    wrong = lean_connect(url.replace("alicepw", "nope"))
    try:
        with pytest.raises(redis_lib.AuthenticationError):
            wrong.get("lean:mine")
    finally:
        wrong.close()


# -- 9. unix socket -----------------------------------------------------------------------------------


def test_unix_socket_url() -> None:
    holder: dict[str, str] = {}

    def probe() -> redis_lib.Redis:
        return redis_lib.Redis(unix_socket_path=holder["path"], socket_timeout=2)

    data_dir = tempfile.mkdtemp(prefix="vmp-s-", dir="/tmp")  # short: a socket path has ~100 bytes
    holder["path"] = path = os.path.join(data_dir, "r.sock")
    try:
        with extra_redis("--port", "0", "--unixsocket", path, "--unixsocketperm", "700", probe=probe):
            lean = lean_connect(f"unix://{path}?db=2")
            try:
                assert isinstance(lean, LeanRedis)
                assert lean.set("over", "unix ☕")
                assert lean.get("over") == "unix ☕"
                assert lean.hgetall("nope") == {}
                with redis_lib.Redis(unix_socket_path=path, db=2, decode_responses=True) as db2:
                    assert db2.get("over") == "unix ☕"
                with redis_lib.Redis(unix_socket_path=path, db=0) as db0:
                    assert db0.exists("over") == 0
                assert lean._idle[0].sock.family.name == "AF_UNIX"
            finally:
                lean.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# -- 10. fork -----------------------------------------------------------------------------------------


def test_forked_child_opens_its_own_connection(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    assert lean.set("parent", "p")
    parent_port = local_port(lean)

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            ok = lean.set("child", "c") is True and lean.get("parent") == "p"
            ok = ok and local_port(lean) != parent_port
            code = 0 if ok else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    assert plain.get("child") == "c"
    # the parent's own connection is untouched: same socket, in sync, its own replies
    assert lean.get("parent") == "p"
    assert local_port(lean) == parent_port
    assert lean.incr("after-fork") == 1


# -- 11. what stays on redis-py's pool ----------------------------------------------------------------


def test_pipelines_use_the_pool(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    with lean.pipeline(transaction=True) as pipe:
        pipe.set("k", "1")
        pipe.incr("k")
        pipe.get("k")
        pipe.hgetall("nope")
        assert pipe.execute() == [True, 2, "2", {}]
    with lean.pipeline(transaction=False) as pipe:
        pipe.incr("k", 3)
        pipe.smembers("nope")
        assert pipe.execute() == [5, set()]
    assert plain.get("k") == "5"
    assert lean.get("k") == "5"


def test_registered_script_in_a_pipeline(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    lean.set("k", "v")
    kinds = lean.register_script(KINDS_SCRIPT)
    plain.script_flush()
    with lean.pipeline() as pipe:
        kinds(keys=["k"], args=["int"], client=pipe)
        kinds(keys=["k"], args=["table"], client=pipe)
        pipe.get("k")
        assert pipe.execute() == [42, [1, "a", [2, "b"], "v"], "v"]
    assert kinds(keys=["k"], args=["nil"]) is None


def test_pipeline_watch_conflict(plain: redis_lib.Redis, lean: LeanRedis) -> None:
    lean.set("w", "0")
    with lean.pipeline() as pipe:
        pipe.watch("w")
        assert pipe.get("w") == "0"
        plain.set("w", "changed")
        pipe.multi()
        pipe.set("w", "mine")
        with pytest.raises(redis_lib.WatchError):
            pipe.execute()
    assert lean.get("w") == "changed"


def test_pubsub_round_trip(lean: LeanRedis) -> None:
    pubsub = lean.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe("lean-chan")
        deadline = time.monotonic() + 5
        while lean.pubsub_numsub("lean-chan") != [("lean-chan", 1)]:
            pubsub.get_message(timeout=0.05)
            assert time.monotonic() < deadline, "the subscription never registered"
        assert lean.publish("lean-chan", "hello ☕") == 1
        message = None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
        assert message is not None
        assert (message["type"], message["channel"], message["data"]) == ("message", "lean-chan", "hello ☕")
    finally:
        pubsub.close()
