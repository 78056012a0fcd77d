"""A researcher filling /project cannot stop sign-in or the audit log.

A real hub on EcluseSpawner (local backend), Bob filling /project with ``dd``
in his workspace, then Alice signing in through the hub and the audit log
verified, twice:

* with ``sandbox.project_volumes`` and a 48 MiB quota for cardio-los, ``dd``
  stops at the quota (the project's own volume);
* with no project quota, on a small host disk that holds the state directory
  and the project folders: ``dd`` fills the disk itself, and the state's
  databases and audit checkpoints, on their own volumes
  (``state_volume.mode: image``), keep their space. With the state on the
  same disk (``state_volume.mode: none``) the sign-in fails (HTTP 500: the
  audit write fails, and sign-in fails closed on it).
"""

from __future__ import annotations

import os

import pytest

from ecluse.audit import AuditLog
from ecluse.auditevents import AuditEvent
from ecluse.dev.testing import HubClient, run_in_terminal
from ecluse.sandbox.quota import remove_project_volumes
from tests.hub.test_spawner import login, sandbox_stack, wait_ready
from tests.support.mounts import scratch_disk

pytestmark = pytest.mark.root

QUOTA = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def quota_hub(tmp_path_factory, slapd):
    def small_disk(projects):
        projects["cardio-los"].setdefault("quota", {})["disk"] = "48M"

    directory = tmp_path_factory.mktemp("quotahub")
    try:
        with sandbox_stack(directory, slapd, edit_projects=small_disk, **{
                "sandbox.project_volumes": "sparse", "sandbox.stop_grace": 2,
                "sandbox.start_timeout": 60}) as stack:
            yield stack
    finally:
        remove_project_volumes(directory / "state" / "projects")


#: the host disk of the second stack: the state volumes (reserved on it) and some room
DISK = 96 * 1024 * 1024
#: the state volume's size, for this test (mode from the environment to try the
#: test with the fix undone: ECLUSE_TEST_STATE_VOLUME=none must fail it)
STATE_VOLUME = {"mode": os.environ.get("ECLUSE_TEST_STATE_VOLUME", "image"),
                "size": "24M", "checkpoint_size": "8M"}


@pytest.fixture(scope="module")
def full_disk_hub(tmp_path_factory, slapd):
    directory = tmp_path_factory.mktemp("fulldisk")
    with scratch_disk(directory, DISK) as disk, sandbox_stack(directory, slapd, **{
            "state_dir": str(disk / "state"), "state_volume": STATE_VOLUME,
            "sandbox.project_volumes": "none", "sandbox.stop_grace": 2,
            "sandbox.start_timeout": 60}) as stack:
        yield stack


async def fill_project(stack, ldap_passwords) -> str:
    """Bob writes zeros into /project until the disk refuses; the dd output."""
    c, token = login(stack, "bob", ldap_passwords)
    c.api("POST", "/users/bob/servers/cardio-los", token)
    wait_ready(c, token, "bob", "cardio-los")
    out = await run_in_terminal(
        f"{stack.url}/user/bob/cardio-los/", token,
        "dd if=/dev/zero of=/project/fill bs=1M count=200 2>&1 | grep -E 'space|copied'; echo dd-finished",
        timeout=90,
    )
    assert "dd-finished" in out
    assert "No space left on device" in out, out
    return out


def assert_sign_in_and_audit_go_on(stack, ldap_passwords) -> None:
    """Alice signs in, again and again, and the audit log takes 256 KiB more records
    (more than the blocks its files already hold), then verifies."""
    log = AuditLog.from_settings(stack.settings)
    try:
        before = log.records()[-1].seq
        for i in range(64):
            log.record(AuditEvent.PLATFORM_LEFTOVERS_REMOVED, actor="staff", note=f"{i}".ljust(4096, "."))
        for _ in range(3):
            other = HubClient(stack.url)
            assert other.login("alice", ldap_passwords["alice"]).status_code == 302
        new = [(r.event, r.actor) for r in log.records() if r.seq > before]
        assert new.count(("platform.leftovers_removed", "staff")) == 64
        assert new.count(("login.success", "alice")) == 3
        result = log.verify()
        assert result.ok, result.problems
    finally:
        log.engine.dispose()


async def test_a_full_project_does_not_stop_sign_in_or_audit(quota_hub, ldap_passwords):
    await fill_project(quota_hub, ldap_passwords)
    fill = quota_hub.settings.projects_root / "cardio-los" / "shared" / "fill"
    assert fill.stat().st_size <= QUOTA
    assert_sign_in_and_audit_go_on(quota_hub, ldap_passwords)


async def test_a_full_disk_does_not_stop_sign_in_or_audit(full_disk_hub, ldap_passwords):
    settings = full_disk_hub.settings
    await fill_project(full_disk_hub, ldap_passwords)
    # the disk that holds the state directory and /project is full ...
    st = os.statvfs(settings.state_dir)
    assert st.f_bavail * st.f_frsize < 1024 * 1024
    assert os.stat(settings.projects_root).st_dev == os.stat(settings.state_dir).st_dev
    assert_sign_in_and_audit_go_on(full_disk_hub, ldap_passwords)
    # ... the databases are not on it
    assert os.stat(settings.db_dir).st_dev != os.stat(settings.state_dir).st_dev
