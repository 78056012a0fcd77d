"""EcluseSpawner through the real hub: project workspaces in real sandboxes."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest
import requests
import yaml

from ecluse.audit import AuditLog
from ecluse.dev.testing import HubClient, run_in_terminal, write_config
from tests.support.hubstack import running_hub

pytestmark = pytest.mark.root


@contextlib.contextmanager
def sandbox_stack(directory, slapd, edit_projects=None, **overrides):
    """A running hub on ``EcluseSpawner`` (real sandboxes); the host network
    is torn down afterwards. ``edit_projects(dict)`` may change projects.yaml."""
    if os.geteuid() != 0:
        pytest.fail("the workspace tests need root (bubblewrap, network namespaces, cgroups)")
    path = write_config(directory, slapd, overrides={"hub.spawner": "ecluse", **overrides})
    if edit_projects is not None:
        projects_file = path.parent / "projects.yaml"
        projects = yaml.safe_load(projects_file.read_text())
        edit_projects(projects["projects"])
        projects_file.write_text(yaml.safe_dump(projects))
    with running_hub(path, cleanup_servers=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def sandbox_hub(tmp_path_factory, slapd):
    with sandbox_stack(tmp_path_factory.mktemp("spawnhub"), slapd, **{
            "sandbox.stop_grace": 5, "sandbox.start_timeout": 60}) as stack:
        yield stack


def login(stack, user, passwords) -> tuple[HubClient, str]:
    c = HubClient(stack.url)
    assert c.login(user, passwords[user]).status_code == 302
    return c, c.new_token(user)


def wait_ready(c: HubClient, token: str, user: str, server: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = c.api("GET", f"/users/{user}", token).json()
        s = model["servers"].get(server)
        if s and s["ready"]:
            return s
        if s is None and time.monotonic() > deadline - timeout + 5:
            break
        time.sleep(0.3)
    raise AssertionError(f"{user}/{server} not ready: {model}")


def test_project_workspace_starts_and_answers_through_the_proxy(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "alice", ldap_passwords)
    r = c.api("POST", "/users/alice/servers/cardio-los", token)
    assert r.status_code in (201, 202), r.text
    server = wait_ready(c, token, "alice", "cardio-los")
    assert server["url"] == "/user/alice/cardio-los/"
    r = requests.get(f"{sandbox_hub.url}/user/alice/cardio-los/api/contents/",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    events = AuditLog.from_settings(sandbox_hub.settings).records(
        user="alice", event="workspace.start")
    assert events and events[-1].project == "cardio-los"
    assert [d["name"] for d in events[-1].details["datasets"]] == ["stays"]


async def test_workspace_sees_its_project_only(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "alice", ldap_passwords)
    c.api("POST", "/users/alice/servers/cardio-los", token)
    wait_ready(c, token, "alice", "cardio-los")
    url = f"{sandbox_hub.url}/user/alice/cardio-los/"
    out = await run_in_terminal(
        url, token,
        "id -u; ls /data/stays; cat /data/stays/stays.csv; ls /data; "
        "ls / ; touch /data/x 2>&1; echo hello > /project/shared.txt && echo wrote-project",
    )
    assert "20001" in out
    assert "cardio-los-1,42" in out
    assert "air-quality" not in out.replace("air-quality", "", 0) or "admissions" not in out
    assert "Read-only file system" in out or "Permission denied" in out
    assert "wrote-project" in out


def test_spawning_a_project_one_is_not_in_is_refused(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "bob", ldap_passwords)
    r = c.api("POST", "/users/bob/servers/air-quality", token)
    assert r.status_code >= 400
    assert "not a member of project 'air-quality'" in r.text
    # a matching name with a different project in user_options
    r = c.api("POST", "/users/bob/servers/cardio-los", token, json={"project": "air-quality"})
    assert r.status_code >= 400 and "cannot be started for 'air-quality'" in r.text
    # an unknown project
    r = c.api("POST", "/users/bob/servers/no-such-project", token)
    assert r.status_code >= 400 and "no project named" in r.text
    # the default (unnamed) server is not a workspace
    r = c.api("POST", "/users/bob/server", token, json={"project": "cardio-los"})
    assert r.status_code >= 400 and "/hub/spawn/bob/cardio-los" in r.text
    denied = AuditLog.from_settings(sandbox_hub.settings).records(
        user="bob", event="workspace.denied")
    assert any(e.project == "air-quality" for e in denied)


def test_spawn_page_offers_only_the_users_projects(sandbox_hub, ldap_passwords):
    c, _ = login(sandbox_hub, "bob", ldap_passwords)
    home = c.session.get(f"{sandbox_hub.url}/hub/home", timeout=30).text
    assert "cardio-los" in home and "air-quality" not in home
    page = c.session.get(f"{sandbox_hub.url}/hub/spawn/bob/cardio-los", timeout=30).text
    assert 'value="cardio-los"' in page and "air-quality" not in page


def test_stop_removes_the_sandbox_and_is_audited(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "bob", ldap_passwords)
    c.api("POST", "/users/bob/servers/cardio-los", token)
    wait_ready(c, token, "bob", "cardio-los")
    before = set(os.listdir("/run/ecluse/sandboxes"))
    assert before
    r = c.api("DELETE", "/users/bob/servers/cardio-los", token)
    assert r.status_code in (202, 204)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not c.api("GET", "/users/bob", token).json()["servers"]:
            break
        time.sleep(0.3)
    stops = AuditLog.from_settings(sandbox_hub.settings).records(
        user="bob", event="workspace.stop")
    assert stops and stops[-1].project == "cardio-los"
    assert stops[-1].details["owner"] == "bob" and stops[-1].details["requested_by"] == "user"
    sandbox_id = stops[-1].details["sandbox"]
    assert sandbox_id not in os.listdir("/run/ecluse/sandboxes")


def test_staff_stopping_a_workspace_is_audited_with_staff_as_actor(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "bob", ldap_passwords)
    c.api("POST", "/users/bob/servers/cardio-los", token)
    wait_ready(c, token, "bob", "cardio-los")
    staff, staff_token = login(sandbox_hub, "erin", ldap_passwords)
    r = staff.api("DELETE", "/users/bob/servers/cardio-los", staff_token)
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and c.api("GET", "/users/bob", token).json()["servers"]:
        time.sleep(0.3)
    log = AuditLog.from_settings(sandbox_hub.settings)
    stop = log.records(event="workspace.stop")[-1]
    assert (stop.actor, stop.details["owner"], stop.details["requested_by"]) == (
        "erin", "bob", "user")
    assert stop.project == "cardio-los"
    assert log.verify().ok


def test_hub_restart_readopts_running_workspaces(sandbox_hub, ldap_passwords):
    # production setting: JupyterHub.cleanup_servers = False
    sandbox_hub.cleanup_servers = False
    try:
        sandbox_hub.stop_hub()
        sandbox_hub.start_hub()
        c, token = login(sandbox_hub, "alice", ldap_passwords)
        c.api("POST", "/users/alice/servers/air-quality", token)
        wait_ready(c, token, "alice", "air-quality")
        sandbox_hub.stop_hub()  # the workspace keeps running
        sandbox_hub.start_hub()
    finally:
        sandbox_hub.cleanup_servers = True
    sandbox_hub.stop_hub()
    sandbox_hub.start_hub()  # back to cleanup on exit for the fixture's teardown
    server = c.api("GET", "/users/alice", token).json()["servers"]["air-quality"]
    assert server["ready"]
    r = requests.get(f"{sandbox_hub.url}/user/alice/air-quality/api/contents/",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200
    starts = AuditLog.from_settings(sandbox_hub.settings).records(
        user="alice", event="workspace.start", project="air-quality")
    assert len(starts) == 1  # re-adopted, not restarted


async def test_memory_limit_kills_the_workspace_and_hub_reports_it(sandbox_hub, ldap_passwords):
    c, token = login(sandbox_hub, "bob", ldap_passwords)
    c.api("POST", "/users/bob/servers/cardio-los", token)
    wait_ready(c, token, "bob", "cardio-los")
    url = f"{sandbox_hub.url}/user/bob/cardio-los/"
    # quota memory is 1G in the test config: allocate 1.5G
    await run_in_terminal(url, token,
                          "python3 -c 'b = bytearray(1536 * 1024 * 1024); b[::4096] = b\"x\" * "
                          "len(b[::4096])'", timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        servers = c.api("GET", "/users/bob", token).json()["servers"]
        if "cardio-los" not in servers or not servers["cardio-los"]["ready"]:
            break
        time.sleep(1)
    else:
        raise AssertionError("the hub still reports the OOM-killed workspace as running")
    exits = AuditLog.from_settings(sandbox_hub.settings).records(
        user="bob", event="workspace.exit")
    assert exits and exits[-1].details["oom_killed"] is True


@pytest.fixture
def starved_hub(tmp_path, slapd):
    """A hub whose air-quality project has too little memory for a Jupyter server."""
    def starve(projects):
        projects["air-quality"]["quota"] = {
            "cpu": 1, "memory": "40M", "disk": "1G", "dask_workers": 1}

    with sandbox_stack(tmp_path, slapd, starve, **{"sandbox.stop_grace": 2}) as stack:
        yield stack


def test_a_workspace_that_dies_while_starting_fails_the_spawn_with_its_status(
        starved_hub, ldap_passwords):
    from ecluse.sandbox import get_backend

    backend = get_backend(starved_hub.settings)
    before = {sb["id"] for sb in backend.list()}  # other modules' hubs may run some
    c, token = login(starved_hub, "alice", ldap_passwords)
    r = c.api("POST", "/users/alice/servers/air-quality", token)
    if r.status_code == 400:  # failed within the request's own wait
        message = r.json()["message"]
    else:
        assert r.status_code == 202, r.text
        events = []
        with requests.get(
                f"{starved_hub.url}/hub/api/users/alice/servers/air-quality/progress",
                headers={"Authorization": f"token {token}"}, stream=True,
                timeout=120) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("failed") or events[-1].get("ready"):
                        break
        assert events[-1].get("failed"), events
        message = events[-1]["message"]
    # the spawner's own message (OOM-killed: 137), not the hub's HTTP timeout
    # after http_timeout
    assert "stopped while starting (exit status 137)" in message, message
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        model = c.api("GET", "/users/alice", token).json()
        if "air-quality" not in model["servers"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the failed server is still listed: {model['servers']}")
    # and its sandbox is gone
    assert {sb["id"] for sb in backend.list()} == before
