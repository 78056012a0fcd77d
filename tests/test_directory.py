"""ecluse.directory against a real slapd: sign-in, lookup, groups, injection."""

from __future__ import annotations

import time

import ldap3
import pytest

from ecluse.config import load_settings
from ecluse.directory import (
    Directory,
    DirectoryUnavailable,
    InvalidCredentials,
    InvalidUsername,
    UnknownUser,
)


@pytest.fixture
def directory(settings) -> Directory:
    return Directory(settings.ldap)


def test_good_login_reads_identity_and_all_membership_styles(directory, ldap_passwords):
    alice = directory.authenticate("alice", ldap_passwords["alice"])
    assert alice.dn == "uid=alice,ou=people,dc=ecluse,dc=test"
    assert (alice.uid_number, alice.gid_number) == (20001, 20000)
    assert alice.cn == "Alice Martin" and alice.mail == "alice@ecluse.test"
    assert alice.groups == ["proj-air-quality", "proj-cardio-los"]  # member (groupOfNames)
    assert alice.group_gids["proj-cardio-los"] == 30001
    carol = directory.authenticate("carol", ldap_passwords["carol"])
    assert carol.groups == ["ecluse-output-checkers"]  # uniqueMember
    erin = directory.authenticate("erin", ldap_passwords["erin"])
    assert erin.groups == ["ecluse-staff"]  # memberUid (posixGroup)


def test_wrong_password(directory):
    with pytest.raises(InvalidCredentials):
        directory.authenticate("alice", "not-her-password")


def test_empty_password_is_never_an_anonymous_bind(directory):
    with pytest.raises(InvalidCredentials, match="empty password"):
        directory.authenticate("alice", "")


def test_unknown_user(directory):
    with pytest.raises(UnknownUser):
        directory.authenticate("zoe", "whatever")


@pytest.mark.parametrize(
    "name",
    [
        "*)(uid=*",
        "alice)(|(uid=*",
        "*",
        "alice\x00",
        "al\x00ice",
        "a" * 300,
        "alice*",
        "(uid=alice)",
        "admin,dc=ecluse,dc=test",
        "ALICE",
        "",
    ],
)
def test_injection_and_malformed_names_never_reach_ldap(directory, ldap_passwords, name):
    with pytest.raises(InvalidUsername):
        directory.authenticate(name, ldap_passwords["alice"])


def test_filter_values_are_escaped_even_if_the_pattern_allowed_them(slapd, make_config,
                                                                      ldap_passwords):
    # a lax deployment pattern must still not allow filter injection
    settings = load_settings(make_config(**{"ldap.username_pattern": r"^.{1,64}$"}))
    d = Directory(settings.ldap)
    for name in ["*", "*)(uid=*", "alice)(|(uid=*", "a*"]:
        with pytest.raises(UnknownUser):
            d.authenticate(name, ldap_passwords["alice"])


def test_lookup_without_password(directory):
    bob = directory.lookup("bob")
    assert bob.groups == ["proj-cardio-los"]


def test_ldap_down_fails_fast_with_clear_error(make_config):
    from ecluse.dev.ldapserver import free_port

    settings = load_settings(make_config(**{"ldap.uri": f"ldap://127.0.0.1:{free_port()}"}))
    t0 = time.monotonic()
    with pytest.raises(DirectoryUnavailable, match=r"LDAP server ldap://127\.0\.0\.1:\d+ unavailable"):
        Directory(settings.ldap).authenticate("alice", "x")
    assert time.monotonic() - t0 < 5


def test_ldap_stalled_times_out(directory, slapd):
    slapd.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            directory.authenticate("alice", "x")
        elapsed = time.monotonic() - t0
    finally:
        slapd.resume()
    # connect succeeds (the kernel accepts), the receive timeout (1 s) ends it
    assert elapsed < 4


def test_wrong_service_password_is_reported_as_configuration(make_config, tmp_path):
    path = make_config()
    (path.parent / "ldap-service-password").write_text("wrong")
    settings = load_settings(path)
    with pytest.raises(DirectoryUnavailable, match="service account .* was refused"):
        Directory(settings.ldap).authenticate("alice", "x")


def test_projects_cli_lists_members_from_ldap(make_config, capsys):
    from ecluse.cli import main

    path = make_config()
    assert main(["projects", "--config", str(path), "show", "cardio-los"]) == 0
    out = capsys.readouterr().out
    assert "members:  alice, bob" in out
    assert "policy:" in out and "'threshold': 11" in out
    assert main(["projects", "--config", str(path), "show", "nope"]) == 2
    assert main(["projects", "--config", str(path), "list"]) == 0
    assert "proj-air-quality" in capsys.readouterr().out


def test_lookup_reads_the_preferred_language(directory, slapd):
    """``preferredLanguage`` (inetOrgPerson): the language of the airlock's mails to the
    person (ecluse.airlock.notify); none given, none read."""
    assert directory.lookup("bob").language is None
    dn = slapd.user_dn("bob")
    with slapd.admin_connection() as conn:
        conn.modify(dn, {"preferredLanguage": [(ldap3.MODIFY_REPLACE, ["en-GB"])]})
    try:
        assert directory.lookup("bob").language == "en-GB"
    finally:
        with slapd.admin_connection() as conn:
            conn.modify(dn, {"preferredLanguage": [(ldap3.MODIFY_DELETE, [])]})
    assert directory.lookup("bob").language is None


def test_membership_resolver_says_when_it_answers_from_its_cache(settings):
    """``fresh``: the services call the directory in a thread only when the cache cannot
    answer; an unavailable directory is never cached."""
    from ecluse.directory import MembershipResolver

    resolver = MembershipResolver(settings, cache_seconds=60)
    assert not resolver.fresh("alice")
    resolver.lookup("alice")
    assert resolver.fresh("alice")
    assert not MembershipResolver(settings).fresh("alice")  # no cache at all
    uncached = MembershipResolver(settings, cache_seconds=0)
    uncached.lookup("alice")
    assert not uncached.fresh("alice")
