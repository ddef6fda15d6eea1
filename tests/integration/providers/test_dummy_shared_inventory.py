"""DummyProvider's ``filename`` shared like a hypervisor: several providers and several OS processes on one
inventory file see each other's VMs, and no write clobbers another's.

Real files in ``tmp_path`` and real processes (multiprocessing ``spawn``); no Redis.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import TIMEOUT_SCALE, wait_for
from vmpooler.errors import CloneFailed
from vmpooler.providers.base import PoolSpec
from vmpooler.providers.dummy import DummyProvider, DummySettings

pytestmark = pytest.mark.integration

POOLS = {"pool1": PoolSpec(name="pool1", template="templates/one")}
JOIN_TIMEOUT = 30 * TIMEOUT_SCALE


def provider(path: Path | None, wait: Callable[[float], bool] | None = None, **options: Any) -> DummyProvider:
    """A started DummyProvider on the inventory file ``path`` (None: in memory only)."""
    filename = {} if path is None else {"filename": str(path)}
    settings = DummySettings.from_options({**filename, **options}, instance="dummy1")
    made = DummyProvider("dummy1", settings, POOLS, wait=wait)
    made.start()
    return made


Make = Callable[..., DummyProvider]


@pytest.fixture
def make() -> Iterator[Make]:
    """``provider(...)`` for the test's own process; every one is stopped in teardown."""
    made: list[DummyProvider] = []

    def build(
        path: Path | None, wait: Callable[[float], bool] | None = None, **options: Any
    ) -> DummyProvider:
        made.append(provider(path, wait, **options))
        return made[-1]

    yield build
    for each in made:
        each.stop()


def names(made: DummyProvider) -> list[str]:
    return [vm.name for vm in made.list_vms("pool1")]


@pytest.fixture
def spawn() -> Iterator[Callable[..., SpawnProcess]]:
    """Start ``target(*args)`` in a spawned process; any still alive at teardown is killed."""
    context = multiprocessing.get_context("spawn")
    started: list[SpawnProcess] = []

    def start(target: Callable[..., None], *args: Any) -> SpawnProcess:
        process = context.Process(target=target, args=args)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(5)


@pytest.fixture
def context() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def join(*processes: SpawnProcess) -> None:
    for process in processes:
        process.join(JOIN_TIMEOUT)
        assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"


def step(barrier: Any, processes: list[SpawnProcess]) -> None:
    """Wait at ``barrier`` with ``processes``; if one broke it, fail with how they ended."""
    try:
        barrier.wait(JOIN_TIMEOUT)
    except threading.BrokenBarrierError:
        for process in processes:
            process.join(JOIN_TIMEOUT)
        pytest.fail(
            f"a process failed (exit codes {[p.exitcode for p in processes]}); its traceback is above"
        )


# -- what the spawned processes run (module level, so that spawn can import them) -------------------


def _create_then_destroy(path: str, create: list[str], destroy: list[str], barrier: Any) -> None:
    """With 4 threads: create ``create``, let the test look, destroy ``destroy``; in step with the other
    process and the test (``barrier``: start, all created, looked)."""
    made = provider(Path(path), connection_pool_size=4, createvm_max_time=0.02, destroyvm_max_time=0.01)
    try:
        with ThreadPoolExecutor(4) as threads:
            barrier.wait(JOIN_TIMEOUT)
            list(threads.map(lambda name: made.create_vm("pool1", name), create))
            barrier.wait(JOIN_TIMEOUT)
            barrier.wait(JOIN_TIMEOUT)
            list(threads.map(lambda name: made.destroy_vm("pool1", name), destroy))
    except BaseException:
        barrier.abort()  # the test and the other process stop waiting for this one
        raise
    finally:
        made.stop()


def _slow_clone(path: str, finish: Any, cloned: Any, may_stop: Any, outcome: Any) -> None:
    """Clone ``slow`` until the test sets ``finish``, say how it went, and stop when it sets ``may_stop``."""

    def wait(_seconds: float) -> bool:
        assert finish.wait(JOIN_TIMEOUT), "the test never let the clone finish"
        return False  # not cut short by a stop

    made = provider(Path(path), wait=wait, createvm_max_time=1)
    try:
        made.create_vm("pool1", "slow")
        outcome.put("cloned")
    except Exception as exc:
        outcome.put(f"failed: {exc!r}")
    cloned.set()
    may_stop.wait(JOIN_TIMEOUT)
    made.stop()


# -- tests ------------------------------------------------------------------------------------------


def test_two_providers_on_one_file_see_each_others_vms(tmp_path: Path, make: Make) -> None:
    path = tmp_path / "inventory.yaml"
    first, second = make(path), make(path)
    first.create_vm("pool1", "vm1")
    assert names(second) == ["vm1"]
    assert second.vm_ready("pool1", "vm1") is True
    second.create_vm("pool1", "vm2")
    second.destroy_vm("pool1", "vm1")
    assert names(first) == ["vm2"]
    assert first.get_vm("pool1", "vm1") is None
    first.stop()
    second.stop()
    assert names(make(path)) == ["vm2"]


