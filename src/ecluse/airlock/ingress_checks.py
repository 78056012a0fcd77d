"""The checks of an imported file (controlled ingress, issue 24 item 1).

Pure functions over a file in the quarantine; nothing here extracts an archive to
disk or runs what it reads. A file's **type is found by its content** (magic bytes,
structure), never by its name; its name is only used to refuse more (a script
extension in a data import). What the checks cannot judge is refused (fail closed).

* sizes: each file, and what an archive unpacks to (counted while decompressing, never
  trusted from headers), its number of members, its ratio (zip and tar bombs) and how
  deep archives nest;
* archive members: no ``..`` component, no absolute path (``/``, ``\\``, ``C:``), no
  symbolic or hard link, no device, FIFO or other special file;
* **executable content** — ELF, PE, Mach-O, Java classes, ``#!`` scripts, files named as
  scripts, notebooks with a non-empty code cell, Office files with macros (VBA), git
  bundles — refused unless the request is a *code import*.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import BinaryIO

#: kinds that carry executable content (allowed in a code import only)
EXECUTABLE_KINDS = frozenset({"elf", "pe", "macho", "java-class", "script", "notebook-code",
                              "office-macro", "git-bundle"})
#: names that say "a program" whatever their content
SCRIPT_SUFFIXES = frozenset({
    ".py", ".pyc", ".pyw", ".sh", ".bash", ".zsh", ".ksh", ".csh", ".fish", ".r", ".rmd",
    ".qmd", ".pl", ".pm", ".rb", ".php", ".js", ".mjs", ".cjs", ".ts", ".lua", ".tcl",
    ".jl", ".m", ".do", ".ado", ".sas", ".sps", ".ps1", ".psm1", ".bat", ".cmd", ".vbs",
    ".vba", ".wsf", ".exe", ".dll", ".so", ".dylib", ".run", ".jar", ".class",
    ".msi", ".scr", ".com", ".app", ".deb", ".rpm", ".whl", ".egg", ".ipynb", ".xlsm",
    ".docm", ".pptm", ".xlam", ".dotm", ".potm", ".ppsm", ".sql", ".awk", ".sed",
    ".makefile", ".mk", ".c", ".cc", ".cpp", ".h", ".go", ".rs", ".java", ".scala",
})
CHUNK = 1024 * 1024
HEAD = 8192


@dataclass(frozen=True)
class Limits:
    """The bounds of one file's check (``airlock.imports``)."""

    max_file_bytes: int = 1024**3
    max_unpacked_bytes: int = 4 * 1024**3
    max_members: int = 10_000
    max_ratio: int = 100
    max_nesting: int = 2


@dataclass
class Verdict:
    """What the checks found: the file's kind and, when refused, why (precise reasons)."""

    kind: str
    reasons: list[str] = field(default_factory=list)
    #: kinds of executable content found (inside archives too)
    executable: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.reasons


