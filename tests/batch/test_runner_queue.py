"""The queue: cancel kills the sandbox, timeouts, the concurrency limit, permissions."""

from __future__ import annotations

import asyncio
import json

import pytest

from ecluse.audit import AuditLog
from ecluse.batch.errors import InvalidInput, InvalidState, NotFound, PermissionDenied
from tests.batch.conftest import nb, sandbox_gone, wait_final

SLEEPER = nb("x = 1", "import time\ntime.sleep(600)", "y = 2")


async def _until(predicate, timeout: float = 90, every: float = 0.05):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)
    return value


async def test_cancel_kills_the_sandbox(make_service) -> None:
    service = make_service(concurrency=1)
    staff = service.identity("erin", ["staff"])
    first = service.submit(staff, project="cardio-los", notebook="sleep.ipynb",
                           content=SLEEPER, as_user="bob", timeout=300)
    second = service.submit(staff, project="cardio-los", notebook="sleep.ipynb",
                            content=SLEEPER, as_user="bob", timeout=300)
    # the second waits behind the limit; cancelling it never starts a sandbox
    queued = await service.cancel(staff, second["id"])
    assert queued["status"] == "cancelled" and queued["sandbox_id"] is None
    # the first is inside the sleeping cell
    await _until(lambda: service.get_run(staff, first["id"])["progress"]["cells_done"] >= 1)
    sid = service.get_run(staff, first["id"])["sandbox_id"]
    assert sid and not sandbox_gone(sid)
    t0 = asyncio.get_running_loop().time()
    run = await service.cancel(staff, first["id"])
    assert run["status"] == "cancelled" and run["cancelled_by"] == "erin"
    assert asyncio.get_running_loop().time() - t0 < 15
    assert sandbox_gone(sid)
    folder = service.shared_dir("cardio-los") / "batch" / run["id"]
    assert "x = 1" in (folder / "output.ipynb").read_text()  # partial notebook kept
    with pytest.raises(InvalidState):
        await service.cancel(staff, first["id"])
    events = {(r.event, r.outcome) for r in AuditLog.from_settings(service.settings).records()}
    assert ("batch.cancel", "success") in events and ("batch.finish", "cancelled") in events


async def test_timeout_marks_the_run_and_stops_the_sandbox(make_service) -> None:
    service = make_service()
    staff = service.identity("erin", ["staff"])
    run = service.submit(staff, project="cardio-los", notebook="sleep.ipynb",
                         content=SLEEPER, as_user="alice", timeout=3)
    run = await wait_final(service, run["id"])
    assert run["status"] == "timed-out"
    assert "timed out after 3 s" in run["error"]
    assert run["sandbox_id"] and sandbox_gone(run["sandbox_id"])


async def test_queue_respects_the_concurrency_limit(make_service) -> None:
    service = make_service(concurrency=2)
    staff = service.identity("erin", ["staff"])
    ids = [service.submit(staff, project="cardio-los", notebook="sleep.ipynb",
                          content=SLEEPER, as_user="bob", timeout=3)["id"] for _ in range(3)]
    most = 0
    while True:
        runs = [service.get_run(staff, i) for i in ids]
        most = max(most, sum(r["status"] == "running" for r in runs))
        if all(r["final"] for r in runs):
            break
        await asyncio.sleep(0.05)
    assert most == 2
    assert [r["status"] for r in runs] == ["timed-out"] * 3
    # the third started only after one of the first two had finished
    third = runs[2]
    assert third["started_at"] >= min(runs[0]["finished_at"], runs[1]["finished_at"])
    assert runs[0]["started_at"] <= runs[1]["started_at"] <= third["started_at"]


async def test_only_staff_may_submit_and_members_only_run(make_service) -> None:
    service = make_service()
    alice = service.identity("alice", ["cardio-los"])
    staff = service.identity("erin", ["staff"])
    book = nb("x = 1")
    with pytest.raises(PermissionDenied):
        service.submit(alice, project="cardio-los", notebook="a.ipynb", content=book)
    with pytest.raises(PermissionDenied, match="not a member of project cardio-los"):
        # erin (staff) is no project member: she cannot run as herself, nor as carol
        service.submit(staff, project="cardio-los", notebook="a.ipynb", content=book)
    with pytest.raises(PermissionDenied):
        service.submit(staff, project="cardio-los", notebook="a.ipynb", content=book,
                       as_user="carol")
    with pytest.raises(NotFound):
        service.submit(staff, project="nope", notebook="a.ipynb", content=book)
    with pytest.raises(InvalidInput):
        service.submit(staff, project="cardio-los", notebook="a.txt", content=book)
    with pytest.raises(InvalidInput):
        service.submit(staff, project="cardio-los", notebook="a.ipynb", content="{not json")
    with pytest.raises(InvalidInput):
        service.submit(staff, project="cardio-los", notebook="a.ipynb", content=book,
                       parameters={"not-an-identifier": 1}, as_user="bob")
    with pytest.raises(InvalidInput):
        service.submit(staff, project="cardio-los", notebook="a.ipynb", content=book,
                       as_user="bob", timeout=10**9)
    with pytest.raises(PermissionDenied):
        service.list_runs(alice)
    denied = [r for r in AuditLog.from_settings(service.settings).records()
              if r.event == "batch.denied"]
    assert {r.actor for r in denied} == {"alice", "erin"}
    assert json.dumps(denied[0].details)


async def test_runs_left_running_by_a_dead_service_are_failed(make_service) -> None:
    from ecluse.batch.runs import runs_table, utcnow

    service = make_service()
    with service.engine.begin() as c:
        c.execute(runs_table.insert().values(
            id="br-0123456789ab", project="cardio-los", notebook="x.ipynb",
            notebook_sha256="0" * 64, parameters="{}", submitted_by="erin", run_as="bob",
            status="running", timeout=10.0, created_at=utcnow(), started_at=utcnow(),
            cells_done=0, cells_total=0,
        ))
    second = make_service()  # a restarted service on the same database
    staff = second.identity("erin", ["staff"])
    run = await _until(lambda: (r := second.get_run(staff, "br-0123456789ab"))["final"] and r)
    assert run["status"] == "failed" and "restarted" in run["error"]
