"""A Dask cluster from a notebook, with its workers' progress shown while they come up.

A dask-gateway cluster's workers are sandboxes of their own: they take
seconds to tens of seconds each to start, and ``cluster.scale(n)`` returns at
once. :func:`start_cluster` asks for the workers, then shows
"k / n workers ready" (updated in place in JupyterLab, a line per change
elsewhere) until all are up, or stops at ``timeout`` with a clear message —
how many started, what the project allows — and shuts the cluster down so
that a half-started cluster does not hold the project's quota.

Where the workspace has the project's gateway (``DASK_GATEWAY__ADDRESS``, set
by the spawner) the cluster is the gateway's; otherwise a ``LocalCluster``
sized from the project quota (``ECLUSE_DASK_*``), with the same display.

    from ecluse_workspace.daskcluster import start_cluster
    client, cluster = start_cluster()          # the project's quota of workers
    ...
    client.close(); cluster.close()

This module imports no Écluse platform code (the extension must not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

#: seconds between two looks at the scheduler
POLL_INTERVAL = 0.5


class WorkersTimeout(TimeoutError):
    """The workers did not all come up in time (the message says how many did)."""


class Progress:
    """"k / n workers ready": one line updated in place in a notebook (IPython's
    ``display_id``), a printed line per change elsewhere."""

    def __init__(self, wanted: int, out: Callable[[str], None] | None = None):
        self.wanted = wanted
        self.last: str | None = None
        self._handle: Any = None
        self._out = out
        if out is None:
            try:
                from IPython import get_ipython
                from IPython.display import display

                if get_ipython() is not None:
                    self._handle = display(self._text(0), display_id=True)
            except ImportError:
                self._handle = None

    def _text(self, ready: int) -> str:
        return f"Dask: {ready} / {self.wanted} workers ready"

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self._handle is not None:
            self._handle.update(text)
        elif self._out is not None:
            self._out(text)
        else:
            print(text, flush=True)

    def update(self, ready: int) -> None:
        self.show(self._text(ready))


def ready_workers(client: Any) -> int:
    """Workers connected to the scheduler now."""
    return len(client.nthreads())


def wait_for_workers(client: Any, wanted: int, *, timeout: float = 300,
                     progress: Progress | None = None,
                     quota: int | None = None) -> int:
    """Show "k / n workers ready" until ``wanted`` workers are connected; raise
    :class:`WorkersTimeout` (after showing its message) at ``timeout`` seconds."""
    progress = progress or Progress(wanted)
    deadline = time.monotonic() + timeout
    ready = ready_workers(client)
    progress.update(ready)
    while ready < wanted:
        if time.monotonic() >= deadline:
            allowed = f" (the project allows {quota})" if quota is not None else ""
            message = (f"Dask: only {ready} of {wanted} workers started within "
                       f"{timeout:g} s{allowed}. The machine may be busy, or the "
                       "project's other clusters hold its workers: close the clusters "
                       "you no longer use (Dask panel), or ask for fewer workers.")
            progress.show(message)
            raise WorkersTimeout(message)
        time.sleep(POLL_INTERVAL)
        ready = ready_workers(client)
        progress.update(ready)
    progress.show(f"Dask: {ready} / {wanted} workers ready")
    return ready


def project_quota(environ: dict[str, str] | None = None) -> int | None:
    """The project's most workers per cluster (``ECLUSE_DASK_WORKERS``), if known."""
    env = os.environ if environ is None else environ
    try:
        return max(1, int(env["ECLUSE_DASK_WORKERS"]))
    except (KeyError, ValueError):
        return None


def has_gateway(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("DASK_GATEWAY__ADDRESS"))


def _local_cluster(workers: int) -> Any:
    from distributed import LocalCluster

    env = os.environ
    memory = int(env.get("ECLUSE_DASK_WORKER_MEMORY", "0") or 0)
    return LocalCluster(n_workers=0,
                        threads_per_worker=int(env.get("ECLUSE_DASK_THREADS_PER_WORKER", 1)),
                        memory_limit=memory or "auto", dashboard_address=None,
                        processes=True)


def start_cluster(workers: int | None = None, *, timeout: float = 300,
                  use_gateway: bool | None = None, gateway: Any = None,
                  progress: Progress | None = None, **cluster_options: Any) -> tuple[Any, Any]:
    """A cluster of ``workers`` workers (default: the project's quota) and its client,
    returned once they are all connected; the progress shown meanwhile. On timeout the
    cluster is shut down and :class:`WorkersTimeout` raised."""
    quota = project_quota()
    wanted = (quota or 1) if workers is None else int(workers)
    if wanted < 1:
        raise ValueError("ask for at least one worker")
    if use_gateway is None:
        use_gateway = gateway is not None or has_gateway()
    from distributed import Client

    progress = progress or Progress(wanted)
    if quota is not None and wanted > quota:
        # the gateway gives at most the quota: say so now, not only at the timeout
        progress.show(f"Dask: {wanted} workers asked for, the project allows {quota}")
    progress.show(f"Dask: starting a cluster of {wanted} workers…")
    if use_gateway:
        if gateway is None:
            from dask_gateway import Gateway

            gateway = Gateway()
        cluster = gateway.new_cluster(**cluster_options)
    else:
        cluster = _local_cluster(wanted)
    client = None
    try:
        cluster.scale(wanted)
        client = Client(cluster)
        wait_for_workers(client, wanted, timeout=timeout, progress=progress, quota=quota)
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        raise
    return client, cluster
