"""Per-project disk quotas of the local backend: one size-limited filesystem per project.

A project's folder ``<projects_root>/<slug>`` (its shared folder, mounted at
``/project``, and its members' homes) is an ext4 filesystem in an image file
``<projects_root>/.volumes/<slug>.ext4`` of ``quota.disk`` bytes, loop-mounted
``nosuid,nodev``. Filling it fails with ``ENOSPC`` inside that project only:
other projects, the hub database, the audit log and the airlock keep their
space. ``sandbox.project_volumes`` chooses:

* ``preallocated`` — the image's blocks are reserved when it is created
  (``fallocate``): the sum of quotas is really set aside, nothing can
  overcommit the host filesystem;
* ``sparse`` — blocks are taken as the project writes: each project is capped,
  but quotas may add up to more than the disk (put the state on its own
  filesystem then);
* ``none`` — plain directories, no quota (development, tests).

A raised quota grows the image (``resize2fs``) the next time the volume is
mounted; a lowered one is refused with a warning (shrinking could lose data).
A folder that holds data from before quotas is copied into the new volume
and kept aside as ``.<slug>.pre-quota``; if it does not fit, nothing moves.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import SandboxError

log = logging.getLogger(__name__)

VOLUMES_DIR = ".volumes"
MOUNT_OPTIONS = "loop,nosuid,nodev"
MODES = ("none", "sparse", "preallocated")


def _run(*cmd: str, what: str = "the project's disk") -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SandboxError(
            f"{what} could not be prepared",
            log_message=f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}",
        )


@contextmanager
def locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def image_path(projects_root: Path, slug: str) -> Path:
    return Path(projects_root) / VOLUMES_DIR / f"{slug}.ext4"


def prepare_image(image: Path, size: int, mode: str, what: str = "the project's disk") -> None:
    """Create the ext4 image of ``size`` bytes, or grow it to ``size`` (never shrink)."""
    if image.exists():
        _grow_image(image, size, mode, what)
    else:
        _create_image(image, size, mode, what)


def _create_image(image: Path, size: int, mode: str, what: str) -> None:
    tmp = image.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if mode == "preallocated":
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise SandboxError(
            f"{what} could not be created (not enough space for its size)",
            log_message=f"allocating {size} bytes for {image}: {e.strerror}") from None
    os.close(fd)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0,nodiscard", str(tmp),
         what=what)
    os.replace(tmp, image)


def _grow_image(image: Path, size: int, mode: str, what: str) -> None:
    current = image.stat().st_size
    if size < current:
        log.warning("%s: size lowered to %d bytes but the volume holds %d: kept at its "
                    "size (shrinking could lose data)", image, size, current)
        return
    if size == current:
        return
    with open(image, "r+b") as fh:
        if mode == "preallocated":
            os.posix_fallocate(fh.fileno(), current, size - current)
        else:
            fh.truncate(size)
    _run("e2fsck", "-f", "-p", str(image), what=what)
    _run("resize2fs", str(image), what=what)


def mount_image(image: Path, target: Path, what: str = "the project's disk") -> None:
    _run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target), what=what)


def ensure_project_volume(projects_root: Path, slug: str, size: int, mode: str) -> None:
    """Make ``<projects_root>/<slug>`` a mounted filesystem of ``size`` bytes (idempotent).

    Raises :class:`SandboxError` (the sandbox does not start without its quota).
    """
    if mode == "none":
        return
    if mode not in MODES:
        raise SandboxError("bad disk quota setting",
                           log_message=f"sandbox.project_volumes: {mode!r} not in {MODES}")
    root = Path(projects_root)
    volumes = root / VOLUMES_DIR
    volumes.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(volumes, 0o700)
    pdir = root / slug
    with locked(volumes / f"{slug}.lock"):
        if os.path.ismount(pdir):
            return
        image = image_path(root, slug)
        prepare_image(image, size, mode)
        pdir.mkdir(mode=0o755, exist_ok=True)
        if any(pdir.iterdir()):
            adopt_folder(image, pdir)
        mount_image(image, pdir)
        os.chown(pdir, 0, 0)
        os.chmod(pdir, 0o755)
        lost = pdir / "lost+found"
        if lost.exists():
            os.chmod(lost, 0o700)


def adopt_folder(image: Path, pdir: Path, what: str = "the project's disk") -> None:
    """Copy a folder written before its volume into the volume; keep the original aside."""
    staging = pdir.with_name(f".{pdir.name}.adopting")
    staging.mkdir(mode=0o700, exist_ok=True)
    mount_image(image, staging, what=what)
    try:
        _run("cp", "-a", "--", f"{pdir}/.", str(staging), what=what)
    finally:
        _run("umount", str(staging), what=what)
        staging.rmdir()
    aside = pdir.with_name(f".{pdir.name}.pre-quota")
    if aside.exists():
        aside = pdir.with_name(f".{pdir.name}.pre-quota-{int(time.time())}")
    os.rename(pdir, aside)
    os.chmod(aside, 0o700)
    pdir.mkdir(mode=0o755)
    log.warning("%s held data from before its volume: copied into the volume, the original "
                "kept in %s (remove it once checked)", pdir, aside)


def state_disk_warning(settings: Any) -> str | None:
    """Why projects could still fill the state's filesystem, or None.

    The state (hub database, audit log, airlock) is safe when it is on its own
    filesystem, or when every project's space is reserved up front
    (``preallocated``). Otherwise a message for the operator.
    """
    if (settings.sandbox.backend != "local" or settings.sandbox.project_volumes == "preallocated"
            or settings.state_volume.mode != "none"):
        return None
    state, projects = Path(settings.state_dir), Path(settings.projects_root)
    try:
        same = state.stat().st_dev == existing_parent(projects).stat().st_dev
    except OSError:
        return None
    if not same:
        return None
    return (f"the state directory {state} and the project folders {projects} share one "
            f"filesystem and sandbox.project_volumes is {settings.sandbox.project_volumes!r}: "
            "a project filling it would stop sign-in and the audit log. Set "
            "state_volume.mode: image (the databases on a volume of their own), or "
            "sandbox.project_volumes: preallocated.")


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def release_project_volumes(projects_root: Path) -> list[str]:
    """Unmount every project volume under ``projects_root`` (decommissioning, tests).

    Images are kept. Returns the slugs unmounted.
    """
    root = Path(projects_root)
    done: list[str] = []
    volumes = root / VOLUMES_DIR
    if not volumes.is_dir():
        return done
    for image in sorted(volumes.glob("*.ext4")):
        pdir = root / image.stem
        if os.path.ismount(pdir):
            r = subprocess.run(["umount", str(pdir)], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(pdir)], capture_output=True)
            done.append(image.stem)
    return done


def remove_project_volumes(projects_root: Path) -> None:
    """Unmount and delete every volume (tests' teardown)."""
    release_project_volumes(projects_root)
    shutil.rmtree(Path(projects_root) / VOLUMES_DIR, ignore_errors=True)
