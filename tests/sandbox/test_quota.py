"""Per-project disk quotas: a project folder is its own size-limited filesystem."""

from __future__ import annotations

import errno
import os

import pytest

from ecluse.sandbox.quota import (
    ensure_project_volume,
    image_path,
    release_project_volumes,
    remove_project_volumes,
)

pytestmark = pytest.mark.root

MiB = 1024 * 1024


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("disk quota tests need root (mount, loop devices)")
    projects = tmp_path / "projects"
    projects.mkdir()
    yield projects
    remove_project_volumes(projects)


def fill(path, limit: int) -> int:
    """Write zeros into ``path`` until ENOSPC or ``limit`` bytes; return bytes written."""
    written = 0
    chunk = b"\0" * MiB
    with open(path, "wb") as fh:
        try:
            while written < limit:
                fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
                written += len(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return written


def test_a_full_project_stops_at_its_quota_only(root, tmp_path):
    ensure_project_volume(root, "cardio-los", 32 * MiB, "sparse")
    assert os.path.ismount(root / "cardio-los")
    written = fill(root / "cardio-los" / "big", 200 * MiB)
    assert 16 * MiB <= written <= 32 * MiB
    # the host filesystem next to it (where the state lives) still takes writes
    (tmp_path / "state.txt").write_bytes(b"x" * MiB)
    st = os.statvfs(root / "cardio-los")
    assert st.f_bavail * st.f_frsize < MiB


def test_preallocated_reserves_the_space(root):
    ensure_project_volume(root, "air-quality", 16 * MiB, "preallocated")
    assert image_path(root, "air-quality").stat().st_blocks * 512 >= 16 * MiB


def test_idempotent_and_mounted_nosuid_nodev(root):
    ensure_project_volume(root, "cardio-los", 16 * MiB, "sparse")
    ensure_project_volume(root, "cardio-los", 16 * MiB, "sparse")
    mounts = [line.split() for line in open("/proc/self/mounts")]
    mine = [m for m in mounts if m[1] == str(root / "cardio-los")]
    assert len(mine) == 1
    assert {"nosuid", "nodev"} <= set(mine[0][3].split(","))


def test_existing_data_is_adopted_and_kept_aside(root):
    (root / "cardio-los" / "shared").mkdir(parents=True)
    (root / "cardio-los" / "shared" / "results.csv").write_text("a,b\n1,2\n")
    ensure_project_volume(root, "cardio-los", 16 * MiB, "sparse")
    assert os.path.ismount(root / "cardio-los")
    assert (root / "cardio-los" / "shared" / "results.csv").read_text() == "a,b\n1,2\n"
    assert (root / ".cardio-los.pre-quota" / "shared" / "results.csv").exists()


def test_data_larger_than_the_quota_is_not_moved(root):
    (root / "cardio-los").mkdir()
    (root / "cardio-los" / "big").write_bytes(b"x" * (20 * MiB))
    with pytest.raises(Exception, match="disk could not be prepared"):
        ensure_project_volume(root, "cardio-los", 8 * MiB, "sparse")
    assert not os.path.ismount(root / "cardio-los")
    assert (root / "cardio-los" / "big").stat().st_size == 20 * MiB


def test_a_raised_quota_grows_the_volume(root):
    ensure_project_volume(root, "cardio-los", 16 * MiB, "sparse")
    (root / "cardio-los" / "keep").write_text("kept")
    release_project_volumes(root)
    ensure_project_volume(root, "cardio-los", 64 * MiB, "sparse")
    st = os.statvfs(root / "cardio-los")
    assert st.f_blocks * st.f_frsize > 48 * MiB
    assert (root / "cardio-los" / "keep").read_text() == "kept"


def test_none_mounts_nothing(root):
    ensure_project_volume(root, "cardio-los", 16 * MiB, "none")
    assert not os.path.ismount(root / "cardio-los")
    assert not (root / ".volumes").exists()


def test_state_sharing_a_filesystem_with_projects_is_warned_about(settings):
    from ecluse.sandbox.quota import state_disk_warning

    settings.sandbox.backend = "local"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.sandbox.project_volumes = "sparse"
    assert "share one filesystem" in state_disk_warning(settings)
    settings.sandbox.project_volumes = "preallocated"
    assert state_disk_warning(settings) is None
