"""The embedded stack with the sandbox launcher: the spawner starts workspaces through it.

``ecluse up`` (:class:`~ecluse.dev.stack.Stack`) as root, with
``sandbox.launcher_socket`` set, starts the launcher from the same config file
before the hub; the spawner then asks it for the workspace (caller ``hub``),
and the launcher records the start in the audit log.
"""

from __future__ import annotations

import requests

from ecluse.audit import AuditLog
from ecluse.sandbox.launcher import STARTED_EVENT
from tests.hub.test_spawner import login, pytestmark, sandbox_stack, wait_ready  # noqa: F401


def test_a_workspace_starts_through_the_launcher(tmp_path_factory, slapd, ldap_passwords):
    directory = tmp_path_factory.mktemp("launcherhub")
    callers = {"hub": "root", "airlock": "root", "batch": "root", "dask": "root"}
    with sandbox_stack(directory, slapd, **{
            "sandbox.stop_grace": 5, "sandbox.start_timeout": 60,
            "sandbox.launcher_socket": str(directory / "launcher.sock"),
            "sandbox.launcher_callers": callers}) as stack:
        assert stack.launcher is not None and stack.launcher.proc.poll() is None
        c, token = login(stack, "alice", ldap_passwords)
        r = c.api("POST", "/users/alice/servers/cardio-los", token)
        assert r.status_code in (201, 202), r.text
        wait_ready(c, token, "alice", "cardio-los")
        r = requests.get(f"{stack.url}/user/alice/cardio-los/api/contents/",
                         headers={"Authorization": f"token {token}"}, timeout=30)
        assert r.status_code == 200, r.text[:300]
        started = AuditLog.from_settings(stack.settings).records(event=STARTED_EVENT)
        assert [(e.details["caller"], e.project, e.details["user"], e.details["name"])
                for e in started] == [("hub", "cardio-los", "alice", "workspace")]
        r = c.api("DELETE", "/users/alice/servers/cardio-los", token)
        assert r.status_code in (202, 204), r.text
        launcher = stack.launcher
    assert launcher.proc is None and not (directory / "launcher.sock").exists()
