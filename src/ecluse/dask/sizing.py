"""Fit Dask inside a project's sandbox: worker counts and memory from the quota.

A sandbox has no ``/sys`` (see docs/sandbox.md), so Dask cannot read its
cgroup limits and would size workers from the *host's* cores and memory. Every
figure here comes from the project's :class:`~ecluse.config.Quota` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Project

MiB = 2**20
#: memory kept for the Jupyter server, the kernel and the Dask scheduler
RESERVED_FRACTION = 0.25
MIN_RESERVED = 256 * MiB
MIN_WORKER_MEMORY = 256 * MiB


@dataclass(frozen=True)
class DaskSizing:
    """How Dask fits in one sandbox of a project."""

    workers: int  # worker processes
    threads_per_worker: int
    worker_memory: int  # bytes, per worker
    scheduler_memory: int  # bytes (reserved: scheduler / workspace server + kernel)
    cores: float  # the project's CPU quota
    memory: int  # the project's memory quota (the sandbox's cgroup limit)

    @property
    def total_worker_memory(self) -> int:
        return self.workers * self.worker_memory


def sizing(project: Project) -> DaskSizing:
    """Workers and memory fitted within ``project.quota`` (never the host's size).

    ``workers`` = ``quota.dask_workers`` (at least 1), lowered until each gets at
    least 256 MiB; the memory left after a reserve (¼ of the quota, at least
    256 MiB) is shared equally; threads = the CPU quota spread over the workers.
    """
    q = project.quota
    reserved = max(MIN_RESERVED, int(q.memory * RESERVED_FRACTION))
    reserved = min(reserved, q.memory // 2)
    available = q.memory - reserved
    workers = max(1, q.dask_workers)
    while workers > 1 and available // workers < MIN_WORKER_MEMORY:
        workers -= 1
    threads = max(1, math.ceil(q.cpu / workers))
    return DaskSizing(workers=workers, threads_per_worker=threads,
                      worker_memory=available // workers, scheduler_memory=reserved,
                      cores=q.cpu, memory=q.memory)


def dask_env(project: Project, user: str | None = None, *,
             dashboard_link: str = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status",
             sized: DaskSizing | None = None) -> dict[str, str]:
    """Environment for a workspace sandbox so that Dask fits the project quota.

    * ``LocalCluster()`` from dask-labextension's "New cluster" button gets
      exact ``n_workers`` / ``threads_per_worker`` / ``memory_limit``
      (``DASK_LABEXTENSION__FACTORY__KWARGS__*``);
    * the threaded scheduler (``dask.compute`` without a client) uses the CPU
      quota (``DASK_NUM_WORKERS``);
    * ``ECLUSE_DASK_*`` carry the figures for code that builds its own
      cluster (see docs/dask.md);
    * with ``user``, spilling goes to ``/home/<user>/.cache/dask-spill``, not to
      ``/tmp`` (a tmpfs counted in the memory limit);
    * the dashboard link goes through jupyter-server-proxy (via the hub).

    A plain ``LocalCluster()`` also needs the memory rlimit that
    :func:`dask_command_prefix` sets on the workspace server. ``sized``: the
    project's :func:`sizing`, when the caller has it already.
    """
    s = sized or sizing(project)
    env = {
        "DASK_NUM_WORKERS": str(max(1, math.ceil(s.cores))),
        "DASK_LABEXTENSION__FACTORY__MODULE": "distributed",
        "DASK_LABEXTENSION__FACTORY__CLASS": "LocalCluster",
        "DASK_LABEXTENSION__FACTORY__KWARGS__N_WORKERS": str(s.workers),
        "DASK_LABEXTENSION__FACTORY__KWARGS__THREADS_PER_WORKER": str(s.threads_per_worker),
        "DASK_LABEXTENSION__FACTORY__KWARGS__MEMORY_LIMIT": str(s.worker_memory),
        "DASK_DISTRIBUTED__DASHBOARD__LINK": dashboard_link,
        "ECLUSE_DASK_WORKERS": str(s.workers),
        "ECLUSE_DASK_THREADS_PER_WORKER": str(s.threads_per_worker),
        "ECLUSE_DASK_WORKER_MEMORY": str(s.worker_memory),
        "ECLUSE_DASK_MEMORY_LIMIT": str(s.total_worker_memory),
        "MEM_LIMIT": str(s.memory),
        "CPU_LIMIT": f"{s.cores:g}",
    }
    if user:
        env["DASK_TEMPORARY_DIRECTORY"] = f"/home/{user}/.cache/dask-spill"
    return env


def dask_command_prefix(project: Project, sized: DaskSizing | None = None) -> list[str]:
    """Prefix for the workspace server command: ``prlimit --rss=<worker memory total>``.

    distributed takes the smallest of the host memory, the cgroup limit (not
    visible in a sandbox) and ``RLIMIT_RSS`` as the machine's memory, so a plain
    ``LocalCluster()`` in a kernel then splits the project's worker memory
    instead of the host's 24 GB. (Linux does not enforce ``RLIMIT_RSS``; the
    cgroup does.)
    """
    s = sized or sizing(project)
    return ["/usr/bin/prlimit", f"--rss={s.total_worker_memory}", "--"]

