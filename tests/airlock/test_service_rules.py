"""Business rules of reviews and release, on SQLite and PostgreSQL."""

from __future__ import annotations

import os

import pytest

from ecluse.airlock.errors import (
    IntegrityFailure,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from ecluse.airlock.rules import State


def _new(service, user, project="cardio-los"):
    return service.create_request(user, project=project, title="Tables",
                                  justification="For the paper")["id"]


def test_files_carry_their_sdc_report(service, users, files):
    rid = _new(service, users.alice)
    verdicts = {}
    for name, data in (files.block, files.fail, files.ok, files.review):
        f = service.add_file(users.alice, rid, name, [data])
        verdicts[name] = f["verdict"]
        assert f["report"]["verdict"] == f["verdict"]
        assert f["sha256"] and f["size"] == len(data)
    assert verdicts == {"patients.csv": "block", "counts_small.csv": "fail",
                        "counts_safe.csv": "pass", "plot.png": "review"}
    flagged = service.get_request(users.alice, rid)["files"][1]["findings"][0]["location"]
    assert flagged["column"] == "n" and flagged["row"] == 3


def test_no_self_review_even_when_members_may_review(service, users, files):
    # fay is an output checker and an air-quality member; members may review there
    rid = _new(service, users.fay, "air-quality")
    service.add_file(users.fay, rid, *[files.ok[0]], [files.ok[1]])
    service.submit(users.fay, rid)
    with pytest.raises(PermissionDenied, match="never reviews"):
        service.review(users.fay, rid, decision="approve")
    # gus's request in the same project: fay may review it (members_may_review)
    rid2 = _new(service, users.gus, "air-quality")
    service.add_file(users.gus, rid2, files.ok[0], [files.ok[1]])
    service.submit(users.gus, rid2)
    assert service.review(users.fay, rid2, decision="approve")["state"] == "in_review"


def test_project_members_may_not_review_by_default(service, users, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED)["id"]
    with pytest.raises(PermissionDenied, match="members may not review"):
        service.review(users.erin, rid, decision="approve")
    assert rid not in [r["id"] for r in service.list_requests(users.erin, scope="review")]
    assert rid in [r["id"] for r in service.list_requests(users.carol, scope="review")]


def test_block_is_never_approvable(service, users, files, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED, files=[files.block, files.ok])["id"]
    for reviewer in (users.carol, users.dan):
        with pytest.raises(PolicyViolation, match="blocked") as e:
            service.review(reviewer, rid, decision="approve",
                           overrides={"patients.csv": "I really mean it"})
        assert e.value.status == 422
    assert service.get_request(users.carol, rid)["state"] == "submitted"
    assert service.review(users.carol, rid, decision="reject", comment="row-level")[
        "state"] == "rejected"


def test_fail_needs_an_override_reason_from_each_approver(service, users, files,
                                                         create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED, files=[files.fail])["id"]
    with pytest.raises(PolicyViolation, match="override reason"):
        service.review(users.carol, rid, decision="approve")
    with pytest.raises(PolicyViolation, match="override reason"):
        service.review(users.carol, rid, decision="approve",
                       overrides={"counts_small.csv": "   "})
    out = service.review(users.carol, rid, decision="approve",
                         overrides={"counts_small.csv": "Published in the annual report"})
    assert out["state"] == "in_review"
    with pytest.raises(PolicyViolation, match="override reason"):
        service.review(users.dan, rid, decision="approve")
    out = service.review(users.dan, rid, decision="approve",
                         overrides={"counts_small.csv": "Same figure as table 2 of 2024"})
    assert out["state"] == "approved"
    assert {r["reviewer"]: r["overrides"] for r in out["reviews"]} == {
        "carol": {"counts_small.csv": "Published in the annual report"},
        "dan": {"counts_small.csv": "Same figure as table 2 of 2024"},
    }


def test_override_for_an_unknown_file_is_refused(service, users, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED)["id"]
    with pytest.raises(InvalidInput, match="no file named"):
        service.review(users.carol, rid, decision="approve", overrides={"../x": "r"})


def test_n_independent_approvals(make_service, users, files):
    service = make_service(required_approvals=3)
    alice = service.identity("alice", ["cardio-los"])
    checkers = [service.identity(n, ["output-checkers"]) for n in ("c1", "c2", "c3")]
    rid = _new(service, alice)
    service.add_file(alice, rid, files.ok[0], [files.ok[1]])
    service.submit(alice, rid)
    assert service.review(checkers[0], rid, decision="approve")["state"] == "in_review"
    with pytest.raises(PolicyViolation, match="already reviewed"):
        service.review(checkers[0], rid, decision="approve")
    with pytest.raises(InvalidTransition):
        service.release(checkers[0], rid)
    assert service.review(checkers[1], rid, decision="approve")["state"] == "in_review"
    out = service.review(checkers[2], rid, decision="approve")
    assert out["state"] == "approved" and out["approvals"] == 3


def test_files_are_immutable_once_submitted(service, users, files, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED)["id"]
    with pytest.raises(InvalidTransition, match="immutable"):
        service.add_file(users.alice, rid, "more.csv", [files.ok[1]])
    with pytest.raises(InvalidTransition, match="immutable"):
        service.remove_file(users.alice, rid, files.ok[0])
    with pytest.raises(PermissionDenied):
        service.add_file(users.bob, _new(service, users.alice), "x.csv", [b"a"])


def test_submit_needs_files(service, users):
    rid = _new(service, users.alice)
    with pytest.raises(PolicyViolation, match="no files"):
        service.submit(users.alice, rid)


def test_changes_requested_opens_a_new_version_and_keeps_the_old(
    service, users, files, create_request_at_status
):
    rid = create_request_at_status(State.CHANGES_REQUESTED, files=[files.fail])["id"]
    req = service.get_request(users.alice, rid)
    assert req["version"] == 2
    assert [f["name"] for f in req["files"]] == ["counts_small.csv"]
    assert [f["name"] for f in req["versions"]["1"]] == ["counts_small.csv"]
    service.remove_file(users.alice, rid, "counts_small.csv")
    service.add_file(users.alice, rid, files.ok[0], [files.ok[1]])
    out = service.resubmit(users.alice, rid, "Counts now at least 13")
    assert out["state"] == "submitted" and out["version"] == 2
    assert [f["name"] for f in out["versions"]["1"]] == ["counts_small.csv"]
    assert [f["name"] for f in out["files"]] == ["counts_safe.csv"]
    # carol asked for changes on version 1 and may review version 2
    assert service.review(users.carol, rid, decision="approve")["state"] == "in_review"
    assert service.review(users.dan, rid, decision="approve")["state"] == "approved"


def test_request_changes_and_reject_need_a_comment(service, users, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED)["id"]
    for decision in ("request_changes", "reject"):
        with pytest.raises(InvalidInput, match="comment: must not be empty"):
            service.review(users.carol, rid, decision=decision, comment=" ")
    with pytest.raises(InvalidInput, match="decision"):
        service.review(users.carol, rid, decision="maybe")


def test_hash_recheck_catches_a_swapped_staged_file(service, users, files,
                                                   create_request_at_status):
    req = create_request_at_status(State.APPROVED)
    sha = req["files"][0]["sha256"]
    path = service.staging.path_for(sha)
    os.chmod(path, 0o600)
    path.write_bytes(files.block[1])  # swapped for row-level data after approval
    with pytest.raises(IntegrityFailure, match="no longer matches"):
        service.release(users.carol, req["id"])
    assert service.get_request(users.carol, req["id"])["state"] == "approved"
    events = [r for r in service.audit.records(event="airlock.file.integrity_failure")]
    assert events and events[-1].details["sha256"] == sha


def test_download_only_after_release_and_only_by_the_requester(
    service, users, files, create_request_at_status
):
    req = create_request_at_status(State.APPROVED)
    fid = req["files"][0]["id"]
    with pytest.raises(PermissionDenied, match="once released"):
        service.open_file(users.alice, req["id"], fid)
    service.release(users.sam, req["id"])
    content = service.open_file(users.alice, req["id"], fid)
    assert b"".join(content.chunks) == files.ok[1] and content.purpose == "download"
    for other in (users.bob, users.sam):
        with pytest.raises(PermissionDenied):
            service.open_file(other, req["id"], fid)
    with pytest.raises(NotFound):
        service.open_file(users.eve, req["id"], fid)


def test_strangers_see_nothing(service, users, create_request_at_status):
    rid = create_request_at_status(State.SUBMITTED)["id"]
    with pytest.raises(NotFound):
        service.get_request(users.eve, rid)
    with pytest.raises(NotFound):
        service.get_request(users.eve, "ar-0000000000000000")
    with pytest.raises(NotFound):
        service.get_request(users.eve, "../../etc")
    assert service.list_requests(users.eve) == []
    with pytest.raises(PermissionDenied):
        service.list_requests(users.eve, scope="review")
    with pytest.raises(PermissionDenied, match="not a member"):
        service.create_request(users.eve, project="cardio-los", title="t", justification="j")
    with pytest.raises(NotFound, match="no project"):
        service.create_request(users.alice, project="nope", title="t", justification="j")


@pytest.mark.parametrize("name", ["../../x", "a\x00b.csv", "x" * 300, "/etc/passwd", "..", ""])
def test_path_tricks_never_reach_the_disk(service, users, tmp_path, name):
    rid = _new(service, users.alice)
    with pytest.raises(InvalidInput):
        service.add_file(users.alice, rid, name, [b"a,b\n1,2\n"])
    assert not (tmp_path / "x").exists()
    assert list(service.staging.objects.iterdir()) == []


def test_input_limits(make_service, users, files):
    service = make_service(max_file_bytes=100, max_files_per_request=1)
    alice = service.identity("alice", ["cardio-los"])
    with pytest.raises(InvalidInput, match="title: at most"):
        service.create_request(alice, project="cardio-los", title="t" * 500, justification="j")
    with pytest.raises(InvalidInput, match="justification: must not be empty"):
        service.create_request(alice, project="cardio-los", title="t", justification="")
    rid = _new(service, alice)
    from ecluse.airlock.errors import TooLarge

    with pytest.raises(TooLarge):
        service.add_file(alice, rid, "big.csv", [b"x" * 101])
    service.add_file(alice, rid, "a.csv", [b"a\n1\n"])
    service.add_file(alice, rid, "a.csv", [b"a\n2\n"])  # same name replaces
    with pytest.raises(PolicyViolation, match="already has 1 files"):
        service.add_file(alice, rid, "b.csv", [b"a\n1\n"])


def test_every_step_is_audited_with_actor_project_request_and_sha(
    service, users, files, create_request_at_status
):
    req = create_request_at_status(State.RELEASED, files=[files.fail])
    rid, sha = req["id"], req["files"][0]["sha256"]
    service.get_request(users.dan, rid)  # a checker's view
    service.open_file(users.alice, rid, req["files"][0]["id"])
    with pytest.raises(PermissionDenied):
        service.open_file(users.bob, rid, req["files"][0]["id"])
    recs = [r for r in service.audit.records() if r.details.get("request_id") == rid]
    events = [r.event for r in recs]
    for expected in (
        "airlock.request.created", "airlock.file.uploaded", "airlock.request.submitted",
        "airlock.review.approved", "airlock.request.approved", "airlock.request.released",
        "airlock.request.viewed", "airlock.file.downloaded", "airlock.permission_denied",
    ):
        assert expected in events, expected
    for r in recs:
        assert r.actor and r.project == "cardio-los"
    upload = next(r for r in recs if r.event == "airlock.file.uploaded")
    assert upload.details["sha256"] == sha and upload.actor == "alice"
    approved = next(r for r in recs if r.event == "airlock.request.approved")
    assert approved.details["sha256"] == [sha] and approved.details["overrides"]
    denied = next(r for r in recs if r.event == "airlock.permission_denied")
    assert denied.actor == "bob" and denied.outcome == "denied"
    assert service.audit.verify().ok


def test_concurrent_approvals_count_exactly(make_service, files):
    """Three checkers approve at once with 2 required: 2 land, the third is refused."""
    from concurrent.futures import ThreadPoolExecutor

    service = make_service(required_approvals=2)
    alice = service.identity("alice", ["cardio-los"])
    rid = _new(service, alice)
    service.add_file(alice, rid, files.ok[0], [files.ok[1]])
    service.submit(alice, rid)
    checkers = [service.identity(f"c{i}", ["output-checkers"]) for i in range(3)]

    def approve(c):
        try:
            service.review(c, rid, decision="approve")
            return "ok"
        except InvalidTransition as e:
            return e.code

    with ThreadPoolExecutor(3) as pool:
        results = sorted(pool.map(approve, checkers))
    assert results == ["invalid_state", "ok", "ok"]
    final = service.get_request(alice, rid)
    assert final["state"] == "approved" and final["approvals"] == 2


def test_staff_never_release_their_own_request(make_service, files):
    service = make_service(required_approvals=1)
    sam = service.identity("sam", ["staff", "cardio-los"])
    carol = service.identity("carol", ["output-checkers"])
    rid = _new(service, sam)
    service.add_file(sam, rid, files.ok[0], [files.ok[1]])
    service.submit(sam, rid)
    assert service.review(carol, rid, decision="approve")["state"] == "approved"
    with pytest.raises(PermissionDenied, match="never reviews or releases"):
        service.release(sam, rid)
    assert service.release(carol, rid)["state"] == "released"


def test_no_change_without_its_audit_record(service, users, files):
    """An audit log that cannot write makes the transition fail and roll back."""
    from ecluse.audit import AuditLog

    class AuditLogThatFailsOnSubmit(AuditLog):
        def record(self, event, **kw):
            if event == "airlock.request.submitted":
                raise OSError("audit disk full")
            return super().record(event, **kw)

    rid = _new(service, users.alice)
    service.add_file(users.alice, rid, files.ok[0], [files.ok[1]])
    service.audit = AuditLogThatFailsOnSubmit(service.audit.database_url,
                                              service.audit.jsonl_path)
    with pytest.raises(OSError, match="audit disk full"):
        service.submit(users.alice, rid)
    assert service.get_request(users.alice, rid)["state"] == "draft"
    service.audit.engine.dispose()
