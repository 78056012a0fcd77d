"""Per-file decisions, the two-person rule per file and partial release (issue 21
item 4), on a real service: each test tries to break one of the rules."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from ecluse.airlock.errors import (
    InvalidInput,
    InvalidTransition,
    PermissionDenied,
    PolicyViolation,
)
from ecluse.airlock.rules import State


@pytest.fixture
def submitted(create_request_at_status, files):
    """alice's request of a passing table, a failing one and a blocked one, submitted."""
    return create_request_at_status(State.SUBMITTED, files=[files.ok, files.fail, files.block])


def _ids(req):
    return {f["name"]: f["id"] for f in req["files"]}


def _decide_partial(service, users, rid, ids):
    """carol and dan approve the passing table; carol asks for changes to the failing
    one; the blocked one is held by its verdict."""
    service.decide_file(users.carol, rid, ids["counts_safe.csv"], decision="approve")
    service.decide_file(users.dan, rid, ids["counts_safe.csv"], decision="approve")
    return service.decide_file(users.carol, rid, ids["counts_small.csv"],
                               decision="request_changes", comment="Round the counts to 5")


def test_each_checker_decides_each_file_once(service, users, submitted):
    rid = submitted["id"]
    ids = _ids(submitted)
    service.decide_file(users.carol, rid, ids["counts_safe.csv"], decision="approve")
    with pytest.raises(PolicyViolation, match="already decided on counts_safe.csv"):
        service.decide_file(users.carol, rid, ids["counts_safe.csv"], decision="approve")
    with pytest.raises(PolicyViolation, match="already decided"):
        service.decide_file(users.carol, rid, ids["counts_safe.csv"],
                            decision="request_changes", comment="changed my mind")
    req = service.get_request(users.carol, rid, record_view=False)
    f = {x["name"]: x for x in req["files"]}["counts_safe.csv"]
    assert f["approvals"] == 1 and not f["releasable"]
    assert [(d["reviewer"], d["decision"]) for d in f["decisions"]] == [("carol", "approve")]
    # one approval is not two: the request stays under review
    assert req["state"] == State.SUBMITTED


def test_requester_and_outsiders_cannot_decide(service, users, submitted):
    rid = submitted["id"]
    ids = _ids(submitted)
    with pytest.raises(PermissionDenied):
        service.decide_file(users.alice, rid, ids["counts_safe.csv"], decision="approve")
    # erin is a checker but a member of the project
    with pytest.raises(PermissionDenied):
        service.decide_file(users.erin, rid, ids["counts_safe.csv"], decision="approve")
    with pytest.raises(PermissionDenied):
        service.decide_file(users.bob, rid, ids["counts_safe.csv"], decision="approve")
    req = service.get_request(users.carol, rid, record_view=False)
    assert all(f["decisions"] == [] for f in req["files"])


def test_decisions_need_reasons_and_never_approve_a_blocked_file(service, users, submitted):
    rid = submitted["id"]
    ids = _ids(submitted)
    with pytest.raises(PolicyViolation, match="blocked"):
        service.decide_file(users.carol, rid, ids["patients.csv"], decision="approve",
                            comment="fine by me")
    with pytest.raises(PolicyViolation, match="failed the disclosure checks"):
        service.decide_file(users.carol, rid, ids["counts_small.csv"], decision="approve")
    with pytest.raises(InvalidInput, match="comment: must not be empty"):
        service.decide_file(users.carol, rid, ids["counts_small.csv"],
                            decision="request_changes")
    with pytest.raises(InvalidInput, match="decision"):
        service.decide_file(users.carol, rid, ids["counts_small.csv"], decision="reject",
                            comment="x")


def test_a_file_with_one_approval_is_never_released(service, users, submitted):
    rid = submitted["id"]
    ids = _ids(submitted)
    service.decide_file(users.carol, rid, ids["counts_safe.csv"], decision="approve")
    service.decide_file(users.carol, rid, ids["counts_small.csv"],
                        decision="request_changes", comment="Round the counts")
    # the passing table has one approval: nothing may be released in part
    with pytest.raises(PolicyViolation, match="counts_safe.csv \\(1 of 2 approvals\\)"):
        service.release_partial(users.dan, rid, comment="the safe table only")
    # nor whole: it is not approved
    with pytest.raises(InvalidTransition):
        service.release(users.dan, rid)
    assert service.get_request(users.carol, rid, record_view=False)["state"] == State.SUBMITTED


def test_a_file_nobody_decided_blocks_a_partial_release(service, users, create_request_at_status,
                                                         files):
    req = create_request_at_status(State.SUBMITTED, files=[files.ok, files.fail])
    rid = req["id"]
    ids = _ids(req)
    service.decide_file(users.carol, rid, ids["counts_safe.csv"], decision="approve")
    service.decide_file(users.dan, rid, ids["counts_safe.csv"], decision="approve")
    # the failing table is neither approved nor held
    with pytest.raises(PolicyViolation, match="counts_small.csv \\(0 of 2 approvals\\) "
                                              "neither has 2 approvals"):
        service.release_partial(users.carol, rid, comment="safe one only")


