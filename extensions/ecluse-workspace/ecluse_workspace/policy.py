"""What may be read in the browser, and what may be sent to the airlock.

Pure functions over the file system, shared by the export guard
(:mod:`ecluse_workspace.guard`) and the export API
(:mod:`ecluse_workspace.export`). Every refusal is a :class:`Refused` with an
HTTP status, a machine-readable ``code`` and a message the researcher may see.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import content

AIRLOCK_HINT = (
    "Files leave an Écluse workspace only through the airlock: right-click the file "
    "in the file browser and choose “Request export…”."
)

#: extensions of data files: never shown in the browser, whatever their size
DATA_EXTENSIONS = frozenset(
    ".csv .tsv .tab .txt.gz .csv.gz .gz .bz2 .xz .zst .zip .tar .7z .parquet .pq .feather "
    ".arrow .ipc .orc .avro .xlsx .xlsm .xls .ods .json .jsonl .ndjson .nc .nc4 .cdf .h5 "
    ".hdf5 .hdf .zarr .sas7bdat .xpt .dta .sav .por .rds .rdata .rda .pkl .pickle .joblib "
    ".npy .npz .mat .db .sqlite .sqlite3 .duckdb .dbf .sql.gz .dat .bin .fst .qs".split()
)

#: binary formats JupyterLab renders itself (figures): shown when small
IMAGE_EXTENSIONS = frozenset(".png .jpg .jpeg .gif .webp .bmp .svg".split())


class Refused(Exception):
    """A refused read or export: ``str(e)`` is safe to show the researcher."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _suffix(name: str) -> str:
    lower = name.lower()
    parts = PurePosixPath(lower).suffixes
    if len(parts) >= 2 and "".join(parts[-2:]) in DATA_EXTENSIONS:
        return "".join(parts[-2:])
    return PurePosixPath(lower).suffix


@dataclass
class ReadPolicy:
    """Which files the contents API may return to the browser.

    Notebooks, code and text open and save normally. Data files (by
    extension), binary files other than small images, and anything over the
    size limits are refused: they go through the airlock.
    """

    max_text_bytes: int = 2 * 1024 * 1024
    max_notebook_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 4 * 1024 * 1024
    data_extensions: frozenset[str] = field(default_factory=lambda: DATA_EXTENSIONS)

    def check(self, os_path: str, *, requested_format: str | None = None) -> None:
        """Raise :class:`Refused` unless the file at ``os_path`` may be shown."""
        try:
            st = os.stat(os_path)
        except OSError:
            return  # missing: the contents API answers 404 itself
        if stat.S_ISDIR(st.st_mode):
            return
        name = os.path.basename(os_path)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(403, "special_file", f"{name} is not a regular file. {AIRLOCK_HINT}")
        ext = _suffix(name)
        if ext in self.data_extensions:
            raise Refused(
                403, "data_file",
                f"{name} is a data file: it cannot be opened or downloaded in the browser. "
                f"Analyse it in a notebook. {AIRLOCK_HINT}",
            )
        # then what the bytes are, whatever the name (content.py, docs/threat-model.md)
        try:
            with open(os_path, "rb", opener=_nonblocking) as fh:
                head = fh.read(content.HEAD_BYTES)
        except OSError as e:
            raise Refused(403, "unreadable",
                          f"{name} cannot be read ({e.strerror}). {AIRLOCK_HINT}") from None
        limits = content.Limits(max_text_bytes=self.max_text_bytes,
                                max_notebook_bytes=self.max_notebook_bytes,
                                max_image_bytes=self.max_image_bytes)
        try:
            kind = content.check_bytes(head, name, limits, complete=st.st_size <= len(head),
                                       size=st.st_size)
        except content.ContentRefused as e:
            raise Refused(403, e.code, f"{e.message} {AIRLOCK_HINT}") from None
        if requested_format == "base64" and kind.kind != "image":
            raise Refused(
                403, "binary_file",
                f"{name} can only be opened as text in the browser. {AIRLOCK_HINT}",
            )


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


