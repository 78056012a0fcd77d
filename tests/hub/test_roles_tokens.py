"""Tokens and sign-ins through the real hub (JupyterHub + proxy + slapd).

* a token made on the Token page (the hub API, no scopes) acts for no project;
  one asked for with one project's scope acts for it while its owner is a
  member;
* user-created tokens live at most ``hub.token_max_age``;
* repeated failed sign-ins wait, without asking the directory (audited).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.dev.testing import HubClient, write_config
from ecluse.hub.roles import project_scope

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def hub_stack(tmp_path_factory, slapd):
    """This module's hub: a short token lifetime, refresh every second."""
    from tests.support.hubstack import running_hub

    directory = tmp_path_factory.mktemp("hub-identity")
    path = write_config(directory, slapd, overrides={
        "hub.auth_refresh_age": 1, "hub.token_max_age": 3600, "hub.login_max_failures": 3,
        "hub.login_backoff": 30})
    with running_hub(path) as stack:
        yield stack


def _client(hub_stack, slapd, user: str) -> HubClient:
    c = HubClient(hub_stack.url)
    assert c.login(user, slapd.passwords[user]).status_code == 302
    return c


def _new_token(c: HubClient, user: str, **body) -> dict:
    r = c.session.post(f"{c.base_url}/hub/api/users/{user}/tokens",
                       json={"note": "test", **body},
                       headers={"X-XSRFToken": c.session.cookies.get("_xsrf") or ""},
                       timeout=30)
    return {"status": r.status_code, **(r.json() if r.content else {})}


def test_page_tokens_have_no_project_and_a_bounded_lifetime(hub_stack, slapd):
    c = _client(hub_stack, slapd, "alice")  # member of cardio-los and air-quality
    plain = _new_token(c, "alice")
    assert plain["status"] == 201, plain
    # all her permissions (the hub's default): the airlock takes it to act for no project
    r = requests.get(f"{hub_stack.url}/services/airlock/api/v1/me",
                     headers={"Authorization": f"token {plain['token']}"}, timeout=30)
    assert r.status_code == 200 and r.json()["projects"] == [], r.text
    # no expiry asked for: the maximum (1 h here, 8 h by default)
    expires = datetime.fromisoformat(plain["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 3500 < left <= 3600
    too_long = _new_token(c, "alice", expires_in=3601)
    assert too_long["status"] == 400
    # one project, chosen at creation: the scopes the hub resolves name it alone
    bound = _new_token(c, "alice", scopes=[project_scope("cardio-los"),
                                           "access:services!service=airlock"])
    assert bound["status"] == 201, bound
    me = c.api("GET", "/user", bound["token"]).json()
    assert [s for s in me["scopes"] if s.startswith("custom:")] == [project_scope("cardio-los")]
    r = requests.get(f"{hub_stack.url}/services/airlock/api/v1/me",
                     headers={"Authorization": f"token {bound['token']}"}, timeout=30)
    assert r.json()["projects"] == ["cardio-los"], r.text
    # a project the user is not in cannot be asked for
    bob = _client(hub_stack, slapd, "bob")
    assert _new_token(bob, "bob", scopes=[project_scope("air-quality")])["status"] == 400


def test_a_token_loses_its_project_with_the_membership(hub_stack, slapd):
    c = _client(hub_stack, slapd, "alice")
    token = _new_token(c, "alice", scopes=[project_scope("air-quality")])["token"]
    assert project_scope("air-quality") in c.api("GET", "/user", token).json()["scopes"]
    slapd.remove_member("proj-air-quality", "alice")
    try:
        time.sleep(1.5)  # auth_refresh_age is 1 s in this stack
        scopes = c.api("GET", "/user", token).json()["scopes"]
        assert project_scope("air-quality") not in scopes
    finally:
        slapd.add_member("proj-air-quality", "alice")


def test_failed_sign_ins_back_off_without_asking_the_directory(hub_stack, slapd):
    c = HubClient(hub_stack.url)
    for _ in range(3):
        r = c.login("dan", "wrong-password")
        assert r.status_code == 403
    # now even the right password waits: the directory is not asked (no lock-out storm)
    r = c.login("dan", slapd.passwords["dan"])
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.text
    # another user from the same address is not affected (3 < the per-address bar)
    assert _client(hub_stack, slapd, "carol")
    events = AuditLog.from_settings(hub_stack.settings).records(user="dan")
    kinds = [e.event for e in events]
    assert kinds.count("login.failure") == 3
    assert "login.throttled" in kinds
    assert "login.success" not in kinds


def test_a_user_in_no_project_any_more_has_tokens_refused(hub_stack, slapd):
    """auth_refresh_strict: a failed refresh (no project left) refuses token requests
    instead of serving them with the stale groups."""
    c = _client(hub_stack, slapd, "bob")  # cardio-los only
    token = _new_token(c, "bob", scopes=[project_scope("cardio-los"), "read:users!user"])["token"]
    assert c.api("GET", "/user", token).status_code == 200
    slapd.remove_member("proj-cardio-los", "bob")
    try:
        time.sleep(1.5)  # auth_refresh_age is 1 s in this stack
        r = c.api("GET", "/user", token)
        assert r.status_code == 403, (r.status_code, r.text[:200])
    finally:
        slapd.add_member("proj-cardio-los", "bob")
