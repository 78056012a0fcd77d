"""Differencing in the airlock (issue 20 items 1 and 2): the files of a request are
judged as one set, and against the ledger of earlier releases from the same data."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ecluse.airlock.errors import PolicyViolation
from ecluse.airlock.models import LedgerEntry
from ecluse.airlock.rules import State
from ecluse.config import Dataset, Project

from .conftest import describe_all

ADULTS = ("adults.csv", b"age,n\n>= 18,120\n")
OLDER = ("older.csv", b"age,n\n>= 19,115\n")
OLDER_SAFE = ("older_safe.csv", b"age,n\n>= 19,100\n")


def _files(service, user, rid):
    return {f["name"]: f for f in service.get_request(user, rid, record_view=False)["files"]}


def _findings(service, rid, name):
    with service.sessions() as s:
        from ecluse.airlock.models import File

        f = s.scalars(select(File).where(File.request_id == rid, File.name == name)
                      .order_by(File.id.desc())).first()
        return f.verdict, [x for x in f.report_dict()["findings"] if x["rule"] == "differencing"]


def test_files_of_one_request_are_judged_together(service, users):
    req = service.create_request(users.alice, project="cardio-los", title="Ages",
                                 justification="paper")
    rid = req["id"]
    service.add_file(users.alice, rid, *ADULTS[:1], [ADULTS[1]])
    assert _files(service, users.alice, rid)["adults.csv"]["verdict"] == "pass"
    service.add_file(users.alice, rid, *OLDER[:1], [OLDER[1]])
    files = _files(service, users.alice, rid)
    assert files["adults.csv"]["verdict"] == "fail" and files["older.csv"]["verdict"] == "fail"
    verdict, found = _findings(service, rid, "adults.csv")
    assert "older.csv" in found[0]["message"] and "is 5" in found[0]["message"]
    # the pair is gone: each file is judged on its own again
    service.remove_file(users.alice, rid, "older.csv")
    assert _files(service, users.alice, rid)["adults.csv"]["verdict"] == "pass"
    assert _findings(service, rid, "adults.csv") == ("pass", [])


def test_a_release_is_differenced_against_later_requests(service, users, create_request_at_status,
                                                         make_service):
    first = create_request_at_status(State.RELEASED, files=[ADULTS])
    with service.sessions() as s:
        [entry] = s.scalars(select(LedgerEntry)).all()
        assert entry.request_id == first["id"] and entry.file == "adults.csv"
        assert entry.scope == "project:cardio-los" and len(entry.sha256) == 64
        table = json.loads(entry.table)
        assert table["dims"] == ["age"] and table["cells"] == [[[">= 18"], 120.0]]
    req = service.create_request(users.bob, project="cardio-los", title="Older",
                                 justification="paper")
    service.add_file(users.bob, req["id"], OLDER[0], [OLDER[1]])
    verdict, found = _findings(service, req["id"], "older.csv")
    assert verdict == "fail"
    assert first["id"] in found[0]["message"] and found[0]["location"]["released_in"] == first["id"]
    # a safe difference passes
    service.add_file(users.bob, req["id"], OLDER_SAFE[0], [OLDER_SAFE[1]])
    assert _findings(service, req["id"], "older_safe.csv") == ("pass", [])
    # the ledger is in the database: a restarted service still knows the release
    again = make_service()
    req2 = again.create_request(users.bob, project="cardio-los", title="Older again",
                                justification="paper")
    again.add_file(users.bob, req2["id"], OLDER[0], [OLDER[1]])
    assert _findings(again, req2["id"], "older.csv")[0] == "fail"


def test_only_released_files_enter_the_ledger(service, users, create_request_at_status):
    create_request_at_status(State.SUBMITTED, files=[ADULTS])
    create_request_at_status(State.WITHDRAWN, files=[ADULTS])
    create_request_at_status(State.APPROVED, files=[ADULTS])
    with service.sessions() as s:
        assert s.scalars(select(LedgerEntry)).all() == []
    req = service.create_request(users.bob, project="cardio-los", title="Older",
                                 justification="paper")
    service.add_file(users.bob, req["id"], OLDER[0], [OLDER[1]])
    assert _findings(service, req["id"], "older.csv") == ("pass", [])


def test_the_ledger_is_shared_by_projects_on_the_same_dataset(service, users,
                                                               create_request_at_status,
                                                               tmp_path):
    extract = Dataset(name="pmsi", path=tmp_path / "extracts" / "pmsi-2024")
    other = Dataset(name="pmsi", path=tmp_path / "extracts" / "pmsi-2023")
    service.projects = {
        "cardio-los": Project(slug="cardio-los", title="Cardiac LOS",
                              ldap_group="proj-cardio-los", datasets=[extract]),
        "air-quality": Project(slug="air-quality", title="Air quality",
                               ldap_group="proj-air-quality", datasets=[extract],
                               members_may_review=True),
    }
    first = create_request_at_status(State.RELEASED, files=[ADULTS])
    with service.sessions() as s:
        assert [e.scope for e in s.scalars(select(LedgerEntry))] == [
            f"dataset:{(tmp_path / 'extracts' / 'pmsi-2024').resolve()}"]
    # another project on the same extract: checked against the release
    req = service.create_request(users.gus, project="air-quality", title="Older",
                                 justification="paper")
    service.add_file(users.gus, req["id"], OLDER[0], [OLDER[1]])
    verdict, found = _findings(service, req["id"], "older.csv")
    assert verdict == "fail" and first["id"] in found[0]["message"]
    # on another extract: not
    service.projects["air-quality"] = Project(
        slug="air-quality", title="Air quality", ldap_group="proj-air-quality",
        datasets=[other], members_may_review=True)
    req = service.create_request(users.gus, project="air-quality", title="Older",
                                 justification="paper")
    service.add_file(users.gus, req["id"], OLDER[0], [OLDER[1]])
    assert _findings(service, req["id"], "older.csv") == ("pass", [])


def test_submit_checks_against_releases_made_since_the_upload(service, users,
                                                              create_request_at_status):
    req = service.create_request(users.bob, project="cardio-los", title="Older",
                                 justification="paper")
    service.add_file(users.bob, req["id"], OLDER[0], [OLDER[1]])
    assert _findings(service, req["id"], "older.csv") == ("pass", [])
    create_request_at_status(State.RELEASED, files=[ADULTS])
    # the release made since fails the file at submission: refused until it has its
    # context, and the finding stays on the file to say why
    with pytest.raises(PolicyViolation, match=r"older.csv \(file \d+, verdict fail\) has no "
                       "context and no statistical controls"):
        service.submit(users.bob, req["id"])
    assert _findings(service, req["id"], "older.csv")[0] == "fail"
    describe_all(service, users.bob, req["id"])
    service.submit(users.bob, req["id"])
    assert _findings(service, req["id"], "older.csv")[0] == "fail"
