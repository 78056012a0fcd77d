"""In a workspace sandbox, a plain ``LocalCluster()`` fits the project quota, not the host."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import pytest

from ecluse.dask.sizing import dask_command_prefix, dask_env, sizing
from ecluse.directory import Directory
from ecluse.sandbox import SandboxSpec, UserIdentity, get_backend

pytestmark = pytest.mark.root

CODE = textwrap.dedent("""
    import json
    import dask
    import dask_labextension  # noqa: F401  (registers its config)
    from distributed import Client, LocalCluster
    with LocalCluster(dashboard_address=None) as cluster, Client(cluster) as client:
        workers = client.scheduler_info()["workers"].values()
        limits = [w["memory_limit"] for w in workers]
    print(json.dumps({
        "limits": limits,
        "factory": dask.config.get("labextension.factory.kwargs"),
        "spill": dask.config.get("temporary-directory"),
    }))
""")


async def test_plain_localcluster_fits_the_quota(dask_deployment):
    settings = dask_deployment
    project = settings.projects["cardio-los"]
    who = await asyncio.get_running_loop().run_in_executor(
        None, Directory(settings.ldap).lookup, "bob")
    user = UserIdentity("bob", who.uid_number, who.gid_number)
    project = project.model_copy(update={"gid": who.group_gids[project.ldap_group]})
    sandbox = get_backend(settings)
    sandbox.prepare_project_dirs(project, user)
    spec = SandboxSpec(project, user,
                       [*dask_command_prefix(project), sys.executable, "-c", CODE],
                       env=dask_env(project, "bob"), name="test-localcluster")
    result = await sandbox.run(spec, timeout=180)
    assert result.ok, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    s = sizing(project)
    assert sum(out["limits"]) <= s.total_worker_memory < project.quota.memory
    assert out["factory"]["n_workers"] == s.workers
    assert out["factory"]["memory_limit"] == s.worker_memory
    assert out["spill"] == "/home/bob/.cache/dask-spill"
