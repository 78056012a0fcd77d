"""The example notebooks run end to end (papermill) in their project's sandbox, small data."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ecluse.dask.sizing import dask_env
from ecluse.directory import Directory
from ecluse.sandbox import Mount, SandboxSpec, UserIdentity, get_backend

from .conftest import REPO

pytestmark = pytest.mark.root

NOTEBOOKS = [("cardio-los", "length_of_stay.ipynb", "los_by_ward_and_diagnosis.csv"),
             ("air-quality", "exposure.ipynb", "admissions_by_pm25_band.csv")]


def _source_mounts() -> list[Mount]:
    """The Écluse sources, when installed in editable mode (``from ecluse.sdc import ...``)."""
    import ecluse

    src = Path(ecluse.__file__).resolve().parent.parent
    if str(src).startswith(sys.prefix):
        return []
    return [Mount(src, str(src), True)]


@pytest.mark.parametrize(("slug", "notebook", "output"), NOTEBOOKS)
async def test_example_notebook_runs_in_its_project(dask_deployment, slug, notebook, output):
    settings = dask_deployment
    sandbox = get_backend(settings)
    project = settings.projects[slug]
    who = await asyncio.get_running_loop().run_in_executor(
        None, Directory(settings.ldap).lookup, "alice")
    user = UserIdentity("alice", who.uid_number, who.gid_number)
    project = project.model_copy(update={"gid": who.group_gids[project.ldap_group]})
    paths = sandbox.prepare_project_dirs(project, user)
    examples = REPO / "examples" / "notebooks" / slug
    spec = SandboxSpec(
        project, user,
        [sys.executable, "-m", "papermill", "--log-output", "-k", "python3",
         f"/opt/examples/{notebook}", f"/home/alice/{notebook}",
         "-p", "output_dir", "/project/outputs"],
        env=dask_env(project, "alice"), extra_mounts=[Mount(examples, "/opt/examples"),
                                             *_source_mounts()],
        name="test-notebook")
    result = await sandbox.run(spec, timeout=240)
    assert result.ok, result.stderr[-3000:]
    table = paths.shared / "outputs" / output
    assert table.exists()
    executed = json.loads((paths.home / notebook).read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    # the final cell's disclosure check passed inside the sandbox; check again here
    from ecluse.sdc import DisclosurePolicy, check_file

    report = check_file(table, DisclosurePolicy(threshold=11 if slug == "cardio-los" else 10))
    assert report.verdict == "pass", report.to_dict()
