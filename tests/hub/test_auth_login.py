"""Sign-in through the real hub (JupyterHub + configurable-http-proxy + slapd)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests

from ecluse.config import load_settings
from ecluse.dev.testing import Authenticators, HubClient
from ecluse.hub.auth import NO_PROJECT_MESSAGE, EcluseAuthenticator
from ecluse.hub.mfa import new_secret


def test_login_form_then_groups_through_rest_api(hub_client, ldap_passwords):
    r = hub_client.login("alice", ldap_passwords["alice"])
    assert r.status_code == 302, r.text[:500]
    token = hub_client.new_token("alice")
    me = hub_client.api("GET", "/user", token).json()
    assert me["name"] == "alice"
    assert sorted(me["groups"]) == ["air-quality", "cardio-los"]
    assert not me["admin"]


def test_checker_and_staff_role_groups(hub_stack, ldap_passwords):
    for user, group in [("carol", "output-checkers"), ("erin", "staff")]:
        c = HubClient(hub_stack.url)
        assert c.login(user, ldap_passwords[user]).status_code == 302
        me = c.api("GET", "/user", c.new_token(user)).json()
        assert me["groups"] == [group]


def test_staff_have_least_privilege(hub_stack, ldap_passwords):
    erin = HubClient(hub_stack.url)
    erin.login("erin", ldap_passwords["erin"])
    # a token with all her permissions (a token made without scopes has `self` only)
    r = erin.session.post(f"{hub_stack.url}/hub/api/users/erin/tokens",
                          json={"note": "test", "expires_in": 600, "scopes": ["inherit"]},
                          headers={"X-XSRFToken": erin.session.cookies.get("_xsrf") or ""},
                          timeout=30)
    tok = r.json()["token"]
    assert erin.api("GET", "/users", tok).status_code == 200  # may list users
    # but is not an admin: cannot create users or change groups
    r = erin.api("POST", "/users/mallory", tok)
    assert r.status_code == 403
    r = erin.api("POST", "/groups/cardio-los/users", tok, json={"users": ["erin"]})
    assert r.status_code == 403
    alice = HubClient(hub_stack.url)
    alice.login("alice", ldap_passwords["alice"])
    assert alice.api("GET", "/users", alice.new_token("alice")).status_code == 403


@pytest.mark.parametrize(
    "username,password",
    [
        ("alice", "wrong-password"),
        ("zoe", "anything"),
        ("*)(uid=*", "x"),
        ("alice)(|(uid=*", "x"),
        ("alice\x00", "x"),
        ("a" * 5000, "x"),
    ],
)
def test_refused_logins(hub_client, username, password):
    r = hub_client.login(username, password)
    assert r.status_code == 403
    assert "Invalid username or password" in r.text


def test_user_in_no_project_is_refused_with_a_clear_message(hub_client, ldap_passwords):
    r = hub_client.login("nobody", ldap_passwords["nobody"])
    assert r.status_code == 403
    assert "not a member of any" in r.text


def test_failures_and_successes_are_audited(hub_stack, hub_client, ldap_passwords):
    from ecluse.audit import AuditLog

    hub_client.login("bob", "wrong")
    hub_client.login("bob", ldap_passwords["bob"])
    events = AuditLog.from_settings(hub_stack.settings).records(user="bob")
    kinds = [(e.event, e.details.get("reason")) for e in events]
    assert ("login.failure", "wrong-password") in kinds
    assert ("login.success", None) in kinds


def test_group_removal_is_applied_at_next_refresh(hub_stack, slapd, ldap_passwords):
    c = HubClient(hub_stack.url)
    assert c.login("alice", ldap_passwords["alice"]).status_code == 302
    token = c.new_token("alice")
    assert "air-quality" in c.api("GET", "/user", token).json()["groups"]
    slapd.remove_member("proj-air-quality", "alice")
    try:
        time.sleep(1.5)  # auth_refresh_age is 1 s in this stack
        groups = c.api("GET", "/user", token).json()["groups"]
        assert groups == ["cardio-los"]
    finally:
        slapd.add_member("proj-air-quality", "alice")


def test_stalled_ldap_fails_login_in_time_while_hub_keeps_answering(hub_stack, slapd,
                                                                       ldap_passwords):
    c = HubClient(hub_stack.url)
    page = c.session.get(f"{hub_stack.url}/hub/login", timeout=10)
    assert page.status_code == 200
    api_latencies: list[float] = []
    stop = threading.Event()

    def poll_api():
        while not stop.is_set():
            t0 = time.monotonic()
            r = requests.get(f"{hub_stack.url}/hub/api/", timeout=10)
            assert r.status_code == 200
            api_latencies.append(time.monotonic() - t0)
            time.sleep(0.05)

    slapd.pause()
    poller = threading.Thread(target=poll_api)
    poller.start()
    try:
        t0 = time.monotonic()
        r = c.login("bob", ldap_passwords["bob"])
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        poller.join()
        slapd.resume()
    settings = hub_stack.settings.ldap
    deadline = settings.connect_timeout * 2 + settings.receive_timeout * 4
    assert r.status_code == 503
    assert "directory (LDAP) did not answer" in r.text
    assert elapsed < deadline + 2
    assert len(api_latencies) >= 5
    assert max(api_latencies) < 1.0  # the event loop never waited on LDAP


async def test_auth_state_carries_posix_identity_for_the_spawner(settings, ldap_passwords):
    auth = EcluseAuthenticator(settings=settings, audit_logins=False)
    secret = new_secret()
    auth.mfa.enrol("alice", secret)
    model = await auth.authenticate(None, {"username": "alice",
                                           "password": ldap_passwords["alice"],
                                           "otp": Authenticators.code(secret)})
    state = model["auth_state"]
    assert state["uid_number"] == 20001 and state["gid_number"] == 20000
    assert state["projects"] == ["air-quality", "cardio-los"]
    assert state["project_gids"] == {"air-quality": 30002, "cardio-los": 30001}
    assert model["groups"] == ["air-quality", "cardio-los"]


async def test_authenticator_no_project_raises_403(settings, ldap_passwords):
    from tornado.web import HTTPError

    auth = EcluseAuthenticator(settings=settings, audit_logins=False)
    with pytest.raises(HTTPError) as e:
        await auth.authenticate(None, {"username": "nobody",
                                       "password": ldap_passwords["nobody"]})
    assert e.value.status_code == 403 and e.value.log_message == NO_PROJECT_MESSAGE


async def test_refresh_keeps_running_sessions_when_ldap_is_down(make_config):
    from ecluse.dev.ldapserver import free_port

    settings = load_settings(make_config(**{"ldap.uri": f"ldap://127.0.0.1:{free_port()}"}))
    auth = EcluseAuthenticator(settings=settings, audit_logins=False)

    class U:
        name = "alice"
        groups: list = []

    assert await auth.refresh_user(U()) is True


async def test_ldap_calls_do_not_block_the_event_loop(settings, slapd):
    from tornado.web import HTTPError

    auth = EcluseAuthenticator(settings=settings, audit_logins=False)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    slapd.pause()
    try:
        with pytest.raises(HTTPError):
            await auth.authenticate(None, {"username": "alice", "password": "x"})
    finally:
        slapd.resume()
        task.cancel()
    assert ticks > 50  # ~1 s of LDAP wait, the loop kept ticking
