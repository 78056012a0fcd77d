"""The embedded stack on Docker (``Stack(sandbox="docker")``, ``ecluse up --sandbox
docker``; issue 17 items 1 and 5): it starts a Docker engine of its own, loads the
workspace image built FROM the debootstrap base, and the real hub spawns a workspace in
a container from it; the user reaches JupyterLab through the proxy and an export request
goes through the airlock; the engine, its containers and its folder are gone afterwards."""

from __future__ import annotations

import contextlib

import pytest
import requests

from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import write_config
from tests.support.hubstack import running_hub
from tests.workspace.helpers import start_workspace_now

# loading the image into the stack's own engine, and removing that engine's folder
pytestmark = [pytest.mark.root, pytest.mark.docker_full, pytest.mark.timeout(900)]

CSV = "ward,stays\nA,120\nB,140\n"


@pytest.fixture
def docker_stack(workspace_image, slapd, tmp_path_factory):
    """A stack with ``sandbox="docker"`` and no engine configured (so: its own); the
    session's ``workspace_image`` fixture puts the image in the cache it loads from."""
    from ecluse.sandbox.engine import _pids_mentioning
    from ecluse.sandbox.local import teardown_host_network

    directory = tmp_path_factory.mktemp("dockerhub")
    path = write_config(directory, slapd, overrides={
        "hub.spawner": "simple", "sandbox.stop_grace": 2, "sandbox.start_timeout": 120,
        "airlock.port": free_port(), "airlock.check_processes": 0})
    seen = {}
    try:
        with _hub_log_on_failure(directory / "hub.log"), running_hub(path, sandbox="docker",
                                                                cleanup_servers=True) as stack:
            seen.update(root=stack.engine.root, copy=stack._config_copy)
            yield stack
    finally:
        teardown_host_network()
    # nothing of the engine is left: no daemon, no shim, no folder, no configuration copy
    assert seen and not seen["root"].exists(), seen
    assert not _pids_mentioning(str(seen["root"]))
    assert not seen["copy"].exists()


@contextlib.contextmanager
def _hub_log_on_failure(path):
    try:
        yield
    except Exception:
        if path.exists():
            print(f"--- {path} (end)\n" + path.read_text(errors="replace")[-6000:])
        raise


def test_the_stack_on_docker_spawns_a_workspace_reached_through_the_proxy(
        docker_stack, workspace_image, ldap_passwords):
    stack = docker_stack
    assert stack.settings.sandbox.backend == "docker"
    assert stack.settings.sandbox.docker_url == stack.engine.url  # its own engine
    ws = start_workspace_now(stack, ldap_passwords, "alice", "cardio-los")
    with contextlib.closing(stack.engine.client()) as client:
        running = client.containers.list(filters={"label": "ecluse.project=cardio-los"})
        assert len(running) == 1, running
        assert workspace_image in running[0].image.tags, running[0].image.tags
        assert running[0].attrs["Config"]["User"].split(":")[0] not in ("", "0", "root")
    r = ws.get("lab", allow_redirects=True)
    assert r.status_code == 200 and "JupyterLab" in r.text, r.text[:500]
    # the export guard is there too, through the proxy
    assert ws.get("files/anything.csv").status_code == 403
    # a table written in the workspace goes to the airlock as an export request
    r = ws.request("PUT", "api/contents/project/wards.csv",
                   json={"type": "file", "format": "text", "content": CSV})
    assert r.status_code in (200, 201), r.text
    r = ws.request("POST", "ecluse/export", json={
        "paths": ["project/wards.csv"], "title": "Stays by ward",
        "justification": "Paper, table 1"}, timeout=120)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["state"] == "submitted"
    req = requests.get(f"{stack.url}/services/airlock/api/v1/requests/{created['id']}",
                       headers={"Authorization": f"token {ws.token}"}, timeout=30).json()
    assert req["requester"] == "alice" and req["project"] == "cardio-los", req
    assert [f["name"] for f in req["files"]] == ["wards.csv"]
    r = ws.client.api("DELETE", "/users/alice/servers/cardio-los", ws.token)
    assert r.status_code in (202, 204), r.text


def test_the_hub_as_its_own_user_spawns_containers_through_the_launcher(
        workspace_image, slapd, ldap_passwords):
    """``hub.service_user`` on Docker: the hub (``ecluse-hub``) holds no engine socket;
    its workspace container is started by the launcher (caller hub) and reached
    through the proxy."""
    import os
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    from ecluse.audit import AuditLog
    from ecluse.dev.serviceusers import DEFAULT_USERS
    from ecluse.sandbox.launcher import STARTED_EVENT
    from ecluse.sandbox.local import teardown_host_network
    from tests.stack.test_service_users import proc_ids

    directory = Path(tempfile.mkdtemp(prefix="ecluse-dockerhubuser-", dir="/tmp"))
    os.chmod(directory, 0o755)  # the hub's user reaches the state directory
    path = write_config(directory, slapd, overrides={
        "hub.spawner": "ecluse", "sandbox.stop_grace": 2, "sandbox.start_timeout": 120,
        "airlock.port": free_port(), "airlock.check_processes": 0,
        # the hub's user cannot read root's password file: the password in its
        # environment, as the stack and the Ansible units give it
        "ldap.bind_password_env": "ECLUSE_TEST_DOCKER_HUB_LDAP"})
    user = pwd.getpwnam(DEFAULT_USERS["hub"])
    try:
        with _hub_log_on_failure(directory / "hub.log"), running_hub(
                path, sandbox="docker", cleanup_servers=True,
                hub_user=DEFAULT_USERS["hub"],
                extra_env={"ECLUSE_TEST_DOCKER_HUB_LDAP": slapd.service_password}) as stack:
            assert proc_ids(stack.hub.pid)[0] == user.pw_uid
            # the engine's socket is not the hub's to use (root's, no group of the hub's)
            st = os.stat(stack.settings.sandbox.docker_url.removeprefix("unix://"))
            _, _, groups = proc_ids(stack.hub.pid)
            assert st.st_uid == 0 and not st.st_mode & 0o006 and (
                st.st_gid not in [user.pw_gid, *groups] or not st.st_mode & 0o060), st
            ws = start_workspace_now(stack, ldap_passwords, "alice", "cardio-los")
            r = ws.get("lab", allow_redirects=True)
            assert r.status_code == 200 and "JupyterLab" in r.text, r.text[:500]
            # the hub's /etc/jupyter folder, opened by the launcher, bound read-only on a
            # root-owned point of the sandbox's runtime folder (the engine binds that)
            assert len(pinned_mounts()) == 1, pinned_mounts()
            started = [e for e in AuditLog.from_settings(stack.settings, writer=False)
                       .records(event=STARTED_EVENT) if e.details.get("caller") == "hub"]
            assert [e.actor for e in started] == [f"uid:{user.pw_uid}"]
            r = ws.client.api("DELETE", "/users/alice/servers/cardio-los", ws.token)
            assert r.status_code in (202, 204), r.text
        # released with its sandbox: nothing stays mounted
        assert not pinned_mounts()
    finally:
        teardown_host_network()
        shutil.rmtree(directory, ignore_errors=True)


def pinned_mounts() -> list[str]:
    """The docker backend's bind points of launcher-opened folders, on this host."""
    from ecluse.sandbox.docker import _mount_points

    return [p for p in _mount_points() if "/sandboxes/d" in p and "/mounts/" in p]
