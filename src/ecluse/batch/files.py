"""File operations in ``/project/batch/<run-id>/`` that never follow a link.

They run as root — in the sandbox launcher (:mod:`ecluse.sandbox.launcher`, ops
``run_folder_*``) for a batch service of its own user, or in a batch service
running as root without a launcher — and ``/project`` is writable by
every project member (and a run folder by the notebook being run): any entry there may be
swapped for a symbolic link, a FIFO or a hard link while a run is going. So
every operation here starts from a directory file descriptor opened with
``O_NOFOLLOW`` component by component, opens files with ``O_NOFOLLOW |
O_NONBLOCK`` and checks they are regular files, writes through a fresh
``O_EXCL`` temporary name then ``rename`` (which replaces the entry, never
writes through it), and bounds every read.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..sandbox import SandboxError, UserIdentity
from ..sandbox.launcher import READ_CHUNK, LaunchRefused
from .errors import BatchError, TooLarge, Unavailable

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


# ------------------------------------------------------------------ run folders

def file_name_problem(name: Any) -> str | None:
    """Why ``name`` is not the name of a file directly in a run folder (None: it is):
    one path component, not hidden (so never ``.`` or ``..``), no NUL."""
    if not isinstance(name, str) or not name or len(name.encode()) > 255:
        return "not a file name"
    if "/" in name or "\0" in name:
        return "not a single file name (no '/' nor NUL)"
    if name.startswith("."):
        return "a hidden name (never '.' or '..')"
    return None


def shared_dir(settings: Any, project: str) -> Path:
    """The project's shared folder (``/project`` in its sandboxes) on this host."""
    return Path(settings.projects_root).resolve() / project / "shared"


def read_chunk(dir_fd: int, name: str, offset: int, length: int,
               max_size: int) -> tuple[bytes, dict[str, int]] | None:
    """``length`` bytes at ``offset`` of the regular file ``name`` of the folder, and its
    identity (``size``, ``inode``); None when it does not exist. A link, a FIFO, a
    file with several names (a hard link to something else) or one larger than
    ``max_size`` is refused."""
    problem = file_name_problem(name)
    if problem:
        raise UnsafePath(f"{name!r}: {problem}")
    try:
        fd = _open_regular(dir_fd, name)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_nlink != 1:
            raise UnsafePath(f"{name} has {st.st_nlink} names (a hard link): not read")
        if st.st_size > max_size:
            raise TooLarge(f"{name} is {st.st_size} bytes, over the limit of {max_size}")
        return os.pread(fd, length, offset), {"size": st.st_size, "inode": st.st_ino}
    finally:
        os.close(fd)


class RunFolder:
    """One run's folder, held open as a directory fd (each file opened beneath it)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def read(self, name: str, limit: int) -> bytes | None:
        """At most ``limit`` bytes of a regular file, or None when it does not exist."""
        assert self.fd is not None
        return read_file(self.fd, name, limit)

    def iter(self, name: str) -> Iterator[bytes]:
        """Its bytes in chunks (FileNotFoundError before the first when it is missing)."""
        assert self.fd is not None
        return iter_file(self.fd, name)

    def list(self) -> list[tuple[str, int]]:
        assert self.fd is not None
        return list_regular_files(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalRunFolders:
    """Run folders made and read by this process, as root: the sandbox launcher's, and
    a batch service's that runs as root without a launcher."""

    def __init__(self, settings: Any, backend: Any) -> None:
        self.settings = settings
        self.backend = backend

    def create(self, project: Any, user: UserIdentity, project_gid: int,
               run_id: str) -> RunFolder:
        """The project's folders, then a new, empty ``batch/<run-id>`` owned by ``user``
        (group: the project)."""
        self.backend.prepare_project_dirs(project, user)
        bfd = open_batch_dir(shared_dir(self.settings, project.slug), project_gid, create=True)
        try:
            return RunFolder(create_run_dir(bfd, run_id, user.uid, project_gid))
        finally:
            os.close(bfd)

    def open(self, project: str, run_id: str) -> RunFolder:
        return RunFolder(open_run_dir(shared_dir(self.settings, project), run_id))


