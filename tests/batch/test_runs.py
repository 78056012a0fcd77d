"""Runs through the business layer with real sandboxes: outputs, failures, isolation."""

from __future__ import annotations

import json
import os

from ecluse.audit import AuditLog

from .conftest import nb, wait_final

STAFF = ("erin", ["staff"])


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
    assert json.loads((folder / "parameters.json").read_text()) == {"n": 21, "label": "june"}
    assert (folder / "log.txt").exists()
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
