"""Filename rules and the content-addressed staging area."""

from __future__ import annotations

import hashlib
import os

import pytest

from ecluse.airlock.errors import IntegrityFailure, InvalidInput, TooLarge
from ecluse.airlock.storage import Staging, clean_filename


@pytest.mark.parametrize(
    "name, message",
    [
        ("../../x", "without '/'"),
        ("a/b.csv", "without '/'"),
        ("..\\x.csv", "without '/'"),
        ("..", "is not a file name"),
        (".", "is not a file name"),
        ("", "must not be empty"),
        ("a\x00.csv", "NUL"),
        ("a\n.csv", "control"),
        ("a\u202e.csv", "control or invisible"),
        (" a.csv", "spaces"),
        ("x" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
        ("CON.csv", "reserved"),
        (b"a.csv", "expected a string"),
        (None, "expected a string"),
    ],
)
def test_bad_filenames_are_refused_with_a_precise_message(name, message):
    with pytest.raises(InvalidInput) as e:
        clean_filename(name)
    assert message in e.value.message
    assert e.value.status == 400


@pytest.mark.parametrize("name", ["table 1.csv", "résultats.xlsx", "a..b.csv", ".hidden", "x" * 255])
def test_good_filenames_are_kept(name):
    assert clean_filename(name) == name


def test_put_stream_stores_by_sha256_read_only(tmp_path):
    st = Staging(tmp_path / "s")
    sha, size = st.put_stream([b"abc", b"def"], max_bytes=100)
    assert sha == hashlib.sha256(b"abcdef").hexdigest() and size == 6
    path = st.path_for(sha)
    assert path.read_bytes() == b"abcdef"
    assert oct(path.stat().st_mode & 0o777) == oct(0o400)
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == oct(0o700)
    assert st.put_stream([b"abcdef"], max_bytes=100) == (sha, 6)  # deduplicated
    st.verify(sha)


def test_too_large_keeps_nothing(tmp_path):
    st = Staging(tmp_path / "s")
    with pytest.raises(TooLarge):
        st.put_stream([b"x" * 60, b"x" * 60], max_bytes=100)
    assert list(st.tmp.iterdir()) == []
    assert list(st.objects.iterdir()) == []


def test_verify_catches_a_swapped_object(tmp_path):
    st = Staging(tmp_path / "s")
    sha, _ = st.put_stream([b"safe"], max_bytes=100)
    path = st.path_for(sha)
    os.chmod(path, 0o600)
    path.write_bytes(b"row-level data")
    with pytest.raises(IntegrityFailure) as e:
        st.verify(sha, name="t.csv")
    assert "no longer matches" in e.value.message
    path.unlink()
    with pytest.raises(IntegrityFailure, match="missing"):
        st.verify(sha, name="t.csv")


def test_path_for_refuses_non_hashes(tmp_path):
    with pytest.raises(InvalidInput):
        Staging(tmp_path).path_for("../../etc/passwd")
