"""The starter Dask notebook runs top to bottom in a workspace sandbox on a cluster of the
project's real dask-gateway, as a workspace has it (issue 22 items 4 and 6).

The sandbox gets the workspace's gateway environment (``gateway_client_env``:
API and proxy addresses, hub auth) and may reach only the gateway's API and
scheduler ports; the notebook is the one the workspace server seeds at a first
start, run with papermill.
"""

from __future__ import annotations

import asyncio
import json
import sys

import nbformat
import pytest

from ecluse.dask.gateway import host_address
from ecluse.dask.hub import gateway_client_env
from ecluse.dask.sizing import dask_env
from ecluse.directory import Directory
from ecluse.sandbox import SandboxSpec, UserIdentity, get_backend
from tests.workspace.helpers import workspace_extension  # noqa: F401

pytestmark = pytest.mark.root

DRIVER = """
import os, papermill
from ecluse_workspace.starter import seed_home, FOLDER
home = os.environ["HOME"]
print("seeded", seed_home(home), flush=True)
papermill.execute_notebook(os.path.join(home, FOLDER, "02-dask.ipynb"),
                           os.path.join(home, "02-dask.out.ipynb"), kernel_name="python3",
                           cwd=home, progress_bar=False, parameters={"timeout": 240})
print("ran", flush=True)
"""


async def test_starter_dask_notebook_on_the_project_gateway(gateway, workspace_extension):  # noqa: F811
    settings = gateway.ecluse_settings
    ds = settings.dask
    who = await asyncio.to_thread(Directory(settings.ldap).lookup, "alice")
    user = UserIdentity("alice", who.uid_number, who.gid_number)
    project = settings.projects["cardio-los"]
    project = project.model_copy(update={"gid": who.group_gids[project.ldap_group]})
    sandbox = get_backend(settings)
    paths = sandbox.prepare_project_dirs(project, user)
    env = {**dask_env(project, "alice"),
           **gateway_client_env(settings, host_address(settings, ensure=False)),
           # the workspace's token, bound to its project (tests/dask/conftest.py)
           "JUPYTERHUB_API_TOKEN": "alice@cardio-los",
           "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/cardio-los/",
           "ECLUSE_DATASETS": json.dumps([{"name": d.name, "description": d.description}
                                          for d in project.datasets])}
    spec = SandboxSpec(project, user, [sys.executable, "-c", DRIVER], env=env,
                       allowed_ports=[ds.api_port, ds.proxy_port], name="test-starter-dask")
    result = await sandbox.run(spec, timeout=600)
    assert result.ok, (result.stdout[-3000:], result.stderr[-3000:])
    executed = nbformat.read(paths.home / "02-dask.out.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    out = "".join(json.dumps(o) for c in executed.cells for o in c.get("outputs", []))
    assert "GatewayCluster with 2 workers" in out
    assert "Dask: 2 / 2 workers ready" in out
    assert "rows:" in out
    # the notebook closed its cluster
    alice = gateway.connect("alice@cardio-los")
    for _ in range(300):
        if not [c for c in await alice.list_clusters()
                if c.status.name in ("PENDING", "RUNNING")]:
            break
        await asyncio.sleep(0.2)
    assert not [c for c in await alice.list_clusters()
                if c.status.name in ("PENDING", "RUNNING")]
