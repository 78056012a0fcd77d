"""One person, one hub name: an entry with two login names signs in as its canonical uid.

Otherwise ``alice`` and ``a.martin`` would be two hub users, so two airlock
reviewers, for one person (issue 14, item 5: the hub side).
"""

from __future__ import annotations

import ldap3
import pytest

from ecluse.dev.testing import Authenticators
from ecluse.directory import Directory
from ecluse.hub.auth import EcluseAuthenticator
from ecluse.hub.mfa import new_secret


@pytest.fixture
def alias(slapd):
    """carol (an output checker) also answers to ``c.petit``."""
    dn = slapd.user_dn("carol")
    with slapd.admin_connection() as conn:
        conn.modify(dn, {"uid": [(ldap3.MODIFY_ADD, ["c.petit"])]})
    try:
        yield "c.petit"
    finally:
        with slapd.admin_connection() as conn:
            conn.modify(dn, {"uid": [(ldap3.MODIFY_DELETE, ["c.petit"])]})


def test_both_login_names_are_one_hub_user(settings, slapd, alias):
    d = Directory(settings.ldap)
    by_alias = d.authenticate(alias, slapd.passwords["carol"])
    by_uid = d.authenticate("carol", slapd.passwords["carol"])
    assert by_alias.username == by_uid.username == "carol"
    assert by_alias.dn == by_uid.dn and by_alias.groups == by_uid.groups
    assert d.lookup(alias).username == "carol"


async def test_the_hub_name_is_the_canonical_uid(settings, slapd, alias):
    auth = EcluseAuthenticator(settings=settings, audit_logins=False)
    secret = new_secret()
    auth.mfa.enrol("carol", secret)  # one second factor, whichever name is typed
    model = await auth.authenticate(None, {"username": alias,
                                           "password": slapd.passwords["carol"],
                                           "otp": Authenticators.code(secret)})
    assert model["name"] == "carol"
    assert model["groups"] == ["output-checkers"]
