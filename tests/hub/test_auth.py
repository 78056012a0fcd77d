"""Identity rules without a hub: project scopes, the membership rule, sign-in back-off,
plain LDAP, the hub configuration of tokens and culling."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from ecluse.config import ConfigError, load_settings
from ecluse.directory import DirectoryUser, NoProjectGid, NotAMember, membership, projects_of
from ecluse.hub.auth import LoginThrottle
from ecluse.hub.hubconfig import configure
from ecluse.hub.roles import credential_projects, project_scope


def test_a_token_acts_for_exactly_one_project():
    cardio, air = project_scope("cardio-los"), project_scope("air-quality")
    assert credential_projects([cardio, "self"], token=True) == {"cardio-los"}
    # the hub's "inherit" for a member of two projects: several, so none
    assert credential_projects([cardio, air], token=True) == frozenset()
    assert credential_projects(["access:services!service=airlock"], token=True) == frozenset()
    # a token that can mint tokens (the Token page's default, `inherit`) could escape
    assert credential_projects([cardio, "tokens!user=alice"], token=True) == frozenset()
    assert credential_projects([cardio, "tokens"], token=True) == frozenset()
    assert credential_projects([cardio, "read:tokens!user=alice"], token=True) == {"cardio-los"}
    # a browser session (the service's OAuth cookie) acts for each of the user's projects
    assert credential_projects([cardio, air], token=False) == {"cardio-los", "air-quality"}


def _user(groups, gids=None) -> DirectoryUser:
    return DirectoryUser("alice", "uid=alice,ou=people,dc=x", "Alice", None, 20001, 20000,
                         groups=groups, group_gids=gids or {})


def test_one_membership_rule(settings):
    u = _user(["proj-cardio-los", "other"], {"proj-cardio-los": 30001})
    assert projects_of(u.groups, settings) == ["cardio-los"]
    assert membership(u, settings, "cardio-los").project_gid == 30001
    with pytest.raises(NotAMember, match="not a member of project air-quality"):
        membership(u, settings, "air-quality")
    no_gid = settings.model_copy(deep=True)
    no_gid.projects["cardio-los"].gid = None
    with pytest.raises(NoProjectGid):
        membership(_user(["proj-cardio-los"]), no_gid, "cardio-los")


def test_membership_is_not_reimplemented_elsewhere():
    """The rule (group → project, with its gid) lives in ecluse.directory only."""
    import pathlib

    src = pathlib.Path(__file__).resolve().parents[2] / "src" / "ecluse"
    offenders = []
    for path in src.rglob("*.py"):
        if path.name in ("directory.py", "config.py", "projects.py"):
            continue
        text = path.read_text()
        if "group_gids" in text or ".ldap_group in " in text or "ldap_group)" in text:
            offenders.append(str(path.relative_to(src)))
    assert offenders == []


def test_sign_in_back_off_per_user_and_per_address():
    now = [1000.0]
    t = LoginThrottle(3, 10, 60, address_failures=5, clock=lambda: now[0])
    alice = t.keys("Alice", "10.0.0.1")
    for _ in range(2):
        assert t.failed(alice) == 0
    assert t.wait(alice) == 0
    assert t.failed(alice) == 10  # third failure: wait 10 s
    assert t.wait(t.keys("ALICE", "10.0.0.9")) == 10  # the name, whatever its case
    now[0] += 10
    assert t.wait(alice) == 0
    assert t.failed(alice) == 20  # doubled
    for _ in range(5):
        t.failed(alice)
    assert t.wait(alice) == 60  # capped
    # another user from the same address: the address bar (5) was passed too
    assert t.wait(t.keys("bob", "10.0.0.1")) > 0
    assert t.wait(t.keys("bob", "10.0.0.2")) == 0
    t.succeeded(alice)
    assert t.wait(alice) == 0


@pytest.mark.parametrize("uri", ["ldap://ad.example.fr:389", "ldap://10.1.2.3:389",
                                 "ldap://[2001:db8::1]:389"])
def test_plain_ldap_is_refused_off_loopback(make_config, uri):
    with pytest.raises(ConfigError) as e:
        load_settings(make_config(**{"ldap.uri": uri}))
    msg = str(e.value)
    assert "ldap" in msg and "security 'none' sends passwords in clear" in msg
    assert "use security: starttls" in msg


@pytest.mark.parametrize("uri", ["ldap://127.0.0.1:3890", "ldap://localhost:389",
                                 "ldap://[::1]:389"])
def test_plain_ldap_on_loopback_is_allowed(make_config, uri):
    assert load_settings(make_config(**{"ldap.uri": uri})).ldap.security == "none"


def test_starttls_to_a_remote_directory_is_allowed(make_config):
    s = load_settings(make_config(**{"ldap.uri": "ldap://ad.example.fr:389",
                                     "ldap.security": "starttls"}))
    assert s.ldap.host == "ad.example.fr"


def _build(make_config, **overrides):
    settings = load_settings(make_config(**overrides))
    c = Config()
    configure(c, settings)
    return c, settings


def test_hub_tokens_scopes_and_culling(make_config):
    c, settings = _build(make_config, **{"sandbox.idle_timeout": 0})
    assert c.JupyterHub.token_expires_in_max_seconds == 8 * 3600
    assert set(c.JupyterHub.custom_scopes) == {project_scope(s) for s in settings.projects}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["ecluse-project-cardio-los"] == {
        "name": "ecluse-project-cardio-los", "description": "Members of project cardio-los",
        "scopes": [project_scope("cardio-los")], "groups": ["cardio-los"]}
    assert not any(s.startswith("custom:") for s in roles["user"]["scopes"])
    # the culler runs for the maximum age even when idle culling is off
    culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")
    assert "--max-age=43200" in culler["command"]


def test_workspace_token_names_its_own_project(make_config):
    from ecluse.hub.roles import workspace_token_scopes

    scopes = workspace_token_scopes(["access:servers!server"])

    class Named:
        name = "cardio-los"
        settings = load_settings(make_config())

    assert scopes(Named()) == ["access:servers!server", project_scope("cardio-los")]
    Named.name = "no-such-project"  # no scope to ask for: start() refuses the name
    assert scopes(Named()) == ["access:servers!server"]
