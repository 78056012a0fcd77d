"""The state's databases on a volume of their own (``state_volume``).

Real loop-mounted ext4 images in the test's temp dir; every mount is undone,
pass or fail.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from ecluse.audit import AuditLog
from ecluse.auditevents import AuditEvent
from ecluse.config import ConfigError, load_settings
from ecluse.statevolume import (
    StateVolumeError,
    checkpoint_volume,
    ensure_state_volume,
    image_file,
    release_state_volume,
    state_files,
    volume_dir,
)
from tests.support.mounts import unmount_under

pytestmark = pytest.mark.root

MiB = 1024 * 1024


@pytest.fixture
def vsettings(make_config, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("state volume tests need root (mount, loop devices)")
    path = make_config(**{"state_volume": {"mode": "image", "size": "16M",
                                           "checkpoint_size": "8M"}})
    try:
        yield load_settings(path)
    finally:
        unmount_under(tmp_path)


def _mounts(path) -> int:
    return sum(1 for line in open("/proc/self/mounts") if line.split()[1] == str(path))


def test_image_mode_mounts_the_databases_and_the_checkpoints(vsettings):
    assert ensure_state_volume(vsettings)
    db = volume_dir(vsettings)
    assert os.path.ismount(db)
    assert vsettings.db_dir == db
    assert vsettings.hub_database_url == f"sqlite:///{db}/jupyterhub.sqlite"
    assert vsettings.audit_jsonl_path.parent == db
    # blocks reserved up front: a full host disk cannot take them back
    assert image_file(vsettings).stat().st_blocks * 512 >= 16 * MiB
    image, checkpoints = checkpoint_volume(vsettings)
    assert os.path.ismount(checkpoints)
    assert vsettings.audit.checkpoint_file.parent == checkpoints
    log = AuditLog.from_settings(vsettings)
    log.record(AuditEvent.LOGIN_SUCCESS, actor="alice")
    log.engine.dispose()
    assert (db / "audit.sqlite").exists() and vsettings.audit.checkpoint_file.exists()
    opts = next(line.split()[3] for line in open("/proc/self/mounts")
                if line.split()[1] == str(db))
    assert {"nosuid", "nodev"} <= set(opts.split(","))


def test_twice_and_after_a_crash_it_mounts_once(vsettings):
    ensure_state_volume(vsettings)
    assert ensure_state_volume(vsettings) == []  # already mounted (a crash left it)
    assert _mounts(volume_dir(vsettings)) == 1


def test_unmounted_it_refuses_rather_than_write_on_the_shared_disk(vsettings):
    ensure_state_volume(vsettings)
    log = AuditLog.from_settings(vsettings)
    log.record(AuditEvent.LOGIN_SUCCESS, actor="alice")
    log.engine.dispose()
    assert volume_dir(vsettings) in release_state_volume(vsettings)
    assert not os.path.ismount(volume_dir(vsettings))
    with pytest.raises(StateVolumeError, match="is not mounted .*mount -o loop"):
        assert vsettings.hub_database_url
    with pytest.raises(ConfigError, match="not mounted"):
        AuditLog.from_settings(vsettings)
    assert list(volume_dir(vsettings).iterdir()) == []  # nothing created under the mount point
    # mounted again: the records are there
    ensure_state_volume(vsettings)
    assert [r.event for r in AuditLog.from_settings(vsettings).records()][-1] == "login.success"


def test_a_volume_in_use_stays_mounted(vsettings):
    ensure_state_volume(vsettings)
    with open(volume_dir(vsettings) / "held", "w"):
        assert volume_dir(vsettings) not in release_state_volume(vsettings, wait=0.5)
        assert os.path.ismount(volume_dir(vsettings))


def test_files_under_the_unmounted_mount_point_are_not_hidden(vsettings):
    volume_dir(vsettings).mkdir(parents=True)
    (volume_dir(vsettings) / "jupyterhub.sqlite").write_text("written while unmounted")
    with pytest.raises(StateVolumeError, match="holds files but is not mounted"):
        ensure_state_volume(vsettings)
    assert not os.path.ismount(volume_dir(vsettings))


def _old_layout(settings) -> dict[str, bytes]:
    """A state directory of an earlier version: databases in the state dir itself."""
    state = settings.state_dir
    state.mkdir(parents=True)
    for name in ("jupyterhub.sqlite", "airlock.sqlite"):
        with sqlite3.connect(state / name) as c:
            c.execute("CREATE TABLE t (v TEXT)")
            c.execute("INSERT INTO t VALUES (?)", (name,))
        c.close()
    (state / "audit.jsonl").write_text('{"seq": 1}\n')
    return {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}


def test_an_earlier_state_directory_is_migrated_without_loss(vsettings):
    old = _old_layout(vsettings)
    # the audit checkpoints of the earlier layout, next to the state directory
    cp = vsettings.audit.checkpoint_file
    cp.parent.mkdir(parents=True)
    cp.write_text("checkpoint 1\n")
    ensure_state_volume(vsettings)
    db = volume_dir(vsettings)
    for name, data in old.items():
        assert (db / name).read_bytes() == data
        assert (vsettings.state_dir / "pre-volume" / name).read_bytes() == data
        assert not (vsettings.state_dir / name).exists()
    with sqlite3.connect(db / "airlock.sqlite") as c:
        assert c.execute("SELECT v FROM t").fetchone() == ("airlock.sqlite",)
    c.close()
    assert os.path.ismount(cp.parent) and cp.read_text() == "checkpoint 1\n"


def test_an_interrupted_migration_resumes(vsettings):
    old = _old_layout(vsettings)
    ensure_state_volume(vsettings)
    # as if it had stopped after copying, before moving the original aside
    for name, data in old.items():
        (vsettings.state_dir / name).write_bytes(data)
    ensure_state_volume(vsettings)
    assert {p.name for p in (vsettings.state_dir / "pre-volume").iterdir()} >= set(old)
    assert not any((vsettings.state_dir / name).exists() for name in old)


def test_a_conflicting_copy_is_refused_and_nothing_overwritten(vsettings):
    ensure_state_volume(vsettings)
    (volume_dir(vsettings) / "audit.jsonl").write_text("the volume's\n")
    (vsettings.state_dir / "audit.jsonl").write_text("the old layout's\n")
    with pytest.raises(StateVolumeError, match="differ: not migrated"):
        ensure_state_volume(vsettings)
    assert (volume_dir(vsettings) / "audit.jsonl").read_text() == "the volume's\n"
    assert (vsettings.state_dir / "audit.jsonl").read_text() == "the old layout's\n"


def test_a_database_set_by_url_is_not_moved(vsettings):
    vsettings.database_url = "postgresql+psycopg:///jupyterhub"
    names = {p.name for p in state_files(vsettings, vsettings.state_dir)}
    assert "jupyterhub.sqlite" not in names and "audit.sqlite" in names


def test_none_mode_refuses_when_an_image_holds_the_databases(vsettings):
    ensure_state_volume(vsettings)
    release_state_volume(vsettings)
    vsettings.state_volume.mode = "none"
    with pytest.raises(StateVolumeError, match="holds the state's databases"):
        assert vsettings.audit_db_url


def test_mounted_mode_needs_the_operators_mount(vsettings):
    vsettings.state_volume.mode = "mounted"
    with pytest.raises(StateVolumeError, match="mount the state's own filesystem there"):
        ensure_state_volume(vsettings)
