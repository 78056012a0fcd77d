"""dask-gateway clusters in project sandboxes: isolation, membership, limits, stop.

Each cluster is one sandbox of its project (scheduler + workers as processes);
see docs/dask.md.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from dask_gateway_server.backends.db_base import JobStatus

from ecluse.dask.gateway import cluster_limits
from ecluse.dask.sizing import sizing
from ecluse.sandbox import network as net
from ecluse.sandbox.cgroups import Cgroups

pytestmark = pytest.mark.root


def _by_value(f):
    """A copy of ``f`` that pickles by value (workers cannot import tests/)."""
    import types

    return types.FunctionType(f.__code__, {"__builtins__": __builtins__}, f.__name__)


def _probe_connect(address: str) -> str:
    """From inside a worker: try a TCP connection to ``tls://ip:port``."""
    import socket

    host, port = address.split("://")[-1].rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        return "connected"
    except OSError as e:
        return f"blocked: {type(e).__name__}"
    finally:
        s.close()


def _probe_files(paths: list[str]) -> dict:
    import os

    return {
        "data": sorted(os.listdir("/data")),
        "uid": os.getuid(),
        "exists": {p: os.path.exists(p) for p in paths},
        "omop": sorted(os.listdir("/data/omop")) if os.path.isdir("/data/omop") else None,
    }


async def test_membership_is_required(gateway):
    bob = gateway.connect("bob")  # cardio-los only
    with pytest.raises(ValueError, match="not a member of project 'air-quality'"):
        await bob.new_cluster(project="air-quality")
    with pytest.raises(ValueError, match="Choose a project"):
        await bob.new_cluster()
    with pytest.raises(ValueError, match="no project named 'onco'"):
        await bob.new_cluster(project="onco")
    nobody = gateway.connect("nobody")
    with pytest.raises(ValueError, match="not a member of project 'cardio-los'"):
        await nobody.new_cluster(project="cardio-los")
    assert await bob.list_clusters() == []
    assert not gateway.sandbox.created  # no sandbox was even started


async def test_a_token_acts_for_its_own_project_only(gateway, dask_deployment):
    """alice is in both projects; her air-quality workspace token cannot start a cardio-los
    cluster (403, audited), and her cardio-los token needs no ``project=``."""
    import aiohttp

    from ecluse.audit import AuditLog

    air = gateway.connect("alice@air-quality")
    with pytest.raises(aiohttp.ClientResponseError) as e:
        await air.new_cluster(project="cardio-los")
    assert e.value.status == 403
    assert "acts for project air-quality" in e.value.message
    none = gateway.connect("alice@")  # a token naming no project
    with pytest.raises(aiohttp.ClientResponseError) as e:
        await none.new_cluster(project="cardio-los")
    assert e.value.status == 403
    assert not gateway.sandbox.created
    audit = AuditLog.from_settings(gateway.ecluse_settings)
    denied = [r for r in audit.records(event="dask.denied") if r.actor == "alice"]
    assert [(r.project, r.details["reason"], r.details["token_projects"])
            for r in denied[-2:]] == [("cardio-los", "token-project", ["air-quality"]),
                                     ("cardio-los", "token-project", [])]
    # no project= in a workspace: its token's project
    cardio = gateway.connect("alice@cardio-los")
    cluster = await cardio.new_cluster()
    try:
        assert (await cardio.list_clusters())[0].name == cluster.name
        rec = gateway.backend.db.get_cluster(cluster.name)
        assert rec.options["project"] == "cardio-los"
    finally:
        await cluster.shutdown()


async def test_isolation_limits_and_stop(gateway, dask_deployment):
    settings = dask_deployment
    alice = gateway.connect("alice")
    cardio = await alice.new_cluster(project="cardio-los")
    air = await alice.new_cluster(project="air-quality")
    db = gateway.backend.db
    states = {}
    try:
        # limits: asking for 10 workers gives the project's maximum (2)
        await asyncio.gather(cardio.scale(10), air.scale(1))
        c_client = await cardio.get_client(set_as_default=False)
        a_client = await air.get_client(set_as_default=False)
        await asyncio.gather(c_client.wait_for_workers(2, timeout=120),
                             a_client.wait_for_workers(1, timeout=120))
        await asyncio.sleep(2)
        info = await c_client.scheduler.identity()
        workers = info["workers"]
        limits = cluster_limits(settings.projects["cardio-los"])
        assert len(workers) == limits["cluster_max_workers"] == 2
        expected = sizing(settings.projects["cardio-los"])
        assert {w["memory_limit"] for w in workers.values()} == {expected.worker_memory}
        assert {w["nthreads"] for w in workers.values()} == {expected.threads_per_worker}
        for name in (cardio.name, air.name):
            states[name] = db.get_cluster(name).state["sandbox"]
        # the cgroup of the cluster's sandbox has the project's memory quota
        cg = Cgroups(states[cardio.name]["id"])
        assert cg.exists()

        # data: each cluster sees its own project's datasets only
        host_paths = [str(d.path) for p in settings.projects.values() for d in p.datasets]
        seen = await c_client.submit(_by_value(_probe_files), host_paths, pure=False)
        assert seen["data"] == ["omop"]
        assert "person" in seen["omop"]
        assert seen["uid"] == 20001
        assert not any(seen["exists"].values()), seen["exists"]
        seen = await a_client.submit(_by_value(_probe_files), host_paths, pure=False)
        assert seen["data"] == ["cohort", "exposure"]

        # network: cardio's workers cannot reach air-quality's scheduler or workers
        a_info = await a_client.scheduler.identity()
        targets = [a_info["address"], *a_info["workers"]]
        results = await c_client.gather([c_client.submit(_by_value(_probe_connect), t, pure=False)
                                         for t in targets])
        assert all(r.startswith("blocked") for r in results), dict(zip(targets, results, strict=True))
        # ... while the host (the gateway) reaches both
        assert all(_probe_connect(t) == "connected" for t in targets)
        await c_client.close()
        await a_client.close()
    finally:
        await asyncio.gather(cardio.shutdown(), air.shutdown())
    # stopping a cluster removes its sandbox: processes, cgroup, network namespace
    for _ in range(300):
        if all(db.get_cluster(n).status >= JobStatus.STOPPED for n in states):
            break
        await asyncio.sleep(0.1)
    for s in states.values():
        assert await gateway.sandbox.poll(s) is not None
        assert not Cgroups(s["id"]).exists()
        assert not os.path.exists(net.netns_path(s["id"]))


@pytest.mark.idle_timeout(4)
async def test_idle_cluster_shuts_down(gateway):
    g = gateway.connect("bob")
    cluster = await g.new_cluster(project="cardio-los")
    name = cluster.name
    state = gateway.backend.db.get_cluster(name).state["sandbox"]
    await cluster.close(shutdown=False)
    for _ in range(600):
        if gateway.backend.db.get_cluster(name).status >= JobStatus.STOPPED:
            break
        await asyncio.sleep(0.1)
    assert gateway.backend.db.get_cluster(name).status >= JobStatus.STOPPED
    assert await gateway.sandbox.poll(state) is not None
    assert not Cgroups(state["id"]).exists()
