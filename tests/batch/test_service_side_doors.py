"""Batch runs without side doors: fixed inputs, checked notebooks, logs as project data.

Each test attacks one door with real sandboxes (``make_service``):

* another project member rewrites the run's inputs while the run starts
  (the race of issue 15), in the run folder (where they used to be) and in
  the record store: both refused, the run executes the submitted notebook,
  and its outputs cannot be replaced by him afterwards;
* the record store's notebook is changed before the driver reads it: the
  driver refuses it (sha256);
* the run itself cannot change its inputs (root-owned, read-only mount);
* staff see status, exit code and error class; the log and files only as a
  project member or once a member shares the run; every read and refusal is
  in the audit log with the reader as actor.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecluse.audit import AuditLog
from ecluse.batch.errors import PermissionDenied
from ecluse.batch.service import BatchService
from ecluse.config import load_settings
from ecluse.settings.batch import BatchSettings
from tests.batch.conftest import TrackingLocalSandbox, nb, wait_final

STAFF = ("erin", ["staff"])
ALICE = ("alice", ["cardio-los", "air-quality"])
BOB_UID, PROJECT_GID = 20002, 30001  # bob, another member of cardio-los

EVIL = nb("open('/project/evil-ran', 'w').write('x')\nprint('EVIL')")


def evil_bytes() -> bytes:
    return json.dumps(EVIL).encode()


def as_bob(folder: Path, name: str, data: bytes) -> int:
    """Write ``folder/name`` as bob (uid and group of a member of the project), as from
    his workspace, where ``/project`` is mounted: the folder is handed over as an open
    directory (the test's state folder is not his to traverse), write access is his."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return subprocess.run(
            ["setpriv", f"--reuid={BOB_UID}", f"--regid={PROJECT_GID}",
             f"--groups={PROJECT_GID}", "--", "sh", "-c", 'cat > "/proc/self/fd/$0/$1"',
             str(fd), name], input=data, capture_output=True, pass_fds=(fd,)).returncode
    finally:
        os.close(fd)


class MemberRewritesInputs(TrackingLocalSandbox):
    """Bob, a member of the project, replaces the run's inputs as the sandbox starts:
    in the run folder (where they used to be) and in the record store."""

    attempts: dict[str, int]

    async def launch(self, spec: Any, **kw: Any) -> dict[str, Any]:
        run_id = spec.env["ECLUSE_BATCH_RUN"]
        folder = self.settings.projects_root / spec.project.slug / "shared" / "batch" / run_id
        record = self.settings.state_dir / "batch-records" / run_id / "input"
        evil = evil_bytes()
        self.attempts = {
            "folder-notebook": as_bob(folder, "input.ipynb", evil),
            "folder-parameters": as_bob(folder, "parameters.json", b'{"n": 666}'),
            "record-notebook": as_bob(record, "input.ipynb", evil),
            "record-parameters": as_bob(record, "parameters.json", b'{"n": 666}'),
        }
        return await super().launch(spec, **kw)


class InputChangedBeforeTheDriver(TrackingLocalSandbox):
    """The record store's notebook changes after submission (whoever did it)."""

    async def launch(self, spec: Any, **kw: Any) -> dict[str, Any]:
        run_id = spec.env["ECLUSE_BATCH_RUN"]
        path = self.settings.state_dir / "batch-records" / run_id / "input" / "input.ipynb"
        os.chmod(path.parent, 0o755)
        path.unlink()
        path.write_text(json.dumps(EVIL))
        return await super().launch(spec, **kw)


@pytest.fixture
async def service_with(batch_config):
    made: list[BatchService] = []

    async def make(backend_class: type) -> BatchService:
        import asyncio

        settings = load_settings(batch_config)
        service = BatchService.from_settings(settings, conf=BatchSettings(poll_interval=0.1),
                                             backend=backend_class(settings=settings))
        service._task = asyncio.create_task(service.run_scheduler())
        made.append(service)
        return service

    yield make
    for service in made:
        await service.close()
        service._task.cancel()


async def test_member_rewriting_the_inputs_changes_nothing(service_with) -> None:
    service = await service_with(MemberRewritesInputs)
    staff = service.identity(*STAFF)
    book = nb("print('GOOD', n)", parameters="n = 1")
    run = service.submit(staff, project="cardio-los", notebook="ok.ipynb", content=book,
                         parameters={"n": 7}, as_user="alice", timeout=120)
    run = await wait_final(service, run["id"])
    assert run["status"] == "succeeded", run
    shared = service.shared_dir("cardio-los")
    out = json.dumps(json.loads((shared / "batch" / run["id"] / "output.ipynb").read_text()))
    assert "GOOD 7" in out and "EVIL" not in out
    assert not (shared / "evil-ran").exists()
    # bob wrote nowhere: not in the run folder (the run's identity's), not in the inputs
    assert all(code != 0 for code in service.backend.attempts.values()), \
        service.backend.attempts
    # nor, after the run, over what it produced (read by members, kept with the audit record)
    folder = shared / "batch" / run["id"]
    assert as_bob(folder, "output.ipynb", evil_bytes()) != 0
    assert as_bob(folder, "result.json", b'{"status": "failed"}') != 0
    st = os.stat(folder / "output.ipynb")
    assert st.st_mode & 0o777 == 0o640 and os.stat(folder).st_mode & 0o7777 == 0o2750


