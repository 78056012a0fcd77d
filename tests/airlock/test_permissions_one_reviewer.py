"""One person, one reviewer: the airlock tells reviewers apart by directory entry.

A real slapd entry answering to two login names (``carol`` and ``c.petit``), or
two entries sharing one uidNumber, is one person: its second review of a
version is refused (audited), the requester reviews under no name, and a
request approved by one person twice is never released (issue 14, item 5).
The hub-side half (one hub name per entry) is ``tests/hub/test_auth_one_person.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from ecluse.airlock import db
from ecluse.airlock.errors import (
    IdentityUnavailable,
    InvalidTransition,
    PermissionDenied,
    PolicyViolation,
)
from ecluse.airlock.models import Review
from ecluse.airlock.rules import State
from ecluse.airlock.service import AirlockService
from ecluse.airlock.storage import Staging
from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.testing import write_config
from ecluse.directory import normalize_dn
from ecluse.people import People
from ecluse.settings.airlock import AirlockSettings
from tests.support.aliases import second_names

TABLE = ("counts.csv", b"sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n")
CHECKERS = ["output-checkers"]


@pytest.fixture
def second_name(slapd) -> Iterator[None]:
    """carol also answers to ``c.petit``; alice to ``a.martin``."""
    with second_names(slapd, {"carol": "c.petit", "alice": "a.martin"}):
        yield


@pytest.fixture
def shared_uid_number(slapd) -> Iterator[str]:
    """``carol-adm``: another entry with carol's uidNumber (20003)."""
    dn = slapd.add_user("carol-adm", "pw-carol-adm-Secret1", 20003, cn="Carol Petit (admin)")
    try:
        yield "carol-adm"
    finally:
        with slapd.admin_connection() as conn:
            conn.delete(dn)


def _service(settings, tmp_path: Path, people) -> AirlockService:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'airlock.sqlite'}")
    db.upgrade(engine)
    staging = Staging(tmp_path / "staging")
    staging.prepare()
    return AirlockService(
        engine=engine, staging=staging, projects=settings.projects,
        policy_for=settings.policy_for,
        audit=AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}"),
        settings=AirlockSettings(required_approvals=2), people=people,
    )


@pytest.fixture
def airlock(settings, tmp_path) -> Iterator[AirlockService]:
    service = _service(settings, tmp_path, People(settings))
    try:
        yield service
    finally:
        service.close()
        service.audit.engine.dispose()


def _submitted(service: AirlockService, requester: str = "alice") -> str:
    me = service.identity(requester, ["cardio-los"])
    rid = service.create_request(me, project="cardio-los", title="LOS",
                                 justification="paper")["id"]
    service.add_file(me, rid, *TABLE[:1], [TABLE[1]])
    service.submit(me, rid)
    return rid


def _denials(service: AirlockService) -> list[dict]:
    return [r.details for r in service.audit.records(event="airlock.permission_denied")]


def test_one_person_approves_once_under_two_names(airlock, second_name, slapd):
    rid = _submitted(airlock)
    carol = airlock.identity("carol", CHECKERS)
    # a hub account from before canonical names: c.petit, in the checkers' group
    c_petit = airlock.identity("c.petit", CHECKERS)
    assert airlock.review(carol, rid, decision="approve")["state"] == State.IN_REVIEW
    with pytest.raises(PolicyViolation) as e:
        airlock.review(c_petit, rid, decision="approve")
    assert "as 'carol'" in e.value.message and "one person" in e.value.message
    assert normalize_dn(slapd.user_dn("carol")) in e.value.message
    denied = _denials(airlock)
    assert denied[-1]["action"] == "approve" and "one person" in denied[-1]["reason"]
    assert airlock.audit.records(event="airlock.permission_denied")[-1].actor == "c.petit"
    # nothing recorded, nothing released
    req = airlock.get_request(carol, rid, record_view=False)
    assert req["state"] == State.IN_REVIEW and req["approvals"] == 1
    with pytest.raises(InvalidTransition, match="in_review: cannot release"):
        airlock.release(airlock.identity("erin", ["staff"]), rid)
    # another person completes the two-person rule
    dan = airlock.identity("dan", CHECKERS)
    assert airlock.review(dan, rid, decision="approve")["state"] == State.APPROVED
    with airlock.sessions() as s:
        rows = {r.reviewer: (r.reviewer_dn, r.reviewer_uid_number)
                for r in s.scalars(select(Review).where(Review.request_id == rid))}
    assert rows == {"carol": (normalize_dn(slapd.user_dn("carol")), 20003),
                    "dan": (normalize_dn(slapd.user_dn("dan")), 20004)}
    approved = airlock.audit.records(event="airlock.request.approved")[-1]
    assert (approved.actor, approved.details["reviewer_uid_number"]) == ("dan", 20004)


