"""dask-gateway clusters on the docker backend (issue 17 item 1): the gateway's sandbox
backend, unchanged, runs a cluster's supervisor, scheduler and workers in one container
of the workspace image (its ``dask`` and ``dask_gateway``), on the tests' own engine;
the workspace's client reaches it through the gateway; the container is gone when the
cluster stops."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dask_gateway_server.backends.db_base import JobStatus

from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import write_config
from ecluse.sandbox import IMAGE_PYTHON_ENV
from ecluse.sandbox.docker import LABEL
from tests.dask.conftest import running_gateway

from .conftest import TrackingDockerSandbox

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]


def _inside() -> dict:
    """From inside a worker: which Python, as whom, which data."""
    import os
    import sys

    return {"prefix": sys.prefix, "uid": os.getuid(), "data": sorted(os.listdir("/data"))}


def _by_value(f):
    """A copy of ``f`` that pickles by value (workers cannot import tests/)."""
    import types

    return types.FunctionType(f.__code__, {"__builtins__": __builtins__}, f.__name__)


@pytest.fixture
async def docker_gateway(docker_engine, workspace_image, slapd,
                         tmp_path: Path) -> AsyncIterator:
    """An in-process dask-gateway (as tests/dask's ``gateway``) whose settings say
    ``sandbox.backend: docker``, over a tracking docker backend."""
    engine, _ = docker_engine
    path = write_config(tmp_path / "cfg", slapd, overrides={
        "sandbox.backend": "docker", "sandbox.docker_url": engine.url,
        "sandbox.image": workspace_image, "sandbox.stop_grace": 2,
        "dask.proxy_port": free_port(), "dask.api_port": free_port(),
        "dask.proxy_http_port": free_port(), "dask.cluster_start_timeout": 120,
        "dask.idle_timeout": 0})
    settings = load_settings(path)
    sandbox = TrackingDockerSandbox(settings=settings)
    try:
        async with running_gateway(settings, sandbox) as app:
            yield app
        left = [s["id"] for s in sandbox.list() if s.get("alive")]
        assert not left, f"cluster containers left: {left}"
    finally:
        shutil.rmtree(tmp_path / "cfg", ignore_errors=True)


async def test_a_cluster_runs_in_a_container_of_the_workspace_image(docker_gateway):
    alice = docker_gateway.connect("alice@cardio-los")  # a workspace's token
    cluster = await alice.new_cluster(project="cardio-los")
    db = docker_gateway.backend.db
    try:
        await cluster.scale(1)
        client = await cluster.get_client(set_as_default=False)
        await client.wait_for_workers(1, timeout=180)
        state = db.get_cluster(cluster.name).state["sandbox"]
        assert state["backend"] == "docker" and state["container"]
        seen = await client.submit(_by_value(_inside), pure=False)
        assert seen == {"prefix": str(IMAGE_PYTHON_ENV), "uid": 20001, "data": ["stays"]}
        assert await client.submit(sum, [1, 2, 3], pure=False) == 6
        await client.close()
    finally:
        await cluster.shutdown()
    for _ in range(300):
        if db.get_cluster(cluster.name).status >= JobStatus.STOPPED:
            break
        await asyncio.sleep(0.1)
    assert not docker_gateway.sandbox.client.api.containers(
        all=True, filters={"label": f"{LABEL}={state['id']}"})
