"""The release record and the release package (issue 21 item 2), after a real
two-checker release: content, who may read it, the package's members and
checksums, and their verification against the audit log."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from ecluse.airlock import release
from ecluse.airlock.errors import InvalidTransition, NotFound, PermissionDenied
from ecluse.airlock.rules import State
from ecluse.sdc.policy import DisclosurePolicy


@pytest.fixture
def released(create_request_at_status, files):
    """A request of a passing table and a failing one (approved with written reasons),
    approved by carol and dan, released by carol."""
    return create_request_at_status(State.RELEASED, files=[files.ok, files.fail])


def _package(service, user, rid) -> bytes:
    content = service.release_package(user, rid)
    data = b"".join(content.chunks)
    assert len(data) == content.size
    return data


def test_record_after_two_checker_release_says_what_left_and_why(service, users, released,
                                                                  files):
    rid = released["id"]
    raw = service.get_record(users.alice, rid)
    rec = json.loads(raw)
    assert rec["format"] == release.RECORD_FORMAT
    assert rec["tool"] == {"name": "ecluse", "version": release.tool_version()}
    assert rec["policy"]["pack"] == "ecluse-default"
    assert rec["policy"]["values"]["threshold"] == DisclosurePolicy().threshold
    req = rec["request"]
    assert (req["id"], req["requester"], req["released_by"]) == (rid, "alice", "carol")
    assert req["released_at"] == released["released_at"] and req["submitted_at"]
    by_name = {f["name"]: f for f in rec["files"]}
    for name, data in (files.ok, files.fail):
        assert by_name[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert by_name[name]["size"] == len(data)
    assert by_name["counts_small.csv"]["verdict"] == "fail"
    assert any(f["rule"] == "small-count" for f in by_name["counts_small.csv"]["findings"])
    assert by_name["counts_safe.csv"]["verdict"] == "pass"
    assert [(r["reviewer"], r["decision"]) for r in rec["reviews"]] == [
        ("carol", "approve"), ("dan", "approve")]
    for r in rec["reviews"]:
        assert r["override_reasons"] == {"counts_small.csv": "Cell is a known published figure"}
        assert r["created_at"] and r["files"] == sorted(by_name)
    assert [h["action"] for h in rec["history"]][-1] == "release"
    # the record's hash is in the audit log's release event, and is what is served
    hashes = release.audited_hashes(service.audit, rid)
    assert hashes == [hashlib.sha256(raw).hexdigest()]
    assert raw == release.encode(rec)


def test_record_readers_and_refusals(service, users, released, create_request_at_status):
    rid = released["id"]
    raw = service.get_record(users.alice, rid)
    # the requester, another member of the project, a checker, staff
    for who in (users.bob, users.carol, users.fay, users.sam):
        assert service.get_record(who, rid) == raw
    # somebody outside the project, and a member of another project: no such request
    for who in (users.eve, users.gus):
        with pytest.raises(NotFound, match=f"no request {rid}"):
            service.get_record(who, rid)
    approved = create_request_at_status(State.APPROVED)
    with pytest.raises(InvalidTransition, match="no release record: it is approved"):
        service.get_record(users.alice, approved["id"])


def test_package_members_and_checksums(service, users, released, files):
    rid = released["id"]
    data = _package(service, users.alice, rid)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(z.namelist())
        assert names == sorted(["files/counts_safe.csv", "files/counts_small.csv",
                                *release.FIXED_MEMBERS])
        assert z.read("files/counts_safe.csv") == files.ok[1]
        assert z.read("files/counts_small.csv") == files.fail[1]
        assert z.read(release.RECORD_NAME) == service.get_record(users.alice, rid)
        sums = dict(reversed(line.split("  ", 1))
                    for line in z.read(release.SUMS_NAME).decode().splitlines())
        assert sorted(sums) == sorted(n for n in names if n != release.SUMS_NAME)
        for name, sha in sums.items():
            assert hashlib.sha256(z.read(name)).hexdigest() == sha
        acro = json.loads(z.read(release.ACRO_NAME))
        outputs = {o["files"][0]["name"]: o for o in acro["results"].values()}
        assert outputs["files/counts_small.csv"]["status"] == "fail"
        assert outputs["files/counts_small.csv"]["files"][0]["sdc"]["cells"]["threshold"]
        assert outputs["files/counts_safe.csv"]["status"] == "pass"
        crate = json.loads(z.read(release.CRATE_NAME))
    graph = {e["@id"]: e for e in crate["@graph"]}
    assert crate["@context"] == "https://w3id.org/ro/crate/1.1/context"
    root = graph["./"]
    assert {"@id": release.FIVE_SAFES} in root["conformsTo"]
    assert {p["@id"] for p in root["hasPart"]} >= {"files/counts_safe.csv",
                                                   "files/counts_small.csv"}
    assert graph[release.RECORD_NAME]["sha256"] == release.audited_hashes(service.audit, rid)[0]
    assert graph[root["sourceOrganization"]["@id"]]["@type"] == "Project"
    checks = [e for e in crate["@graph"] if e["@type"] == "AssessAction"]
    assert {e.get("agent", {}).get("@id") for e in checks} >= {"#person-carol", "#person-dan"}
    downloads = service.audit.records(event="airlock.file.downloaded")
    assert downloads[-1].details["file"] == f"{rid}-release.zip"


def test_package_only_for_the_requester_once_released(service, users, released,
                                                      create_request_at_status):
    for who in (users.carol, users.bob, users.sam):
        with pytest.raises(PermissionDenied):
            service.release_package(who, released["id"])
    approved = create_request_at_status(State.APPROVED)
    with pytest.raises(InvalidTransition, match="no release package"):
        service.release_package(users.alice, approved["id"])


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None],
             add: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change.get(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_verify_passes_and_fails_each_with_its_own_message(service, users, released, tmp_path):
    rid = released["id"]
    pkg = tmp_path / "release.zip"
    pkg.write_bytes(_package(service, users.alice, rid))

    def audited(r):
        return release.audited_hashes(service.audit, r)

    ok = release.verify_package(pkg, audited)
    assert ok.ok and ok.request_id == rid and ok.files == 2, ok.problems

    tampered = _rewrite(pkg, tmp_path / "t.zip", {"files/counts_small.csv": b"sex,n\nF,99\n"})
    [p] = release.verify_package(tampered, audited).problems
    assert p.startswith("files/counts_small.csv: sha256") and "the file was changed" in p

    extra = _rewrite(pkg, tmp_path / "x.zip", {}, {"files/more.csv": b"a,b\n1,2\n"})
    [p] = release.verify_package(extra, audited).problems
    assert p == "files/more.csv: in the package but not in the release record (an extra file)"

    missing = _rewrite(pkg, tmp_path / "m.zip", {"files/counts_safe.csv": None})
    [p] = release.verify_package(missing, audited).problems
    assert p == "files/counts_safe.csv: in the release record but missing from the package"

    # a record edited to match an edited file: the file agrees, the audit log does not
    rec = json.loads(service.get_record(users.alice, rid))
    forged = b"sex,n\nF,99\n"
    for f in rec["files"]:
        if f["name"] == "counts_small.csv":
            f["sha256"] = hashlib.sha256(forged).hexdigest()
    bad = _rewrite(pkg, tmp_path / "r.zip", {release.RECORD_NAME: release.encode(rec),
                                            "files/counts_small.csv": forged})
    [p] = release.verify_package(bad, audited).problems
    assert p.startswith(f"{release.RECORD_NAME} was changed: its sha256 is")
    assert f"when request {rid} was released" in p

    assert "has no release of request" in release.verify_package(pkg, lambda r: []).problems[0]