def test_two_entries_with_one_uid_number_review_once(airlock, shared_uid_number):
    rid = _submitted(airlock)
    airlock.review(airlock.identity("carol", CHECKERS), rid, decision="approve")
    with pytest.raises(PolicyViolation, match="one uidNumber, 20003"):
        airlock.review(airlock.identity(shared_uid_number, CHECKERS), rid,
                       decision="reject", comment="no")
    assert airlock.get_request(airlock.identity("dan", CHECKERS), rid,
                               record_view=False)["state"] == State.IN_REVIEW


def test_the_requester_reviews_under_no_name(airlock, second_name):
    rid = _submitted(airlock, "alice")
    a_martin = airlock.identity("a.martin", [*CHECKERS, "staff"])
    for decision in ("approve", "reject"):
        with pytest.raises(PermissionDenied, match="you made this request as 'alice'"):
            airlock.review(a_martin, rid, decision=decision, comment="x")
    assert [d["action"] for d in _denials(airlock)][-2:] == ["approve", "reject"]
    airlock.review(airlock.identity("carol", CHECKERS), rid, decision="approve")
    airlock.review(airlock.identity("dan", CHECKERS), rid, decision="approve")
    with pytest.raises(PermissionDenied, match="you made this request as 'alice'"):
        airlock.release(a_martin, rid)
    released = airlock.release(airlock.identity("erin", ["staff"]), rid)
    assert released["state"] == State.RELEASED


def test_approvals_by_one_person_recorded_before_the_fix_never_release(
        airlock, second_name):
    """A request approved under two names of one person (rows in the old shape:
    no DN, no uidNumber) is refused at release: approvals are counted again, by person."""
    rid = _submitted(airlock)
    airlock.review(airlock.identity("carol", CHECKERS), rid, decision="approve")
    with airlock._write_sessions() as s, s.begin():  # the old service let this through
        r = s.scalars(select(Review).where(Review.request_id == rid)).one()
        r.reviewer_dn, r.reviewer_uid_number = None, None
        s.add(Review(request_id=rid, version=1, reviewer="c.petit", decision="approve",
                     comment="", overrides="{}"))
        s.get(type(r.request), rid).state = State.APPROVED.value
    with pytest.raises(PolicyViolation, match="1 distinct person"):
        airlock.release(airlock.identity("erin", ["staff"]), rid)
    assert airlock.get_request(airlock.identity("erin", ["staff"]), rid,
                               record_view=False)["state"] == State.APPROVED


def test_no_review_while_the_directory_is_down(slapd, tmp_path):
    path = write_config(tmp_path / "cfg", slapd, overrides={"ldap.uri": "ldap://127.0.0.1:9"})
    settings = load_settings(path)
    service = _service(settings, tmp_path, People(settings))
    try:
        rid = _submitted(service)
        with pytest.raises(IdentityUnavailable, match="does not answer") as e:
            service.review(service.identity("carol", CHECKERS), rid, decision="approve")
        assert e.value.status == 503
        assert service.get_request(service.identity("carol", CHECKERS), rid,
                                   record_view=False)["reviews"] == []
        assert _denials(service)[-1]["action"] == "approve"
    finally:
        service.close()
        service.audit.engine.dispose()


