"""The membership reconciler against the real directory (slapd), the hub's side recorded.

:class:`RecordingHub` is a :class:`ecluse.hub.reconcile.HubAPI` whose users come
from the test and whose stop/leave calls are recorded instead of sent. The
full path through a real hub is ``tests/stack/test_revocation.py``.
"""

from __future__ import annotations

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.directory import MembershipResolver
from ecluse.hub.reconcile import HubAPI, reconcile_once


class RecordingHub(HubAPI):
    def __init__(self, users: list[dict]) -> None:
        self._users = users
        self.calls: list[tuple[str, str, str]] = []

    def users(self) -> list[dict]:
        return self._users

    def stop_server(self, user: str, server: str) -> None:
        self.calls.append(("stop", user, server))

    def leave_group(self, user: str, group: str) -> None:
        self.calls.append(("leave", user, group))


USERS = [
    {"name": "alice", "groups": ["cardio-los", "air-quality"],
     "servers": {"air-quality": {}, "cardio-los": {}}},
    {"name": "bob", "groups": ["cardio-los"], "servers": {"cardio-los": {}}},
    {"name": "carol", "groups": ["output-checkers"], "servers": {}},
    {"name": "ghost", "groups": ["cardio-los"], "servers": {"cardio-los": {}}},
]


def test_a_user_who_left_loses_server_and_group_others_untouched(settings, slapd):
    hub = RecordingHub(USERS)
    audit = AuditLog.from_settings(settings)
    slapd.remove_member("proj-air-quality", "alice")
    try:
        done = reconcile_once(settings, hub, MembershipResolver(settings), audit)
    finally:
        slapd.add_member("proj-air-quality", "alice")
    assert sorted(hub.calls) == [
        ("leave", "alice", "air-quality"), ("leave", "ghost", "cardio-los"),
        ("stop", "alice", "air-quality"), ("stop", "ghost", "cardio-los")]
    assert done.checked == 3 and not done.unverified
    events = audit.records(event="membership.revoked")
    assert {(e.details["user"], e.project) for e in events} == {
        ("alice", "air-quality"), ("ghost", "cardio-los")}
    assert events[0].details["actions"] == ["workspace-stopped", "group-left"]


def test_directory_unreachable_stops_nothing(make_config):
    settings = load_settings(make_config(**{"ldap.uri": f"ldap://127.0.0.1:{free_port()}",
                                            "ldap.connect_timeout": 1}))
    hub = RecordingHub(USERS)
    audit = AuditLog.from_settings(settings)
    done = reconcile_once(settings, hub, MembershipResolver(settings), audit)
    assert hub.calls == []
    assert sorted(done.unverified) == ["alice", "bob", "ghost"]
    assert audit.records(event="membership.revoked") == []
