"""The airlock's proposal for a ``fail`` table (issue 20 item 4): a fixed version,
made where the file is checked, that the requester may view and accept into the
request's current version, where it is checked again like any upload."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from sqlalchemy import select

from ecluse.airlock.errors import InvalidTransition, PermissionDenied, PolicyViolation
from ecluse.airlock.models import LedgerEntry
from ecluse.airlock.rules import State
from ecluse.auditevents import AuditEvent

from .conftest import describe_all


def _file(service, user, rid, name):
    return next(f for f in service.get_request(user, rid, record_view=False)["files"]
                if f["name"] == name)


def test_fail_then_proposal_then_accept_then_the_new_version_passes_and_is_released(
        service, users, files):
    name, data = files.fail
    req = service.create_request(users.alice, project="cardio-los", title="Ages",
                                 justification="paper")
    rid = req["id"]
    service.add_file(users.alice, rid, name, [data])
    f1 = _file(service, users.alice, rid, name)
    assert f1["verdict"] == "fail"
    assert f1["proposal"]["available"] is True and f1["proposal"]["method"] == "suppress"
    assert "sex F, age_band 41-65" in f1["proposal"]["notes"][0]
    describe_all(service, users.alice, rid)
    service.submit(users.alice, rid)
    service.review(users.carol, rid, decision="request_changes", comment="Suppress the 3")
    # version 2 carries the file and its proposal; the requester reads it
    f2 = _file(service, users.alice, rid, name)
    assert f2["version"] == 2 and f2["proposal"]["available"]
    proposal = service.get_proposal(users.alice, rid, f2["id"])
    assert proposal["verdict"] == "pass" and proposal["method"] == "suppress"
    assert "F,41-65,c" in proposal["text"] and ",3\n" not in proposal["text"]
    # accepted: the fixed bytes replace the file in version 2, checked again
    new = service.accept_proposal(users.alice, rid, f2["id"])
    assert new["name"] == name and new["version"] == 2 and new["verdict"] == "pass"
    assert new["sha256"] != f2["sha256"] and "proposal" not in new
    req = service.get_request(users.alice, rid, record_view=False)
    assert [f["verdict"] for f in req["files"]] == ["pass"]
    assert req["versions"]["1"][0]["sha256"] == f1["sha256"]  # version 1 as reviewed
    [accepted] = service.audit.records(event=AuditEvent.AIRLOCK_PROPOSAL_ACCEPTED)
    assert accepted.actor == "alice" and accepted.details["request_id"] == rid
    assert accepted.details["replaced_sha256"] == f2["sha256"]
    assert accepted.details["sha256"] == new["sha256"] and accepted.details["verdict"] == "pass"
    assert service.audit.records(event=AuditEvent.AIRLOCK_PROPOSAL_VIEWED)
    # reviewed and released like any request: no override reason needed any more
    service.resubmit(users.alice, rid, "suppressed as proposed")
    service.review(users.carol, rid, decision="approve")
    service.review(users.dan, rid, decision="approve")
    released = service.release(users.carol, rid)
    assert released["state"] == "released"
    with service.sessions() as s:
        [entry] = s.scalars(select(LedgerEntry)).all()
    assert entry.sha256 == new["sha256"]
    content = service.open_file(users.alice, rid, new["id"])
    assert b"F,41-65,c" in b"".join(content.chunks)


def test_a_checker_sees_that_a_fix_exists_but_never_its_bytes(service, users, files,
                                                              create_request_at_status):
    req = create_request_at_status(State.SUBMITTED, files=[files.fail])
    rid = req["id"]
    [f] = service.get_request(users.carol, rid, record_view=False)["files"]
    assert f["proposal"] == {"available": True, "method": "suppress"}
    for who in (users.carol, users.sam, users.bob):  # a checker, staff, another member
        with pytest.raises(PermissionDenied, match="you may not see the proposal"):
            service.get_proposal(who, rid, f["id"])
        with pytest.raises(PermissionDenied):
            service.accept_proposal(who, rid, f["id"])
    denied = service.audit.records(event=AuditEvent.AIRLOCK_PERMISSION_DENIED)
    assert {(r.actor, r.details["action"]) for r in denied} >= {
        ("carol", "read_proposal"), ("carol", "accept_proposal")}
    assert not service.audit.records(event=AuditEvent.AIRLOCK_PROPOSAL_VIEWED)
    # the requester reads it, but accepts only into an editable version
    assert "F,41-65,c" in service.get_proposal(users.alice, rid, f["id"])["text"]
    with pytest.raises(InvalidTransition, match="its files are immutable"):
        service.accept_proposal(users.alice, rid, f["id"])


def test_a_file_that_cannot_be_fixed_says_why(service, users):
    buf = io.BytesIO()
    pd.DataFrame({"sex": ["F", "M"], "n": [3, 31]}).to_parquet(buf)
    total = b"sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\nM,41-65,40\nAll,All,99\n"
    req = service.create_request(users.alice, project="cardio-los", title="Ages",
                                 justification="paper")
    rid = req["id"]
    service.add_file(users.alice, rid, "counts.parquet", [buf.getvalue()])
    f = _file(service, users.alice, rid, "counts.parquet")
    assert f["verdict"] == "fail" and f["proposal"]["available"] is False
    assert "only CSV tables can be fixed (this is parquet)" in f["proposal"]["error"]
    with pytest.raises(PolicyViolation, match="only CSV tables can be fixed"):
        service.accept_proposal(users.alice, rid, f["id"])
    assert service.get_proposal(users.alice, rid, f["id"])["error"] == f["proposal"]["error"]
    # the checker sees why too (it is part of the report)
    service.add_file(users.alice, rid, "deaths.csv", [b"total_patients,deaths\n120,3\n"])
    f = _file(service, users.alice, rid, "deaths.csv")
    assert f["verdict"] == "fail" and "no count table with label columns" in f["proposal"]["error"]
    # a grand total over age bands is the total of the bands listed: the 3 and its
    # partner are hidden, and the fix passes (it was refused as still recoverable)
    service.add_file(users.alice, rid, "with_total.csv", [total])
    f = _file(service, users.alice, rid, "with_total.csv")
    assert f["verdict"] == "fail" and f["proposal"]["available"] is True
    assert service.get_proposal(users.alice, rid, f["id"])["text"] == (
        "sex,age_band,n\nF,18-40,c\nF,41-65,c\nM,18-40,31\nM,41-65,40\nAll,All,99\n")
    # a passing file has no proposal
    service.add_file(users.alice, rid, "safe.csv", [b"sex,n\nF,25\nM,31\n"])
    f = _file(service, users.alice, rid, "safe.csv")
    assert f["verdict"] == "pass" and "proposal" not in f
    with pytest.raises(Exception, match="no fixed version is proposed for safe.csv"):
        service.get_proposal(users.alice, rid, f["id"])


def test_a_pandas_crosstab_with_margins_gets_a_proposal_that_passes(service, users):
    # ``pd.crosstab(..., margins=True)`` over age bands: the All row and column are
    # totals of the bands listed, so the 3 and its partner are not enough to hide
    people = pd.DataFrame({"sex": ["F"] * 40 + ["M"] * 43,
                           "age_band": ["18-40"] * 25 + ["41-65"] * 15 + ["18-40"] * 40
                           + ["41-65"] * 3})
    data = pd.crosstab(people.sex, people.age_band, margins=True).to_csv().encode()
    req = service.create_request(users.alice, project="cardio-los", title="Ages",
                                 justification="paper")
    rid = req["id"]
    service.add_file(users.alice, rid, "crosstab.csv", [data])
    f = _file(service, users.alice, rid, "crosstab.csv")
    assert f["verdict"] == "fail" and f["proposal"]["available"] is True
    proposal = service.get_proposal(users.alice, rid, f["id"])
    assert proposal["verdict"] == "pass" and proposal["method"] == "suppress"
    assert proposal["text"].splitlines() == ["sex,18-40,41-65,All", "F,c,c,40", "M,c,c,43",
                                             "All,65,18,83"]
    assert "secondary" in proposal["notes"][1]
    new = service.accept_proposal(users.alice, rid, f["id"])
    assert new["verdict"] == "pass"
    req = service.get_request(users.alice, rid, record_view=False)
    assert [x["verdict"] for x in req["files"]] == ["pass"]