def test_partial_release_releases_the_approved_files_only(service, users, submitted, files):
    rid = submitted["id"]
    ids = _ids(submitted)
    req = _decide_partial(service, users, rid, ids)
    assert req["partial_release"] == {"release": ["counts_safe.csv"],
                                      "hold": ["counts_small.csv", "patients.csv"],
                                      "blocked_by": []}
    assert "release_partial" in service.get_request(users.dan, rid,
                                                     record_view=False)["allowed_actions"]
    # the requester may not release, and a comment is required
    with pytest.raises(PermissionDenied):
        service.release_partial(users.alice, rid, comment="mine")
    with pytest.raises(InvalidInput, match="comment"):
        service.release_partial(users.dan, rid)
    out = service.release_partial(users.dan, rid, comment="the safe table now, the rest later")
    assert out["state"] == State.RELEASED
    by = {f["name"]: f for f in out["files"]}
    assert by["counts_safe.csv"]["released"] and not by["counts_small.csv"]["released"]
    assert not by["patients.csv"]["released"]

    # the record: released list is the approved file only; the held ones with who and why
    rec = json.loads(service.get_record(users.alice, rid))
    assert rec["partial"] is True
    assert rec["released_files"] == ["counts_safe.csv"]
    assert [f["name"] for f in rec["files"]] == ["counts_safe.csv"]
    held = {h["name"]: h for h in rec["held"]}
    assert set(held) == {"counts_small.csv", "patients.csv"}
    assert held["counts_small.csv"]["reasons"] == [
        {"reviewer": "carol", "decision": "request_changes", "comment": "Round the counts to 5"}]
    assert held["patients.csv"]["reasons"][0]["decision"] == "blocked"
    assert "findings" not in held["counts_small.csv"]
    assert sorted((d["reviewer"], d["file"], d["decision"]) for d in rec["file_decisions"]) == [
        ("carol", "counts_safe.csv", "approve"), ("carol", "counts_small.csv", "request_changes"),
        ("dan", "counts_safe.csv", "approve")]
    assert rec["request"]["release_comment"] == "the safe table now, the rest later"

    # the package holds the approved file only: no held file's bytes, no held name in
    # its files, checksums, results.json or RO-Crate data entities
    content = service.release_package(users.alice, rid)
    data = b"".join(content.chunks)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = z.namelist()
        assert [m for m in members if m.startswith("files/")] == ["files/counts_safe.csv"]
        blob = b"".join(z.read(m) for m in members if m != "release-record.json")
        sums = z.read("SHA256SUMS").decode()
        crate = json.loads(z.read("ro-crate-metadata.json"))
    assert files.fail[1] not in data and files.block[1][:60] not in data
    assert b"counts_small.csv" not in blob and b"patients.csv" not in blob
    assert hashlib.sha256(files.ok[1]).hexdigest() in sums
    ids_in_crate = {e["@id"] for e in crate["@graph"]}
    assert "files/counts_small.csv" not in ids_in_crate

    # the held files' bytes never leave, whoever asks
    for name in ("counts_small.csv", "patients.csv"):
        with pytest.raises(PermissionDenied, match="held back"):
            service.open_file(users.alice, rid, by[name]["id"])
    ok = service.open_file(users.alice, rid, by["counts_safe.csv"]["id"])
    assert b"".join(ok.chunks) == files.ok[1]

    # the audit event says it was partial and what was held
    event = service.audit.records(event="airlock.request.released")[-1]
    assert event.details["partial"] is True
    assert [h["file"] for h in event.details["held"]] == ["counts_small.csv", "patients.csv"]
    assert event.details["sha256"] == [hashlib.sha256(files.ok[1]).hexdigest()]
    decided = service.audit.records(event="airlock.file.changes_requested")
    assert [(e.actor, e.details["file"]) for e in decided] == [("carol", "counts_small.csv")]


def test_held_files_never_enter_the_ledger(service, users, submitted):
    from sqlalchemy import select

    from ecluse.airlock.models import LedgerEntry

    rid = submitted["id"]
    _decide_partial(service, users, rid, _ids(submitted))
    service.release_partial(users.dan, rid, comment="safe table")
    with service.sessions() as s:
        released = {e.file for e in s.scalars(select(LedgerEntry).where(
            LedgerEntry.request_id == rid))}
    assert "counts_small.csv" not in released and "patients.csv" not in released


def test_whole_release_refused_while_a_file_is_held(service, users, create_request_at_status,
                                                    files):
    """Two request-level approvals and a changes request by a third on one file: the
    file is held, so the request cannot be released whole."""
    req = create_request_at_status(State.SUBMITTED, files=[files.ok])
    rid = req["id"]
    service.decide_file(users.fay, rid, _ids(req)["counts_safe.csv"],
                        decision="request_changes", comment="Label the columns")
    service.review(users.carol, rid, decision="approve")
    out = service.review(users.dan, rid, decision="approve")
    assert out["state"] == State.APPROVED
    with pytest.raises(PolicyViolation, match="counts_safe.csv is held"):
        service.release(users.carol, rid)


