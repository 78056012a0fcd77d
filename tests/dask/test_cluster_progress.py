"""``ecluse_workspace.daskcluster``: a notebook's cluster of the real gateway, its workers'
progress shown until they are ready, and a clear message when they do not all come.

The helper is synchronous, as a notebook calls it: it runs in a thread with its own
``dask_gateway.Gateway`` (the workspace's, with a token bound to the project)
while the in-process gateway serves on the test's event loop.
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.root


def _gateway(gateway, token: str):
    from dask_gateway import Gateway, JupyterHubAuth

    ds = gateway.ecluse_settings.dask
    return Gateway(address=f"http://{gateway.addr}:{ds.api_port}{gateway.prefix}",
                   proxy_address=f"gateway://{gateway.addr}:{ds.proxy_port}",
                   auth=JupyterHubAuth(api_token=token))


async def _clusters(gateway) -> list:
    g = gateway.connect("alice@cardio-los")
    return [c for c in await g.list_clusters() if c.status.name in ("PENDING", "RUNNING")]


async def test_progress_until_every_worker_is_ready(gateway, monkeypatch):
    from ecluse_workspace.daskcluster import Progress, start_cluster

    monkeypatch.setenv("ECLUSE_DASK_WORKERS", "2")
    lines: list[str] = []

    def run() -> tuple[int, list[str]]:
        g = _gateway(gateway, "alice@cardio-los")
        try:
            client, cluster = start_cluster(gateway=g, timeout=240,
                                            progress=Progress(2, out=lines.append))
            try:
                return len(client.nthreads()), cluster.name
            finally:
                client.close()
                cluster.shutdown()
        finally:
            g.close()

    n, name = await asyncio.to_thread(run)
    assert n == 2
    assert lines[0] == "Dask: starting a cluster of 2 workers…"
    assert lines[-1] == "Dask: 2 / 2 workers ready"
    counts = [line for line in lines if line.endswith("workers ready")]
    # shown as they came: counts never go down, and the first look saw fewer than two
    ready = [int(line.split()[1]) for line in counts]
    assert ready == sorted(ready) and ready[0] < 2
    assert not await _clusters(gateway)


async def test_timeout_says_how_many_came_and_closes_the_cluster(gateway, monkeypatch):
    """Three workers asked of a project that allows two: the gateway starts two, the
    helper says so at once, stops at the timeout with the count, and shuts down."""
    from ecluse_workspace.daskcluster import Progress, WorkersTimeout, start_cluster

    monkeypatch.setenv("ECLUSE_DASK_WORKERS", "2")
    lines: list[str] = []

    def run() -> str:
        g = _gateway(gateway, "alice@cardio-los")
        try:
            with pytest.raises(WorkersTimeout) as raised:
                start_cluster(3, gateway=g, timeout=90, progress=Progress(3, out=lines.append))
            return str(raised.value)
        finally:
            g.close()

    message = await asyncio.to_thread(run)
    assert lines[0] == "Dask: 3 workers asked for, the project allows 2"
    assert message.startswith("Dask: only 2 of 3 workers started within 90 s "
                              "(the project allows 2).")
    assert lines[-1] == message
    assert "Dask: 2 / 3 workers ready" in lines
    for _ in range(300):
        if not await _clusters(gateway):
            break
        await asyncio.sleep(0.2)
    assert not await _clusters(gateway)
