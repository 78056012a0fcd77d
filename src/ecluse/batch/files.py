"""Root-side file operations in ``/project/batch/<run-id>/`` that never follow a link.

The service runs as root on the hub host, but ``/project`` is writable by
every project member (and a run folder by the notebook being run): any entry there may be
swapped for a symbolic link, a FIFO or a hard link while a run is going. So
every operation here starts from a directory file descriptor opened with
``O_NOFOLLOW`` component by component, opens files with ``O_NOFOLLOW |
O_NONBLOCK`` and checks they are regular files, writes through a fresh
``O_EXCL`` temporary name then ``rename`` (which replaces the entry, never
writes through it), and bounds every read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import BatchError

BATCH_DIR = "batch"
RUN_DIR_MODE = 0o2750
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(BatchError):
    """An entry of the run folder is not what the service created (link, FIFO...)."""

    status = 409
    code = "unsafe_path"


def _open_dir(name: str, dir_fd: int | None = None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except (NotADirectoryError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UnsafePath(f"{name} is not a plain folder", log_message=f"{name}: {e}") from None


def open_batch_dir(shared: Path, project_gid: int, *, create: bool) -> int:
    """``<shared>/batch`` as a directory fd: ``root:<project gid>``, mode ``3770``.

    The sticky bit keeps members from renaming or deleting other people's runs.
    """
    sfd = _open_dir(str(shared))
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(BATCH_DIR, 0o700, dir_fd=sfd)
        fd = _open_dir(BATCH_DIR, sfd)
    finally:
        os.close(sfd)
    st = os.fstat(fd)
    if st.st_uid != 0:
        os.close(fd)
        raise UnsafePath("the project's batch folder is not owned by the service",
                         log_message=f"{shared}/batch: owner {st.st_uid}")
    if create:
        os.fchown(fd, 0, project_gid)
        os.fchmod(fd, 0o3770)
    return fd


def create_run_dir(batch_fd: int, run_id: str, uid: int, gid: int) -> int:
    """A new ``batch/<run-id>`` owned by the run's identity, group the project, ``2750``.

    Members of the project read the run's outputs; only the run's identity
    writes there (other members cannot add, replace or remove its files).
    """
    os.mkdir(run_id, 0o700, dir_fd=batch_fd)  # FileExistsError: never reuse a folder
    fd = _open_dir(run_id, batch_fd)
    os.fchown(fd, uid, gid)
    os.fchmod(fd, RUN_DIR_MODE)
    return fd


def open_run_dir(shared: Path, run_id: str) -> int:
    """An existing run folder as a directory fd (no link followed on the way)."""
    try:
        sfd = _open_dir(str(shared))
        try:
            bfd = _open_dir(BATCH_DIR, sfd)
        finally:
            os.close(sfd)
        try:
            return _open_dir(run_id, bfd)
        finally:
            os.close(bfd)
    except FileNotFoundError:
        raise UnsafePath("the run's folder is gone") from None


def write_file(dir_fd: int, name: str, data: bytes, uid: int, gid: int,
               mode: int = 0o660) -> None:
    """Write ``name`` atomically (temporary ``O_EXCL`` file, then rename over it)."""
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _open_regular(dir_fd: int, name: str) -> int:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symbolic link
        raise UnsafePath(f"{name} is not a regular file", log_message=f"{name}: {e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{name} is not a regular file")
    return fd


def read_file(dir_fd: int, name: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of a regular file, or None when it does not exist."""
    try:
        fd = _open_regular(dir_fd, name)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def iter_file(dir_fd: int, name: str, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """The bytes of a regular file, in chunks (opened safely before the first chunk)."""
    fd = _open_regular(dir_fd, name)

    def gen() -> Iterator[bytes]:
        with os.fdopen(fd, "rb") as fh:
            while True:
                data = fh.read(chunk)
                if not data:
                    return
                yield data

    return gen()


def list_regular_files(dir_fd: int) -> list[tuple[str, int]]:
    """(name, size) of the regular files directly in the folder, sorted (no links)."""
    out = []
    for name in os.listdir(dir_fd):
        if name.startswith("."):
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            out.append((name, st.st_size))
    return sorted(out)