async def test_driver_refuses_a_notebook_that_is_not_the_submitted_one(service_with) -> None:
    service = await service_with(InputChangedBeforeTheDriver)
    staff = service.identity(*STAFF)
    run = service.submit(staff, project="cardio-los", notebook="ok.ipynb",
                         content=nb("print('GOOD')"), as_user="alice", timeout=120)
    run = await wait_final(service, run["id"])
    assert run["status"] == "failed", run
    assert run["error"] == "refused: input.ipynb differs from the submitted one (sha256)"
    assert run["exit_code"] == 5
    shared = service.shared_dir("cardio-los")
    assert not (shared / "evil-ran").exists()
    assert not (shared / "batch" / run["id"] / "output.ipynb").exists()


PROBE = r'''
import json, os
st = os.stat("/batch-input/input.ipynb")
probe = {"uid": st.st_uid, "mode": oct(st.st_mode & 0o777), "here": sorted(os.listdir("."))}
for target in ("/batch-input/input.ipynb", "/batch-input/parameters.json", "/batch-input/x"):
    try:
        open(target, "w").write("{}")
        probe[target] = "written"
    except OSError as e:
        probe[target] = type(e).__name__
try:
    os.unlink("/batch-input/input.ipynb")
    probe["unlink"] = "removed"
except OSError as e:
    probe["unlink"] = type(e).__name__
print("PROBE" + json.dumps(probe))
'''


async def test_inputs_are_root_owned_and_read_only_to_the_run(make_service) -> None:
    service = make_service()
    staff = service.identity(*STAFF)
    run = service.submit(staff, project="cardio-los", notebook="probe.ipynb",
                         content=nb(PROBE), as_user="alice", timeout=120)
    run = await wait_final(service, run["id"])
    assert run["status"] == "succeeded", run
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    text = json.loads((folder / "output.ipynb").read_text())["cells"][0]["outputs"][0]["text"]
    probe = json.loads("".join(text).split("PROBE", 1)[1])
    assert probe["uid"] == 0 and probe["mode"] == "0o444"
    assert "input.ipynb" not in probe["here"] and "parameters.json" not in probe["here"]
    for key in ("/batch-input/input.ipynb", "/batch-input/parameters.json", "/batch-input/x",
                "unlink"):
        assert probe[key] in ("PermissionError", "OSError"), probe
    inputs = service.records.inputs(run["id"])
    for name in ("input.ipynb", "parameters.json"):
        st = os.stat(inputs / name)
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o444)
    assert os.stat(inputs).st_uid == 0 and os.stat(inputs).st_mode & 0o222 == 0


def _events(service: BatchService, event: str) -> list:
    return AuditLog.from_settings(service.settings).records(event=event)


async def test_logs_and_files_are_project_data(make_service) -> None:
    service = make_service()
    staff, alice = service.identity(*STAFF), service.identity(*ALICE)
    book = nb("print('ROW P100234 los 12')", "raise KeyError('P100234')")
    run = service.submit(staff, project="cardio-los", notebook="rows.ipynb", content=book,
                         as_user="alice", timeout=120)
    run = await wait_final(service, run["id"])
    # staff see status, exit code and the error class, not the output nor the message
    assert run["status"] == "failed" and run["error"] == "KeyError" and run["exit_code"] == 3
    assert "P100234" not in json.dumps(service.get_run(staff, run["id"]))
    finish = _events(service, "batch.finish")[-1]
    assert "P100234" not in json.dumps(finish.details)
    # nor what the sandbox printed (kept root-only in the record store)
    sandbox_log = service.records.run_dir(run["id"]) / "sandbox.log"
    assert "P100234" not in sandbox_log.read_text()
    for read in (service.logs, service.output_files):
        with pytest.raises(PermissionDenied, match="data of project cardio-los"):
            read(staff, run["id"])
    denied = [e for e in _events(service, "batch.denied") if e.details.get("run_id") == run["id"]]
    assert [(e.actor, e.details["action"]) for e in denied] == [("erin", "read-log"),
                                                                ("erin", "read-files")]
    # a member reads them (audited) ...
    assert "ROW P100234 los 12" in service.logs(alice, run["id"])
    # ... and shares the run: then staff read them too, each read audited with its reader
    with pytest.raises(PermissionDenied):
        service.share(staff, run["id"])
    assert service.share(alice, run["id"])["shared"] is True
    assert "KeyError" in service.logs(staff, run["id"])
    names = [f["name"] for f in service.output_files(staff, run["id"])]
    assert "log.txt" in names and "output.ipynb" in names
    reads = [(e.actor, e.details["what"], e.details["access"])
             for e in _events(service, "batch.read") if e.details["run_id"] == run["id"]]
    assert reads == [("alice", "log", "member"), ("erin", "log", "shared"),
                     ("erin", "files", "shared")]
    shares = _events(service, "batch.share")
    assert [(e.actor, e.details["run_id"]) for e in shares] == [("alice", run["id"])]
