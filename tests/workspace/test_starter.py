"""Starter notebooks (``ecluse_workspace.starter``): seeded once, never over a user's file,
and each runs top to bottom with papermill in a sandbox of a fresh workspace.

The sandbox tests use the real ``local`` backend (bubblewrap, network namespace,
cgroup) and the project's real datasets: ``cardio-los`` with CSV and Parquet
(the demo stays, the OMOP tables as folders of parts), ``air-quality`` with a
Zarr cube and Parquet. The notebooks are written by the same call the
workspace server makes at its start, as the user, inside the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from ecluse_workspace.catalogue import ENV_DATASETS, describe_dataset
from ecluse_workspace.starter import FOLDER, MARKER, seed_home, starter_notebooks

REPO = Path(__file__).resolve().parents[2]


def _env(names: dict[str, str]) -> dict[str, str]:
    return {ENV_DATASETS: json.dumps([{"name": n, "description": d} for n, d in names.items()]),
            "ECLUSE_PROJECT": "demo"}


@pytest.fixture
def small_data(tmp_path) -> Path:
    import pandas as pd

    root = tmp_path / "data"
    (root / "stays").mkdir(parents=True)
    pd.DataFrame({"patient_id": ["P1", "P2"], "ward": ["A", "B"], "los": [1.5, 2.0]}).to_csv(
        root / "stays" / "stays.csv", index=False)
    return root


def test_seeded_once_never_over_a_users_file(tmp_path, small_data):
    home = tmp_path / "home"
    home.mkdir()
    (home / FOLDER).mkdir()
    mine = home / FOLDER / "01-pandas.ipynb"
    mine.write_text("my own notebook")
    env = _env({"stays": "Hospital stays"})
    written = seed_home(home, environ=env, root=str(small_data))
    # no Zarr/netCDF: no xarray notebook; the user's file kept
    assert written == ["02-dask.ipynb", "04-export.ipynb"]
    assert mine.read_text() == "my own notebook"
    nb = nbformat.read(home / FOLDER / "04-export.ipynb", as_version=4)
    nbformat.validate(nb)
    assert "Check for export" in "".join(c.source for c in nb.cells)
    assert "Hospital stays" in nb.cells[0].source
    # second start: edits and deletions stay as the user left them
    (home / FOLDER / "02-dask.ipynb").unlink()
    (home / FOLDER / "04-export.ipynb").write_text("edited")
    assert seed_home(home, environ=env, root=str(small_data)) == []
    assert not (home / FOLDER / "02-dask.ipynb").exists()
    assert (home / FOLDER / "04-export.ipynb").read_text() == "edited"
    assert json.loads((home / MARKER).read_text())["offered"] == [
        "01-pandas.ipynb", "02-dask.ipynb", "04-export.ipynb"]


def test_a_symlink_in_place_of_a_notebook_is_not_followed(tmp_path, small_data):
    home = tmp_path / "home"
    (home / FOLDER).mkdir(parents=True)
    target = tmp_path / "elsewhere"
    (home / FOLDER / "01-pandas.ipynb").symlink_to(target)
    seed_home(home, environ=_env({"stays": ""}), root=str(small_data))
    assert not target.exists()


def test_a_new_dataset_brings_its_notebook_at_the_next_start(tmp_path, small_data):
    import numpy as np
    import xarray as xr

    home = tmp_path / "home"
    home.mkdir()
    assert "03-xarray.ipynb" not in seed_home(home, environ=_env({"stays": ""}),
                                              root=str(small_data))
    (small_data / "cube").mkdir()
    xr.Dataset({"t": (("x", "y"), np.zeros((2, 2)))}).to_zarr(small_data / "cube" / "c.zarr")
    assert seed_home(home, environ=_env({"stays": "", "cube": ""}),
                     root=str(small_data)) == ["03-xarray.ipynb"]


# ---------------------------------------------------------------- in a sandbox

def _projects(data: Path) -> dict:
    return {"projects": {
        "cardio-los": {
            "title": "Cardiac LOS", "ldap_group": "proj-cardio-los",
            "datasets": [
                {"name": "stays", "path": str(data / "stays"),
                 "description": "Synthetic hospital stays, CSV and Parquet"},
                {"name": "omop", "path": str(data / "omop"),
                 "description": "OMOP tables, Parquet parts"}],
            "quota": {"cpu": 1, "memory": "2G", "dask_workers": 2, "pids": 512},
        },
        "air-quality": {
            "title": "Air quality", "ldap_group": "proj-air-quality",
            "datasets": [
                {"name": "exposure", "path": str(data / "exposure"),
                 "description": "Exposure cube, Zarr"},
                {"name": "cohort", "path": str(data / "cohort"), "description": "Patients"}],
            "quota": {"cpu": 1, "memory": "2G", "dask_workers": 2, "pids": 512},
        },
    }}


@pytest.fixture(scope="module")
def starter_deployment(tmp_path_factory, slapd, workspace_extension):
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests need root (bubblewrap, network namespaces, cgroups)")
    from ecluse.config import load_settings
    from ecluse.dev.demo import _stays
    from ecluse.dev.testing import write_config
    from ecluse.dev.warehouse import generate

    d = tmp_path_factory.mktemp("starter")
    data = d / "datasets"
    (data / "stays").mkdir(parents=True)
    stays = _stays(800)
    stays.to_csv(data / "stays" / "stays.csv", index=False)
    stays.to_parquet(data / "stays" / "stays.parquet", index=False)
    for slug, ds in (("cardio-los", "omop"), ("air-quality", "exposure"),
                     ("air-quality", "cohort")):
        generate(slug, ds, data / ds, "small")
    for p in [data, *data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    for p in [d, *d.parents]:
        if str(p).startswith("/tmp/pytest-of"):
            p.chmod(p.stat().st_mode | 0o755)
    path = write_config(d, slapd, overrides={"sandbox.stop_grace": 2})
    (d / "projects.yaml").write_text(yaml.safe_dump(_projects(data)))
    return load_settings(path)


#: runs inside the sandbox, as the user: the server's seeding, then each notebook
DRIVER = """
import os, sys, papermill
from ecluse_workspace.starter import seed_home, FOLDER
home = os.environ["HOME"]
written = seed_home(home)
print("seeded", written, flush=True)
folder = os.path.join(home, FOLDER)
os.makedirs(os.path.join(home, "executed"), exist_ok=True)
for name in sorted(os.listdir(folder)):
    print("running", name, flush=True)
    papermill.execute_notebook(os.path.join(folder, name), os.path.join(home, "executed", name),
                               kernel_name="python3", cwd=home, progress_bar=False,
                               parameters={"timeout": 180} if "dask" in name else None)