class _Budget:
    """The bytes an archive (and the archives in it) may unpack to, counted as read."""

    def __init__(self, limits: Limits, packed: int) -> None:
        self.limits = limits
        self.packed = max(packed, 1)
        self.unpacked = 0
        self.members = 0

    def spend(self, n: int, where: str) -> None:
        self.unpacked += n
        if self.unpacked > self.limits.max_unpacked_bytes:
            raise _Refuse(f"{where}: unpacks to more than {self.limits.max_unpacked_bytes} "
                          "bytes (an archive bomb, or too large to import)")
        if self.unpacked > 1024 * 1024 and self.unpacked > self.packed * self.limits.max_ratio:
            raise _Refuse(f"{where}: unpacks to more than {self.limits.max_ratio} times its "
                          "size (a compression bomb)")

    def member(self, where: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise _Refuse(f"{where}: more than {self.limits.max_members} archive members")


class _Refuse(Exception):
    """Stop checking: the file is refused for this reason."""


# ------------------------------------------------------------------ sniffing


def sniff(head: bytes) -> str:
    """The kind of a file from its first bytes (``unknown-binary`` when not recognised)."""
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head.startswith(b"MZ"):
        return "pe"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                    b"\xcf\xfa\xed\xfe"):
        return "macho"
    if head.startswith(b"\xca\xfe\xba\xbe"):
        return "java-class"
    if head.startswith((b"# v2 git bundle\n", b"# v3 git bundle\n")):
        return "git-bundle"
    if head.startswith(b"#!"):
        return "script"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole2"
    for magic, kind in ((b"%PDF-", "pdf"), (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"),
                        (b"GIF8", "gif"), (b"PAR1", "parquet"), (b"\x89HDF\r\n\x1a\n", "hdf5"),
                        (b"SQLite format 3\x00", "sqlite"), (b"ARROW1", "arrow"),
                        (b"\x93NUMPY", "npy"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
                        (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!", "rar")):
        if head.startswith(magic):
            return kind
    if head[12:32] == SAS7BDAT_MAGIC:
        return "sas7bdat"
    if head.startswith((b"X\n\x00\x00", b"RDX2\n", b"RDX3\n")):
        return "r-data"
    if head.startswith(b"\xd7\xcd\xc6\x9a") or head[40:44] == b" EMF":
        return "vector-image"
    if _is_text(head):
        return "text"
    return "unknown-binary"


SAS7BDAT_MAGIC = bytes.fromhex("c2ea8160b31411cfbd92080009c7318c181f1011")


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not a character cut at the end of the head
            try:
                text = head.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
                return False
            return all(c.isprintable() or c in "\r\n\t\f" for c in text)
    return True


#: data kinds a data import takes as they are
DATA_KINDS = frozenset({"text", "pdf", "png", "jpeg", "gif", "parquet", "hdf5", "sqlite",
                        "arrow", "npy", "tiff", "json", "notebook", "sas7bdat", "r-data",
                        "vector-image"})


class _Found(list):
    """Kinds of executable content found; ``unknown``: archive members whose type could not
    be told (refused like a file of unknown type)."""

    def __init__(self) -> None:
        super().__init__()
        self.unknown: list[str] = []


# ------------------------------------------------------------------ one file


def check_file(stream: BinaryIO, name: str, size: int, *, code: bool,
               limits: Limits | None = None) -> Verdict:
    """Check one quarantined file (``stream`` at its start). Never raises for bad input:
    a refusal is a :class:`Verdict` with reasons."""
    limits = limits or Limits()
    found = _Found()
    reasons: list[str] = []
    if size > limits.max_file_bytes:
        return Verdict("too-large", [f"{name}: {size} bytes, more than the "
                                     f"{limits.max_file_bytes} bytes a file may have"])
    try:
        kind = _check(stream, name, size, found, _Budget(limits, size), limits, depth=0)
    except _Refuse as e:
        return Verdict("refused", [str(e)], found)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, OSError,
            EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        return Verdict("unreadable", [f"{name}: cannot be read as what its content says "
                                      f"it is ({type(e).__name__}: {e}): refused"], found)
    if kind == "unknown-binary":
        reasons.append(f"{name}: its type cannot be told from its content (not a known "
                       "data format): refused")
    if found.unknown:
        shown = ", ".join(found.unknown[:5]) + (" …" if len(found.unknown) > 5 else "")
        reasons.append(f"{name}: members whose type cannot be told from their content "
                       f"({shown}): refused")
    if kind in ("7z", "rar"):
        reasons.append(f"{name}: {kind} archives cannot be checked here: import a zip or "
                       "a tar archive instead")
    if found and not code:
        reasons.append(f"{name}: executable content ({', '.join(sorted(set(found)))}) in a "
                       "data import: only a request marked as a code import may bring it in")
    return Verdict(kind, reasons, found)


def _check(stream: BinaryIO, name: str, size: int, found: _Found, budget: _Budget,
           limits: Limits, *, depth: int, by_name: bool = True) -> str:
    head = stream.read(HEAD)
    stream.seek(0)
    kind = sniff(head)
    if kind in EXECUTABLE_KINDS:
        found.append(kind)
    if by_name and PurePosixPath(name.lower()).suffix in SCRIPT_SUFFIXES:
        found.append("script-name")
    if kind in ("zip", "tar", "gzip", "bzip2", "xz") and depth >= limits.max_nesting:
        raise _Refuse(f"{name}: archives nested more than {limits.max_nesting} deep")
    if kind == "zip":
        return _zip(stream, name, found, budget, limits, depth)
    if kind in ("tar", "gzip", "bzip2", "xz"):
        return _tar_or_stream(stream, name, kind, found, budget, limits, depth)
    if kind == "ole2" and _has_vba_ole(stream):
        found.append("office-macro")
    if kind == "text":
        kind = _text_kind(stream, name, size, found)
    return kind


def _text_kind(stream: BinaryIO, name: str, size: int, found: _Found) -> str:
    """JSON notebooks with code are executable; other text is data."""
    if size > 64 * 1024 * 1024:
        return "text"
    head = stream.read(64).lstrip()
    stream.seek(0)
    if not head.startswith(b"{"):
        return "text"
    try:
        doc = json.loads(stream.read())
    except (ValueError, UnicodeDecodeError):
        return "text"
    finally:
        stream.seek(0)
    if isinstance(doc, dict) and "nbformat" in doc and isinstance(doc.get("cells"), list):
        for cell in doc["cells"]:
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                src = cell.get("source")
                text = "".join(src) if isinstance(src, list) else str(src or "")
                if text.strip():
                    found.append("notebook-code")
                    return "notebook"
        return "notebook"
    return "json"


def _has_vba_ole(stream: BinaryIO) -> bool:
    """An OLE2 (legacy Office) file with a VBA project: its directory names it."""
    data = stream.read(64 * 1024 * 1024)
    stream.seek(0)
    return any(n.encode("utf-16-le") in data for n in ("_VBA_PROJECT", "VBA", "Macros"))


def _member_name(name: str, where: str) -> str:
    """Refuse absolute paths and ``..`` in an archive member's name."""
    if not name or "\x00" in name:
        raise _Refuse(f"{where}: a member has an empty or NUL name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise _Refuse(f"{where}: member {name!r} has an absolute path")
    if ".." in norm.split("/"):
        raise _Refuse(f"{where}: member {name!r} climbs out of the archive ('..')")
    return norm


#: kinds whose check needs more than their first bytes (kept up to ``NESTED_CAP``)
LOOK_INSIDE = frozenset({"zip", "tar", "gzip", "bzip2", "xz", "ole2"})


def _read_member(fh: BinaryIO, where: str, budget: _Budget, cap: int) -> tuple[bytes, bool]:
    """Read a member to its end (counting every byte against the budget); keep what its
    check needs: up to ``cap`` bytes of an archive, an OLE2 file or JSON text, else its
    first bytes. Returns (kept, whether that is all of it)."""
    kept = bytearray()
    keep = cap
    total = 0
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return bytes(kept), total == len(kept)
        budget.spend(len(chunk), where)
        if total == 0:
            first = chunk[:HEAD]
            if sniff(first) not in LOOK_INSIDE and not first.lstrip().startswith(b"{"):
                keep = HEAD
        total += len(chunk)
        if len(kept) < keep:
            kept.extend(chunk[: keep - len(kept)])


def _inner(data: bytes, full: bool, name: str, where: str, found: _Found,
           budget: _Budget, limits: Limits, depth: int, *, office: bool = False) -> None:
    """Check a member's content (what was kept of it)."""
    stream = io.BytesIO(data)
    kind = sniff(data[:HEAD])
    if kind in LOOK_INSIDE and not full:
        raise _Refuse(f"{where}: a nested archive or OLE2 file too large to check")
    # an Office file's parts are named by its format (printerSettings1.bin): content only
    kind = _check(stream, name, len(data), found, budget, limits, depth=depth + 1,
                  by_name=not office)
    if kind in ("unknown-binary", "7z", "rar") and not office:
        # an Office file's own parts (printer settings, embedded fonts) are not data
        found.unknown.append(where.split(": ", 1)[-1])


NESTED_CAP = 256 * 1024 * 1024


def _zip(stream: BinaryIO, name: str, found: _Found, budget: _Budget, limits: Limits,
         depth: int) -> str:
    kind = "zip"
    with zipfile.ZipFile(stream) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        if "[Content_Types].xml" in names:
            kind = "office"
            if any(PurePosixPath(n).name.lower() == "vbaproject.bin" for n in names):
                found.append("office-macro")
        for info in infos:
            where = f"{name}: {info.filename}"
            budget.member(name)
            _member_name(info.filename, name)
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (
                    0, stat.S_IFREG, stat.S_IFDIR):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                raise _Refuse(f"{name}: member {info.filename!r} is {what}")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise _Refuse(f"{where}: encrypted members cannot be checked")
            with zf.open(info) as fh:
                data, full = _read_member(fh, where, budget, NESTED_CAP)
            _inner(data, full, info.filename, where, found, budget, limits, depth,
                   office=kind == "office")
    return kind


class _Counting(io.RawIOBase):
    """A decompressing stream that counts what it yields against the budget."""

    def __init__(self, raw: BinaryIO, where: str, budget: _Budget) -> None:
        self.raw, self.where, self.budget = raw, where, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.raw.read(len(b))
        self.budget.spend(len(data), self.where)
        b[: len(data)] = data
        return len(data)


def _tar_or_stream(stream: BinaryIO, name: str, kind: str, found: _Found, budget: _Budget,
                   limits: Limits, depth: int) -> str:
    opener = {"gzip": lambda s: __import__("gzip").GzipFile(fileobj=s),
              "bzip2": lambda s: bz2.BZ2File(s), "xz": lambda s: lzma.LZMAFile(s),
              "tar": lambda s: s}[kind]
    raw = opener(stream)
    plain: BinaryIO = (io.BufferedReader(_Counting(raw, name, budget), CHUNK)
                       if kind != "tar" else raw)
    head = plain.peek(HEAD)[:HEAD] if isinstance(plain, io.BufferedReader) else plain.read(HEAD)
    if kind == "tar":
        stream.seek(0)
    if not (len(head) > 262 and head[257:262] == b"ustar") and not _tar_v7(head):
        # one compressed file, not a tar: check what it holds
        data, full = _read_member(plain, name, _Free(), NESTED_CAP)  # counted underneath
        _inner(data, full, name.rsplit(".", 1)[0], name, found, budget, limits, depth)
        return kind
    with tarfile.open(fileobj=plain, mode="r|") as tf:
        for member in tf:
            where = f"{name}: {member.name}"
            budget.member(name)
            _member_name(member.name, name)
            if member.issym() or member.islnk():
                raise _Refuse(f"{name}: member {member.name!r} is a link "
                              f"(to {member.linkname!r})")
            if member.isdir():
                continue
            if not member.isreg():
                raise _Refuse(f"{name}: member {member.name!r} is a special file")
            fh = tf.extractfile(member)
            if fh is None:  # pragma: no cover - regular members always have content
                continue
            data, full = _read_member(fh, where, budget if kind == "tar" else _Free(),
                                      NESTED_CAP)
            _inner(data, full, member.name, where, found, budget, limits, depth)
    return "tar" if kind == "tar" else f"tar+{kind}"


def _tar_v7(head: bytes) -> bool:
    return False  # only POSIX (ustar) archives are read: old v7 tars are refused as binary


class _Free(_Budget):
    """Bytes already counted by the decompressing stream underneath."""

    def __init__(self) -> None:  # noqa: D107 - nothing to bound twice
        self.unpacked = 0
        self.members = 0

    def spend(self, n: int, where: str) -> None:
        return None