# --------------------------------------------------------------------------- export


@dataclass
class ExportLimits:
    max_files: int = 20
    max_file_bytes: int = 256 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024


@dataclass
class ExportFile:
    """A file accepted for export: an open descriptor and what was checked."""

    path: str  # as the user gave it
    real_path: str
    name: str
    size: int
    fd: int

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _within(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def open_for_export(
    path: str, *, root_dir: str, allowed_roots: Iterable[str], limits: ExportLimits
) -> ExportFile:
    """Check one path of an export request and open it.

    ``path`` is a contents path (relative to the server's ``root_dir``) or an
    absolute path. It must resolve, symlinks followed, inside one of
    ``allowed_roots`` (``/project``, the user's home) and be a regular file
    within the size limit. The file is opened without following a last
    symlink and without blocking (FIFOs), and what was opened is checked
    again through its descriptor, so a path swapped after the check is caught.
    """
    if not isinstance(path, str) or not path.strip():
        raise Refused(400, "invalid_path", "Every path must be a non-empty string.")
    if "\0" in path:
        raise Refused(400, "invalid_path", "A path may not contain a NUL character.")
    roots = [os.path.realpath(r) for r in allowed_roots]
    joined = path if path.startswith("/") else os.path.join(root_dir, path)
    shown = path
    real = os.path.realpath(joined)
    if not _within(real, roots):
        raise Refused(
            403, "outside_workspace",
            f"{shown}: only files under /project or your home folder can be exported "
            f"(symbolic links are followed: this one leads elsewhere).",
        )
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise Refused(404, "not_found", f"{shown}: no such file.") from None
    except OSError as e:
        raise Refused(403, "unreadable", f"{shown}: cannot be read ({e.strerror}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise Refused(400, "not_a_file", f"{shown} is a folder: choose the files inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise Refused(400, "special_file",
                      f"{shown} is not a regular file (a pipe, device or socket).")
    if st.st_size > limits.max_file_bytes:
        raise Refused(413, "too_large",
                      f"{shown} is larger than the export limit of "
                      f"{limits.max_file_bytes // 2**20} MiB.")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise Refused(403, "unreadable", f"{shown}: cannot be read ({e.strerror}).") from None
    try:
        fst = os.fstat(fd)
        opened = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else real
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not _within(opened, roots):
            raise Refused(409, "changed", f"{shown} changed while it was being checked.")
        if not stat.S_ISREG(fst.st_mode):
            raise Refused(400, "special_file", f"{shown} is not a regular file.")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return ExportFile(path=path, real_path=real, name=os.path.basename(real),
                      size=fst.st_size, fd=fd)


def open_all_for_export(
    paths: list[str], *, root_dir: str, allowed_roots: Iterable[str], limits: ExportLimits
) -> list[ExportFile]:
    """Check every path of a request (all or nothing)."""
    if not isinstance(paths, list) or not paths:
        raise Refused(400, "no_files", "Choose at least one file to export.")
    if len(paths) > limits.max_files:
        raise Refused(400, "too_many_files",
                      f"At most {limits.max_files} files per export request.")
    opened: list[ExportFile] = []
    try:
        for p in paths:
            f = open_for_export(p, root_dir=root_dir, allowed_roots=allowed_roots,
                                limits=limits)
            opened.append(f)
            if sum(o.name == f.name for o in opened) > 1:
                raise Refused(400, "duplicate_name",
                              f"Two files are named {f.name}: the airlock keeps files by "
                              f"name, rename one of them.")
        total = sum(f.size for f in opened)
        if total > limits.max_total_bytes:
            raise Refused(413, "too_large",
                          f"The files add up to more than {limits.max_total_bytes // 2**20} "
                          f"MiB: split the export.")
    except BaseException:
        for f in opened:
            f.close()
        raise
    return opened


def home_and_project(home: str | None = None) -> list[str]:
    """The default export roots: ``/project`` and the user's home."""
    return ["/project", str(Path(home or os.environ.get("HOME") or "/nonexistent"))]