print("all ran", flush=True)
"""


@pytest.mark.parametrize(("slug", "expected"), [
    ("cardio-los", ["01-pandas.ipynb", "02-dask.ipynb", "04-export.ipynb"]),
    ("air-quality", ["01-pandas.ipynb", "02-dask.ipynb", "03-xarray.ipynb",
                     "04-export.ipynb"]),
])
async def test_starter_notebooks_run_in_a_fresh_workspace(starter_deployment, slug, expected):
    from ecluse.dask.sizing import dask_env
    from ecluse.directory import Directory
    from ecluse.hub.workspace import workspace_env
    from ecluse.sandbox import SandboxSpec, UserIdentity, get_backend

    settings = starter_deployment
    sandbox = get_backend(settings)
    who = await asyncio.get_running_loop().run_in_executor(
        None, Directory(settings.ldap).lookup, "alice")
    user = UserIdentity("alice", who.uid_number, who.gid_number)
    project = settings.projects[slug]
    project = project.model_copy(update={"gid": who.group_gids[project.ldap_group]})
    from ecluse.dask.sizing import sizing

    env = {k: v for k, v in workspace_env(settings, project, user, None,
                                          sizing(project)).items()
           if not k.startswith("JUPYTER")}
    env.update(dask_env(project, "alice"))
    # what JupyterHub gives every single-user server (the Dask dashboard link uses it)
    env["JUPYTERHUB_SERVICE_PREFIX"] = f"/user/alice/{slug}/"
    paths = sandbox.prepare_project_dirs(project, user)
    spec = SandboxSpec(project, user, [sys.executable, "-c", DRIVER], env=env,
                       name="test-starter")
    result = await sandbox.run(spec, timeout=600)
    assert result.ok, (result.stdout[-3000:], result.stderr[-3000:])
    assert "all ran" in result.stdout
    folder = paths.home / FOLDER
    assert sorted(p.name for p in folder.iterdir()) == expected
    for p in [folder, *folder.iterdir()]:
        assert (p.stat().st_uid, p.stat().st_gid) == (user.uid, user.gid), p
    for name in expected:
        executed = nbformat.read(paths.home / "executed" / name, as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (name, errors)
        assert all(c.get("execution_count") for c in executed.cells if c.cell_type == "code")
    dask_out = "".join(str(o) for c in nbformat.read(
        paths.home / "executed" / "02-dask.ipynb", as_version=4).cells
        for o in c.get("outputs", []))
    assert "2 / 2 workers ready" in dask_out
    assert (paths.shared / "outputs" / "starter_counts.csv").exists()


def test_notebooks_follow_the_datasets(tmp_path, small_data):
    info = [describe_dataset("stays", "Stays", str(small_data))]
    nbs = starter_notebooks("p", info, str(small_data))
    assert set(nbs) == {"01-pandas.ipynb", "02-dask.ipynb", "04-export.ipynb"}
    src = "".join(c.source for c in nbs["01-pandas.ipynb"].cells)
    assert f"pd.read_csv('{small_data}/stays/stays.csv'" in src
    export = "".join(c.source for c in nbs["04-export.ipynb"].cells)
    assert "groupby('ward'" in export  # not the identifier column
