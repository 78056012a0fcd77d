"""Runs through the business layer with real sandboxes: outputs, failures, isolation."""

from __future__ import annotations

import hashlib
import json
import os

from ecluse.audit import AuditLog

from .conftest import nb, wait_final

STAFF = ("erin", ["staff"])
MEMBER = ("alice", ["cardio-los", "air-quality"])  # a project member (not staff)


async def test_parameterised_run_succeeds(make_service) -> None:
    service = make_service()
    staff = service.identity(*STAFF)
    book = nb("result = n * 2\nprint('result', result, label)", parameters="n = 1\nlabel = 'x'")
    run = service.submit(staff, project="cardio-los", notebook="monthly.ipynb", content=book,
                         parameters={"n": 21, "label": "june"}, as_user="alice", timeout=120)
    assert run["status"] == "queued"
    run = await wait_final(service, run["id"])
    assert run["status"] == "succeeded", run
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    out = json.loads((folder / "output.ipynb").read_text())
    injected = [c for c in out["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "n = 21" in "".join(injected[0]["source"])
    assert "result 42 june" in json.dumps(out["cells"][-1]["outputs"])
    assert (folder / "log.txt").exists()
    assert not (folder / "input.ipynb").exists() and not (folder / "parameters.json").exists()
    st = os.stat(folder / "output.ipynb")
    assert st.st_uid == 20001 and st.st_gid == 30001  # alice, project group
    assert run["progress"]["cells_done"] == run["progress"]["cells_total"] == 3
    events = [r for r in AuditLog.from_settings(service.settings).records()
              if r.event.startswith("batch.")]
    finish = [r for r in events if r.event == "batch.finish"][-1]
    assert finish.actor == "erin" and finish.project == "cardio-los"
    assert finish.outcome == "success"
    assert finish.details["notebook_sha256"] == run["notebook_sha256"]
    assert finish.details["parameters"] == {"n": 21, "label": "june"}
    assert {"batch.submit", "batch.start", "batch.finish"} <= {r.event for r in events}
    # the input and the executed notebook are kept with the audit record, root only
    record = service.records.run_dir(run["id"])
    assert finish.details["record"] == str(record)
    kept_in = (record / "input" / "input.ipynb").read_bytes()
    assert hashlib.sha256(kept_in).hexdigest() == run["notebook_sha256"]
    kept_out = (record / "output.ipynb").read_bytes()
    assert kept_out == (folder / "output.ipynb").read_bytes()
    assert hashlib.sha256(kept_out).hexdigest() == finish.details["output_sha256"]
    assert os.stat(service.records.root).st_mode & 0o777 == 0o700


async def test_failing_notebook_reports_cell_and_error(make_service) -> None:
    service = make_service()
    staff = service.identity(*STAFF)
    book = nb("a = 1", "print('before'); raise ValueError('bad input 7')", "b = 2",
              parameters="x = 0")
    run = service.submit(staff, project="cardio-los", notebook="broken.ipynb", content=book,
                         parameters={"x": 5}, as_user="bob", timeout=120)
    run = await wait_final(service, run["id"])
    assert run["status"] == "failed"
    assert run["failed_cell"] == 2  # index in the submitted notebook (parameters cell is 0)
    assert run["error"] == "ValueError"  # the class: its message is the notebook's output
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    out = json.loads((folder / "output.ipynb").read_text())  # the partial notebook is kept
    text = json.dumps(out)
    assert "before" in text and "bad input 7" in text
    assert not any(c.get("outputs") for c in out["cells"] if "b = 2" in "".join(c["source"]))
    log = service.logs(service.identity(*MEMBER), run["id"])
    assert "bad input 7" in log


ISOLATION = r'''
import os, json, glob
probe = {}
probe["data"] = sorted(os.listdir("/data"))
probe["own"] = open("/data/stays/stays.csv").read().splitlines()[1]
def attempt(path):
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path))
        return open(path).read()[:50]
    except OSError as e:
        return type(e).__name__
probe["other_dataset_host_path"] = attempt(OTHER)
probe["other_project_host_dir"] = attempt(OTHER_PROJECT)
probe["glob"] = glob.glob("/data/*/*.csv")
probe["hub_state"] = attempt(STATE)
print("PROBE" + json.dumps(probe))
'''


async def check_isolation(service, timeout: float = 120) -> None:
    """A run of alice in cardio-los probes the other project's data and folder and the
    hub's state by their host paths: it sees its own project's data only. (alice is a
    member of both projects: the sandbox, not the user, decides.)"""
    staff = service.identity(*STAFF)
    settings = service.settings
    other = settings.projects["air-quality"].datasets[0].path / "admissions.csv"
    other_project = service.shared_dir("air-quality").parent
    other_project.mkdir(parents=True, exist_ok=True)
    params = {"OTHER": str(other), "OTHER_PROJECT": str(other_project),
              "STATE": str(settings.state_dir)}
    book = nb(ISOLATION, parameters="OTHER = ''\nOTHER_PROJECT = ''\nSTATE = ''")
    run = service.submit(staff, project="cardio-los", notebook="probe.ipynb", content=book,
                         parameters=params, as_user="alice", timeout=timeout)
    run = await wait_final(service, run["id"], timeout=timeout)
    assert run["status"] == "succeeded", run
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    text = "".join(json.loads((folder / "output.ipynb").read_text())["cells"][-1]["outputs"][0]
                   ["text"])
    probe = json.loads(text.split("PROBE", 1)[1].splitlines()[0])
    # papermill logs cell outputs, in the project's log
    assert "PROBE" in service.logs(service.identity(*MEMBER), run["id"])
    assert probe["data"] == ["stays"]
    assert probe["own"] == "cardio-los-1,42"
    assert probe["other_dataset_host_path"] == "FileNotFoundError"
    assert probe["other_project_host_dir"] == "FileNotFoundError"
    assert probe["hub_state"] == "FileNotFoundError"
    assert probe["glob"] == ["/data/stays/stays.csv"]


async def test_run_cannot_read_another_projects_data(make_service) -> None:
    await check_isolation(make_service())