# ---------------------------------------------------------------- through the hub


@pytest.fixture(scope="module")
def reviewer_hub(tmp_path_factory, slapd):
    """The real stack (hub, proxy, airlock service, slapd); erin is a hub admin, so she
    can make the kind of account a hub from before canonical names holds."""
    from tests.support.hubstack import running_hub

    directory = tmp_path_factory.mktemp("reviewer-hub")
    path = write_config(directory, slapd, overrides={
        "hub.auth_refresh_age": 1, "hub.admin_users": ["erin"],
        "airlock.group_cache_seconds": 1})
    with running_hub(path) as stack:
        yield stack


def _signed_in(stack, slapd, user: str):
    from ecluse.dev.testing import HubClient

    c = HubClient(stack.url)
    assert c.login(user, slapd.passwords[user]).status_code == 302
    return c


def _airlock_api(stack, token: str):
    import requests

    base = f"{stack.url}/services/airlock/api/v1"

    def call(method: str, path: str, **kw):
        return requests.request(method, base + path, timeout=60,
                                headers={"Authorization": f"token {token}"}, **kw)
    return call


def test_the_hub_api_path_refuses_a_second_name(reviewer_hub, slapd, second_name):
    """carol approves; her old hub account ``c.petit`` (a checker, with its own token)
    approves again through the airlock's REST API: 422, audited, nothing released."""
    from ecluse.dev.testing import project_token_scopes

    stack = reviewer_hub
    scopes = ["access:services!service=airlock", "read:users:groups!user"]
    erin = _signed_in(stack, slapd, "erin")
    admin = erin.new_token("erin")
    assert erin.api("POST", "/users/c.petit", admin).status_code == 201
    assert erin.api("POST", "/groups/output-checkers/users", admin,
                    json={"users": ["c.petit"]}).status_code == 200
    r = erin.api("POST", "/users/c.petit/tokens", admin,
                 json={"scopes": scopes, "expires_in": 600})
    assert r.status_code == 201, r.text
    as_c_petit = _airlock_api(stack, r.json()["token"])

    alice = _signed_in(stack, slapd, "alice")
    work = _airlock_api(stack, alice.new_token("alice", project_token_scopes("cardio-los")))
    r = work("POST", "/requests", json={"project": "cardio-los", "title": "t",
                                         "justification": "j"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert work("POST", f"/requests/{rid}/files", params={"filename": TABLE[0]},
                data=TABLE[1]).status_code == 201
    deadline = time.monotonic() + 600  # the upload is checked after it answered
    while any(f["verdict"] == "checking"
              for f in work("GET", f"/requests/{rid}").json()["files"]):
        assert time.monotonic() < deadline, "the upload is still being checked"
        time.sleep(0.5)
    assert work("POST", f"/requests/{rid}/submit", json={}).status_code == 200

    carol = _airlock_api(stack, _signed_in(stack, slapd, "carol").new_token("carol", scopes))
    r = carol("POST", f"/requests/{rid}/reviews", json={"decision": "approve"})
    assert r.status_code == 201 and r.json()["state"] == "in_review", r.text
    r = as_c_petit("POST", f"/requests/{rid}/reviews", json={"decision": "approve"})
    assert r.status_code == 422, r.text
    assert "as 'carol'" in r.json()["error"]["message"], r.text
    staff = _airlock_api(stack, admin)
    r = staff("POST", f"/requests/{rid}/release", json={})
    assert r.status_code in (403, 409), r.text
    assert work("GET", f"/requests/{rid}").json()["state"] == "in_review"
    denied = [e for e in AuditLog.from_settings(stack.settings).records(
        event="airlock.permission_denied") if e.details.get("request_id") == rid]
    assert [(e.actor, e.details["action"]) for e in denied][:1] == [("c.petit", "approve")]
