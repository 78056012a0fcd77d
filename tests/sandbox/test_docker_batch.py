"""Batch runs on the docker backend (issue 17 item 1): the batch service, unchanged, runs
papermill in a container of the workspace image, on the tests' own engine.

The run's inputs are mounted read-only, the executed notebook is written back to the
run's folder as the run identity with the project group, a notebook that raises fails
the run with papermill's error (its class, its cell, its message in the project's log),
the container sees its own project's data only, and nothing is left afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ecluse.batch.runs import runs_table, utcnow
from ecluse.batch.service import BatchService
from ecluse.config import load_settings
from ecluse.dev.testing import write_config
from ecluse.sandbox import IMAGE_PYTHON_ENV, SandboxSpec, UserIdentity
from ecluse.sandbox.docker import LABEL
from ecluse.settings.batch import BatchSettings
from tests.batch.conftest import nb, wait_final
from tests.batch.test_runs import check_isolation

from .conftest import TrackingDockerSandbox

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

STAFF = ("erin", ["staff"])
MEMBER = ("alice", ["cardio-los", "air-quality"])

PROBE = r'''
import json, os, sys
probe = {"prefix": sys.prefix, "uid": os.getuid(), "groups": sorted(os.getgroups()),
         "cwd": os.getcwd(), "inputs": sorted(os.listdir("/batch-input"))}
try:
    open("/batch-input/input.ipynb", "a").close()
    probe["write_input"] = "written"
except OSError as e:
    probe["write_input"] = type(e).__name__
try:
    open("/usr/ecluse-probe", "w").close()
    probe["write_root"] = "written"
except OSError as e:
    probe["write_root"] = type(e).__name__
print("PROBE" + json.dumps(probe))
'''


@pytest.fixture
async def docker_batch(docker_engine, workspace_image, slapd,
                       tmp_path: Path) -> AsyncIterator[BatchService]:
    """A batch service whose settings say ``sandbox.backend: docker`` (the run's engine,
    the workspace image), over a tracking docker backend; closed at the end."""
    engine, _ = docker_engine
    path = write_config(tmp_path / "cfg", slapd, overrides={
        "sandbox.backend": "docker", "sandbox.docker_url": engine.url,
        "sandbox.image": workspace_image, "sandbox.stop_grace": 1})
    settings = load_settings(path)
    service = BatchService.from_settings(
        settings, conf=BatchSettings(poll_interval=0.1),
        backend=TrackingDockerSandbox(settings=settings))
    task = asyncio.create_task(service.run_scheduler())
    try:
        yield service
    finally:
        await service.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        shutil.rmtree(tmp_path / "cfg", ignore_errors=True)  # root- and user-owned folders


def _containers(service: BatchService, sandbox_id: str) -> list:
    return service.backend.client.api.containers(
        all=True, filters={"label": f"{LABEL}={sandbox_id}"})


def _probe(folder: Path) -> dict:
    out = json.loads((folder / "output.ipynb").read_text())
    text = "".join(out["cells"][-1]["outputs"][0]["text"])
    return json.loads(text.split("PROBE", 1)[1].splitlines()[0])


async def test_a_notebook_runs_to_completion_in_a_container(docker_batch) -> None:
    service = docker_batch
    staff = service.identity(*STAFF)
    book = nb("result = n * 2\nprint('result', result, label)", PROBE,
              parameters="n = 1\nlabel = 'x'")
    run = service.submit(staff, project="cardio-los", notebook="monthly.ipynb", content=book,
                         parameters={"n": 21, "label": "june"}, as_user="alice", timeout=300)
    run = await wait_final(service, run["id"], timeout=300)
    assert run["status"] == "succeeded", (run, service.records.run_dir(run["id"]))
    assert run["progress"]["cells_done"] == run["progress"]["cells_total"] == 4
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    out = json.loads((folder / "output.ipynb").read_text())
    injected = [c for c in out["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "n = 21" in "".join(injected[0]["source"])
    assert "result 42 june" in json.dumps(out["cells"][-2]["outputs"])
    probe = _probe(folder)
    # the image's Python (papermill, ipykernel), not this host's
    assert probe["prefix"] == str(IMAGE_PYTHON_ENV)
    assert probe["uid"] == 20001 and 30001 in probe["groups"]
    assert probe["cwd"] == f"/project/batch/{run['id']}"
    # the inputs, read-only; the image's root filesystem, read-only
    assert probe["inputs"] == ["input.ipynb", "parameters.json"]
    assert probe["write_input"] in ("OSError", "PermissionError")
    assert probe["write_root"] in ("OSError", "PermissionError")
    # written back to the run's folder as alice, with the project group
    for name in ("output.ipynb", "log.txt", "result.json"):
        st = os.stat(folder / name)
        assert (st.st_uid, st.st_gid) == (20001, 30001), name
        assert st.st_mode & 0o007 == 0, name  # the driver's umask: nothing for others
    assert not (folder / "input.ipynb").exists()
    kept = (service.records.run_dir(run["id"]) / "output.ipynb").read_bytes()
    assert kept == (folder / "output.ipynb").read_bytes()
    # the container is gone with the run
    assert run["sandbox_id"] and not _containers(service, run["sandbox_id"])


async def test_a_failing_notebook_fails_the_run_with_papermills_error(docker_batch) -> None:
    service = docker_batch
    staff = service.identity(*STAFF)
    book = nb("a = 1", "print('before'); raise ValueError('bad input 7')", "b = 2",
              parameters="x = 0")
    run = service.submit(staff, project="cardio-los", notebook="broken.ipynb", content=book,
                         parameters={"x": 5}, as_user="bob", timeout=300)
    run = await wait_final(service, run["id"], timeout=300)
    assert run["status"] == "failed"
    assert run["failed_cell"] == 2 and run["error"] == "ValueError"
    assert run["exit_code"] == 3  # the driver's status for a cell that raised
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    text = (folder / "output.ipynb").read_text()  # the partial notebook is kept
    assert "before" in text and "bad input 7" in text
    log = service.logs(service.identity(*MEMBER), run["id"])
    assert "cell 2 failed: ValueError: bad input 7" in log  # papermill's error, shown
    assert run["sandbox_id"] and not _containers(service, run["sandbox_id"])


async def test_a_run_in_a_container_sees_its_own_project_only(docker_batch) -> None:
    await check_isolation(docker_batch, timeout=300)


async def test_a_restarted_service_removes_the_container_of_an_interrupted_run(
        docker_batch) -> None:
    """A container does not die with the batch service, as a local one-shot sandbox does:
    the service that starts next marks the run failed and removes its container."""
    service = docker_batch
    settings = service.settings
    who = service.resolve_identity("cardio-los", "bob")
    project = settings.projects["cardio-los"].model_copy(update={"gid": who.project_gid})
    # what a service killed during a run leaves: the run "running", its container running
    state = await service.backend.launch(SandboxSpec(
        project, UserIdentity(who.name, who.uid, who.gid), ["sleep", "600"], name="batch"),
        one_shot=True)
    assert await service.backend.poll(state) is None
    with service.engine.begin() as c:
        c.execute(runs_table.insert().values(
            id="br-0123456789ab", project="cardio-los", notebook="x.ipynb",
            notebook_sha256="0" * 64, parameters="{}", submitted_by="erin", run_as="bob",
            status="running", timeout=600.0, created_at=utcnow(), started_at=utcnow(),
            cells_done=0, cells_total=0, sandbox_id=state["id"]))
    second = BatchService.from_settings(  # the restarted service, on the same database
        settings, conf=BatchSettings(poll_interval=0.1),
        backend=TrackingDockerSandbox(settings=settings))
    task = asyncio.create_task(second.run_scheduler())
    try:
        run = await wait_final(second, "br-0123456789ab", timeout=120)
        assert run["status"] == "failed" and "restarted" in run["error"]
        for _ in range(100):
            if not _containers(second, state["id"]):
                break
            await asyncio.sleep(0.2)
        assert not _containers(second, state["id"]), "the interrupted run's container runs on"
    finally:
        await second.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.backend.stop(state, grace=0)  # idempotent
