"""The state's databases on a filesystem of their own.

Projects, airlock staging and the state directory usually share one disk. A
project filling it must not stop sign-in (the hub database) or the audit log
(whose writes fail closed, and sign-in with them). ``state_volume.mode``:

* ``image`` (embedded stack) — ``<state_dir>/db.ext4``, an ext4 image of
  ``state_volume.size`` bytes whose blocks are reserved when it is created
  (``fallocate``), is loop-mounted ``nosuid,nodev`` on ``<state_dir>/db`` by
  ``ecluse up`` and unmounted when it stops. With the default file sink, the
  audit checkpoints (outside the state directory) get a small image of their
  own the same way: ``<checkpoint dir>.ext4`` on ``<checkpoint dir>``.
* ``mounted`` (Ansible, production) — the operator mounts a filesystem of its
  own (a disk, an LVM volume) on ``<state_dir>/db``; nothing starts until it is.
* ``none`` — the databases stay in the state directory itself.

The databases — hub (``jupyterhub.sqlite``), audit (``audit.sqlite`` and its
``audit.jsonl`` mirror), airlock and batch queue — live in
:func:`database_dir`; a database given by URL (PostgreSQL) is not moved.

Why an image mounted on a sub-folder, not the whole state directory: the
state directory also holds the project folders (by default), the airlock
staging area and batch records, which are data, not state. Reserved blocks
make the image a true reservation: a full host disk cannot take them back.

Robustness: preparing is idempotent and locked (``make up`` run twice, or
again after a crash, finds the volume mounted and uses it); a folder that
holds files is never mounted over; databases of an earlier layout (in the
state directory itself) are copied into the volume — each file written
beside its final name, synced, renamed — and the originals kept aside in
``<state_dir>/pre-volume/``, so an interrupted migration resumes and loses
nothing. Stopping unmounts only what nothing holds open any more.
"""

from __future__ import annotations

import errno
import filecmp
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .auditkeys import default_checkpoint_file
from .config import AUDIT_DB, AUDIT_JSONL, HUB_DB, ConfigError, sqlite_url
from .sandbox.base import SandboxError
from .sandbox.quota import adopt_folder, existing_parent, locked, mount_image, prepare_image
from .settings.airlock import DB_NAME as AIRLOCK_DB_NAME
from .settings.airlock import airlock_settings
from .settings.batch import DB_NAME as BATCH_DB_NAME
from .settings.batch import batch_settings

log = logging.getLogger(__name__)

VOLUME_DIR = "db"
ASIDE_DIR = "pre-volume"
IMAGE_SUFFIX = ".ext4"
#: files that travel with an SQLite database
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


class StateVolumeError(ConfigError):
    """The state volume is missing, unmounted or could not be prepared."""


def volume_dir(settings: Any) -> Path:
    return Path(settings.state_dir) / VOLUME_DIR


def image_file(settings: Any) -> Path:
    return Path(settings.state_dir) / (VOLUME_DIR + IMAGE_SUFFIX)


def database_dir(settings: Any) -> Path:
    """Where the state's databases live; raises :class:`StateVolumeError` rather than
    let a database be created on the shared disk (or under an unmounted volume)."""
    state = Path(settings.state_dir)
    mode = settings.state_volume.mode
    if mode == "none":
        if os.path.exists(image_file(settings)):  # False where we may not look (a service user)
            raise StateVolumeError(
                f"state_volume.mode is 'none' but {image_file(settings)} holds the state's "
                "databases: set state_volume.mode: image (or move them out first, "
                "docs/operations.md \"The state's own filesystem\")")
        return state
    target = volume_dir(settings)
    if not os.path.ismount(target):
        how = ("start the stack (`ecluse up`) or mount it: "
               f"mount -o {'loop,nosuid,nodev'} {image_file(settings)} {target}"
               if mode == "image" else "mount the state's own filesystem there")
        raise StateVolumeError(
            f"the state volume {target} is not mounted (state_volume.mode: {mode}): {how}")
    return target


def checkpoint_volume(settings: Any) -> tuple[Path, Path] | None:
    """(image, mount point) of the audit checkpoints' own volume, or None.

    Only for the image mode with the file sink at its default place (a
    directory of its own next to the state directory); a checkpoint file
    set by the operator, or syslog, is the operator's to provision.
    """
    audit = settings.audit
    if settings.state_volume.mode != "image" or audit.checkpoint_sink != "file":
        return None
    default = default_checkpoint_file(settings.state_dir)
    if audit.checkpoint_file is not None and Path(audit.checkpoint_file) != default:
        return None
    mountpoint = default.parent
    return mountpoint.with_name(mountpoint.name + IMAGE_SUFFIX), mountpoint


def _mount_volume(image: Path, target: Path, size: int, what: str, *, adopt: bool) -> bool:
    """Create (or grow) ``image`` and mount it on ``target``; False if already mounted.

    Files already in ``target`` are copied into the volume (``adopt``, the
    originals kept aside) or refused.
    """
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(image.with_suffix(".lock")):
        if os.path.ismount(target):
            return False
        if any(target.iterdir()) and not adopt:
            raise StateVolumeError(
                f"{target} holds files but is not mounted: {what} is not mounted over them. "
                "Move them into the volume (mount it elsewhere first) or aside, then start again")
        try:
            prepare_image(image, size, "preallocated", what=what)
            if any(target.iterdir()):
                adopt_folder(image, target, what=what)
            mount_image(image, target, what=what)
        except SandboxError as e:
            raise StateVolumeError(f"{e}: {e.log_message}") from None
        os.chmod(target, 0o700)
        return True


