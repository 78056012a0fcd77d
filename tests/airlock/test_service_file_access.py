"""The two-person rule on bytes, stored previews, unjudged files, purge (issue 14, items 1-2).

Attack tests: each fails when its control is undone (checkers reading raw bytes,
previews rendered from the staged file on demand, block files shown in full,
``review`` approvable without a reason, nothing purged).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from ecluse.airlock.errors import PermissionDenied, PolicyViolation
from ecluse.airlock.models import utcnow
from ecluse.airlock.rules import BLOCK_SAMPLE_ROWS, State

from .conftest import describe_all

CANARY_NAME = "Zacharie-Canary"
CANARY_LATE = "CANARYWARD"


def canary_block() -> tuple[str, bytes]:
    """A row-level table: an identifier, a name with a canary in the first row, and a
    harmless-looking category whose canary sits past the sample rows."""
    rows = ["patient_id,nom,ward,age,los_days"]
    for i in range(40):
        name = CANARY_NAME if i == 0 else f"Name{i:03d}x"
        ward = CANARY_LATE if i == 30 else "ABC"[i % 3]
        rows.append(f"P{100000 + i},{name},{ward},{20 + i % 70},{1 + i % 29}")
    return "cohort.csv", ("\n".join(rows) + "\n").encode()


def _new(service, user, project="cardio-los"):
    return service.create_request(user, project=project, title="Tables",
                                  justification="For the paper")["id"]


def _submitted(service, users, *named_files):
    rid = _new(service, users.alice)
    for name, data in named_files:
        service.add_file(users.alice, rid, name, [data])
    describe_all(service, users.alice, rid)
    service.submit(users.alice, rid)
    return rid


# ---------------------------------------------------------------- raw bytes


@pytest.mark.parametrize("state", [State.SUBMITTED, State.IN_REVIEW, State.APPROVED,
                                   State.RELEASED, State.REJECTED, State.WITHDRAWN])
def test_checkers_and_staff_never_get_raw_bytes(service, users, files, create_request_at_status,
                                                state):
    req = create_request_at_status(state, files=[files.fail])
    fid = req["files"][0]["id"]
    for who in (users.carol, users.dan, users.sam):
        with pytest.raises(PermissionDenied):
            service.open_file(who, req["id"], fid)
    denied = [r for r in service.audit.records(event="airlock.permission_denied")
              if r.details.get("request_id") == req["id"]]
    assert {r.actor for r in denied} == {"carol", "dan", "sam"}
    assert not service.audit.records(event="airlock.file.viewed")


def test_checker_refusal_says_why(service, users, files):
    rid = _submitted(service, users, files.block)
    fid = service.get_request(users.carol, rid)["files"][0]["id"]
    with pytest.raises(PermissionDenied, match="only to the requester.*checkers review through"):
        service.open_file(users.carol, rid, fid)
    service.withdraw(users.alice, rid)
    with pytest.raises(PermissionDenied, match="only to the requester"):
        service.open_file(users.carol, rid, fid)
    with pytest.raises(PermissionDenied, match="is withdrawn: files can be downloaded once"):
        service.open_file(users.alice, rid, fid)


def test_only_the_released_version_leaves(service, users, files, create_request_at_status):
    rid = create_request_at_status(State.CHANGES_REQUESTED, files=[files.fail])["id"]
    v1 = service.get_request(users.alice, rid)["versions"]["1"][0]["id"]
    service.remove_file(users.alice, rid, files.fail[0])
    service.add_file(users.alice, rid, *files.ok[:1], [files.ok[1]])
    service.resubmit(users.alice, rid)
    for checker in (users.carol, users.dan):
        service.review(checker, rid, decision="approve")
    service.release(users.sam, rid)
    v2 = service.get_request(users.alice, rid)["files"][0]["id"]
    assert b"".join(service.open_file(users.alice, rid, v2).chunks) == files.ok[1]
    with pytest.raises(PermissionDenied, match="version 1 .* was not released"):
        service.open_file(users.alice, rid, v1)


# ---------------------------------------------------------------- previews


def test_block_file_shows_findings_and_a_masked_sample_never_its_content(service, users):
    name, data = canary_block()
    assert CANARY_NAME.encode() in data and CANARY_LATE.encode() in data
    rid = _submitted(service, users, (name, data))
    req = service.get_request(users.carol, rid)
    f = req["files"][0]
    assert f["verdict"] == "block" and f["findings"]
    pv = f["preview"]
    assert pv["kind"] == "table" and 0 < len(pv["rows"]) <= BLOCK_SAMPLE_ROWS
    cols = pv["columns"]
    masked = {cols[j] for j in pv["masked_columns"]}
    assert {"patient_id", "nom"} <= masked and "age" not in masked
    # the identifier columns show the mask, the rows past the sample are not there
    assert all(row[cols.index("nom")] != CANARY_NAME for row in pv["rows"])
    everything = json.dumps(req)
    assert CANARY_NAME not in everything and CANARY_LATE not in everything
    assert "P100000" not in everything


def test_block_file_that_is_not_a_table_is_withheld(service, users):
    text = b"Patient P1234567 NIR 1 84 12 75 123 456 78 admitted 2020-01-02\n" * 30
    rid = _new(service, users.alice)
    f = service.add_file(users.alice, rid, "notes.txt", [text])
    if f["verdict"] != "block":
        pytest.fail(f"expected the checks to block identifiers in text, got {f['verdict']}")
    service.submit(users.alice, rid)
    pv = service.get_request(users.carol, rid)["files"][0]["preview"]
    assert pv["kind"] == "withheld" and "P1234567" not in json.dumps(pv)


def test_previews_are_rendered_once_when_checked_not_from_the_staged_file(service, users,
                                                                         files):
    rid = _submitted(service, users, files.fail)
    sha = service.get_request(users.carol, rid)["files"][0]["sha256"]
    path = service.staging.path_for(sha)
    os.chmod(path, 0o600)
    path.write_bytes(b"sex,age_band,n\nSWAPPED,0,0\n")
    pv = service.get_request(users.carol, rid)["files"][0]["preview"]
    assert pv["kind"] == "table" and ["F", "41-65", "3"] in pv["rows"]
    assert "SWAPPED" not in json.dumps(pv) and [1, 2] in pv["flagged"]


@pytest.mark.parametrize("state,checker_sees", [
    (State.SUBMITTED, True), (State.IN_REVIEW, True), (State.APPROVED, False),
    (State.RELEASED, False), (State.WITHDRAWN, False), (State.REJECTED, False),
])
def test_previews_only_while_reviewable_and_closed_requests_show_nothing(
    service, users, files, create_request_at_status, state, checker_sees
):
    req = create_request_at_status(state, files=[files.fail])
    f = service.get_request(users.dan, req["id"])["files"][0]
    assert ("preview" in f) is checker_sees
    closed = state in (State.WITHDRAWN, State.REJECTED)
    assert ("findings" in f) is not closed and ("report" in f) is not closed
    assert f["downloadable"] is False
    mine = service.get_request(users.alice, req["id"])["files"][0]
    assert mine["downloadable"] is (state is State.RELEASED)
    if closed:
        assert "preview" not in mine and "findings" not in mine


def test_earlier_versions_keep_their_previews_for_comparison(service, users, files,
                                                             create_request_at_status):
    rid = create_request_at_status(State.CHANGES_REQUESTED, files=[files.fail])["id"]
    service.remove_file(users.alice, rid, files.fail[0])
    service.add_file(users.alice, rid, files.ok[0], [files.ok[1]])
    service.resubmit(users.alice, rid)
    req = service.get_request(users.dan, rid)
    old = req["versions"]["1"][0]
    assert old["name"] == files.fail[0] and old["preview"]["kind"] == "table"
    assert ["F", "41-65", "3"] in old["preview"]["rows"]
    with pytest.raises(PermissionDenied):
        service.open_file(users.dan, rid, old["id"])
    viewed = service.audit.records(event="airlock.request.viewed")
    assert viewed[-1].actor == "dan" and old["id"] in viewed[-1].details["previews"]


# ---------------------------------------------------------------- unjudged files


class CrashingChecker:
    """A checker whose reader dies on every file (a parser bug, a killed worker)."""

    def __call__(self, *args, **kwargs):
        raise MemoryError("reader blew up")


@pytest.mark.parametrize("kind", ["image", "unknown-binary", "checker-crash"])
def test_unjudged_files_need_a_written_reason_to_approve(make_service, kind):
    service = make_service()
    if kind == "checker-crash":
        service.checker = CrashingChecker()
    alice, carol, dan = (service.identity(u, g) for u, g in
                         (("alice", ["cardio-los"]), ("carol", ["output-checkers"]),
                          ("dan", ["output-checkers"])))
    from tests.airlock.conftest import png_bytes

    name, data = {
        "image": ("plot.png", png_bytes()),
        "unknown-binary": ("model.bin", bytes(range(256)) * 8),
        "checker-crash": ("counts_safe.csv", b"sex,n\nF,25\nM,31\n"),
    }[kind]
    rid = _new(service, alice)
    f = service.add_file(alice, rid, name, [data])
    assert f["verdict"] == "review" and f["needs_override_reason"] is True
    if kind == "checker-crash":
        assert f["findings"][0]["rule"] == "checker-error"
        assert f["preview"]["kind"] == "none"
    describe_all(service, alice, rid)
    service.submit(alice, rid)
    with pytest.raises(PolicyViolation, match=f"file {name} could not be judged by the "
                                              "automatic checks.*needs a written override"):
        service.review(carol, rid, decision="approve")
    with pytest.raises(PolicyViolation, match="needs a written override"):
        service.review(carol, rid, decision="approve", overrides={name: "   "})
    reason = "Looked at it: a plot of aggregate rates, no small cells"
    assert service.review(carol, rid, decision="approve",
                          overrides={name: reason})["state"] == "in_review"
    service.review(dan, rid, decision="approve", overrides={name: "Same: aggregate rates"})
    service.release(carol, rid)
    review_events = service.audit.records(event="airlock.review.approved")
    assert review_events[-1].details["overrides"] == {name: reason}
    released = service.audit.records(event="airlock.request.released")[-1]
    record = released.details["files"]
    assert record == [{"file": name, "sha256": f["sha256"], "verdict": "review",
                       "policy_pack": "ecluse-default",
                       "approved_by": ["carol", "dan"],
                       "override_reasons": {"carol": reason, "dan": "Same: aggregate rates"}}]
    refused = service.audit.records(event="airlock.permission_denied")
    assert any("could not be judged" in r.details["reason"] for r in refused)


# ---------------------------------------------------------------- purge


def test_withdrawn_and_rejected_are_purged_after_retention_audited(
    service, users, files, create_request_at_status
):
    withdrawn = create_request_at_status(State.WITHDRAWN, files=[files.block, files.review])
    rejected = create_request_at_status(State.REJECTED, files=[files.fail])
    # the same bytes as a withdrawn file, still under review: must survive the purge
    live = _submitted(service, users, files.review)
    released = create_request_at_status(State.RELEASED, files=[files.ok])
    shas = {n: service.staging.path_for(f["sha256"]) for n, f in
            (("block", withdrawn["files"][0]), ("png", withdrawn["files"][1]),
             ("fail", rejected["files"][0]), ("ok", released["files"][0]))}
    assert all(p.exists() for p in shas.values())

    assert service.purge(now=utcnow() + timedelta(days=29)) == []
    planned = service.purge(now=utcnow() + timedelta(days=31), dry_run=True)
    assert {p["request_id"] for p in planned} == {withdrawn["id"], rejected["id"]}
    assert all(p.exists() for p in shas.values())

    done = service.purge(actor="test-purge", now=utcnow() + timedelta(days=31))
    by_id = {p["request_id"]: p for p in done}
    assert set(by_id) == {withdrawn["id"], rejected["id"]}
    assert not shas["block"].exists() and not shas["fail"].exists()
    assert shas["png"].exists() and shas["ok"].exists()  # shared with live / released
    assert by_id[withdrawn["id"]]["kept_shared"] == [withdrawn["files"][1]["sha256"]]
    events = service.audit.records(event="airlock.request.purged")
    assert {e.details["request_id"] for e in events} == set(by_id)
    assert all(e.actor == "test-purge" and e.project == "cardio-los" for e in events)
    assert next(e for e in events if e.details["request_id"] == rejected["id"]
                ).details["deleted"] == [rejected["files"][0]["sha256"]]
    assert service.audit.verify().ok
    # purged once; the live request still reviews from its preview and is unaffected
    assert service.purge(now=utcnow() + timedelta(days=62)) == []
    assert service.get_request(users.alice, withdrawn["id"])["purged_at"]
    assert service.get_request(users.carol, live)["files"][0]["preview"]
    # once the live request is withdrawn and its retention passed, the shared object goes
    service.withdraw(users.alice, live)
    again = service.purge(now=utcnow() + timedelta(days=31))
    assert [p["request_id"] for p in again] == [live] and not shas["png"].exists()


def test_retention_is_configurable(make_service, files):
    service = make_service(purge_after_days=1)
    alice = service.identity("alice", ["cardio-los"])
    rid = _new(service, alice)
    service.add_file(alice, rid, files.ok[0], [files.ok[1]])
    service.withdraw(alice, rid)
    assert service.purge(now=utcnow() + timedelta(hours=12)) == []
    assert [p["request_id"] for p in service.purge(now=utcnow() + timedelta(days=2))] == [rid]


def test_a_text_file_sniffed_as_binary_is_never_approved_without_a_reason(service, users):
    """A row-level CSV behind one NUL byte: whatever the checks make of it (``review``
    when read as binary, ``block`` when read as the table it is), no silent approval."""
    name = "extract.csv"
    data = b"\x00" + b"patient_id,age\n" + b"".join(f"P{i:07d},{30 + i % 50}\n".encode()
                                                   for i in range(60))
    rid = _new(service, users.alice)
    f = service.add_file(users.alice, rid, name, [data])
    assert f["verdict"] in ("review", "block")
    describe_all(service, users.alice, rid)
    service.submit(users.alice, rid)
    with pytest.raises(PolicyViolation, match=f"file {name} (could not be judged|is blocked)"):
        service.review(users.carol, rid, decision="approve")


def test_the_running_service_purges_periodically(make_service, files):
    """The service's own task (``purge_interval_seconds``), as ``ecluse airlock serve`` runs it."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import update

    from ecluse.airlock.models import Request
    from ecluse.airlock.web.app import start_purge_task

    service = make_service(purge_interval_seconds=0.2)
    alice = service.identity("alice", ["cardio-los"])
    rid = _new(service, alice)
    sha = service.add_file(alice, rid, files.ok[0], [files.ok[1]])["sha256"]
    service.withdraw(alice, rid)
    with service.engine.begin() as conn:
        conn.execute(update(Request).where(Request.id == rid)
                     .values(updated_at=utcnow() - timedelta(days=31)))
    pool = ThreadPoolExecutor(1)

    async def serve_a_while():
        task = start_purge_task(service, pool)
        try:
            for _ in range(100):
                await asyncio.sleep(0.1)
                if service.audit.records(event="airlock.request.purged"):
                    break
        finally:
            task.stop()

    try:
        asyncio.run(serve_a_while())
    finally:
        pool.shutdown()
    (event,) = service.audit.records(event="airlock.request.purged")
    assert event.actor == "airlock" and event.details["deleted"] == [sha]
    assert not service.staging.path_for(sha).exists()
    assert start_purge_task(make_service(purge_interval_seconds=0), pool) is None


def test_files_staged_before_previews_get_theirs_once(service, users, files):
    """After the upgrade to stored previews, open requests' files are rendered once
    (at service start), their verdicts untouched; closed requests' are not."""
    from sqlalchemy import update

    from ecluse.airlock.models import File

    live = _submitted(service, users, files.fail)
    closed = _submitted(service, users, files.ok)
    service.withdraw(users.alice, closed)
    with service.engine.begin() as conn:  # as rows of schema 0001 were
        conn.execute(update(File).values(preview=None))
    before = service.get_request(users.carol, live)["files"][0]
    assert before["preview"] == {"kind": "none"}
    assert service.render_missing_previews() == 1
    after = service.get_request(users.carol, live)["files"][0]
    assert ["F", "41-65", "3"] in after["preview"]["rows"]
    assert after["verdict"] == before["verdict"] and after["report"] == before["report"]
    assert service.render_missing_previews() == 0
