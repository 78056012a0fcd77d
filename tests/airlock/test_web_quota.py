"""Staging quotas through the real hub and proxy (issue 15, item 4).

The hub's airlock runs with ``staging_quota_bytes: 4M`` (``hubstack.ECLUSE_YAML``).
A streamed upload past the quota is answered 413 with a message naming the
quota and how to free space, and leaves no partial file in staging's temp
folder; another user still uploads.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
QUOTA = 4 * MIB


def _create(api) -> str:
    r = api.post("/requests", json={"project": "cardio-los", "title": "Big tables",
                                    "justification": "Quota test"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _chunked(total: int, piece: int = 64 * 1024):
    """A body without Content-Length: the service learns its size while streaming."""
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        sent += n
        yield b"q" * n


def _quota_error(r) -> str:
    assert r.status_code == 413, (r.status_code, r.text[:500])
    body = r.json()["error"]
    assert body["code"] == "quota_exceeded" and body["status"] == 413
    return body["message"]


def test_upload_past_the_staging_quota_is_refused_and_leaves_nothing(airlock_hub):
    quinn, bob = airlock_hub.api("quinn"), airlock_hub.api("bob")
    tmp = airlock_hub.state_dir / "airlock" / "tmp"
    rid = _create(quinn)
    r = quinn.post(f"/requests/{rid}/files", params={"filename": "first.bin"},
                   data=b"a" * (3 * MIB))
    assert r.status_code == 201, r.text

    # streamed (chunked) past the quota: refused while streaming, partial file deleted
    r = quinn.post(f"/requests/{rid}/files", params={"filename": "second.bin"},
                   data=_chunked(2 * MIB))
    msg = _quota_error(r)
    assert "second.bin" in msg and f"quota is {QUOTA} bytes (4.0 MiB)" in msg
    assert f"already hold {3 * MIB} bytes" in msg and "withdrawing a draft" in msg
    assert not [p for p in tmp.iterdir() if p.name.startswith("upload-")]
    files = quinn.get(f"/requests/{rid}").json()["files"]
    assert [(f["name"], f["size"]) for f in files] == [("first.bin", 3 * MIB)]

    # multipart past the quota: the same
    r = quinn.post(f"/requests/{rid}/files", files={"file": ("third.bin", b"c" * (2 * MIB))})
    assert "third.bin" in _quota_error(r)
    assert not [p for p in tmp.iterdir() if p.name.startswith("upload-")]

    # exactly at the quota, then refused before the body is read (Content-Length known)
    r = quinn.post(f"/requests/{rid}/files", params={"filename": "fill.bin"},
                   data=b"f" * MIB)
    assert r.status_code == 201, r.text
    for size in (10, 2 * MIB):
        r = quinn.post(f"/requests/{rid}/files", params={"filename": "more.bin"},
                       data=b"m" * size)
        assert "0 bytes left" in _quota_error(r)
    assert not [p for p in tmp.iterdir() if p.name.startswith("upload-")]
    names = [f["name"] for f in quinn.get(f"/requests/{rid}").json()["files"]]
    assert sorted(names) == ["fill.bin", "first.bin"]

    # another user of the same project still uploads
    other = _create(bob)
    r = bob.post(f"/requests/{other}/files", params={"filename": "bob.bin"},
                 data=b"b" * (2 * MIB))
    assert r.status_code == 201, r.text
    assert bob.post(f"/requests/{other}/withdraw", json={}).status_code == 200

    # withdrawing the draft frees the quota
    assert quinn.post(f"/requests/{rid}/withdraw", json={}).status_code == 200
    again = _create(quinn)
    r = quinn.post(f"/requests/{again}/files", params={"filename": "second.bin"},
                   data=_chunked(2 * MIB))
    assert r.status_code == 201, r.text
    assert quinn.post(f"/requests/{again}/withdraw", json={}).status_code == 200
