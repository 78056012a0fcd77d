"""The checkers' queue (sorted, filtered, counted) and the staff's turnaround figures.

Timestamps are set by the test: the arithmetic is checked against figures worked out
by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from ecluse.airlock import queue
from ecluse.airlock.errors import InvalidInput, PermissionDenied
from ecluse.airlock.models import HistoryEntry, Request
from tests.airlock.conftest import Files

T0 = datetime(2026, 1, 10, tzinfo=UTC)


def _set(service, rid: str, **values) -> None:
    with service._write_sessions() as s, s.begin():
        s.execute(update(Request).where(Request.id == rid).values(**values))


def _timed(service, rid: str, submitted: datetime, decided: datetime) -> None:
    """The request was created an hour before ``submitted``, and everything after its
    submission happened at ``decided``."""
    with service._write_sessions() as s, s.begin():
        h = HistoryEntry
        s.execute(update(h).where(h.request_id == rid, h.action == "create")
                  .values(ts=submitted - timedelta(hours=1)))
        s.execute(update(h).where(h.request_id == rid, h.action == "submit")
                  .values(ts=submitted))
        s.execute(update(h).where(h.request_id == rid, h.action.not_in(["create", "submit"]))
                  .values(ts=decided))


def test_turnaround_median_and_90th_percentile_per_project_and_month(
        service, users, create_request_at_status):
    rounds = [  # (requester, project, outcome, submitted, hours to the decision)
        ("alice", "cardio-los", "approved", T0, 2),
        ("alice", "cardio-los", "approved", T0 + timedelta(days=10), 10),
        ("alice", "cardio-los", "changes_requested", datetime(2026, 2, 3, tzinfo=UTC), 4),
        ("alice", "cardio-los", "rejected", datetime(2026, 2, 14, tzinfo=UTC), 30),
        ("gus", "air-quality", "approved", T0 + timedelta(days=5), 1),
        ("gus", "air-quality", "approved", datetime(2026, 2, 20, tzinfo=UTC), 7),
    ]
    for requester, project, outcome, submitted, hours in rounds:
        rid = create_request_at_status(outcome, requester=requester, project=project)["id"]
        _timed(service, rid, submitted, submitted + timedelta(hours=hours))
    # neither a draft nor a request still under review counts
    create_request_at_status("draft")
    waiting = create_request_at_status("in_review")["id"]
    _timed(service, waiting, T0, T0 + timedelta(hours=500))

    t = queue.turnaround(service, users.sam)
    # all: 1 2 4 7 10 30 -> median (4 + 7) / 2; 90th percentile: rank ceil(5.4) = 6
    assert t["overall"] == {"count": 6, "median_hours": 5.5, "p90_hours": 30}
    assert t["per_project"] == [
        # 1 7 -> median 4, rank ceil(1.8) = 2
        {"project": "air-quality", "count": 2, "median_hours": 4.0, "p90_hours": 7},
        # 2 4 10 30 -> median 7, rank ceil(3.6) = 4
        {"project": "cardio-los", "count": 4, "median_hours": 7.0, "p90_hours": 30},
    ]
    assert t["per_month"] == [
        {"month": "2026-01", "count": 3, "median_hours": 2, "p90_hours": 10},  # 1 2 10
        {"month": "2026-02", "count": 3, "median_hours": 7, "p90_hours": 30},  # 4 7 30
    ]
    assert {(r["project"], r["month"]): (r["count"], r["median_hours"], r["p90_hours"])
            for r in t["per_project_month"]} == {
        ("air-quality", "2026-01"): (1, 1, 1), ("air-quality", "2026-02"): (1, 7, 7),
        ("cardio-los", "2026-01"): (2, 6.0, 10), ("cardio-los", "2026-02"): (2, 17.0, 30)}


def test_a_resubmitted_request_counts_each_round(service, users, create_request_at_status):
    rid = create_request_at_status("changes_requested")["id"]
    _timed(service, rid, T0, T0 + timedelta(hours=3))
    service.resubmit(users.alice, rid)
    service.review(users.carol, rid, decision="reject", comment="still row-level")
    with service._write_sessions() as s, s.begin():
        h = HistoryEntry
        s.execute(update(h).where(h.request_id == rid, h.action == "resubmit")
                  .values(ts=T0 + timedelta(days=1)))
        s.execute(update(h).where(h.request_id == rid, h.action == "reject")
                  .values(ts=T0 + timedelta(days=1, hours=9)))
    rounds = sorted(d["hours"] for d in queue.decisions(service) if d["request"] == rid)
    assert rounds == [3, 9]
    assert queue.turnaround(service, users.sam)["overall"] == {
        "count": 2, "median_hours": 6.0, "p90_hours": 9}


@pytest.mark.parametrize("who", ["carol", "alice", "eve", "fay"])
def test_turnaround_is_for_staff_only(service, users, who):
    with pytest.raises(PermissionDenied, match="staff"):
        queue.turnaround(service, getattr(users, who))


def test_percentile_is_the_nearest_rank():
    assert queue.percentile([5], 90) == 5
    assert queue.percentile(list(range(1, 11)), 90) == 9
    assert queue.percentile(list(range(1, 12)), 90) == 10
    assert queue.percentile([3, 1, 2], 50) == 2


def _queue(service, users, create_request_at_status):
    now = datetime.now(UTC)
    made = {}
    for key, files, requester, project, age in [
        ("pass", [Files.ok], "alice", "cardio-los", timedelta(days=3)),
        ("review", [Files.ok, Files.review], "alice", "cardio-los", timedelta(days=2)),
        ("fail", [Files.fail], "alice", "cardio-los", timedelta(days=1)),
        ("air", [Files.ok], "gus", "air-quality", timedelta(hours=1)),
    ]:
        rid = create_request_at_status("submitted", files=files, requester=requester,
                                       project=project)["id"]
        _set(service, rid, submitted_at=now - age, updated_at=now - age)
        made[key] = rid
    return made, now


def test_the_queue_sorts_by_age_and_by_risk_and_filters(service, users,
                                                        create_request_at_status):
    made, now = _queue(service, users, create_request_at_status)
    rows = service.list_requests(users.carol, scope="review")
    view = queue.queue_view(service, users.carol, rows, now=now)
    assert [r["id"] for r in view["rows"]] == [made[k] for k in ("pass", "review", "fail", "air")]
    assert {r["id"]: r["risk"] for r in view["rows"]} == {
        made["pass"]: "pass", made["review"]: "review", made["fail"]: "fail",
        made["air"]: "pass"}
    assert view["rows"][0]["age_seconds"] == pytest.approx(3 * 86400, abs=5)

    risk = queue.queue_view(service, users.carol, rows, sort="risk", now=now)
    # worst verdict first (block > fail > review > pass), the oldest first among equals
    assert [r["id"] for r in risk["rows"]] == [made[k] for k in ("fail", "review", "pass", "air")]

    counts = view["counts"]
    assert counts["total"] == 4
    assert counts["project"] == {"cardio-los": 3, "air-quality": 1}
    assert counts["verdict"] == {"pass": 2, "review": 1, "fail": 1}
    assert counts["state"] == {"submitted": 4}

    only = queue.queue_view(service, users.carol, rows, project="air-quality")
    assert [r["id"] for r in only["rows"]] == [made["air"]]
    assert only["counts"]["total"] == 4  # counts are of the whole queue
    assert [r["id"] for r in queue.queue_view(service, users.carol, rows,
                                              verdict="review")["rows"]] == [made["review"]]
    assert queue.queue_view(service, users.carol, rows, state="in_review")["rows"] == []
    for bad in ({"sort": "name"}, {"verdict": "green"}, {"state": "lost"}):
        with pytest.raises(InvalidInput):
            queue.queue_view(service, users.carol, rows, **bad)


def test_each_checkers_pending_work(service, users, create_request_at_status):
    made, _ = _queue(service, users, create_request_at_status)
    f = service.get_request(users.carol, made["pass"], record_view=False)["files"][0]
    service.decide_file(users.carol, made["pass"], f["id"], decision="approve", comment="")
    g = service.get_request(users.dan, made["air"], record_view=False)["files"][0]
    service.decide_file(users.dan, made["air"], g["id"], decision="approve", comment="")
    service.review(users.dan, made["fail"], decision="request_changes", comment="round it")
    rows = service.list_requests(users.carol, scope="review")
    pending = {p["checker"]: p for p in queue.queue_view(service, users.carol, rows)["pending"]}
    # dan's request for changes took the failing request out of review: three await
    # each of them; carol started one (a file decided), dan another
    assert pending["carol"] == {"checker": "carol", "awaiting": 3, "started": 1, "you": True}
    assert pending["dan"] == {"checker": "dan", "awaiting": 3, "started": 1, "you": False}
    assert "alice" not in pending and "sam" not in pending
