"""Staging quotas per user (issue 15, item 4): a user cannot fill the airlock's disk.

Attack tests: each fails when the quota is undone (no ``room`` given to the
staging writer, no pre-flight check, no re-check when the file is attached).
"""

from __future__ import annotations

import pytest

from ecluse.airlock.errors import QuotaExceeded
from ecluse.airlock.rules import State

QUOTA = 1000


def _new(service, user, project="cardio-los"):
    return service.create_request(user, project=project, title="Tables",
                                  justification="For the paper")["id"]


def _objects(service) -> set[str]:
    return {p.name for p in service.staging.objects.rglob("*") if p.is_file()}


class Chunks:
    """An upload body that counts how much of it the service pulled."""

    def __init__(self, n: int, size: int, byte: bytes = b"q") -> None:
        self.n, self.size, self.byte, self.sent = n, size, byte, 0

    def __iter__(self):
        for _ in range(self.n):
            self.sent += self.size
            yield self.byte * self.size


def test_an_upload_past_the_quota_is_refused_while_streaming_and_nothing_is_kept(
    make_service, users
):
    service = make_service(staging_quota_bytes=QUOTA)
    rid = _new(service, users.alice)
    service.add_file(users.alice, rid, "a.txt", [b"a" * 600])
    service.add_file(users.alice, rid, "b.txt", [b"b" * 300])
    assert service.staging_used(users.alice) == {"quota": QUOTA, "used": 900, "free": 100}
    before_objects, before = _objects(service), service.get_request(users.alice, rid)

    body = Chunks(100, 50)  # 5000 bytes offered, 100 left
    with pytest.raises(QuotaExceeded) as e:
        service.add_file(users.alice, rid, "c.txt", body)
    msg = e.value.message
    assert e.value.status == 413 and e.value.code == "quota_exceeded"
    assert "c.txt" in msg and f"quota is {QUOTA} bytes" in msg
    assert "already hold 900 bytes" in msg and "100 bytes left" in msg
    assert "withdrawing a draft" in msg
    # refused as soon as the running total passed the quota, not at the end
    assert body.sent == 150
    # nothing kept: no partial file, no new object, the request as it was
    assert list(service.staging.tmp.iterdir()) == []
    assert _objects(service) == before_objects
    after = service.get_request(users.alice, rid)
    assert [(f["name"], f["sha256"]) for f in after["files"]] == [
        (f["name"], f["sha256"]) for f in before["files"]]
    assert after["state"] == State.DRAFT.value
    for f in after["files"]:
        service.staging.verify(f["sha256"])

    rec = service.audit.records(event="airlock.file.quota_exceeded")
    assert len(rec) == 1 and rec[0].actor == "alice" and rec[0].outcome == "denied"
    assert rec[0].project == "cardio-los"
    assert rec[0].details["request_id"] == rid and rec[0].details["file"] == "c.txt"
    assert rec[0].details["quota_bytes"] == QUOTA and rec[0].details["used_bytes"] == 900
    assert not service.audit.records(event="airlock.permission_denied")
    assert service.audit.verify().ok


def test_a_user_at_their_quota_is_refused_before_any_byte_and_others_still_upload(
    make_service, users
):
    service = make_service(staging_quota_bytes=QUOTA)
    rid = _new(service, users.alice)
    service.add_file(users.alice, rid, "full.txt", [b"f" * QUOTA])
    body = Chunks(1, 10)
    with pytest.raises(QuotaExceeded, match="already hold 1000 bytes.*0 bytes left"):
        service.add_file(users.alice, rid, "one-more.txt", body)
    assert body.sent == 0  # refused at the pre-flight: the body was never read
    with pytest.raises(QuotaExceeded):  # a new request does not make room either
        service.add_file(users.alice, _new(service, users.alice), "x.txt", [b"x"])
    assert list(service.staging.tmp.iterdir()) == []

    # another user of the same project is not affected
    bob_rid = _new(service, users.bob)
    f = service.add_file(users.bob, bob_rid, "bob.txt", [b"b" * 900])
    assert f["size"] == 900
    assert service.staging_used(users.bob)["used"] == 900
    assert len(service.audit.records(event="airlock.file.quota_exceeded")) == 2


def test_withdrawing_a_draft_frees_the_quota_and_identical_bytes_count_once(
    make_service, users
):
    service = make_service(staging_quota_bytes=QUOTA)
    first = _new(service, users.alice)
    service.add_file(users.alice, first, "big.txt", [b"g" * 500])
    second = _new(service, users.alice)
    service.add_file(users.alice, second, "same-bytes.txt", [b"g" * 500])  # stored once
    assert service.staging_used(users.alice)["used"] == 500
    with pytest.raises(QuotaExceeded, match="already hold 500 bytes"):
        service.add_file(users.alice, second, "more.txt", [b"m" * 600])
    service.withdraw(users.alice, first)
    service.withdraw(users.alice, second)
    assert service.staging_used(users.alice)["used"] == 0
    third = _new(service, users.alice)
    assert service.add_file(users.alice, third, "more.txt", [b"m" * 600])["size"] == 600


def test_removing_or_replacing_a_draft_file_frees_its_bytes_on_disk(make_service, users):
    """Otherwise replacing a file again and again would fill the disk under the quota."""
    service = make_service(staging_quota_bytes=QUOTA)
    rid = _new(service, users.alice)
    for i in range(5):  # 5 x 600 bytes through a 1000-byte quota, under one name
        f = service.add_file(users.alice, rid, "t.txt", [str(i).encode() * 600])
    assert _objects(service) == {f["sha256"]}
    bob_rid = _new(service, users.bob)  # the same bytes in bob's request
    service.add_file(users.bob, bob_rid, "copy.txt", [b"4" * 600])
    service.remove_file(users.alice, rid, "t.txt")
    assert _objects(service) == {f["sha256"]}  # still held by bob's file
    assert service.staging_used(users.alice)["used"] == 0
    service.remove_file(users.bob, bob_rid, "copy.txt")
    assert _objects(service) == set()


def test_concurrent_uploads_cannot_pass_the_quota_together(make_service, users):
    """Both uploads start with room for one; the second to attach is refused and
    its staged object deleted."""
    service = make_service(staging_quota_bytes=QUOTA)
    rid = _new(service, users.alice)
    w1 = service.upload_writer(users.alice, rid, "one.txt")
    w2 = service.upload_writer(users.alice, rid, "two.txt")
    w1.write(b"1" * 600)
    w2.write(b"2" * 600)
    sha1, size1 = w1.commit()
    sha2, size2 = w2.commit()
    service.attach_file(users.alice, rid, "one.txt", sha1, size1)
    with pytest.raises(QuotaExceeded, match="already hold 600 bytes"):
        service.attach_file(users.alice, rid, "two.txt", sha2, size2)
    assert not service.staging.exists(sha2) and service.staging.exists(sha1)
    assert [f["name"] for f in service.get_request(users.alice, rid)["files"]] == ["one.txt"]


def test_the_quota_takes_a_size_with_a_unit_and_the_refusal_says_it_plainly(
    make_service, users
):
    from ecluse.settings.airlock import AirlockSettings

    assert AirlockSettings().staging_quota_bytes == 10 * 1024**3
    assert AirlockSettings(staging_quota_bytes="2G").staging_quota_bytes == 2 * 1024**3
    service = make_service(staging_quota_bytes="1M")
    rid = _new(service, users.alice)
    with pytest.raises(QuotaExceeded, match=r"quota is 1048576 bytes \(1\.0 MiB\)"):
        service.add_file(users.alice, rid, "big.bin", [b"z" * 4096] * 300)