class LauncherRunFolder:
    """A run folder read through the launcher (``run_folder_list``, ``run_folder_read``):
    a batch service of its own user has no access to project folders."""

    def __init__(self, client: Any, project: str, run_id: str) -> None:
        self.client = client
        self.where = {"project": project, "run": run_id}

    def _ask(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            return self.client.call(op, **self.where, **fields)
        except LaunchRefused as e:
            raise UnsafePath("the run folder cannot be read", log_message=e.log_message) \
                from None
        except SandboxError as e:  # the launcher is not running: try again later
            raise Unavailable("the run folder cannot be read right now (the sandbox "
                              "launcher is unavailable)", log_message=e.log_message) from None

    def _chunk(self, name: str, offset: int, length: int,
               inode: int | None = None) -> dict[str, Any] | None:
        answer = self._ask("run_folder_read", file=name, offset=offset, length=length,
                           inode=inode)
        if answer.get("missing"):
            return None
        return {"data": base64.b64decode(answer["data"]), "size": answer["size"],
                "inode": answer["inode"]}

    def read(self, name: str, limit: int) -> bytes | None:
        first = self._chunk(name, 0, min(limit, READ_CHUNK))
        if first is None:
            return None
        data, offset = first["data"], len(first["data"])
        while len(data) < min(limit, first["size"]):
            more = self._chunk(name, offset, min(limit - offset, READ_CHUNK), first["inode"])
            if not more or not more["data"]:
                break
            data += more["data"]
            offset += len(more["data"])
        return data

    def iter(self, name: str) -> Iterator[bytes]:
        first = self._chunk(name, 0, READ_CHUNK)
        if first is None:
            raise FileNotFoundError(name)

        def gen() -> Iterator[bytes]:
            assert first is not None
            chunk, offset = first["data"], 0
            while chunk:
                yield chunk
                offset += len(chunk)
                if offset >= first["size"]:
                    return
                more = self._chunk(name, offset, READ_CHUNK, first["inode"])
                chunk = more["data"] if more else b""

        return gen()

    def list(self) -> list[tuple[str, int]]:
        return [(f["name"], f["size"]) for f in self._ask("run_folder_list")["files"]]

    def close(self) -> None:
        return None

    def __enter__(self) -> LauncherRunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LauncherRunFolders:
    """Run folders made (``run_folder_create``) and read by the sandbox launcher, for a
    batch service that runs as its own user."""

    def __init__(self, settings: Any) -> None:
        # deferred: the launcher's client (only when the settings name the launcher)
        from ..sandbox.remote import LauncherSandbox

        self.client = LauncherSandbox(settings=settings, caller="batch")

    def create(self, project: Any, user: UserIdentity, project_gid: int,
               run_id: str) -> LauncherRunFolder:
        try:
            self.client.call(
                "run_folder_create", project=project.slug, project_gid=project_gid,
                run=run_id, user={"name": user.name, "uid": user.uid, "gid": user.gid})
        except SandboxError as e:
            raise BatchError("the run's folder could not be made",
                             log_message=e.log_message) from None
        return LauncherRunFolder(self.client, project.slug, run_id)

    def open(self, project: str, run_id: str) -> LauncherRunFolder:
        return LauncherRunFolder(self.client, project, run_id)


def run_folders(settings: Any, backend: Any) -> LocalRunFolders | LauncherRunFolders:
    """Through the launcher when the settings name one (``sandbox.launcher_socket``, as
    for the service's sandboxes: :func:`ecluse.sandbox.sandbox_for`), else here."""
    if settings.sandbox.launcher_socket:
        return LauncherRunFolders(settings)
    return LocalRunFolders(settings, backend)
