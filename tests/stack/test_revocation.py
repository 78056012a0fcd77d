"""Leaving a project in LDAP reaches running work (real hub, sandboxes, airlock, slapd).

With the reconciler every 2 s and the services' directory cache at 1 s: remove
alice from her project's group and carol from the checkers' group in the
test's slapd; alice's workspace stops, her token loses the project (the airlock
refuses it), and carol cannot review any more. Audited.
"""

from __future__ import annotations

import time

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.dev.testing import HubClient
from ecluse.hub.roles import project_scope
from tests.hub.test_spawner import sandbox_stack, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

PROJECT = "air-quality"


@pytest.fixture(scope="module")
def revocation_hub(tmp_path_factory, slapd):
    with sandbox_stack(tmp_path_factory.mktemp("revokehub"), slapd, **{
            "sandbox.stop_grace": 2, "sandbox.start_timeout": 60,
            "hub.revocation_interval": 2, "hub.auth_refresh_age": 1,
            "airlock.group_cache_seconds": 1}) as stack:
        yield stack


def _token(c: HubClient, user: str, scopes: list[str]) -> str:
    r = c.session.post(f"{c.base_url}/hub/api/users/{user}/tokens",
                       json={"note": "test", "expires_in": 600, "scopes": scopes},
                       headers={"X-XSRFToken": c.session.cookies.get("_xsrf") or ""},
                       timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["token"]


class Airlock:
    def __init__(self, stack, token: str) -> None:
        self.base = f"{stack.url}/services/airlock/api/v1"
        self.h = {"Authorization": f"token {token}"}

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.base + path, headers=self.h, timeout=60, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.base + path, headers=self.h, timeout=60, **kw)


def _until(check, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_leaving_a_project_stops_the_workspace_token_and_reviews(revocation_hub, slapd):
    stack, pw = revocation_hub, slapd.passwords
    alice = HubClient(stack.url)
    assert alice.login("alice", pw["alice"]).status_code == 302
    admin = _token(alice, "alice", ["self"])
    r = alice.api("POST", f"/users/alice/servers/{PROJECT}", admin)
    assert r.status_code in (201, 202), r.text
    wait_ready(alice, admin, "alice", PROJECT)
    # alice's token as her air-quality workspace holds it: a request in review
    work = Airlock(stack, _token(alice, "alice", [
        "access:services!service=airlock", "read:users:groups!user", project_scope(PROJECT)]))
    r = work.post("/requests", json={"project": PROJECT, "title": "t", "justification": "j"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert work.post(f"/requests/{rid}/files", params={"filename": "counts.csv"},
                     data=b"sex,n\nF,25\nM,31\n").status_code == 201
    _until(lambda: all(f["verdict"] != "checking"  # checked after the upload answered
                       for f in work.get(f"/requests/{rid}").json()["files"]),
           timeout=600, what="the upload's check")
    assert work.post(f"/requests/{rid}/submit", json={}).status_code == 200
    carol = HubClient(stack.url)
    assert carol.login("carol", pw["carol"]).status_code == 302
    checker = Airlock(stack, _token(carol, "carol", [
        "access:services!service=airlock", "read:users:groups!user"]))
    queue = checker.get("/requests", params={"scope": "review"})
    assert rid in [x["id"] for x in queue.json()["requests"]], queue.text

    slapd.remove_member("proj-air-quality", "alice")
    slapd.remove_member("ecluse-output-checkers", "carol")
    try:
        # the workspace stops (reconciler), the token loses the project at once
        _until(lambda: PROJECT not in requests.get(
            f"{stack.url}/hub/api/users/alice", headers={"Authorization": f"token {admin}"},
            timeout=30).json().get("servers", {}), what="the workspace stops")
        r = work.post("/requests", json={"project": PROJECT, "title": "t", "justification": "j"})
        assert r.status_code == 403, r.text
        assert work.post(f"/requests/{rid}/files", params={"filename": "more.csv"},
                         data=b"sex,n\nF,25\n").status_code in (403, 404)
        # the removed checker: no review queue, no review
        _until(lambda: checker.get("/requests", params={"scope": "review"}).status_code == 403,
               timeout=20, what="the checker loses the review queue")
        r = checker.post(f"/requests/{rid}/reviews",
                         json={"decision": "approve", "comment": "ok"})
        assert r.status_code in (403, 404), r.text
        audit = AuditLog.from_settings(stack.settings)
        revoked = [e for e in audit.records(event="membership.revoked")
                   if e.details.get("user") == "alice" and e.project == PROJECT]
        assert revoked and "workspace-stopped" in revoked[0].details["actions"]
    finally:
        slapd.add_member("proj-air-quality", "alice")
        slapd.add_member("ecluse-output-checkers", "carol")
