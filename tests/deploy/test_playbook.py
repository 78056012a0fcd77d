"""The single-host playbook applied to this machine, for real.

In order (one module-scoped deployment): a first run deploys; a smoke test
signs an LDAP user in and starts a project workspace with the real
EcluseSpawner (local backend); a second run must change nothing; the
installed files (systemd unit, secrets file, settings) are checked. Durations
of both runs are printed (``-s`` shows them) and bounded.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest
import requests

from ecluse.config import load_settings
from ecluse.dev.testing import HubClient

pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]

FIRST_RUN_BUDGET = 420  # seconds, 2-core CI machine, warm uv cache ~1-2 min
SECOND_RUN_BUDGET = 180


def _fail_with_log(run, what: str) -> None:
    tail = run.output[-6000:]
    pytest.fail(f"{what} (rc={run.rc}, changed={run.changed}, {run.seconds:.0f}s):\n{tail}")


def test_first_run_deploys(deployment):
    run = deployment.run()
    if run.rc != 0 or run.failed:
        _fail_with_log(run, "the first ansible-playbook run failed")
    assert run.changed > 0
    assert run.seconds < FIRST_RUN_BUDGET, f"first run took {run.seconds:.0f}s"


def test_hub_answers(deployment):
    r = requests.get(f"{deployment.hub_url}/hub/api/", timeout=10)
    assert r.status_code == 200 and "version" in r.json()
    assert "running pid" in deployment.daemon("status").stdout


def test_ldap_user_signs_in_and_a_project_server_starts(deployment, ldap_passwords):
    c = HubClient(deployment.hub_url)
    r = c.login("alice", ldap_passwords["alice"])
    assert r.status_code == 302, r.text[:500]
    token = c.new_token("alice")
    deployment.cleanup["token"] = token
    r = c.api("POST", "/users/alice/servers/cardio-los", token)
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 150  # the hub gives up after 120 s
    server: dict = {}
    while time.monotonic() < deadline:
        server = c.api("GET", "/users/alice", token).json()["servers"].get("cardio-los") or {}
        if server.get("ready"):
            break
        time.sleep(0.5)
    assert server.get("ready"), f"workspace not ready: {server}"
    r = requests.get(f"{deployment.hub_url}/user/alice/cardio-los/api/contents/",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    # the route filter of the deployed proxy refuses a route off the allow-list, on the host
    r = requests.get(f"{deployment.hub_url}/user/alice/cardio-los/dask/dashboard-check/x",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 403 and "allow-list" in r.text, r.text[:300]
    # the project's dataset is the read-only mount made by the data role
    target = deployment.prefix / "data/cardio-los/stays"
    opts = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "--target", str(target)],
                          capture_output=True, text=True).stdout
    assert "ro" in opts.split(",")


def test_a_wrong_password_is_refused(deployment):
    r = HubClient(deployment.hub_url).login("alice", "not-her-password")
    assert r.status_code != 302


def test_second_run_changes_nothing(deployment):
    run = deployment.run()
    if run.rc != 0 or run.failed:
        _fail_with_log(run, "the second ansible-playbook run failed")
    assert run.changed == 0, f"not idempotent, changed: {run.changed_tasks()}"
    assert run.seconds < SECOND_RUN_BUDGET, f"second run took {run.seconds:.0f}s"
    total = sum(r.seconds for r in deployment.runs)
    print("\ndeploy runs: " + ", ".join(f"{r.seconds:.1f}s" for r in deployment.runs)
          + f" (total {total:.1f}s)")


def test_the_workspace_survived_the_second_run(deployment):
    token = deployment.cleanup.get("token")
    assert token
    r = requests.get(f"{deployment.hub_url}/user/alice/cardio-los/api/status",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200


def test_systemd_unit_keeps_workspaces_on_hub_restart(deployment):
    unit = (deployment.prefix / "systemd/ecluse-hub.service").read_text()
    lines = set(unit.splitlines())
    assert "KillMode=process" in lines
    assert f"ExecStart={deployment.opt}/venv/bin/ecluse-hub -f {deployment.config_dir}/" \
           "jupyterhub_config.py" in lines
    assert f"EnvironmentFile={deployment.config_dir}/ecluse-secrets.env" in lines
    assert "WantedBy=multi-user.target" in lines
    env = (deployment.config_dir / "ecluse-hub.env").read_text()
    assert "ECLUSE_CLEANUP_SERVERS=0" in env


def test_secrets_are_generated_into_a_0640_environment_file(deployment):
    path = deployment.config_dir / "ecluse-secrets.env"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o640, oct(mode)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert set(values) >= {"JUPYTERHUB_CRYPT_KEY", "JPY_COOKIE_SECRET",
                           "CONFIGPROXY_AUTH_TOKEN", "ECLUSE_LDAP_BIND_PASSWORD"}
    assert len(values["JUPYTERHUB_CRYPT_KEY"]) == 64
    # the same secrets the hub config reads from the state directory
    secret_dir = deployment.state_dir / "secrets"
    assert (secret_dir / "crypt_key").read_text().strip() == values["JUPYTERHUB_CRYPT_KEY"]
    assert stat.S_IMODE((secret_dir / "crypt_key").stat().st_mode) == 0o600
    # and none of them is in the configuration files
    for name in ("ecluse.yaml", "projects.yaml", "jupyterhub_config.py", "ecluse-hub.env"):
        text = (deployment.config_dir / name).read_text()
        for secret in values.values():
            assert secret not in text, f"a secret leaked into {name}"


def test_the_state_is_on_its_own_device(deployment, monkeypatch):
    """hub_state_volume: device — the databases on the device, mounted nosuid,nodev."""
    db = deployment.state_dir / "db"
    mount = subprocess.run(["findmnt", "-n", "-o", "SOURCE,OPTIONS", "--mountpoint", str(db)],
                           capture_output=True, text=True).stdout.split()
    assert mount and mount[0] == deployment.vars["hub_state_device"], mount
    assert {"nosuid", "nodev"} <= set(mount[1].split(","))
    assert (db / "jupyterhub.sqlite").exists() and (db / "audit.sqlite").exists()
    assert not (deployment.state_dir / "audit.sqlite").exists()
    monkeypatch.setenv("ECLUSE_LDAP_BIND_PASSWORD", "x")
    settings = load_settings(deployment.config_dir / "ecluse.yaml")
    assert settings.state_volume.mode == "mounted" and settings.db_dir == db


def test_deployed_settings_load(deployment, monkeypatch):
    monkeypatch.setenv("ECLUSE_LDAP_BIND_PASSWORD", "x")
    settings = load_settings(deployment.config_dir / "ecluse.yaml")
    assert settings.sandbox.backend == "local"
    assert settings.state_dir == deployment.state_dir
    assert list(settings.projects) == ["cardio-los"]
    assert settings.database_url is None  # SQLite: PostgreSQL is off in this test
    assert os.stat(deployment.state_dir).st_mode & 0o777 == 0o700
