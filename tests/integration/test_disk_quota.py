"""A researcher filling /project fills their project's volume, not the platform's disk.

A real hub on EcluseSpawner (local backend) with ``sandbox.project_volumes``
on and a 48 MiB quota for cardio-los: ``dd`` in Bob's workspace stops with
"No space left on device" at the quota; Alice still signs in and the audit
log keeps writing (and verifies).
"""

from __future__ import annotations

import pytest

from ecluse.audit import AuditLog
from ecluse.dev.testing import HubClient, run_in_terminal
from ecluse.sandbox.quota import remove_project_volumes
from tests.integration.test_spawner import login, sandbox_stack, wait_ready

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


async def test_a_full_project_does_not_stop_sign_in_or_audit(quota_hub, ldap_passwords):
    c, token = login(quota_hub, "bob", ldap_passwords)
    c.api("POST", "/users/bob/servers/cardio-los", token)
    wait_ready(c, token, "bob", "cardio-los")
    out = await run_in_terminal(
        f"{quota_hub.url}/user/bob/cardio-los/", token,
        "dd if=/dev/zero of=/project/fill bs=1M count=200 2>&1 | grep -E 'space|copied'; echo dd-finished",
        timeout=90,
    )
    assert "dd-finished" in out
    assert "No space left on device" in out, out
    fill = quota_hub.settings.projects_root / "cardio-los" / "shared" / "fill"
    assert fill.stat().st_size <= QUOTA
    log = AuditLog.from_settings(quota_hub.settings)
    before = log.records()[-1].seq
    # another user signs in: the hub database and the audit log still have room
    other = HubClient(quota_hub.url)
    assert other.login("alice", ldap_passwords["alice"]).status_code == 302
    new = [r for r in log.records() if r.seq > before]
    assert ("login.success", "alice") in [(r.event, r.actor) for r in new]
    result = log.verify()
    assert result.ok, result.problems
