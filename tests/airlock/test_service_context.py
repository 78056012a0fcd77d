"""Context, statistical controls and supporting files (issue 21 item 3), and dominance
with the largest contributors in another file of the request (issue 20 item 3).

Each test tries to break the control: submit a failing file with nothing said about it,
get a supporting file's bytes out through the download, the release, the package or the
record, or hide a dominant contributor by putting it in a separate file."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from ecluse.airlock.errors import (
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from ecluse.airlock.models import LedgerEntry

MAGNITUDE = ("turnover.csv", b"sector,n_firms,total\nA,25,1000\nB,30,2000\n")
CONTRIBUTORS = ("turnover_contributors.csv", b"sector,top1,top2\nA,870,40\nB,600,300\n")
UNROUNDED = ("counts_unrounded.csv",
             b"sex,age_band,n\nF,18-40,23\nF,41-65,3\nM,18-40,31\nM,41-65,42\n")


def _draft(service, users, *files, supporting=()):
    req = service.create_request(users.alice, project="cardio-los", title="Tables",
                                 justification="For the paper")
    out = {}
    for name, data in files:
        out[name] = service.add_file(users.alice, req["id"], name, [data],
                                     supporting=name in supporting)
    return req["id"], out


def _audit(service, event):
    return [{**r.details, "outcome": r.outcome} for r in service.audit.records(event=event)]


def test_a_fail_file_without_context_and_controls_cannot_be_submitted(service, users, files):
    rid, f = _draft(service, users, files.fail, files.review, files.ok)
    fail, review = f[files.fail[0]], f[files.review[0]]
    assert fail["verdict"] == "fail" and review["verdict"] == "review"
    assert fail["needs_context"] and review["needs_context"]
    assert not f[files.ok[0]]["needs_context"]  # a passing file needs neither
    with pytest.raises(PolicyViolation) as e:
        service.submit(users.alice, rid)
    msg = str(e.value)
    assert (f"counts_small.csv (file {fail['id']}, verdict fail) has no context and no "
            "statistical controls") in msg
    assert f"plot.png (file {review['id']}, verdict review) has no context" in msg
    assert "counts_safe.csv" not in msg
    assert service.get_request(users.alice, rid)["state"] == "draft"
    assert _audit(service, "airlock.permission_denied")[-1]["action"] == "submit"

    # context alone is not enough; whitespace is nothing
    service.describe_file(users.alice, rid, fail["id"], context="LOS by sex and age band",
                          controls="   ")
    service.describe_file(users.alice, rid, review["id"], context="KM curve",
                          controls="numbers at risk rounded to 5")
    with pytest.raises(PolicyViolation) as e:
        service.submit(users.alice, rid)
    assert "counts_small.csv (file" in str(e.value)
    assert "has no statistical controls" in str(e.value)
    assert "plot.png" not in str(e.value)

    out = service.describe_file(users.alice, rid, fail["id"], controls="none: cell of 3 is "
                                "a published figure")
    assert out["context"] == "LOS by sex and age band" and not out["needs_context"]
    assert service.submit(users.alice, rid)["state"] == "submitted"
    # what was said about the file is audited by size, kept in full on the file
    described = _audit(service, "airlock.file.described")
    assert described[-1]["file"] == "counts_small.csv"
    assert described[-1]["changed"] == ["controls"] and "controls" not in described[-1]


def test_context_only_by_the_requester_while_editable(service, users, files):
    rid, f = _draft(service, users, files.fail)
    fid = f[files.fail[0]]["id"]
    with pytest.raises(PermissionDenied, match="only the requester"):
        service.describe_file(users.bob, rid, fid, context="mine now")
    with pytest.raises(NotFound):
        service.describe_file(users.carol, rid, fid, context="a checker's words")
    with pytest.raises(InvalidInput, match="nothing to change"):
        service.describe_file(users.alice, rid, fid)
    with pytest.raises(InvalidInput, match="supporting: expected true or false"):
        service.describe_file(users.alice, rid, fid, supporting="perhaps")
    with pytest.raises(InvalidInput, match="context: at most"):
        service.describe_file(users.alice, rid, fid,
                              context="x" * (service.settings.max_text_chars + 1))
    with pytest.raises(NotFound):
        service.describe_file(users.alice, rid, fid + 999, context="no such file")
    service.describe_file(users.alice, rid, fid, context="c", controls="k")
    service.submit(users.alice, rid)
    with pytest.raises(InvalidTransition, match="immutable"):
        service.describe_file(users.alice, rid, fid, context="changed after submission")
    with pytest.raises(InvalidTransition, match="immutable"):
        service.describe_file(users.alice, rid, fid, supporting=True)


def test_context_follows_the_file_into_the_next_version_and_a_replacement(
        service, users, files):
    rid, f = _draft(service, users, files.fail, files.ok, supporting=[files.ok[0]])
    fid = f[files.fail[0]]["id"]
    service.describe_file(users.alice, rid, fid, context="LOS table", controls="none")
    service.submit(users.alice, rid)
    service.review(users.carol, rid, decision="request_changes", comment="round it")
    req = service.get_request(users.alice, rid)
    now = {x["name"]: x for x in req["files"]}
    assert now["counts_small.csv"]["context"] == "LOS table"
    assert now["counts_safe.csv"]["supporting"] is True
    # the earlier version stays as it was reviewed, with its words
    assert req["versions"]["1"][0]["context"] == "LOS table"
    # a new upload under the same name keeps what was said about the file
    again = service.add_file(users.alice, rid, files.fail[0], [files.fail[1]])
    assert (again["context"], again["controls"]) == ("LOS table", "none")
    ok = service.add_file(users.alice, rid, files.ok[0], [files.ok[1]])
    assert ok["supporting"] is True
    ok = service.add_file(users.alice, rid, files.ok[0], [files.ok[1]], supporting=False)
    assert ok["supporting"] is False


def test_a_request_of_supporting_files_only_is_refused(service, users, files):
    rid, _ = _draft(service, users, files.ok, supporting=[files.ok[0]])
    with pytest.raises(PolicyViolation, match="only supporting files, which are never released"):
        service.submit(users.alice, rid)


def test_a_supporting_file_is_seen_by_checkers_and_never_released(service, users, files):
    rid, f = _draft(service, users, files.ok, UNROUNDED, supporting=[UNROUNDED[0]])
    sup = f[UNROUNDED[0]]
    assert sup["supporting"] and sup["verdict"] == "fail"
    assert not sup["needs_context"] and not sup["needs_override_reason"]
    service.describe_file(users.alice, rid, sup["id"], context="the unrounded counts "
                          "behind counts_safe.csv")
    service.submit(users.alice, rid)  # a supporting file needs no context to submit

    # the checker sees it: its context, findings and preview (two-person preview rules)
    seen = {x["name"]: x for x in service.get_request(users.carol, rid)["files"]}
    s = seen[UNROUNDED[0]]
    assert s["supporting"] and s["context"].startswith("the unrounded counts")
    assert s["preview"]["kind"] == "table" and s["findings"]
    # approved without an override reason: nothing of it is released
    service.review(users.carol, rid, decision="approve")
    service.review(users.dan, rid, decision="approve")
    out = service.release(users.carol, rid)
    assert out["state"] == "released"
    files_now = {x["name"]: x for x in out["files"]}
    assert files_now[UNROUNDED[0]]["downloadable"] is False
    assert files_now[files.ok[0]]["downloadable"] is False  # only the requester

    # raw download refused, to the requester too
    mine = {x["name"]: x for x in service.get_request(users.alice, rid)["files"]}
    assert mine[files.ok[0]]["downloadable"] is True
    assert mine[UNROUNDED[0]]["downloadable"] is False
    with pytest.raises(PermissionDenied, match="supporting file .* never leave"):
        service.open_file(users.alice, rid, sup["id"])
    assert b"".join(service.open_file(users.alice, rid,
                                      mine[files.ok[0]]["id"]).chunks) == files.ok[1]

    # the record: released files, and the supporting one named as not released, with
    # none of its content
    record = json.loads(service.get_record(users.alice, rid))
    assert [x["name"] for x in record["files"]] == [files.ok[0]]
    [kept] = record["supporting_files"]
    assert kept["name"] == UNROUNDED[0] and kept["released"] is False
    assert kept["sha256"] == sup["sha256"]
    assert "report" not in kept and "findings" not in kept
    assert b"41-65,3" not in json.dumps(record).encode()
    assert all(UNROUNDED[0] not in r["files"] for r in record["reviews"])

    # the package: not among its members, nor in results.json, the sums or the crate
    pkg = service.release_package(users.alice, rid)
    z = zipfile.ZipFile(io.BytesIO(b"".join(pkg.chunks)))
    assert "files/" + UNROUNDED[0] not in z.namelist()
    for member in z.namelist():
        if member != "release-record.json" and not member.startswith("files/"):
            assert UNROUNDED[0].encode() not in z.read(member), member
    assert [n for n in z.namelist() if n.startswith("files/")] == ["files/" + files.ok[0]]

    # the audit of the release says it stayed
    released = _audit(service, "airlock.request.released")[-1]
    assert released["not_released"] == [{"file": UNROUNDED[0], "sha256": sup["sha256"],
                                          "reason": "supporting file"}]
    assert [x["file"] for x in released["files"]] == [files.ok[0]]
    # and the ledger of released tables never holds it
    with service.sessions() as s:
        assert {e.file for e in s.query(LedgerEntry).all()} == {files.ok[0]}


def test_a_supporting_file_is_not_differenced_as_if_published(service, users, files):
    # the unrounded table beside its published version: not a differencing pair
    rid, f = _draft(service, users, files.ok, UNROUNDED)
    out = service.describe_file(users.alice, rid, f[UNROUNDED[0]]["id"], supporting=True)
    assert out["supporting"]
    safe = next(x for x in service.get_request(users.alice, rid)["files"]
                if x["name"] == files.ok[0])
    assert [x for x in safe["findings"] if x["rule"] == "differencing"] == []
    assert safe["verdict"] == "pass"


def test_dominance_found_through_a_contributors_file_of_the_request(service, users):
    rid, f = _draft(service, users, MAGNITUDE)
    assert f[MAGNITUDE[0]]["verdict"] == "pass"  # alone, dominance cannot be told
    con = service.add_file(users.alice, rid, *CONTRIBUTORS[:1], [CONTRIBUTORS[1]],
                           supporting=True)
    table = next(x for x in service.get_request(users.alice, rid)["files"]
                 if x["name"] == MAGNITUDE[0])
    found = [x for x in table["findings"] if x["rule"] == "dominance-nk"]
    assert table["verdict"] == "fail"
    assert [(x["location"]["row"], x["location"]["column"], x["location"]["supporting_file"])
            for x in found] == [(2, "total", CONTRIBUTORS[0])]
    assert "largest contributors from turnover_contributors.csv" in found[0]["message"]
    # the checker sees it on the magnitude table
    service.describe_file(users.alice, rid, table["id"], context="turnover by sector",
                          controls="none")
    service.submit(users.alice, rid)
    seen = next(x for x in service.get_request(users.carol, rid)["files"]
                if x["name"] == MAGNITUDE[0])
    assert [x["rule"] for x in seen["findings"]] == ["dominance-nk"]
    assert seen["verdict"] == "fail"
    # removing the contributors (changes requested) takes the finding away again
    service.review(users.carol, rid, decision="request_changes", comment="merge sectors")
    service.remove_file(users.alice, rid, CONTRIBUTORS[0])
    table = next(x for x in service.get_request(users.alice, rid)["files"]
                 if x["name"] == MAGNITUDE[0])
    assert table["findings"] == [] and table["verdict"] == "pass"
    assert con["supporting"]


def test_what_was_said_about_a_file_is_not_shown_once_withdrawn(service, users, files):
    rid, f = _draft(service, users, files.fail)
    service.describe_file(users.alice, rid, f[files.fail[0]]["id"],
                          context="LOS of the 3 patients in ward B", controls="none")
    service.submit(users.alice, rid)
    assert service.get_request(users.carol, rid)["files"][0]["context"].startswith("LOS")
    service.withdraw(users.alice, rid)
    for who in (users.alice, users.carol, users.sam):
        shown = service.get_request(who, rid)["files"][0]
        assert "context" not in shown and "controls" not in shown
        assert "ward B" not in json.dumps(service.get_request(who, rid))


def test_a_blocked_supporting_file_stays_behind_and_does_not_stop_the_release(
        service, users, files):
    rid, f = _draft(service, users, files.ok, files.block, supporting=[files.block[0]])
    assert f[files.block[0]]["verdict"] == "block"
    service.submit(users.alice, rid)
    # the checker sees its findings and the masked sample, never its rows
    seen = {x["name"]: x for x in service.get_request(users.carol, rid)["files"]}
    assert seen[files.block[0]]["findings"] and "P100000" not in json.dumps(seen)
    service.review(users.carol, rid, decision="approve")
    service.review(users.dan, rid, decision="approve")
    assert service.release(users.carol, rid)["state"] == "released"
    pkg = service.release_package(users.alice, rid)
    names = zipfile.ZipFile(io.BytesIO(b"".join(pkg.chunks))).namelist()
    assert "files/" + files.block[0] not in names and "files/" + files.ok[0] in names
    with pytest.raises(PermissionDenied, match="supporting file"):
        service.open_file(users.alice, rid, f[files.block[0]]["id"])
    # unmarked, the same file stops the approval as any blocked file does
    rid, f = _draft(service, users, files.ok, files.block)
    service.submit(users.alice, rid)
    with pytest.raises(PolicyViolation, match="is blocked"):
        service.review(users.carol, rid, decision="approve")


def test_a_partial_release_never_includes_a_supporting_file(service, users, files):
    """Per-file decisions (issue 21 item 4) with a supporting file: it takes no decision,
    is neither released nor held, and stays out of the record's released files, the
    ledger, the package (files, SHA256SUMS, results.json, RO-Crate) and the download."""
    rid, f = _draft(service, users, files.ok, files.fail, UNROUNDED,
                    supporting=[UNROUNDED[0]])
    sup = f[UNROUNDED[0]]
    service.describe_file(users.alice, rid, f[files.fail[0]]["id"], context="Table 2",
                          controls="none yet")
    service.submit(users.alice, rid)
    # a decision on the supporting file is refused, approve or request changes alike
    with pytest.raises(PolicyViolation, match="supporting file .* takes no per-file decision"):
        service.decide_file(users.carol, rid, sup["id"], decision="approve",
                            comment="fine")
    with pytest.raises(PolicyViolation, match="takes no per-file decision"):
        service.decide_file(users.carol, rid, sup["id"], decision="request_changes",
                            comment="round it")
    service.decide_file(users.carol, rid, f[files.ok[0]]["id"], decision="approve")
    service.decide_file(users.dan, rid, f[files.ok[0]]["id"], decision="approve")
    req = service.decide_file(users.carol, rid, f[files.fail[0]]["id"],
                              decision="request_changes", comment="Round to 5")
    assert req["partial_release"] == {"release": [files.ok[0]], "hold": [files.fail[0]],
                                      "blocked_by": []}
    shown = {x["name"]: x for x in req["files"]}
    assert "decisions" not in shown[UNROUNDED[0]]  # no decision form on the page either

    out = service.release_partial(users.dan, rid, comment="table 1 now")
    by = {x["name"]: x for x in out["files"]}
    assert by[files.ok[0]]["released"]
    assert not by[UNROUNDED[0]]["released"] and not by[files.fail[0]]["released"]
    with service.sessions() as s:
        from ecluse.airlock.models import File
        assert s.get(File, sup["id"]).released is False
    record = json.loads(service.get_record(users.alice, rid))
    assert record["partial"] is True and record["released_files"] == [files.ok[0]]
    assert [x["name"] for x in record["files"]] == [files.ok[0]]
    assert [h["name"] for h in record["held"]] == [files.fail[0]]
    assert [x["name"] for x in record["supporting_files"]] == [UNROUNDED[0]]
    assert b"41-65,3" not in json.dumps(record).encode()

    pkg = service.release_package(users.alice, rid)
    z = zipfile.ZipFile(io.BytesIO(b"".join(pkg.chunks)))
    assert [n for n in z.namelist() if n.startswith("files/")] == ["files/" + files.ok[0]]
    for member in ("SHA256SUMS", "results.json", "ro-crate-metadata.json"):
        assert member in z.namelist()
        assert UNROUNDED[0].encode() not in z.read(member), member
        assert sup["sha256"].encode() not in z.read(member), member
    with pytest.raises(PermissionDenied, match="supporting file"):
        service.open_file(users.alice, rid, sup["id"])
    with service.sessions() as s:
        assert {e.file for e in s.query(LedgerEntry).filter_by(request_id=rid)} == {
            files.ok[0]}
    released = _audit(service, "airlock.request.released")[-1]
    assert released["partial"] is True
    assert [h["file"] for h in released["held"]] == [files.fail[0]]
    assert [x["file"] for x in released["not_released"]] == [UNROUNDED[0]]


def test_per_file_approvals_approve_a_request_with_a_supporting_file(service, users, files):
    """The supporting file needs no approval of its own: approving every file to release
    approves the request, and the whole release leaves the supporting file behind."""
    rid, f = _draft(service, users, files.ok, UNROUNDED, supporting=[UNROUNDED[0]])
    service.submit(users.alice, rid)
    service.decide_file(users.carol, rid, f[files.ok[0]]["id"], decision="approve")
    out = service.decide_file(users.dan, rid, f[files.ok[0]]["id"], decision="approve")
    assert out["state"] == "approved"
    out = service.release(users.carol, rid)
    by = {x["name"]: x for x in out["files"]}
    assert by[files.ok[0]]["released"] and not by[UNROUNDED[0]]["released"]
    assert json.loads(service.get_record(users.alice, rid))["released_files"] == [files.ok[0]]
