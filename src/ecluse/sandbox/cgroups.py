"""Resource limits for local sandboxes: one cgroup per sandbox, v1 or v2.

Version 1 (separate ``memory``, ``cpu`` and ``pids`` hierarchies) and
version 2 (one unified hierarchy) are detected from ``/sys/fs/cgroup``. Every
sandbox gets ``<root>/<parent>/<id>`` in each hierarchy used; the launcher
writes its own PID into the listed ``cgroup.procs`` files before it execs
bubblewrap, so every process of the sandbox is accounted from the first one.

Cgroup membership is also how :mod:`ecluse.sandbox.local` tells a live
sandbox from a dead one: a PID can be reused, a process inside our cgroup is
ours.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
#: CPU weight of one core's worth of quota (v1 ``cpu.shares``, v2 ``cpu.weight``)
V1_SHARES_PER_CPU = 1024
V2_WEIGHT_PER_CPU = 100


#: the parent cgroup of the airlock's one-shot check sandboxes, beside the workspaces'
#: (``ecluse``): checks run in the background and weigh little (:class:`Cgroups`)
CHECKS_PARENT = "ecluse-checks"


def parent_cpu_cores() -> int:
    """The weight of the sandboxes' parent cgroup, in busy processes' worth.

    By default a cgroup weighs as much as a single process of its parent: all
    sandboxes together would get one process's share of the host against the
    hub, the proxy and the services, however many researchers are working.
    Sandboxes are the host's workload: together they weigh as much as one
    busy process per core (the platform processes keep theirs).
    """
    return os.cpu_count() or 1


class CgroupError(OSError):
    pass


@dataclass
class Limits:
    memory: int  # bytes
    cpu: float  # cores
    pids: int


def detect(root: Path = CGROUP_FS) -> int:
    """1 or 2: the cgroup version that has the memory controller."""
    if (root / "memory" / "memory.limit_in_bytes").exists():
        return 1
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return 2
    raise CgroupError("no usable memory cgroup controller under /sys/fs/cgroup")


class Cgroups:
    """The cgroup(s) of one sandbox; ``version`` 1 or 2."""

    V1_CONTROLLERS = ("memory", "pids", "cpu")

    def __init__(self, sandbox_id: str, *, parent: str = "ecluse", root: Path = CGROUP_FS,
                 version: int | None = None, parent_weight: float | None = None):
        if "/" in sandbox_id or sandbox_id in ("", ".", ".."):
            raise ValueError(f"bad sandbox id {sandbox_id!r}")
        self.id = sandbox_id
        self.root = Path(root)
        self.parent = parent
        self.version = version or detect(self.root)
        #: the parent's CPU weight in busy processes' worth (None: one per core,
        #: :func:`parent_cpu_cores`); the airlock's checks weigh a fraction of one
        #: process, so that under contention the API answers first (issue 21 item 1)
        self.parent_weight = parent_cpu_cores() if parent_weight is None else parent_weight

    # ------------------------------------------------------------------ paths

    @property
    def dirs(self) -> list[Path]:
        if self.version == 1:
            return [self.root / c / self.parent / self.id for c in self.V1_CONTROLLERS]
        return [self.root / self.parent / self.id]

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def to_state(self) -> dict:
        return {"version": self.version, "parent": self.parent, "root": str(self.root)}

    @classmethod
    def from_state(cls, sandbox_id: str, data: dict) -> Cgroups:
        return cls(sandbox_id, parent=data["parent"], root=Path(data["root"]),
                   version=data["version"])

    # ---------------------------------------------------------------- create

    def create(self, limits: Limits) -> None:
        if self.version == 1:
            self._create_v1(limits)
        else:
            self._create_v2(limits)

    def _create_v1(self, limits: Limits) -> None:
        mem, pids, cpu = self.dirs
        for d in self.dirs:
            d.parent.mkdir(exist_ok=True)
            d.mkdir()
        # CPU under contention: sandboxes together weigh one busy process per
        # core against the host; each sandbox in proportion to its quota
        _write_if_changed(cpu.parent / "cpu.shares",
                          max(2, int(V1_SHARES_PER_CPU * self.parent_weight)))
        _write(cpu / "cpu.shares", max(2, int(limits.cpu * V1_SHARES_PER_CPU)))
        _write(mem / "memory.limit_in_bytes", limits.memory)
        if (mem / "memory.memsw.limit_in_bytes").exists():  # no swap beyond the limit
            _write(mem / "memory.memsw.limit_in_bytes", limits.memory)
        if (mem / "memory.swappiness").exists():
            try:
                _write(mem / "memory.swappiness", 0)
            except OSError:
                pass
        _write(pids / "pids.max", limits.pids)
        _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(cpu / "cpu.cfs_quota_us", max(1000, int(limits.cpu * CPU_PERIOD_US)))

    def _create_v2(self, limits: Limits) -> None:
        (d,) = self.dirs
        parent = d.parent
        if not parent.exists():
            parent.mkdir(exist_ok=True)
        _enable_controllers(self.root, parent)
        _write_if_changed(parent / "cpu.weight",
                          min(10000, max(1, int(V2_WEIGHT_PER_CPU * self.parent_weight))))
        d.mkdir()
        _write(d / "cpu.weight", min(10000, max(1, int(limits.cpu * V2_WEIGHT_PER_CPU))))
        _write(d / "memory.max", limits.memory)
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", 0)
        if (d / "memory.oom.group").exists():  # one OOM kill takes the whole sandbox
            _write(d / "memory.oom.group", 1)
        _write(d / "pids.max", limits.pids)
        _write(d / "cpu.max", f"{max(1000, int(limits.cpu * CPU_PERIOD_US))} {CPU_PERIOD_US}")

    # ----------------------------------------------------------------- query

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                with open(f) as fh:
                    found.update(int(x) for x in fh.read().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        d = self.dirs[0]
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (d / name).read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def memory_peak(self) -> int:
        d = self.dirs[0]
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((d / name).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    # ------------------------------------------------------------------ kill

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> bool:
        """Send ``sig`` to every process until the cgroup is empty; True if empty."""
        if self.version == 2 and (self.dirs[0] / "cgroup.kill").exists() and sig == signal.SIGKILL:
            try:
                _write(self.dirs[0] / "cgroup.kill", 1)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; missing ones are fine."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last exiting task is released
                    time.sleep(0.02)
            else:
                raise CgroupError(f"cannot remove cgroup {d}")


def list_ids(parent: str = "ecluse", root: Path = CGROUP_FS, version: int | None = None) -> set[str]:
    """Ids of the sandbox cgroups that exist (for orphan cleanup)."""
    version = version or detect(root)
    bases = ([root / c / parent for c in Cgroups.V1_CONTROLLERS] if version == 1
             else [root / parent])
    ids: set[str] = set()
    for b in bases:
        if b.is_dir():
            ids.update(p.name for p in b.iterdir() if p.is_dir())
    return ids


def _write(path: Path, value: object) -> None:
    with open(path, "w") as fh:
        fh.write(str(value))


def _write_if_changed(path: Path, value: object) -> None:
    """Shared parent settings: written once, not rewritten at every start."""
    try:
        if path.read_text().strip() == str(value):
            return
    except FileNotFoundError:
        pass
    _write(path, value)


def _enable_controllers(root: Path, parent: Path) -> None:
    """v2: make memory, pids and cpu available to the children of ``parent``."""
    chain = [parent]
    while chain[-1] != root and chain[-1].parent != chain[-1]:
        chain.append(chain[-1].parent)
    for d in reversed(chain):  # from the root down to the parent
        st = d / "cgroup.subtree_control"
        have = set(st.read_text().split())
        missing = {"memory", "pids", "cpu"} - have
        if missing:
            _write(st, " ".join(f"+{c}" for c in sorted(missing)))
