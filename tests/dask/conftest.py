"""Fixtures for the Dask tests: a real gateway over real project sandboxes.

Components (each the real thing, gone at the end, pass or fail):

* ``dask_deployment`` (module) — settings for the ``slapd`` directory with two
  projects (``cardio-los``: alice, bob; ``air-quality``: alice) whose datasets
  are the *small* demo warehouse, and a distinct sandbox subnet.
* ``gateway`` (function) — an in-process dask-gateway (:class:`ecluse.dask.gateway.
  SandboxBackend` + the Go proxy, under the service's prefix) wired as deployed: the
  proxy's HTTP listener on loopback, its scheduler (TLS) listener and the front's API
  listener on the sandbox host address; ``connect(user)`` returns a
  ``dask_gateway.Gateway`` for that user, as a workspace has it (API listener + TLS
  proxy); ``settings`` are the deployment's with the fixture's ports.
* :class:`TokenAuthenticator` — the test double of the hub authenticator: a
  real ``dask_gateway_server`` Authenticator taking ``Authorization: jupyterhub
  <user>`` and the hub groups the directory gives that user (what the hub's
  LDAP refresh keeps in the hub); ``<user>@<project>`` is a token bound to that
  project (a workspace's), ``<user>@`` a token naming no project.

The module teardown checks that no cluster sandbox, network namespace or
cgroup is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from dask_gateway_server.auth import Authenticator, User, unauthorized

from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import write_config
from ecluse.dev.warehouse import generate
from ecluse.sandbox.cgroups import Cgroups
from ecluse.sandbox.local import LocalSandbox

REPO = Path(__file__).resolve().parents[2]


class TokenAuthenticator(Authenticator):
    """``Authorization: jupyterhub <username>``; groups: the user's projects in LDAP."""

    settings = None

    async def authenticate(self, request):
        from ecluse.dask.gateway import ProjectUser
        from ecluse.directory import Directory
        from ecluse.hub.roles import hub_groups_for

        auth = request.headers.get("Authorization", "")
        kind, _, name = auth.partition(" ")
        if kind != "jupyterhub" or not name:
            raise unauthorized("jupyterhub")
        bound = None
        if "@" in name:
            name, _, bound = name.partition("@")
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, Directory(self.settings.ldap).lookup, name)
        projects, _ = hub_groups_for(user.memberships, self.settings)
        if bound is None:
            return User(name, groups=projects)
        return ProjectUser(name, groups=projects,
                           projects=frozenset([bound]) if bound else frozenset())


async def wait_port(host: str, port: int, timeout: float = 15, prefix: str = "") -> None:
    """Until the gateway proxy routes the API (it polls its routing table)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://{host}:{port}{prefix}/api/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"gateway proxy at {host}:{port} not ready")
            await asyncio.sleep(0.05)


class TrackingSandbox(LocalSandbox):
    """A real LocalSandbox that records the ids it launched (for the leak check)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.created: list[str] = []

    def _allocate(self, meta):
        self.created.append(meta["id"])
        return super()._allocate(meta)


@pytest.fixture(scope="session")
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/dask need root (sandboxes)", pytrace=False)


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory, _root) -> Path:
    root = tmp_path_factory.mktemp("warehouse")
    for slug, ds in (("cardio-los", "omop"), ("air-quality", "exposure"),
                     ("air-quality", "cohort")):
        generate(slug, ds, root / slug / ds, "small")
    for p in [root, *root.parents]:
        if str(p).startswith("/tmp/pytest-of"):
            p.chmod(p.stat().st_mode | 0o755)
    return root


def _projects(warehouse: Path) -> dict:
    return {"projects": {
        "cardio-los": {
            "title": "Cardiac LOS", "ldap_group": "proj-cardio-los",
            "datasets": [{"name": "omop", "path": str(warehouse / "cardio-los" / "omop")}],
            "quota": {"cpu": 1, "memory": "1G", "dask_workers": 2, "pids": 512},
            "disclosure": {"threshold": 11},
        },
        "air-quality": {
            "title": "Air quality", "ldap_group": "proj-air-quality",
            "datasets": [
                {"name": "exposure", "path": str(warehouse / "air-quality" / "exposure")},
                {"name": "cohort", "path": str(warehouse / "air-quality" / "cohort")}],
            "quota": {"cpu": 1, "memory": "1G", "dask_workers": 2, "pids": 512},
        },
    }}


@pytest.fixture(scope="module")
def dask_deployment(tmp_path_factory, slapd, warehouse):
    d = tmp_path_factory.mktemp("dask-deploy")
    path = write_config(d, slapd, overrides={"sandbox.stop_grace": 2})
    (d / "projects.yaml").write_text(yaml.safe_dump(_projects(warehouse)))
    settings = load_settings(path)
    yield settings
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def gateway(request, dask_deployment) -> AsyncIterator:
    marker = request.node.get_closest_marker("idle_timeout")
    # other test runs may share this host: ports of our own
    ds = dask_deployment.dask.model_copy(update={
        "proxy_port": free_port(), "api_port": free_port(), "proxy_http_port": free_port(),
        "idle_timeout": marker.args[0] if marker else 0, "cluster_start_timeout": 60})
    settings = dask_deployment.model_copy(update={"dask": ds})
    sandbox = TrackingSandbox(settings=settings)
    async with running_gateway(settings, sandbox) as app:
        yield app
    left = [s["id"] for s in sandbox.list() if s["id"] in sandbox.created and s.get("alive")]
    assert not left, f"cluster sandboxes left: {left}"
    assert not [i for i in sandbox.created if Cgroups(i).exists()]


@contextlib.asynccontextmanager
async def running_gateway(settings, sandbox) -> AsyncIterator:
    """An in-process dask-gateway of ``settings`` (its ``dask`` ports) over ``sandbox``,
    wired as deployed; ``app.connect(user)`` gives a client, closed at the end."""
    from dask_gateway import Gateway, JupyterHubAuth
    from dask_gateway_server.app import DaskGateway

    from ecluse.dask.gateway import (
        SERVICE_NAME,
        gateway_config,
        host_address,
        serve_api_listener,
    )

    ds = settings.dask
    prefix = f"/services/{SERVICE_NAME}"
    c = gateway_config(settings, authenticator="tests.dask.conftest.TokenAuthenticator",
                       dask=ds, prefix=prefix)
    c.DaskGateway.log_level = "INFO"
    app = DaskGateway(config=c)
    app.initialize([])
    app.backend.settings = settings
    app.backend.sandbox_backend = sandbox
    app.authenticator.settings = settings
    await app.setup()
    addr = host_address(settings)
    api = serve_api_listener(app, settings, dask=ds)
    clients: list = []

    def connect(user: str) -> Gateway:
        g = Gateway(address=f"http://{addr}:{ds.api_port}{prefix}",
                    proxy_address=f"gateway://{addr}:{ds.proxy_port}",
                    auth=JupyterHubAuth(api_token=user), asynchronous=True)
        clients.append(g)
        return g

    app.connect = connect
    app.sandbox = sandbox
    app.addr = addr
    app.ecluse_settings = settings
    app.prefix = prefix
    try:
        await wait_port(addr, ds.api_port, prefix=prefix)
        yield app
    finally:
        for g in clients:
            await g.close()
        api.stop()
        proxy = getattr(app.backend.proxy, "proxy_process", None)
        await app.cleanup()
        if proxy is not None:  # dask-gateway terminates its proxy without reaping it
            await asyncio.to_thread(proxy.wait, 10)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "idle_timeout(seconds): idle timeout of the clusters of the gateway fixture")
