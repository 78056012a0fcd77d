"""Person: two names are one person by directory entry or uidNumber, never by name alone
being different (issue 14, item 5)."""

from __future__ import annotations

from ecluse.airlock.permissions import Identity, made_by
from ecluse.people import Person, distinct

CAROL = Person("carol", "uid=carol,ou=people,dc=test", 20003)


def test_one_entry_or_one_uid_number_is_one_person():
    assert CAROL.same_as(Person("c.petit", "UID=carol, ou=People,dc=test", 20003)) \
        == "one directory entry, uid=carol,ou=people,dc=test"
    assert CAROL.same_as(Person("carol-adm", "uid=carol-adm,ou=people,dc=test", 20003)) \
        == "one uidNumber, 20003"
    assert CAROL.same_as(Person("Carol")) == "one name"
    assert CAROL.same_as(Person("dan", "uid=dan,ou=people,dc=test", 20004)) is None
    assert Person("c.petit").same_as(Person("carol")) is None  # unknown: only names compare


def test_distinct_keeps_each_person_once():
    people = [CAROL, Person("c.petit", CAROL.dn, 20003), Person("dan", None, 20004),
              Person("dan2", None, 20004), Person("erin")]
    assert [p.name for p in distinct(people)] == ["carol", "dan", "erin"]


def test_the_requester_is_the_requester_under_any_name():
    class Req:
        id, project, requester, state = "ar-1", "p", "alice", "submitted"
        requester_dn, requester_uid_number = "uid=alice,dc=test", 20001

    a_martin = Identity("a.martin", frozenset({"output-checkers"}), dn="uid=alice,dc=test",
                        uid_number=20001)
    assert made_by(a_martin, Req()) == "one directory entry, uid=alice,dc=test"
    assert made_by(Identity("a.martin"), Req()) is None