def test_approving_every_file_approves_the_request(service, users, create_request_at_status,
                                                    files):
    req = create_request_at_status(State.SUBMITTED, files=[files.ok, files.fail])
    rid = req["id"]
    ids = _ids(req)
    for who in (users.carol, users.dan):
        service.decide_file(who, rid, ids["counts_safe.csv"], decision="approve")
        out = service.decide_file(who, rid, ids["counts_small.csv"], decision="approve",
                                  comment="published figure")
    assert out["state"] == State.APPROVED
    out = service.release(users.carol, rid)
    assert all(f["released"] for f in out["files"])
    rec = json.loads(service.get_record(users.alice, rid))
    assert rec["partial"] is False and rec["held"] == []
    event = service.audit.records(event="airlock.request.released")[-1]
    files_ = {f["file"]: f for f in event.details["files"]}
    assert files_["counts_small.csv"]["approved_by"] == ["carol", "dan"]
    assert files_["counts_small.csv"]["override_reasons"] == {
        "carol": "published figure", "dan": "published figure"}


def test_request_level_review_and_file_decisions_do_not_double_count(
        service, users, submitted):
    rid = submitted["id"]
    ids = _ids(submitted)
    service.decide_file(users.carol, rid, ids["counts_small.csv"],
                        decision="request_changes", comment="Round it")
    # carol cannot then approve the whole version (she asked for changes to a file)
    with pytest.raises(PolicyViolation, match="you asked for changes to counts_small.csv"):
        service.review(users.carol, rid, decision="approve",
                       overrides={"counts_small.csv": "ok", "patients.csv": "ok"})
    # approving the whole version is refused while it holds a blocked file
    with pytest.raises(PolicyViolation, match="blocked"):
        service.review(users.dan, rid, decision="approve",
                       overrides={"counts_small.csv": "ok"})
    # a checker who reviewed the version may not then decide a file of it
    service.review(users.dan, rid, decision="request_changes", comment="see carol's note")
    req = service.get_request(users.alice, rid, record_view=False)
    assert req["state"] == State.CHANGES_REQUESTED and req["version"] == 2
    # the new version starts with no decisions
    assert all(f["decisions"] == [] for f in req["files"])


def test_a_reviewer_of_the_version_decides_no_file_of_it(service, users, create_request_at_status,
                                                 files):
    """A reviewed version: the reviewer may not decide its files afterwards."""
    req = create_request_at_status(State.IN_REVIEW, files=[files.ok])
    rid = req["id"]
    with pytest.raises(PolicyViolation, match="already reviewed version 1"):
        service.decide_file(users.carol, rid, _ids(req)["counts_safe.csv"],
                            decision="approve")


def test_decisions_on_an_earlier_version_are_refused(service, users, create_request_at_status,
                                                     files):
    req = create_request_at_status(State.CHANGES_REQUESTED, files=[files.ok])
    rid = req["id"]
    old = req["versions"]["1"][0]["id"]
    service.resubmit(users.alice, rid)
    with pytest.raises(InvalidTransition, match="version 1"):
        service.decide_file(users.dan, rid, old, decision="approve")


def test_partial_release_after_a_whole_review_names_no_held_file_in_the_package(
        service, users, create_request_at_status, files):
    """carol approves the whole version; dan approves one table and asks for changes to
    the other: only the first leaves, and the package (its crate's reviews included)
    names the held one nowhere but in the record's ``held``."""
    req = create_request_at_status(State.SUBMITTED, files=[files.ok, files.fail])
    rid = req["id"]
    ids = _ids(req)
    service.review(users.carol, rid, decision="approve",
                   overrides={"counts_small.csv": "published"})
    service.decide_file(users.dan, rid, ids["counts_safe.csv"], decision="approve")
    out = service.decide_file(users.dan, rid, ids["counts_small.csv"],
                              decision="request_changes", comment="Suppress the 3")
    assert out["state"] == State.IN_REVIEW
    assert out["partial_release"]["release"] == ["counts_safe.csv"]
    service.release_partial(users.sam, rid, comment="table 1 now")
    data = b"".join(service.release_package(users.alice, rid).chunks)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        crate = json.loads(z.read("ro-crate-metadata.json"))
        rest = b"".join(z.read(m) for m in z.namelist() if m != "release-record.json")
        record = json.loads(z.read("release-record.json"))
    assert b"counts_small.csv" not in rest
    objects = [o["@id"] for e in crate["@graph"] if e.get("@type") == "AssessAction"
               for o in e.get("object", [])]
    assert objects and set(objects) == {"files/counts_safe.csv"}
    assert record["held"][0]["name"] == "counts_small.csv"
    assert record["files"][0]["name"] == "counts_safe.csv" and len(record["files"]) == 1
    released = service.audit.records(event="airlock.request.released")[-1]
    [f] = released.details["files"]
    assert f["file"] == "counts_safe.csv" and f["approved_by"] == ["carol", "dan"]
