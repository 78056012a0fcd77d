"""The rule tables are complete and consistent."""

from __future__ import annotations

from collections import deque

from ecluse.airlock.rules import (
    DECISIONS,
    EDITABLE_STATES,
    EVENTS,
    FILE_ACCESS,
    FINAL_STATES,
    PURGEABLE_STATES,
    REVIEWABLE_STATES,
    TRANSITIONS,
    VERDICT_RULES,
    Action,
    Actor,
    FileView,
    State,
    Verdict,
    file_access_for,
)
from ecluse.sdc import Verdict as SdcVerdict


def test_every_state_is_reachable_from_draft():
    seen, todo = {State.DRAFT}, deque([State.DRAFT])
    while todo:
        s = todo.popleft()
        for t in TRANSITIONS:
            if t.source is s and t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    assert seen == set(State)


def test_final_states_have_no_way_out_and_open_states_have_one():
    sources = {t.source for t in TRANSITIONS}
    assert not (sources & FINAL_STATES)
    assert sources == set(State) - FINAL_STATES


def test_every_open_state_can_be_withdrawn_or_closed():
    for s in set(State) - FINAL_STATES:
        targets = {t.target for t in TRANSITIONS if t.source is s}
        assert targets & FINAL_STATES or s is State.APPROVED, s


def test_every_action_has_transitions_actors_and_an_event():
    assert {t.action for t in TRANSITIONS} == set(Action)
    for t in TRANSITIONS:
        assert t.actors, t
        assert t.actors <= set(Actor)
        assert t.event.startswith("airlock."), t
    keys = [(t.action, t.source, t.target) for t in TRANSITIONS]
    assert len(keys) == len(set(keys)), "duplicate transition"


def test_one_event_per_action_target():
    by_key: dict = {}
    for t in TRANSITIONS:
        by_key.setdefault((t.action, t.target), set()).add(t.event)
    assert all(len(v) == 1 for v in by_key.values())


def test_reviews_are_checkers_only_and_submission_is_the_requesters():
    for t in TRANSITIONS:
        if t.action in (Action.APPROVE, Action.REQUEST_CHANGES, Action.REJECT):
            assert t.actors == {Actor.CHECKER}
        if t.action in (Action.SUBMIT, Action.RESUBMIT):
            assert t.actors == {Actor.REQUESTER}
        if t.action in (Action.RELEASE, Action.RELEASE_PARTIAL):
            assert Actor.REQUESTER not in t.actors


def test_decisions_map_to_review_actions():
    assert set(DECISIONS.values()) == {Action.APPROVE, Action.REQUEST_CHANGES, Action.REJECT}
    for action in DECISIONS.values():
        assert {t.source for t in TRANSITIONS if t.action is action} == REVIEWABLE_STATES


def test_verdict_rules_cover_every_sdc_verdict():
    assert {v.value for v in Verdict} == {v.value for v in SdcVerdict}
    assert set(VERDICT_RULES) == set(Verdict)
    assert VERDICT_RULES[Verdict.BLOCK] == (False, False)
    assert VERDICT_RULES[Verdict.FAIL] == (True, True)
    # a file the checks could not judge needs a written reason, like a failing one
    assert VERDICT_RULES[Verdict.REVIEW] == (True, True)
    assert [v for v, (ok, reason) in VERDICT_RULES.items() if ok and not reason] == [Verdict.PASS]


def test_file_access_table_keeps_bytes_under_the_two_person_rule():
    assert {a.view for a in FILE_ACCESS} == set(FileView)
    # raw bytes: the requester alone, once released, of the released version only
    content = [a for a in FILE_ACCESS if a.view is FileView.CONTENT]
    assert len(content) == 1
    assert content[0].actors == {Actor.REQUESTER} and content[0].states == {State.RELEASED}
    assert content[0].current_version_only
    # checkers: previews while the request is reviewable, never bytes
    for state in State:
        checkers = {a.view for a in file_access_for(FileView.PREVIEW, state)
                    if Actor.CHECKER in a.actors}
        assert bool(checkers) is (state in REVIEWABLE_STATES), state
        assert not any(Actor.CHECKER in a.actors for a in file_access_for(FileView.CONTENT,
                                                                          state))
    # withdrawn and rejected requests show nothing to anyone; they are what gets purged
    assert PURGEABLE_STATES == {State.WITHDRAWN, State.REJECTED}
    for state in PURGEABLE_STATES:
        for view in FileView:
            assert file_access_for(view, state) == [], (view, state)
    assert "airlock.request.purged" in EVENTS.values()


def test_editable_states_are_the_requesters_turn():
    assert EDITABLE_STATES == {State.DRAFT, State.CHANGES_REQUESTED}
    assert not (EDITABLE_STATES & FINAL_STATES)


def test_event_names_are_unique():
    assert len(set(EVENTS.values())) == len(EVENTS)
    transition_events = {t.event for t in TRANSITIONS}
    assert not (transition_events & set(EVENTS.values()))
