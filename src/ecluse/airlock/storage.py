"""Content-addressed staging area and filename rules.

Uploaded files are written once to ``<root>/objects/ab/cd/<sha256>`` (mode
0400, directories 0700) and never modified: two requests exporting the same
bytes share one object. The staging root must live outside every workspace
mount; the service refuses to start when it is world-accessible.
:meth:`Staging.verify` re-hashes an object before it is released.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import IntegrityFailure, InvalidInput, NotFound, TooLarge

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME_BYTES = 255
CHUNK = 1024 * 1024
_RESERVED = {
    "CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def clean_filename(name: object) -> str:
    """Validate a file's display name; return it NFC-normalised.

    Names are a single path component: no separators, no ``.``/``..``, no
    control characters (NUL included), at most 255 UTF-8 bytes. Bad names are
    refused with a precise message rather than silently rewritten, so the
    researcher knows what was exported under which name.
    """
    if not isinstance(name, str):
        raise InvalidInput("filename: expected a string")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InvalidInput("filename: must not be empty")
    if "\x00" in name:
        raise InvalidInput("filename: must not contain a NUL character")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput("filename: must not contain control or invisible characters")
    if "/" in name or "\\" in name:
        raise InvalidInput(
            f"filename: must be a plain file name without '/' or '\\' (got {_short(name)})"
        )
    if name in (".", "..") or name.strip(". ") == "":
        raise InvalidInput(f"filename: {_short(name)} is not a file name")
    if name != name.strip():
        raise InvalidInput("filename: must not start or end with spaces")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidInput(
            f"filename: at most {MAX_NAME_BYTES} bytes in UTF-8 "
            f"(got {len(name.encode('utf-8'))})"
        )
    if name.split(".")[0].upper() in _RESERVED:
        raise InvalidInput(f"filename: {_short(name)} is a reserved device name")
    return name


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:37] + "...")


class Staging:
    """The immutable, content-addressed file store of one airlock."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Create the folders (0700) and refuse a root others can read."""
        for d in (self.root, self.objects, self.tmp):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if mode & 0o077:
            os.chmod(self.root, 0o700)

    def sweep(self) -> list[dict[str, object]]:
        """Remove what the temporary folder holds (partial uploads, check and preview
        work folders of an instance that was killed); at start only, when no upload
        is under way. Returns each entry removed with its size in bytes."""
        removed: list[dict[str, object]] = []
        if not self.tmp.is_dir():
            return removed
        for entry in sorted(self.tmp.iterdir()):
            size = 0
            if entry.is_dir() and not entry.is_symlink():
                for dirpath, _dirs, files in os.walk(entry):
                    for f in files:
                        with contextlib.suppress(OSError):
                            size += os.lstat(os.path.join(dirpath, f)).st_size
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    size = entry.lstat().st_size
                entry.unlink(missing_ok=True)
            removed.append({"name": entry.name, "bytes": size})
        return removed

    def path_for(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256 or ""):
            raise InvalidInput("sha256: expected 64 lower-case hex digits")
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int, room: int | None = None,
        over_room: Callable[[int], Exception] | None = None,
    ) -> tuple[str, int]:
        """Store the bytes of ``chunks``; return ``(sha256, size)``.

        Raises :class:`TooLarge` (and keeps nothing) past ``max_bytes``, and
        ``over_room(size)`` past ``room`` (a staging quota).
        """
        return self.writer(max_bytes=max_bytes, room=room, over_room=over_room).write_all(chunks)

    def writer(
        self, *, max_bytes: int, room: int | None = None,
        over_room: Callable[[int], Exception] | None = None,
    ) -> StagingWriter:
        self.prepare()
        return StagingWriter(self, max_bytes, room=room, over_room=over_room)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path_for(sha256), "rb")
        except FileNotFoundError:
            raise NotFound(
                "the staged copy of this file is missing", log_message=f"missing object {sha256}"
            ) from None

    def iter_bytes(self, sha256: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(sha256) as fh:
            while block := fh.read(chunk):
                yield block

    def delete(self, sha256: str) -> bool:
        """Remove a staged object (purge); ``False`` when it was already gone."""
        path = self.path_for(sha256)
        try:
            path.unlink()  # folders stay: an upload may be renaming into them
        except FileNotFoundError:
            return False
        return True

    def hash_of(self, sha256: str) -> str:
        h = hashlib.sha256()
        for block in self.iter_bytes(sha256):
            h.update(block)
        return h.hexdigest()

    def verify(self, sha256: str, *, name: str = "") -> None:
        """Re-hash a staged object; raise :class:`IntegrityFailure` when it changed."""
        try:
            actual = self.hash_of(sha256)
        except NotFound:
            raise IntegrityFailure(
                f"file {name or sha256[:12]}: the staged copy is missing; release refused",
                log_message=f"staged object {sha256} missing",
            ) from None
        if actual != sha256:
            raise IntegrityFailure(
                f"file {name or sha256[:12]}: the staged copy no longer matches its sha256; "
                "release refused",
                log_message=f"staged object {sha256} now hashes to {actual}",
            )


class StagingWriter:
    """Incremental writer used by streamed uploads: write(), then commit() or abort().

    Past ``max_bytes`` it raises :class:`TooLarge`; past ``room`` (what is left
    of the uploader's staging quota) the exception ``over_room(size)`` returns.
    Either way the temporary file is deleted first: nothing of it is kept.
    """

    def __init__(
        self, staging: Staging, max_bytes: int, *, room: int | None = None,
        over_room: Callable[[int], Exception] | None = None,
    ) -> None:
        self.staging = staging
        self.max_bytes = max_bytes
        self.room = room
        self.over_room = over_room
        fd, name = tempfile.mkstemp(dir=staging.tmp, prefix="upload-")
        self._fh = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.abort()
            raise TooLarge(f"file: larger than the limit of {self.max_bytes} bytes")
        if self.room is not None and self.size > self.room:
            self.abort()
            if self.over_room is not None:
                raise self.over_room(self.size)
            raise TooLarge(f"file: larger than the {self.room} bytes left in staging")
        self._hash.update(data)
        self._fh.write(data)

    def commit(self) -> tuple[str, int]:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self.closed = True
        digest = self._hash.hexdigest()
        target = self.staging.path_for(digest)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # always (re)place: the bytes just hashed are authoritative, and an existing
        # object that was tampered with is repaired rather than trusted
        os.chmod(self._tmp, 0o400)
        os.replace(self._tmp, target)
        return digest, self.size

    def write_all(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Write every chunk and commit; on any error keep nothing and re-raise."""
        try:
            for chunk in chunks:
                self.write(chunk)
        except BaseException:
            self.abort()
            raise
        return self.commit()

    def abort(self) -> None:
        if not self.closed:
            self._fh.close()
            self.closed = True
        self._tmp.unlink(missing_ok=True)
