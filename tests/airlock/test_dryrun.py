"""Check before export (issue 22 item 3): a dry run judges files with the checks, policy
and ledger of a real request, in the same check sandbox, and keeps nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ecluse.airlock.dryrun import DRY_RUN_EVENT, DryRunFiles, dry_run
from ecluse.airlock.errors import InvalidInput, NotFound, PermissionDenied, TooLarge
from ecluse.airlock.models import File, HistoryEntry, LedgerEntry, Request
from ecluse.airlock.rules import State
from ecluse.config import Project
from tests.airlock.conftest import Files
from tests.airlock.test_checkbox import checker, deployment  # noqa: F401 - fixtures
from tests.airlock.test_ledger import ADULTS, OLDER, OLDER_SAFE
from tests.support.sandboxes import LAUNCHED

pytestmark = pytest.mark.timeout(300)


def _rows(service) -> dict[str, int]:
    with service.sessions() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (Request, File, HistoryEntry, LedgerEntry)}


def _staged(service) -> list[str]:
    root = service.staging.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _check(service, user, project, files, tmp_dir: Path) -> dict:
    """What the web handler does: the bytes into a dry-run folder, judged, removed."""
    held = DryRunFiles(tmp_dir, max_files=service.settings.max_files_per_request,
                       max_bytes=service.settings.max_file_bytes)
    try:
        for name, data in files:
            held.begin(name)
            held.write(data)
        held.end()
        return dry_run(service, user, project, list(held.files))
    finally:
        held.discard()


def _real(service, user, project, files) -> dict[str, dict]:
    req = service.create_request(user, project=project, title="t", justification="j")
    for name, data in files:
        service.add_file(user, req["id"], name, [data])
    return {f["name"]: f for f in service.get_request(user, req["id"],
                                                      record_view=False)["files"]}


def _verdicts(files) -> dict[str, tuple]:
    return {f["name"]: (f["verdict"], sorted((x["rule"], x["severity"], str(x.get("location")))
                                             for x in f["findings"])) for f in files}


def test_a_dry_run_gives_a_real_uploads_verdicts_and_keeps_nothing(service, users):
    files = [Files.fail, Files.ok, Files.block, Files.review]
    before, staged = _rows(service), _staged(service)
    events = len(service.audit.records(event=DRY_RUN_EVENT))
    got = _check(service, users.alice, "cardio-los", files, service.staging.tmp)
    assert got["kept"] is False and got["project"] == "cardio-los"
    assert [f["verdict"] for f in got["files"]] == ["fail", "pass", "block", "review"]
    # nothing kept: no request, file, history or ledger row; no staged object, no temp file
    assert _rows(service) == before
    assert _staged(service) == staged == []
    assert list(service.staging.tmp.iterdir()) == []
    # the small cell is found where it is: row 3 of the file (the header is row 1), column n
    fail = got["files"][0]
    [small] = [x for x in fail["findings"] if x["rule"] == "small-count"]
    assert small["location"]["row"] == 3 and small["location"]["column"] == "n"
    assert fail["preview"]["kind"] == "table" and [1, 2] in fail["preview"]["flagged"]
    assert fail["sha256"] == hashlib.sha256(Files.fail[1]).hexdigest()
    assert "text" not in fail.get("proposal", {})  # the fixed table's rows are not sent
    # audited, without content
    [*_, record] = service.audit.records(event=DRY_RUN_EVENT)
    assert len(service.audit.records(event=DRY_RUN_EVENT)) == events + 1
    assert record.actor == "alice" and record.project == "cardio-los"
    assert [f["name"] for f in record.details["files"]] == [n for n, _ in files]
    assert "F,41-65,3" not in str(record.details)
    # the same files uploaded to a real request: the same verdicts and findings
    real = _real(service, users.alice, "cardio-los", files)
    assert _verdicts(got["files"]) == _verdicts(real.values())


def test_a_dry_run_is_differenced_against_the_ledger_and_its_own_files(
        service, users, create_request_at_status):
    first = create_request_at_status(State.RELEASED, files=[ADULTS])
    ledger_rows = _rows(service)["LedgerEntry"]
    got = _check(service, users.bob, "cardio-los", [OLDER, OLDER_SAFE], service.staging.tmp)
    older = got["files"][0]
    assert older["verdict"] == "fail"
    cited = [x["location"].get("released_in") for x in older["findings"]
             if x["rule"] == "differencing"]
    assert first["id"] in cited
    assert _rows(service)["LedgerEntry"] == ledger_rows
    # alone, against the ledger only: as a real upload of the same file
    alone = _check(service, users.bob, "cardio-los", [OLDER], service.staging.tmp)
    real = _real(service, users.bob, "cardio-los", [OLDER])
    assert _verdicts(alone["files"]) == _verdicts(real.values())
    assert alone["files"][0]["verdict"] == "fail"
    # another project's releases are not its scope
    assert _check(service, users.gus, "air-quality", [OLDER], service.staging.tmp
                  )["files"][0]["verdict"] == "pass"


def test_a_dry_run_for_a_project_one_is_not_in_is_refused_and_audited(service, users):
    with pytest.raises(PermissionDenied, match="not a member of project cardio-los"):
        _check(service, users.eve, "cardio-los", [Files.ok], service.staging.tmp)
    [*_, denied] = service.audit.records(event="airlock.permission_denied")
    assert denied.actor == "eve" and denied.project == "cardio-los"
    assert denied.details["action"] == "dry_run"
    with pytest.raises(NotFound):
        _check(service, users.alice, "no-such-project", [Files.ok], service.staging.tmp)
    with pytest.raises(InvalidInput, match="project: missing"):
        _check(service, users.alice, "", [Files.ok], service.staging.tmp)
    assert list(service.staging.tmp.iterdir()) == []


def test_dry_run_files_are_bounded_and_removed_whatever_happens(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    held = DryRunFiles(tmp, max_files=2, max_bytes=10)
    held.begin("a.csv")
    held.write(b"0123456789")
    held.begin("b.csv")
    with pytest.raises(TooLarge, match="larger than the limit of 10 bytes"):
        held.write(b"0123456789x")
    assert list(tmp.iterdir()) == []  # removed at once, the first file too
    held = DryRunFiles(tmp, max_files=2, max_bytes=10)
    held.begin("a.csv")
    with pytest.raises(InvalidInput, match="a.csv is given twice"):
        held.begin("a.csv")
    held.begin("b.csv")
    with pytest.raises(InvalidInput, match="at most 2 files"):
        held.begin("c.csv")
    [folder] = tmp.iterdir()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    held.discard()
    held.discard()
    assert list(tmp.iterdir()) == []


def test_a_dry_run_runs_in_the_check_sandbox_as_an_upload_does(checker, service, users,  # noqa: F811
                                                               create_request_at_status):
    chk, tmp = checker
    assert service.staging.tmp == tmp
    service.checker, service.differ = chk, chk.difference
    service.projects = {**service.projects, "cardio-los": Project(
        slug="cardio-los", title="Cardiac LOS", ldap_group="proj-cardio-los")}
    create_request_at_status(State.RELEASED, files=[ADULTS])
    start = len(LAUNCHED)
    got = _check(service, users.bob, "cardio-los", [Files.fail, OLDER], tmp)
    # one sandbox per file, one for the set against the ledger
    assert len(LAUNCHED) - start == 3
    assert all(x["spec"].allowed_ports == [] for x in LAUNCHED[start:])
    assert [f["verdict"] for f in got["files"]] == ["fail", "fail"]
    real = _real(service, users.bob, "cardio-los", [Files.fail, OLDER])
    assert _verdicts(got["files"]) == _verdicts(real.values())


def test_a_checker_that_crashes_gives_review_and_leaves_nothing(service, users):
    def checker_that_crashes(*args, **kwargs):
        raise RuntimeError("the checker crashed")

    service.checker = checker_that_crashes
    got = _check(service, users.alice, "cardio-los", [Files.ok], service.staging.tmp)
    [f] = got["files"]
    assert f["verdict"] == "review"
    assert "automatic check failed (RuntimeError)" in f["findings"][0]["message"]
    assert list(service.staging.tmp.iterdir()) == [] and _staged(service) == []