def ensure_state_volume(settings: Any) -> list[Path]:
    """Make the state volume ready (idempotent); return the mount points this call mounted.

    ``image``: create, grow and mount the images; ``mounted``: check the
    operator's mount. Then move databases of an earlier layout into it.
    """
    mode = settings.state_volume.mode
    if mode == "none":
        database_dir(settings)  # refuses when an image holds the databases
        return []
    state = Path(settings.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    mounted: list[Path] = []
    if mode == "image":
        if _mount_volume(image_file(settings), volume_dir(settings), settings.state_volume.size,
                         "the state volume", adopt=False):
            mounted.append(volume_dir(settings))
        cp = checkpoint_volume(settings)
        if cp:
            if _mount_volume(*cp, settings.state_volume.checkpoint_size,
                             "the audit checkpoints' volume", adopt=True):
                mounted.append(cp[1])
    target = database_dir(settings)
    os.chmod(target, 0o700)
    projects = existing_parent(Path(settings.projects_root))
    if os.stat(target).st_dev == os.stat(projects).st_dev:
        raise StateVolumeError(
            f"the state volume {target} is on the same filesystem as the project folders "
            f"{settings.projects_root}: a full project would stop sign-in and the audit log")
    migrate_databases(settings)
    return mounted


def state_files(settings: Any, directory: Path) -> list[Path]:
    """The state's files (SQLite databases and their companions, the audit mirror) as
    they are named in ``directory`` by default; databases set by URL are not listed."""
    directory = Path(directory)
    files: list[Path] = []
    for url in (
        settings.database_url or sqlite_url(directory, HUB_DB),
        settings.audit_database_url or sqlite_url(directory, AUDIT_DB),
        # the flat name of the layouts before the airlock's own folder (the airlock moves
        # it into <db_dir>/airlock/ when it opens it: resolved_database_url)
        airlock_settings(settings).database_url or sqlite_url(directory, AIRLOCK_DB_NAME),
        # likewise the batch queue's flat name (moved into <db_dir>/batch/ by the service)
        batch_settings(settings).database_url or sqlite_url(directory, BATCH_DB_NAME),
    ):
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            if path.parent == directory:
                files += [path] + [path.with_name(path.name + s) for s in SQLITE_COMPANIONS]
    files.append(directory / AUDIT_JSONL)
    return files


def migrate_databases(settings: Any) -> list[str]:
    """Copy the databases of an earlier layout (in the state directory) into the volume.

    Each file is written beside its final name, synced and renamed; the
    original then goes to ``<state_dir>/pre-volume/``. A copy already in the
    volume with the same bytes (an interrupted migration) only moves the
    original aside; different bytes are refused (no file is overwritten).
    Returns the names moved.
    """
    state = Path(settings.state_dir)
    target = database_dir(settings)
    if target == state:
        return []
    old = [p for p in state_files(settings, state) if p.is_file()]
    if not old:
        return []
    for src in old:
        dest = target / src.name
        if dest.exists() and not filecmp.cmp(src, dest, shallow=False):
            raise StateVolumeError(
                f"{src} (from before the state volume) and {dest} differ: not migrated. "
                "Keep the right one (docs/operations.md \"The state's own filesystem\")")
    aside = state / ASIDE_DIR
    aside.mkdir(mode=0o700, exist_ok=True)
    for src in old:
        dest = target / src.name
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".migrating")
            shutil.copy2(src, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        kept = aside / src.name
        if kept.exists():
            kept = aside / f"{src.name}.{int(src.stat().st_mtime)}"
        os.rename(src, kept)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    names = [p.name for p in old]
    log.warning("moved the state's databases into the state volume %s: %s (the originals are "
                "kept in %s: remove them once `ecluse audit verify` passes)",
                target, ", ".join(names), aside)
    return names


def release_state_volume(settings: Any, mounted: list[Path] | None = None, *,
                         wait: float = 10.0) -> list[Path]:
    """Unmount the state volumes (``mounted``: only those; default: every one of the
    image mode). One still in use after ``wait`` seconds (a hub from another
    ``ecluse up``; services of a stopped hub still exiting are waited for) stays
    mounted. Returns the mount points unmounted."""
    import time

    deadline = time.monotonic() + wait
    if mounted is None:
        if settings.state_volume.mode != "image":
            return []
        mounted = [volume_dir(settings)]
        cp = checkpoint_volume(settings)
        if cp:
            mounted.append(cp[1])
    done: list[Path] = []
    for target in mounted:
        if not os.path.ismount(target):
            continue
        r = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        while r.returncode != 0 and "busy" in r.stderr and time.monotonic() < deadline:
            time.sleep(0.25)
            r = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        if r.returncode == 0:
            done.append(target)
        elif "busy" in r.stderr or r.returncode == errno.EBUSY:
            log.warning("%s is still in use: left mounted (%s)", target, r.stderr.strip())
        else:
            log.error("could not unmount %s: %s", target, r.stderr.strip())
    return done
