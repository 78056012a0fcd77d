"""The answers of the API's most frequent writes are built from what the write recorded,
without reading it back inside or after the write lock (issue 21 item 1: the airlock's
throughput): they must say exactly what a later read says."""

from __future__ import annotations

from typing import Any

import pytest

from ecluse.airlock.background import CHECKING
from ecluse.airlock.service import AirlockService

from .conftest import GROUPS
from .test_background import WAIT, HeldChecker

pytestmark = pytest.mark.timeout(300)


def who(service: AirlockService, name: str) -> Any:
    return service.identity(name, GROUPS[name])


def test_a_new_request_is_answered_as_a_read_shows_it(service: AirlockService) -> None:
    alice = who(service, "alice")
    made = service.create_request(alice, project="cardio-los", title="LOS tables",
                                  justification="For the paper")
    read = service.get_request(alice, made["id"], record_view=False)
    assert made == read
    assert [h["action"] for h in made["history"]] == ["create"]
    assert made["state"] == "draft" and made["files"] == [] and made["reviews"] == []


def test_a_file_checked_later_is_answered_as_a_read_shows_it(make_service: Any) -> None:
    held = HeldChecker()
    service = make_service(checker=held, background_checks=1)
    alice = who(service, "alice")
    rid = service.create_request(alice, project="cardio-los", title="t",
                                 justification="j")["id"]
    try:
        added = service.add_file(alice, rid, "t.csv", [b"sex,n\nF,25\nM,31\n"])
        (read,) = service.get_request(alice, rid, record_view=False)["files"]
        assert added["verdict"] == CHECKING
        # the read adds what is about the request as a whole (decisions beside the file)
        assert {k: read[k] for k in added} == added
        # a replacement is answered as recorded too, in place of the first file
        again = service.add_file(alice, rid, "t.csv", [b"sex,n\nF,26\nM,31\n"])
        (read,) = service.get_request(alice, rid, record_view=False)["files"]
        assert again["sha256"] != added["sha256"]
        assert {k: read[k] for k in again} == again
    finally:
        held.gate.set()
        service.checks.drain(WAIT)


@pytest.mark.parametrize("replacing", [False, True])
def test_the_quota_counts_distinct_objects_of_open_requests(
        make_service: Any, replacing: bool) -> None:
    """The database's count of a user's staged bytes: identical bytes once, every
    version, open requests only, and the file an upload replaces left out."""
    service = make_service()
    alice = who(service, "alice")
    a = service.create_request(alice, project="cardio-los", title="a", justification="j")["id"]
    b = service.create_request(alice, project="cardio-los", title="b", justification="j")["id"]
    one, two = b"sex,n\nF,25\nM,31\n", b"sex,n\nF,125\nM,131\nX,200\n"
    service.add_file(alice, a, "one.csv", [one])
    service.add_file(alice, b, "same.csv", [one])  # the same bytes: stored, counted once
    service.add_file(alice, b, "two.csv", [two])
    assert service.staging_used(alice)["used"] == len(one) + len(two)
    with service.sessions() as s:
        used, seen = service._staged_bytes(
            s, alice.name, (b, "two.csv") if replacing else None,
            sha256=service.get_request(alice, b, record_view=False)["files"][1]["sha256"])
    assert used == len(one) + (0 if replacing else len(two))
    assert seen is not replacing
    service.withdraw(alice, b, comment="not needed")  # final: no longer counted
    assert service.staging_used(alice)["used"] == len(one)
