"""Each transition allowed or denied per role, on SQLite and PostgreSQL.

The expected table is written out by hand (not derived from the rules) so a
change of the rules has to change this table too.
"""

from __future__ import annotations

import pytest

from ecluse.airlock.errors import InvalidTransition, NotFound, PermissionDenied, PolicyViolation
from ecluse.airlock.rules import TRANSITIONS, Action, State

CAST = ["alice", "bob", "carol", "erin", "sam", "eve"]

#: (action, from state) -> users allowed (requests are alice's, project cardio-los;
#: erin is a checker *and* a cardio-los member, so she may not review it)
EXPECTED: dict[tuple[Action, State], set[str]] = {
    (Action.SUBMIT, State.DRAFT): {"alice"},
    (Action.APPROVE, State.SUBMITTED): {"carol"},
    (Action.APPROVE, State.IN_REVIEW): {"carol"},  # dan approved already; carol is fresh
    (Action.REQUEST_CHANGES, State.SUBMITTED): {"carol"},
    (Action.REQUEST_CHANGES, State.IN_REVIEW): {"carol"},
    (Action.REJECT, State.SUBMITTED): {"carol"},
    (Action.REJECT, State.IN_REVIEW): {"carol"},
    (Action.RESUBMIT, State.CHANGES_REQUESTED): {"alice"},
    (Action.RELEASE, State.APPROVED): {"carol", "sam"},
    # past the actor check, a partial release of a request whose files nobody decided
    # is refused by its own rule (every file approved or held): PolicyViolation
    (Action.RELEASE_PARTIAL, State.SUBMITTED): {"carol", "sam"},
    (Action.RELEASE_PARTIAL, State.IN_REVIEW): {"carol", "sam"},
    (Action.WITHDRAW, State.DRAFT): {"alice", "sam"},
    (Action.WITHDRAW, State.SUBMITTED): {"alice", "sam"},
    (Action.WITHDRAW, State.IN_REVIEW): {"alice", "sam"},
    (Action.WITHDRAW, State.CHANGES_REQUESTED): {"alice", "sam"},
    (Action.WITHDRAW, State.APPROVED): {"alice", "sam"},
}


def test_expected_table_covers_every_transition():
    assert {(t.action, t.source) for t in TRANSITIONS} == set(EXPECTED)


def _at(service, users, files, state: State) -> str:
    alice = users.alice
    req = service.create_request(alice, project="cardio-los", title="t", justification="j")
    service.add_file(alice, req["id"], *files.ok[:1], [files.ok[1]])
    rid = req["id"]
    if state is State.DRAFT:
        return rid
    service.submit(alice, rid)
    if state is State.IN_REVIEW:
        service.review(users.dan, rid, decision="approve")
    elif state is State.CHANGES_REQUESTED:
        service.review(users.dan, rid, decision="request_changes", comment="round")
    elif state is State.APPROVED:
        service.review(users.dan, rid, decision="approve")
        service.review(users.fay, rid, decision="approve")
    return rid


def _act(service, user, rid, action: Action):
    if action is Action.APPROVE:
        return service.review(user, rid, decision="approve")
    if action in (Action.REQUEST_CHANGES, Action.REJECT):
        return service.review(user, rid, decision=action.value, comment="because")
    if action is Action.RELEASE_PARTIAL:
        return service.release_partial(user, rid, comment="because")
    return getattr(service, action.value)(user, rid)


@pytest.mark.parametrize("action, source", sorted(EXPECTED, key=str))
def test_transition_allowed_exactly_for_expected_users(service, users, files, action, source):
    allowed = EXPECTED[(action, source)]
    for name in CAST:
        rid = _at(service, users, files, source)
        user = getattr(users, name)
        if name in allowed and action is Action.RELEASE_PARTIAL:
            with pytest.raises(PolicyViolation, match="neither has 2 approvals"):
                _act(service, user, rid, action)
        elif name in allowed:
            out = _act(service, user, rid, action)
            assert out["state"] != source.value or action is Action.APPROVE
        else:
            # strangers, and non-members facing a draft, are told it does not exist
            hidden = name == "eve" or (source is State.DRAFT and name in ("carol", "sam"))
            expected = NotFound if hidden and name != "sam" else (
                PermissionDenied, InvalidTransition)
            with pytest.raises(expected) as e:
                _act(service, user, rid, action)
            assert e.value.message
            after = service.get_request(users.sam, rid, record_view=False)
            assert after["state"] == source.value, (name, action)


@pytest.mark.parametrize("state", [State.REJECTED, State.RELEASED, State.WITHDRAWN])
def test_final_states_refuse_every_action(service, users, create_request_at_status, state):
    rid = create_request_at_status(state)["id"]
    for action in Action:
        for name in ("alice", "carol", "sam"):
            with pytest.raises(InvalidTransition) as e:
                _act(service, getattr(users, name), rid, action)
            assert f"is {state.value}" in e.value.message
