"""Real filesystems for tests: a small loop-mounted ext4 disk, and a teardown that
leaves no mount (nor its loop device) behind, pass or fail."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def unmount_under(root: Path) -> None:
    """Unmount everything mounted under ``root``, deepest first (lazily if busy;
    ``mount -o loop`` devices are released with their mount)."""
    mounts = [line.split()[1] for line in open("/proc/self/mounts")]
    prefix = str(root).rstrip("/") + "/"
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        if subprocess.run(["umount", m], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)


@contextmanager
def scratch_disk(directory: Path, size: int) -> Iterator[Path]:
    """An ext4 filesystem of ``size`` bytes mounted on ``directory/disk`` (a host disk
    small enough to fill); everything under ``directory`` is unmounted on exit."""
    image, disk = directory / "disk.ext4", directory / "disk"
    disk.mkdir(parents=True)
    with open(image, "wb") as fh:
        fh.truncate(size)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(disk)], check=True,
                       capture_output=True)
        yield disk
    finally:
        unmount_under(directory)
        image.unlink(missing_ok=True)