def test_without_a_file_each_provider_keeps_its_own_vms(make: Make) -> None:
    first, second = make(None), make(None)
    first.create_vm("pool1", "vm1")
    assert names(first) == ["vm1"] and names(second) == []


def test_two_processes_creating_and_destroying_at_once_lose_nothing(
    tmp_path: Path, make: Make, spawn: Callable[..., SpawnProcess], context: SpawnContext
) -> None:
    path = tmp_path / "inventory.yaml"
    first, second = [f"a{n:02d}" for n in range(50)], [f"b{n:02d}" for n in range(50)]
    barrier = context.Barrier(3)  # the two processes and the test
    processes = [
        spawn(_create_then_destroy, str(path), first, second[:25], barrier),
        spawn(_create_then_destroy, str(path), second, first[:25], barrier),
    ]
    step(barrier, processes)  # go
    step(barrier, processes)  # both created theirs
    reader = make(path)
    assert names(reader) == sorted(first + second)
    step(barrier, processes)  # each destroys half of the other's
    join(*processes)
    assert names(reader) == sorted(first[25:] + second[25:])
    assert names(make(path)) == sorted(first[25:] + second[25:])
    assert [p.name for p in tmp_path.iterdir()] == ["inventory.yaml"]  # no lock or temporary files left


def test_a_clone_in_another_process_is_seen_cloning_and_keeps_our_vms(
    tmp_path: Path, make: Make, spawn: Callable[..., SpawnProcess], context: SpawnContext
) -> None:
    path = tmp_path / "inventory.yaml"
    ours = make(path)
    finish, cloned, may_stop = context.Event(), context.Event(), context.Event()
    outcome = context.Queue()
    cloner = spawn(_slow_clone, str(path), finish, cloned, may_stop, outcome)
    wait_for(lambda: ours.dummy_state("pool1", "slow") == "CLONING", 20, "the other process's clone")
    assert ours.vm_ready("pool1", "slow") is False
    assert ours.get_vm("pool1", "slow") is not None
    ours.create_vm("pool1", "during")  # while the other process clones
    assert names(ours) == ["during", "slow"]
    finish.set()
    assert cloned.wait(JOIN_TIMEOUT), "the clone never finished"
    assert outcome.get(timeout=5) == "cloned"
    assert ours.dummy_state("pool1", "slow") == "RUNNING"
    assert ours.vm_ready("pool1", "slow") is True
    ours.create_vm("pool1", "after")  # after its last change, before its stop
    may_stop.set()
    join(cloner)
    assert names(make(path)) == ["after", "during", "slow"]


def test_stop_does_not_bring_back_a_vm_another_provider_destroyed(tmp_path: Path, make: Make) -> None:
    path = tmp_path / "inventory.yaml"
    first = make(path)
    first.create_vm("pool1", "vm1")
    first.create_vm("pool1", "vm2")
    assert names(first) == ["vm1", "vm2"]  # its last read
    second = make(path)
    second.destroy_vm("pool1", "vm1")
    first.stop()
    assert names(make(path)) == ["vm2"]


class Gate:
    """A provider ``wait`` that blocks until the test opens it (a clone the test can act during)."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, seconds: float) -> bool:
        self.entered.set()
        assert self.opened.wait(JOIN_TIMEOUT), "the test never opened the gate"
        return False


def clone_in_thread(made: DummyProvider, gate: Gate, name: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(made.create_vm("pool1", name))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert gate.entered.wait(JOIN_TIMEOUT), "the clone never started"
    return thread, outcome


def test_a_clone_destroyed_by_another_provider_fails_and_stays_gone(tmp_path: Path, make: Make) -> None:
    path = tmp_path / "inventory.yaml"
    gate = Gate()
    cloner = make(path, wait=gate, createvm_max_time=5)  # the clone waits for the test
    other = make(path)
    thread, outcome = clone_in_thread(cloner, gate, "vm1")
    assert other.dummy_state("pool1", "vm1") == "CLONING"
    other.destroy_vm("pool1", "vm1")
    gate.opened.set()
    thread.join(JOIN_TIMEOUT)
    [error] = outcome
    assert isinstance(error, CloneFailed) and "deleted while it was being cloned" in str(error)
    assert names(cloner) == names(other) == []


def test_a_clone_whose_name_was_reused_meanwhile_leaves_the_new_vm_alone(tmp_path: Path, make: Make) -> None:
    path = tmp_path / "inventory.yaml"
    gate = Gate()
    cloner = make(path, wait=gate, createvm_max_time=5, createvm_fail_percent=100)
    other = make(path)
    thread, outcome = clone_in_thread(cloner, gate, "vm1")
    other.destroy_vm("pool1", "vm1")
    other.create_vm("pool1", "vm1")  # the same name, another VM
    gate.opened.set()
    thread.join(JOIN_TIMEOUT)
    [error] = outcome
    assert isinstance(error, CloneFailed) and "simulated clone failure" in str(error)
    assert names(cloner) == ["vm1"]  # the failed clone took out its own VM only
    assert cloner.dummy_state("pool1", "vm1") == other.dummy_state("pool1", "vm1") == "RUNNING"
