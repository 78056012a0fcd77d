"""The single-host playbook applied to this machine, for real.

In order (one module-scoped deployment): a first run deploys; a smoke test
signs an LDAP user in and starts a project workspace with the real
EcluseSpawner (local backend); a second run must change nothing; the
installed files (systemd unit, secrets file, settings) are checked. Durations
of both runs are printed (``-s`` shows them) and bounded.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ecluse.config import load_settings
from ecluse.dev.testing import HubClient

pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]

# How long the runs take is reported (printed at the end), not asserted: speed
# targets live in benchmarks/, and a loaded CI machine must not fail a deploy
# that worked. The module's timeout above catches a hang.


def _fail_with_log(run, what: str) -> None:
    tail = run.output[-6000:]
    pytest.fail(f"{what} (rc={run.rc}, changed={run.changed}, {run.seconds:.0f}s):\n{tail}")


def test_first_run_deploys(deployment):
    run = deployment.run()
    if run.rc != 0 or run.failed:
        _fail_with_log(run, "the first ansible-playbook run failed")
    assert run.changed > 0


def test_hub_answers(deployment):
    r = requests.get(f"{deployment.hub_url}/hub/api/", timeout=10)
    assert r.status_code == 200 and "version" in r.json()
    assert "running pid" in deployment.daemon("status").stdout


def test_the_airlock_and_the_gateway_run_as_their_own_users(deployment):
    """hub_airlock_user, hub_dask_user, hub_batch_user: the hub starts the airlock as
    ecluse-airlock, dask-gateway as ecluse-dask and the batch service as ecluse-batch
    (their uids read from /proc), the launcher runs as root; the state directory is only
    traversable."""
    import pwd

    from ecluse.hubservice import instances

    airlock = pwd.getpwnam("ecluse-airlock")
    uids: dict[str, set[int]] = {}
    # started by units of their own (the hub runs as ecluse-hub), marked as the supervisor's
    for i in instances.find(deployment.state_dir, mark_var=instances.SUPERVISED_MARK):
        status = Path(f"/proc/{i.pid}/status").read_text()
        uids.setdefault(i.service, set()).add(int(next(
            line for line in status.splitlines() if line.startswith("Uid:")).split()[1]))
    assert uids.get("airlock") == {airlock.pw_uid}, uids
    # the gateway and its proxy
    assert uids.get("dask-gateway") == {pwd.getpwnam("ecluse-dask").pw_uid}, uids
    batch = pwd.getpwnam("ecluse-batch")
    assert uids.get("batch") == {batch.pw_uid}, uids
    records = deployment.state_dir / "batch-records"  # given to it by the hub
    assert (records.stat().st_uid, stat.S_IMODE(records.stat().st_mode)) == (batch.pw_uid,
                                                                             0o700)
    assert stat.S_IMODE(deployment.state_dir.stat().st_mode) == 0o711
    staging = deployment.state_dir / "airlock"
    assert (staging.stat().st_uid, stat.S_IMODE(staging.stat().st_mode)) == (airlock.pw_uid,
                                                                             0o700)
    # ecluse-daemon's pid file: the pid, then the command line
    launcher = int((deployment.prefix / "run/ecluse-sandbox-launcher.pid").read_text().split()[0])
    assert Path(f"/proc/{launcher}").stat().st_uid == 0


def _hub_pid(deployment) -> int:
    return int((deployment.prefix / "run/ecluse-hub.pid").read_text().split()[0])


def test_attack_the_hub_is_not_root_and_cannot_read_the_audit_keys_nor_the_services_secrets(
        deployment):
    """hub_service_user (ecluse-hub by default): the hub's uid from /proc is its own, not
    0, and so is its proxy's; the audit keys, the services' tokens and the secrets root
    keeps, the services' databases are out of its reach; its own files it reads. With
    the fix undone (the hub run as root) the first assertion fails."""
    import pwd

    from tests.stack.test_service_users import try_read_as

    hub = pwd.getpwnam("ecluse-hub")
    pid = _hub_pid(deployment)
    assert Path(f"/proc/{pid}").stat().st_uid == hub.pw_uid != 0
    state = deployment.state_dir
    proxy = int((state / "hub" / "proxy.pid").read_text())
    assert Path(f"/proc/{proxy}").stat().st_uid == hub.pw_uid
    keys = sorted(p for p in (deployment.config_dir / "audit-keys").iterdir()
                  if p.name.endswith(".key"))
    tokens = sorted((state / "secrets").glob("service-token-*"))
    assert len(keys) == 2 and len(tokens) == 3, (keys, tokens)
    targets = [*keys, *tokens, state / "db" / "audit.sqlite",
               deployment.config_dir / "ecluse-secrets.env",
               *sorted((state / "db" / "airlock").glob("*.sqlite"))]
    result = try_read_as(pid, *targets)
    assert set(result.values()) == {"PermissionError"}, result
    own = [state / "hub" / "secrets" / "cookie_secret", state / "db" / "hub" / "jupyterhub.sqlite"]
    assert set(try_read_as(pid, *own).values()) == {"read"}


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
    total = sum(r.seconds for r in deployment.runs)
    print("\ndeploy runs: " + ", ".join(f"{r.seconds:.1f}s" for r in deployment.runs)
          + f" (total {total:.1f}s)")


def test_the_workspace_survived_the_second_run(deployment):
    token = deployment.cleanup.get("token")
    assert token
    r = requests.get(f"{deployment.hub_url}/user/alice/cardio-los/api/status",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200


def test_a_killed_hub_comes_back_with_its_workspaces_and_services(deployment):
    """SIGKILL of the hub's main process, then the unit's command started again (what
    systemd's ``Restart=on-failure`` does): the workspace is re-adopted (the same
    server), every service answers, and no service runs twice (issue 18)."""
    from ecluse.hubservice import instances

    token = deployment.cleanup.get("token")
    assert token
    auth = {"Authorization": f"token {token}"}
    status = f"{deployment.hub_url}/user/alice/cardio-los/api/status"
    started = requests.get(status, headers=auth, timeout=30).json()["started"]
    state = deployment.state_dir
    # the services run from units of their own (the hub runs as ecluse-hub): marked as
    # the supervisor's, and the hub's death leaves them serving, the same processes
    before = instances.find(state, mark_var=instances.SUPERVISED_MARK)
    assert {"airlock", "batch"} <= {i.service for i in before}, before
    # ecluse-daemon's pid file: the pid, then the command line
    pid = _hub_pid(deployment)
    os.kill(pid, signal.SIGKILL)
    hub = str(deployment.opt / "venv/bin/ecluse-hub")
    start = subprocess.run(
        [sys.executable, str(deployment.opt / "bin/ecluse-daemon"), "start",
         "--pidfile", str(deployment.prefix / "run/ecluse-hub.pid"),
         "--log-file", str(deployment.prefix / "hub-after-kill.log"),
         "--env-file", str(deployment.config_dir / "ecluse-hub.env"),
         "--env-file", str(deployment.config_dir / "ecluse-secrets.env"),
         "--cwd", str(state), "--match", hub, "--",
         "setpriv", "--reuid", "ecluse-hub", "--regid", "ecluse-hub", "--init-groups", "--",
         hub, "-f",
         str(deployment.config_dir / "jupyterhub_config.py")],
        capture_output=True, text=True, timeout=60)
    assert start.returncode == 0 and "started" in start.stdout, start.stderr

    def answers() -> bool:
        try:
            ws = requests.get(status, headers=auth, timeout=5)
            services = [requests.get(f"{deployment.hub_url}/services/{s}/api/v1/me",
                                     timeout=5).status_code for s in ("airlock", "batch")]
        except requests.RequestException:
            return False
        return ws.status_code == 200 and services == [401, 401]

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not answers():
        time.sleep(1)
    assert answers(), (deployment.prefix / "hub-after-kill.log").read_text()[-4000:]
    assert requests.get(status, headers=auth, timeout=30).json()["started"] == started
    after = instances.find(state, mark_var=instances.SUPERVISED_MARK)
    assert {i.pid for i in after} == {i.pid for i in before}, (before, after)
    # the hub's own helpers (idle culler, reconciler) it starts again; never a service
    assert not {"airlock", "batch", "dask-gateway"} & {
        i.service for i in instances.find(state)}, "the hub started a service of its own"


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
    secret_dir = deployment.state_dir / "hub" / "secrets"  # the hub's (ecluse hub-prepare)
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
    assert (db / "hub" / "jupyterhub.sqlite").exists() and (db / "audit.sqlite").exists()
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
    # traversable only: the airlock's own user reaches its staging area by path
    assert os.stat(deployment.state_dir).st_mode & 0o777 == 0o711


# ------------------------------------------ the docker workspace host (issue 17 item 5)


def _docker(host, *args: str) -> subprocess.CompletedProcess:
    sock = host.vars["workspace_host_docker_socket"]
    return subprocess.run(["docker", "--host", f"unix://{sock}", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.docker_full
def test_the_workspace_host_role_deploys_a_docker_engine_and_the_image(docker_workspace_host):
    import json as _json

    host = docker_workspace_host
    run = host.run()
    if run.rc != 0 or run.failed:
        _fail_with_log(run, "the workspace_host role (docker) failed")
    assert run.changed > 0
    # the engine of the role's variables: its config file, paths and socket
    config = _json.loads((host.config_dir / "docker-daemon.json").read_text())
    assert config["data-root"] == host.vars["workspace_host_docker_data_root"]
    assert config["exec-root"] == host.vars["workspace_host_docker_exec_root"]
    assert config["hosts"] == [f"unix://{host.vars['workspace_host_docker_socket']}"]
    for key in ("iptables", "ip6tables", "ip-forward", "ip-masq"):
        assert config[key] is False, key
    assert config["bridge"] == "none"
    assert _docker(host, "version").returncode == 0
    info = _json.loads(_docker(host, "info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == host.vars["workspace_host_docker_data_root"]
    assert "bridge" not in _docker(host, "network", "ls", "--format", "{{.Name}}").stdout
    # the workspace image, built FROM the debootstrap base, under the settings' name
    images = _docker(host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "ecluse/workspace:0.1.0" in images, images
    assert any(i.startswith("ecluse/base:bookworm-") for i in images), images
    unit = (host.prefix / "systemd/ecluse-docker.service").read_text()
    assert f"--config-file {host.config_dir}/docker-daemon.json" in unit
    # a second run changes nothing
    again = host.run()
    if again.rc != 0 or again.failed:
        _fail_with_log(again, "the second run of the workspace_host role failed")
    assert again.changed == 0, f"changed on the second run: {again.changed_tasks()}"
