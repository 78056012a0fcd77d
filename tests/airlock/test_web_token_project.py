"""A token acts for one project: the airlock refuses a request naming another (403, audited).

The tokens are real hub tokens; their project comes from the custom scope
``custom:ecluse:project:<slug>`` (``ecluse.hub.roles``) that the hub grants to the
project's hub group and resolves at every use.
"""

from __future__ import annotations

import pytest

from ecluse.airlock.hub import WORKSPACE_TOKEN_SCOPES
from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.hub.roles import project_scope

pytestmark = pytest.mark.timeout(180)

BODY = {"title": "t", "justification": "j"}


def _denials(hub, user: str) -> list:
    settings = load_settings(hub.root / "ecluse.yaml", state_dir=hub.state_dir)
    audit = AuditLog.from_settings(settings)
    try:
        return [r for r in audit.records(event="airlock.permission_denied") if r.actor == user]
    finally:
        audit.engine.dispose()


def test_workspace_token_cannot_act_for_another_project(airlock_hub):
    # ada is a member of both projects; this token is her cardio-los workspace's
    cardio = airlock_hub.api("ada", scopes=[*WORKSPACE_TOKEN_SCOPES,
                                           project_scope("cardio-los")])
    assert cardio.get("/me").json()["projects"] == ["cardio-los"]
    before = len(_denials(airlock_hub, "ada"))
    r = cardio.post("/requests", json={"project": "air-quality", **BODY})
    assert r.status_code == 403, r.text
    assert "acts for project cardio-los, not for project air-quality" in r.json()["error"][
        "message"]
    denied = _denials(airlock_hub, "ada")
    assert len(denied) == before + 1
    assert denied[-1].outcome == "denied"
    # its own project: allowed
    r = cardio.post("/requests", json={"project": "cardio-los", **BODY})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    # an air-quality token of the same user neither sees nor changes the cardio-los request
    air = airlock_hub.api("ada", scopes=[*WORKSPACE_TOKEN_SCOPES, project_scope("air-quality")])
    assert air.get(f"/requests/{rid}").status_code == 404
    r = air.post(f"/requests/{rid}/files", files={"file": ("t.csv", b"a,n\nx,20\n")})
    assert r.status_code in (403, 404), r.text
    # her list through that token holds air-quality requests only (other tests of this
    # session's hub may have made some), never the cardio-los one
    mine = air.get("/requests?scope=mine").json()["requests"]
    assert rid not in [x["id"] for x in mine]
    assert {x["project"] for x in mine} <= {"air-quality"}


def test_a_token_naming_no_project_or_several_acts_for_none(airlock_hub):
    # the hub's own default ("inherit", every project of its owner) and a token without a
    # project scope: no project at all
    both = airlock_hub.api("ada", scopes=["inherit"])
    assert both.get("/me").json()["projects"] == []
    for slug in ("cardio-los", "air-quality"):
        r = both.post("/requests", json={"project": slug, **BODY})
        assert r.status_code == 403, r.text
        assert "acts for no project" in r.json()["error"]["message"]
    none = airlock_hub.api("ada", scopes=list(WORKSPACE_TOKEN_SCOPES))
    assert none.post("/requests", json={"project": "cardio-los", **BODY}).status_code == 403


def test_a_browser_session_acts_for_each_of_the_users_projects(airlock_hub):
    s = airlock_hub.login("ada")
    r = s.get(f"{airlock_hub.airlock_url}/", timeout=30)  # OAuth round trip
    assert r.status_code == 200, r.status_code
    r = s.get(f"{airlock_hub.airlock_url}/api/v1/me", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["projects"] == ["air-quality", "cardio-los"]
