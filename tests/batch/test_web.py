"""The batch service in the stack ``ecluse up`` builds: tokens, staff scope, CLI, export.

The stack is :class:`tests.support.hubstack.HubStack` (``ecluse.dev.stack.Stack`` on the
repository's config, real sandboxes, the hub configuration of
``ecluse.hub.hubconfig``): what platform staff get after ``make up``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ecluse.airlock.service import AirlockService
from ecluse.audit import AuditLog
from ecluse.config import load_settings
from tests.batch.conftest import ROOTS, nb, sandbox_gone
from tests.support.hubstack import HubStack, password, running_hub, up_config


@pytest.fixture(scope="module")
def batch_hub(tmp_path_factory) -> Iterator[HubStack]:
    """The stack ``make up`` starts; the demo directory has no staff member who is also a
    project member: ``sam`` (``ecluse-staff`` and ``proj-cardio-los``) is added."""
    root = tmp_path_factory.mktemp("batch-hub")
    ROOTS.append(str(root))  # the session's check: nothing of it left running
    with running_hub(up_config(root), wait_for=("batch",), root=root) as hub:
        hub.add_directory_user("sam", password("sam"), 20010, ["ecluse-staff", "proj-cardio-los"],
                               cn="Sam Staff")
        yield hub


def _cli(hub: HubStack, token: str, *args: str, timeout: float = 240):
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "ecluse", "batch", *args[:1], "--url", hub.service_url("batch") + "/",
         *args[1:]], capture_output=True, text=True, env=env, timeout=timeout,
    )


def test_staff_run_succeeds_in_the_stack_ecluse_up_builds(batch_hub: HubStack,
                                                          tmp_path: Path) -> None:
    """What staff do after ``make up``: ``ecluse batch run`` with the deployment's config
    (the service's own address, no --url), as a project member. It used to fail with
    HTTP 503: the hub-managed service was not given the directory's service password."""
    book = nb("print('rows', n * 2)", parameters="n = 1")
    path = tmp_path / "monthly.ipynb"
    path.write_text(json.dumps(book))
    env = {k: v for k, v in os.environ.items()
           if k not in ("ECLUSE_BATCH_URL", batch_hub.settings.ldap.bind_password_env)}
    env.update(JUPYTERHUB_API_TOKEN=batch_hub.token("erin"), ECLUSE_CONFIG=str(batch_hub.config))
    res = subprocess.run(
        [sys.executable, "-m", "ecluse", "batch", "run", "--project", "cardio-los", str(path),
         "-p", "n", "21", "--as-user", "alice", "--timeout", "200"],
        capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr + batch_hub.log_tail()
    assert " succeeded " in res.stdout and "cardio-los" in res.stdout


def test_non_staff_cannot_submit(batch_hub: HubStack) -> None:
    api = batch_hub.service_url("batch") + "/" + "api/v1"
    body = {"project": "cardio-los", "as_user": "alice",
            "notebook": {"name": "a.ipynb", "content": nb("x = 1")}}
    assert requests.post(f"{api}/runs", json=body, timeout=30).status_code == 401
    alice = batch_hub.token("alice")  # reaches the service (members share runs), not staff
    r = requests.post(f"{api}/runs", json=body, timeout=30,
                      headers={"Authorization": f"token {alice}"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "permission_denied"
    # a staff member's token restricted to other scopes does not reach it either
    narrow = batch_hub.token("erin", ["read:users:groups!user"])
    r = requests.get(f"{api}/runs", timeout=30, headers={"Authorization": f"token {narrow}"})
    assert r.status_code == 403
    erin = batch_hub.token("erin")
    r = requests.get(f"{api}/me", timeout=30, headers={"Authorization": f"token {erin}"})
    assert r.status_code == 200 and r.json()["staff"] is True


def test_cli_run_progress_and_export(batch_hub: HubStack, tmp_path: Path) -> None:
    book = nb(
        "import csv\nrows = [('ward', 'stays'), ('A', 20 * n), ('B', 30 * n)]\n"
        "with open('summary.csv', 'w', newline='') as fh:\n    csv.writer(fh).writerows(rows)",
        "print('total', 50 * n)",
        parameters="n = 1",
    )
    path = tmp_path / "indicators.ipynb"
    path.write_text(json.dumps(book))
    sam = batch_hub.token("sam")
    res = _cli(batch_hub, sam, "run", "--project", "cardio-los", str(path), "-p", "n", "3",
               "--as-user", "alice", "--timeout", "200")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "succeeded" in res.stdout
    assert "4/4 cells" in res.stderr and "[####" in res.stderr  # the progress bar
    run_id = res.stdout.split()[0]
    show = json.loads(_cli(batch_hub, sam, "show", run_id, "--json").stdout)
    assert show["parameters"] == {"n": 3} and show["run_as"] == "alice"
    assert show["progress"] == {"cells_done": 4, "cells_total": 4, "fraction": 1.0}
    assert sandbox_gone(show["sandbox_id"])
    assert "total 150" in _cli(batch_hub, sam, "logs", run_id).stdout  # sam is a member
    # the log is project data: staff who are no member see status, not output ...
    erin = batch_hub.token("erin")
    res = _cli(batch_hub, erin, "logs", run_id)
    assert res.returncode == 1 and "data of project cardio-los" in res.stderr, res.stderr
    assert "total 150" not in _cli(batch_hub, erin, "show", run_id).stdout
    # ... until a member (not staff) shares the run
    alice = batch_hub.token("alice")
    res = _cli(batch_hub, alice, "share", run_id)
    assert res.returncode == 0 and "shared with platform staff" in res.stdout, res.stderr
    assert "total 150" in _cli(batch_hub, erin, "logs", run_id).stdout
    audit = AuditLog.from_settings(batch_hub.settings)
    reads = [(e.actor, e.details["access"]) for e in audit.records(event="batch.read")
             if e.details["run_id"] == run_id]
    assert reads == [("sam", "member"), ("erin", "shared")]
    assert [e.actor for e in audit.records(event="batch.share")] == ["alice"]
    audit.engine.dispose()  # an open connection would keep the state volume busy at stop
    listed = _cli(batch_hub, sam, "list", "--project", "cardio-los").stdout
    assert run_id in listed

    # staff who are no project member may not put its outputs in the airlock
    res = _cli(batch_hub, erin, "export", run_id, "--title", "June")
    assert res.returncode == 1 and "not a member of project cardio-los" in res.stderr

    # the executed notebook is free text the checks cannot judge: without its context and
    # controls the request is kept as a draft, every file in it, saying why
    res = _cli(batch_hub, sam, "export", run_id, "--title", "June indicators", "--json")
    assert res.returncode == 0, res.stderr
    draft = json.loads(res.stdout)
    assert draft["state"] == "draft"
    assert "output.ipynb (file" in draft["submit_refused"]
    assert "has no context and no statistical controls" in draft["submit_refused"]
    res = _cli(batch_hub, sam, "export", run_id, "--title", "June", "--context", "nope=x")
    assert res.returncode == 1 and "'nope' is not among the files" in res.stderr, res.stderr
    res = _cli(batch_hub, sam, "export", run_id, "--title", "June indicators", "--json",
               "--context", "output.ipynb=The run's notebook: stays per ward, June",
               "--controls", "output.ipynb=every count over 10; no rounding")
    assert res.returncode == 0, res.stderr
    req = json.loads(res.stdout)
    assert req["state"] == "submitted" and req["requester"] == "sam"
    described = {f["name"]: (f["context"], f["controls"]) for f in req["files"]}
    assert described["output.ipynb"] == ("The run's notebook: stays per ward, June",
                                         "every count over 10; no rounding")
    assert sorted(f["name"] for f in req["files"]) == ["output.ipynb", "summary.csv"]
    assert all(f["verdict"] in ("pass", "fail", "block", "review") for f in req["files"])
    assert run_id in req["justification"] and show["notebook_sha256"] in req["justification"]
    # the airlock's own records: the same request, awaiting review by checkers
    airlock = AirlockService.from_settings(load_settings(batch_hub.config))
    try:
        carol = airlock.identity("carol", ["output-checkers"])
        queue = airlock.list_requests(carol, scope="review")
        assert [r["id"] for r in queue] == [req["id"]]
    finally:
        airlock.close()
