"""Sign-in through an OpenID Connect provider (hub.authenticator: oidc), groups from LDAP.

The provider is a real one started on loopback by the test
(:mod:`tests.support.oidcprovider`, built on IdentityPython's ``pyop``); the
hub is the real JupyterHub + proxy with :class:`ecluse.hub.oidc.EcluseOIDCAuthenticator`
(oauthenticator's GenericOAuthenticator), configured to require the MFA
``acr``; the directory is the session's slapd.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.config import ConfigError, load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import write_config
from ecluse.hub.oidc import SECOND_FACTOR_MESSAGE
from tests.support.oidcprovider import MFA_ACR, OpenIDProvider

PROVIDER_USERS = {"alice": "alice-at-the-idp", "bob": "bob-at-the-idp",
                  "zoe": "zoe-at-the-idp"}


@pytest.fixture(scope="module")
def oidc_hub(tmp_path_factory, slapd):
    from tests.support.hubstack import running_hub

    directory = tmp_path_factory.mktemp("oidc-hub")
    port = free_port()
    with OpenIDProvider(PROVIDER_USERS, "ecluse-hub", "s3cret-client",
                        f"http://127.0.0.1:{port}/hub/oauth_callback", directory / "tls") as op:
        (directory / "oidc-client-secret").write_text(op.client_secret)
        (directory / "oidc-client-secret").chmod(0o600)
        path = write_config(directory, slapd, overrides={
            "hub.port": port, "hub.authenticator": "oidc",
            "oidc": {"issuer": op.issuer, "client_id": op.client_id,
                     "client_secret_file": str(directory / "oidc-client-secret"),
                     "ca_file": str(op.ca_file), "required_acr": [MFA_ACR]},
        })
        with running_hub(path) as stack:
            stack.op = op
            yield stack


def sign_in(hub, user: str, password: str, otp: str) -> tuple[requests.Session,
                                                                 requests.Response]:
    """A browser's round trip: hub → provider's sign-in page → hub callback."""
    s = requests.Session()
    s.verify = str(hub.op.ca_file)
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the provider's CA
    r = s.get(f"{hub.url}/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text[:300]
    authorize = r.headers["Location"]
    assert authorize.startswith(hub.op.issuer + "/authorize?")
    assert "acr_values=" in authorize and "code_challenge=" in authorize
    page = s.get(authorize, timeout=30)
    assert page.status_code == 200, page.text
    request = re.search(r'name="request" value="([^"]+)"', page.text).group(1)
    import html

    r = s.post(f"{hub.op.issuer}/authorize", allow_redirects=False, timeout=30,
               data={"request": html.unescape(request), "username": user,
                     "password": password, "otp": otp})
    assert r.status_code == 302, r.text
    r = s.get(urljoin(hub.url, r.headers["Location"]), allow_redirects=False, timeout=60)
    return s, r


def test_sign_in_with_the_providers_second_factor(oidc_hub):
    s, r = sign_in(oidc_hub, "alice", PROVIDER_USERS["alice"], oidc_hub.op.code("alice"))
    assert r.status_code == 302, oidc_hub.op.errors
    me = s.get(f"{oidc_hub.url}/hub/api/user", timeout=30).json()
    # projects and roles from LDAP, as with the password sign-in
    assert me["name"] == "alice"
    assert sorted(me["groups"]) == ["air-quality", "cardio-los"]
    success = AuditLog.from_settings(oidc_hub.settings).records(user="alice",
                                                                event="login.success")
    assert success[-1].details["factor"] == "oidc"
    assert success[-1].details["acr"] == MFA_ACR
    assert success[-1].details["amr"] == ["pwd", "otp"]


def test_sign_in_without_the_required_acr_is_refused(oidc_hub):
    s, r = sign_in(oidc_hub, "bob", PROVIDER_USERS["bob"], otp="")  # password only at the IdP
    assert r.status_code == 403
    assert SECOND_FACTOR_MESSAGE in r.text
    assert s.get(f"{oidc_hub.url}/hub/api/user", timeout=30).status_code == 403
    reasons = [e.details.get("reason") for e in AuditLog.from_settings(oidc_hub.settings)
               .records(user="bob", event="login.failure")]
    assert "acr-not-satisfied" in reasons


def test_id_token_not_signed_by_the_provider_is_refused(oidc_hub):
    oidc_hub.op.forge_next = True
    s, r = sign_in(oidc_hub, "alice", PROVIDER_USERS["alice"], oidc_hub.op.code("alice"))
    assert not oidc_hub.op.forge_next  # the forged token was the one the hub got
    assert r.status_code == 403, r.text[:300]
    assert "could not be verified" in r.text
    assert s.get(f"{oidc_hub.url}/hub/api/user", timeout=30).status_code == 403
    failures = AuditLog.from_settings(oidc_hub.settings).records(event="login.failure")
    assert "bad-id-token" in [e.details.get("reason") for e in failures]


def test_provider_user_unknown_to_the_directory_is_refused(oidc_hub):
    s, r = sign_in(oidc_hub, "zoe", PROVIDER_USERS["zoe"], oidc_hub.op.code("zoe"))
    assert r.status_code == 403
    assert "not a member of any" in r.text


def test_password_form_is_not_offered(oidc_hub):
    page = requests.get(f"{oidc_hub.url}/hub/login", timeout=30)
    assert 'name="password"' not in page.text
    assert "Sign in with your hospital account" in page.text
    # the LDAP password form's POST does not sign anyone in either
    r = requests.post(f"{oidc_hub.url}/hub/login", data={"username": "alice",
                                                         "password": "pw-alice-Secret1"},
                      allow_redirects=False, timeout=30)
    assert r.status_code != 302


def test_oidc_settings(make_config, tmp_path):
    with pytest.raises(ConfigError, match="oidc: required"):
        load_settings(make_config(**{"hub.authenticator": "oidc"}))
    with pytest.raises(ConfigError, match="https"):
        load_settings(make_config(**{"hub.authenticator": "oidc", "oidc": {
            "issuer": "http://idp.hospital.example", "client_id": "x"}}))
