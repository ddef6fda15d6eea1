"""govmomi's vSphere API simulator (vcsim) for tests and benchmarks: build, run, prepare a site.

``build()`` runs ``scripts/build-vcsim.sh`` once per machine (the binary is cached outside the
repository) under a file lock, so pytest-xdist workers do not build twice. ``Vcsim`` is one simulator
process on a free loopback port with its own user name and password; ``prepare_site`` gives it what a
vmpooler site has: a ``Templates`` folder holding a template made from one of the simulator's VMs.

The default model (govmomi's VPX): datacenter ``DC0``, cluster ``DC0_C0`` with hosts ``DC0_C0_H0..2``
(10/20/60 % CPU, set by our main.go), standalone host ``DC0_H0``, datastore ``LocalDS_0``,
networks ``VM Network`` and the distributed port group ``DC0_DVPG0``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from vmpooler.providers.vsphere import client
from vmpooler.providers.vsphere.values import Ref

__all__ = ["REPO", "Site", "Vcsim", "build", "prepare_site", "wait_until"]

REPO = Path(__file__).resolve().parents[3]
USERNAME, PASSWORD = "vmpooler", "s3cret"
DATACENTER, CLUSTER, DATASTORE = "DC0", "DC0_C0", "LocalDS_0"
TEMPLATE_SOURCE = "DC0_C0_RP0_VM0"
_PR_SET_PDEATHSIG = 1


class BuildError(RuntimeError):
    """The simulator could not be built (Go or govmomi missing): the tests fail, loudly."""


def build() -> str:
    """The path of the vcsim binary, built by ``scripts/build-vcsim.sh`` if need be.

    Raises:
        BuildError: with the script's output (e.g. "'go' is not on PATH (apt-get install golang-go)").
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vmpooler"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "vcsim.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "build-vcsim.sh")], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise BuildError(f"cannot build the vSphere simulator:\n{done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


class Vcsim:
    """One simulator process. ``kill``, ``freeze`` and ``thaw`` act on it like a failing vCenter."""

    def __init__(self, binary: str, workdir: Path, *args: str) -> None:
        self.binary, self.workdir, self.args = binary, workdir, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.host, self.port = "127.0.0.1", 0

    def start(self, timeout: float = 30.0) -> Vcsim:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "-l", "127.0.0.1:0", "-username", USERNAME, "-password", PASSWORD, *self.args]
        env = {**os.environ, "TMPDIR": str(self.workdir)}  # the simulated datastores' files go here
        with (self.workdir / "vcsim.log").open("ab") as log:  # its own log: look here after a failure
            self.proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=_die_with_parent
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("VCSIM_URL="):
            self.stop()
            raise RuntimeError(f"vcsim did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: connections reset, nothing answers any more."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung vCenter). Returns once stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", timeout=5)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Provider options for this simulator (short timeouts, no connect back-off)."""
        options: dict[str, Any] = {
            "server": self.server,
            "username": USERNAME,
            "password": PASSWORD,
            "insecure": True,
            "vsphere_timeout": 10,
            "task_timeout": 30,
            "retry_factor": 0,
            "ready_check": "poweron",
        }
        options.update(overrides)
        return options

    @contextmanager
    def session(self) -> Iterator[client.Session]:
        """An admin session for preparing and inspecting the simulator."""
        session = client.connect(self.host, self.port, USERNAME, PASSWORD, insecure=True, timeout=10)
        try:
            yield session
        finally:
            session.close()


@attrs.frozen
class Site:
    """What ``prepare_site`` made."""

    template: str  # inventory path below <dc>/vm, as pools name it
    template_ref: Ref
    hosts: dict[str, Ref]  # cluster host name -> ref


def prepare_site(sim: Vcsim, template: str = "tpl", folder_path: str = "Templates") -> Site:
    """A ``Templates`` folder (or ``folder_path``) with template ``template`` cloned from a powered-off
    simulator VM."""
    stop = threading.Event()
    with sim.session() as s:
        source = s.find_by_path(f"{DATACENTER}/vm/{TEMPLATE_SOURCE}")
        folder = _need(s.find_by_path(f"{DATACENTER}/vm"))
        for level in folder_path.split("/"):
            folder = s.create_folder(folder, level)
        assert source is not None
        state = s.properties([source], ["runtime.powerState"])[source]["runtime.powerState"]
        if state == "poweredOn":
            s.run("power off", source, "PowerOffVM_Task", timeout=30, stop=stop)
        spec = client.vim.vm.CloneSpec(location=client.vim.vm.RelocateSpec(), template=True, powerOn=False)
        task = s.start("template", source, "CloneVM_Task", folder=s.mo(folder), name=template, spec=spec)
        ref = s.wait(task, "template", 30, stop)
        cluster = _need(s.find_by_path(f"{DATACENTER}/host/{CLUSTER}"))
        members = s.properties([cluster], ["host"])[cluster]["host"]
        names = {props["name"]: ref for ref, props in s.properties(members, ["name"]).items()}
    return Site(template=f"{folder_path}/{template}", template_ref=ref, hosts=names)


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until truthy or ``timeout`` passes (then return its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no simulator outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _need(ref: Ref | None) -> Ref:
    assert ref is not None
    return ref
