"""Root-side file operations never follow what a project member may plant in /project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecluse.batch import files as fs


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    return d


def test_run_folder_owners_modes_and_atomic_writes(shared: Path) -> None:
    bfd = fs.open_batch_dir(shared, 30001, create=True)
    try:
        st = os.fstat(bfd)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 30001, 0o3770)
        fd = fs.create_run_dir(bfd, "br-000000000001", 20001, 30001)
        with pytest.raises(FileExistsError):  # a run folder is never reused
            fs.create_run_dir(bfd, "br-000000000001", 20001, 30001)
    finally:
        os.close(bfd)
    try:
        st = os.fstat(fd)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (20001, 30001, 0o2750)
        fs.write_file(fd, "parameters.json", b"{}", 20001, 30001)
        assert fs.read_file(fd, "parameters.json", 100) == b"{}"
        assert fs.read_file(fd, "missing.json", 100) is None
        assert fs.list_regular_files(fd) == [("parameters.json", 2)]
    finally:
        os.close(fd)


def test_links_fifos_and_swapped_folders_are_refused(shared: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root only")
    bfd = fs.open_batch_dir(shared, 30001, create=True)
    fd = fs.create_run_dir(bfd, "br-000000000002", 20001, 30001)
    os.close(bfd)
    run = shared / "batch" / "br-000000000002"
    try:
        os.symlink(secret, run / "progress.json")
        os.mkfifo(run / "result.json")
        os.symlink(secret, run / "log.txt")
        with pytest.raises(fs.UnsafePath):
            fs.read_file(fd, "progress.json", 100)
        with pytest.raises(fs.UnsafePath):
            fs.read_file(fd, "result.json", 100)  # would block on a FIFO otherwise
        with pytest.raises(fs.UnsafePath):
            fs.iter_file(fd, "progress.json")
        assert fs.list_regular_files(fd) == []
        # writing replaces the link, never writes through it
        fs.write_file(fd, "log.txt", b"log", 20001, 30001)
        assert secret.read_text() == "root only"
        assert not (run / "log.txt").is_symlink()
    finally:
        os.close(fd)
    # a member swaps the run folder (or the batch folder) for a link
    os.rename(run, shared / "moved")
    os.symlink(tmp_path, run)
    with pytest.raises(fs.UnsafePath):
        fs.open_run_dir(shared, "br-000000000002")
    os.rename(shared / "batch", shared / "batch-moved")
    os.symlink(tmp_path, shared / "batch")
    with pytest.raises(fs.UnsafePath):
        fs.open_batch_dir(shared, 30001, create=True)
    with pytest.raises(fs.UnsafePath):
        fs.open_run_dir(shared, "br-000000000002")


def test_batch_folder_not_owned_by_root_is_refused(shared: Path) -> None:
    (shared / "batch").mkdir()
    os.chown(shared / "batch", 20001, 30001)
    with pytest.raises(fs.UnsafePath):
        fs.open_batch_dir(shared, 30001, create=True)
