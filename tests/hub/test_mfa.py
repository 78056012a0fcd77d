"""The second factor at sign-in, through the real hub (JupyterHub + proxy + slapd).

The hub here accepts codes of one step either side of now (the default
``mfa.valid_window``), so replayed and expired codes are the ones a person
or an attacker would really send.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.config import ConfigError, load_settings
from ecluse.dev.testing import Authenticators, HubClient, write_config
from ecluse.hub.auth import EcluseAuthenticator
from ecluse.hub.mfa import STEP, MfaError, TotpStore, code_at, counter_at, new_secret

REFUSED = "Invalid username or password"


@pytest.fixture(scope="module")
def mfa_hub(tmp_path_factory, slapd):
    from tests.support.hubstack import running_hub

    directory = tmp_path_factory.mktemp("mfa-hub")
    path = write_config(directory, slapd, overrides={
        "mfa.valid_window": 1, "hub.login_max_failures": 3, "hub.login_backoff": 2})
    with running_hub(path) as stack:
        yield stack


def client(hub) -> HubClient:
    return HubClient(hub.url, totp_window=1)


def signed_in(c: HubClient, user: str, password: str) -> requests.Response:
    """``c.login``, after the back-off the earlier tests' refused sign-ins set for this
    address (``hub.login_max_failures``: 3, ``hub.login_backoff``: 2 s): the tests that
    want to sign in are not about the throttle (the throttle test below is)."""
    deadline = time.monotonic() + 60
    while True:
        r = c.login(user, password)
        if r.status_code != 429 or time.monotonic() > deadline:
            return r
        time.sleep(1)


def enrolled(hub, user: str, password: str) -> str:
    """``user`` signed in once (enrolled at that first sign-in); their secret."""
    if Authenticators.secret(hub.url, user) is None:
        assert signed_in(client(hub), user, password).status_code == 302
    return Authenticators.secret(hub.url, user)


def audit_reasons(hub, user: str, event: str = "login.failure") -> list[str | None]:
    return [e.details.get("reason")
            for e in AuditLog.from_settings(hub.settings).records(user=user, event=event)]


def test_first_sign_in_enrols_then_the_code_is_required(mfa_hub, ldap_passwords):
    c = client(mfa_hub)
    r = c.login("bob", ldap_passwords["bob"], enrol=False)
    assert r.status_code == 200 and 'id="mfa-qr"' in r.text and "<svg" in r.text
    from ecluse.dev.testing import enrolment_form

    form = enrolment_form(r.text)
    assert len(form["recovery_codes"]) == 10
    # a wrong first code: the page again, with its error, and nobody signed in
    r = c.confirm_enrolment(form["ticket"], "000000")
    assert r.status_code == 403 and "not right" in r.text and 'name="ticket"' in r.text
    assert c.session.get(f"{mfa_hub.url}/hub/api/user", timeout=10).status_code == 403
    code = Authenticators.code(form["secret"], 1)
    r = c.confirm_enrolment(form["ticket"], code)
    assert r.status_code == 302, r.text[:300]
    Authenticators.learn(mfa_hub.url, "bob", form["secret"], form["recovery_codes"])
    # the ticket served once
    assert c.confirm_enrolment(form["ticket"], code).status_code == 403
    assert "success" in [e.outcome for e in AuditLog.from_settings(mfa_hub.settings)
                         .records(user="bob", event="mfa.enrol")]
    # from now on: password and code
    assert client(mfa_hub).login("bob", ldap_passwords["bob"]).status_code == 302


def test_password_alone_is_refused(mfa_hub, ldap_passwords):
    enrolled(mfa_hub, "alice", ldap_passwords["alice"])
    r = client(mfa_hub).login("alice", ldap_passwords["alice"], otp="")
    assert r.status_code == 403 and REFUSED in r.text
    assert "missing-code" in audit_reasons(mfa_hub, "alice")


def test_wrong_code_is_refused_like_a_wrong_password(mfa_hub, ldap_passwords):
    secret = enrolled(mfa_hub, "alice", ldap_passwords["alice"])
    good = code_at(secret, counter_at(time.time()))
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    r = client(mfa_hub).login("alice", ldap_passwords["alice"], otp=wrong)
    assert r.status_code == 403 and REFUSED in r.text
    # the same answer as a wrong password with a right code: no password oracle
    r2 = client(mfa_hub).login("alice", "not-her-password")
    assert r2.status_code == 403 and REFUSED in r2.text
    assert "wrong-code" in audit_reasons(mfa_hub, "alice")


def test_replayed_code_is_refused(mfa_hub, ldap_passwords):
    secret = enrolled(mfa_hub, "carol", ldap_passwords["carol"])
    code = Authenticators.code(secret, 1)
    assert client(mfa_hub).login("carol", ldap_passwords["carol"], otp=code).status_code == 302
    # someone who saw the code (shoulder, keylogger) tries it within its window
    r = client(mfa_hub).login("carol", ldap_passwords["carol"], otp=code)
    assert r.status_code == 403 and REFUSED in r.text
    assert "replayed-code" in audit_reasons(mfa_hub, "carol")


def test_expired_code_is_refused(mfa_hub, ldap_passwords):
    secret = enrolled(mfa_hub, "carol", ldap_passwords["carol"])
    old = code_at(secret, counter_at(time.time()) - 3)  # 90 s ago: outside the window
    r = client(mfa_hub).login("carol", ldap_passwords["carol"], otp=old)
    assert r.status_code == 403
    assert "expired-code" in audit_reasons(mfa_hub, "carol")


def test_recovery_code_works_once(mfa_hub, ldap_passwords):
    enrolled(mfa_hub, "bob", ldap_passwords["bob"])
    codes = Authenticators.recovery_codes[(mfa_hub.url, "bob")]
    assert client(mfa_hub).login("bob", ldap_passwords["bob"],
                                 otp=codes[0].upper()).status_code == 302
    r = client(mfa_hub).login("bob", ldap_passwords["bob"], otp=codes[0])
    assert r.status_code == 403 and REFUSED in r.text
    assert "wrong-recovery-code" in audit_reasons(mfa_hub, "bob")
    success = AuditLog.from_settings(mfa_hub.settings).records(user="bob", event="login.success")
    assert success[-1].details["factor"] == "recovery-code"
    assert success[-1].details["recovery_codes_left"] == 9


def _staff_session(hub, user: str, password: str) -> requests.Session:
    c = client(hub)
    assert signed_in(c, user, password).status_code == 302
    c.session.headers["X-XSRFToken"] = c.session.cookies.get("_xsrf") or ""
    return c.session


def test_staff_reset_is_audited_and_the_user_enrols_again(mfa_hub, ldap_passwords):
    enrolled(mfa_hub, "bob", ldap_passwords["bob"])
    api = f"{mfa_hub.url}/hub/api/ecluse/mfa"
    # not staff: refused, nothing changes
    alice = _staff_session(mfa_hub, "alice", ldap_passwords["alice"])
    assert alice.post(f"{api}/bob/reset", timeout=10).status_code == 403
    assert requests.post(f"{api}/bob/reset", timeout=10).status_code in (401, 403)
    erin = _staff_session(mfa_hub, "erin", ldap_passwords["erin"])
    assert erin.post(f"{api}/erin/reset", timeout=10).status_code == 403  # not her own
    r = erin.post(f"{api}/bob/reset", timeout=10)
    assert r.status_code == 200, r.text
    assert erin.post(f"{api}/bob/reset", timeout=10).status_code == 404
    resets = AuditLog.from_settings(mfa_hub.settings).records(user="erin", event="mfa.reset")
    assert [(e.details["user"], e.outcome) for e in resets][:1] == [("bob", "success")]
    # bob's old codes are gone; his next sign-in is an enrolment again
    r = client(mfa_hub).login("bob", ldap_passwords["bob"], enrol=False)
    assert r.status_code == 200 and 'id="mfa-secret"' in r.text
    Authenticators.secrets.pop((mfa_hub.url, "bob"), None)
    assert client(mfa_hub).login("bob", ldap_passwords["bob"]).status_code == 302


def test_code_failures_are_throttled_like_password_failures(mfa_hub, ldap_passwords):
    secret = enrolled(mfa_hub, "dan", ldap_passwords["dan"])
    for _ in range(3):  # hub.login_max_failures
        r = client(mfa_hub).login("dan", ldap_passwords["dan"], otp="123456")
        assert r.status_code == 403
    # now even the right code waits: guessing codes cannot go on at full speed
    r = client(mfa_hub).login("dan", ldap_passwords["dan"],
                              otp=Authenticators.code(secret, 1))
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert AuditLog.from_settings(mfa_hub.settings).records(user="dan", event="login.throttled")
    time.sleep(2.5)  # hub.login_backoff
    assert client(mfa_hub).login("dan", ldap_passwords["dan"]).status_code == 302


# ---------------------------------------------------------------- without a hub


def test_secrets_are_encrypted_at_rest_with_a_key_outside_the_store(settings):
    store = TotpStore.from_settings(settings)
    secret = new_secret()
    store.enrol("alice", secret, ["abcde-fghij"])
    raw = store.path.read_bytes() + b"".join(
        p.read_bytes() for p in store.path.parent.glob("mfa.sqlite-*"))
    assert secret.encode() not in raw and b"abcdefghij" not in raw
    rows = sqlite3.connect(store.path).execute("SELECT secret FROM totp").fetchall()
    assert secret.encode() not in rows[0][0]
    key_file = settings.state_dir / "secrets" / "totp_key"
    assert key_file.stat().st_mode & 0o077 == 0
    # another key (a copy of the database alone): nothing decrypts, sign-in fails closed
    key_file.write_text("11" * 32)
    with pytest.raises(MfaError) as e:
        TotpStore.from_settings(settings).verify("alice", code_at(secret, counter_at(time.time())))
    assert e.value.reason == "undecryptable-secret"


def test_a_code_is_accepted_once_even_within_its_window(settings):
    now = [1_000_000.0]
    store = TotpStore.from_settings(settings, clock=lambda: now[0])
    secret = new_secret()
    store.enrol("alice", secret)
    code = code_at(secret, counter_at(now[0]))
    assert store.verify("alice", code).kind == "totp"
    now[0] += STEP / 2
    with pytest.raises(MfaError, match="replayed-code"):
        store.verify("alice", code)
    # an earlier step's code, still in the window, after a later one: refused too
    with pytest.raises(MfaError, match="replayed-code"):
        store.verify("alice", code_at(secret, counter_at(now[0]) - 1))
    assert store.verify("alice", code_at(secret, counter_at(now[0]) + 1)).kind == "totp"


def test_second_factor_cannot_be_turned_off_for_staff_or_checkers(make_config):
    for roles in (["researcher"], ["researcher", "staff"], ["output-checker"]):
        with pytest.raises(ConfigError, match="cannot be turned off"):
            load_settings(make_config(**{"mfa.required_for": roles}))
    s = load_settings(make_config(**{"mfa.required_for": ["staff", "output-checker"]}))
    assert s.mfa.required_for == ["output-checker", "staff"]


async def test_required_per_role(make_config, ldap_passwords):
    """Researchers may be let in on the password when configured so; checkers and staff
    never; and whoever enrolled gives their code."""
    settings = load_settings(make_config(**{"mfa.required_for": ["output-checker", "staff"]}))
    auth = EcluseAuthenticator(settings=settings, audit_logins=False)
    model = await auth.authenticate(None, {"username": "bob", "password": ldap_passwords["bob"]})
    assert model and model["name"] == "bob"
    checker = {"auth_state": {"projects": ["cardio-los"], "roles": ["output-checkers"]}}
    assert auth.mfa_required("carol", checker)
    assert not auth.mfa_required("carol", {"auth_state": {"projects": ["cardio-los"]}})
    secret = new_secret()
    auth.mfa.enrol("bob", secret)
    assert await auth.authenticate(None, {"username": "bob",
                                          "password": ldap_passwords["bob"]}) is None
    model = await auth.authenticate(None, {"username": "bob", "password": ldap_passwords["bob"],
                                           "otp": Authenticators.code(secret)})
    assert model and model["name"] == "bob"
