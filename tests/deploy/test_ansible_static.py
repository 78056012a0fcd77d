"""The Ansible collection without deploying: lint, syntax, structure, the daemon wrapper."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
ROLES = ["ecluse", "common", "ldap_client", "hub", "airlock", "workspace_host", "data",
         "dask_gateway", "mirror"]
PHASES = ["install", "configure", "service"]
DAEMON = ANSIBLE / "roles/ecluse/files/ecluse-daemon.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(ANSIBLE / "ansible.cfg")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_ansible_lint_production_profile(ansible_bin):
    start = time.monotonic()
    r = subprocess.run([str(ansible_bin / "ansible-lint"), "--profile", "production",
                        "--offline"], cwd=ANSIBLE, env=_env(), capture_output=True, text=True,
                       timeout=600)
    print(f"\nansible-lint: {time.monotonic() - start:.1f}s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


@pytest.mark.parametrize("inventory", ["single-host", "multi-host"])
def test_syntax_check(ansible_bin, inventory):
    r = subprocess.run([str(ansible_bin / "ansible-playbook"), "--syntax-check", "-i",
                        f"inventories/{inventory}/hosts.yml", "site.yml"],
                       cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("inventory", ["single-host", "multi-host"])
def test_inventory_groups(ansible_bin, inventory):
    r = subprocess.run([str(ansible_bin / "ansible-inventory"), "-i",
                        f"inventories/{inventory}/hosts.yml", "--list"],
                       cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"ecluse_hub"' in r.stdout and '"ecluse_workspaces"' in r.stdout


@pytest.mark.parametrize("role", ROLES)
def test_role_layout(role):
    root = ANSIBLE / "roles" / role
    assert (root / "README.md").exists(), f"{role}: no README.md"
    main = yaml.safe_load((root / "tasks/main.yml").read_text())
    imported = {t["ansible.builtin.import_tasks"].removesuffix(".yml"): t["tags"] for t in main}
    phases = PHASES if role != "ecluse" else ["install", "configure"]
    assert list(imported) == phases
    for phase, tags in imported.items():
        assert tags == [phase]


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented(role):
    """Each variable in defaults/main.yml has its own comment right above it."""
    lines = (ANSIBLE / "roles" / role / "defaults/main.yml").read_text().splitlines()
    documented, comment_seen = [], False
    for line in lines:
        if line.startswith("#"):
            comment_seen = True
            continue
        m = re.match(r"^([a-z_][a-z0-9_]*):", line)
        if m:
            assert m.group(1).startswith(role + "_"), f"{role}: {m.group(1)} lacks the prefix"
            documented.append((m.group(1), comment_seen))
            comment_seen = False
        elif not line.strip():
            comment_seen = False
    undocumented = [name for name, ok in documented if not ok]
    assert not undocumented, f"{role}: undocumented defaults: {undocumented}"
    readme = (ANSIBLE / "roles" / role / "README.md").read_text()
    missing = [name for name, _ in documented if name not in readme]
    assert not missing, f"{role}: README.md does not mention {missing}"


def test_the_hub_unit_keeps_workspaces_on_restart():
    unit = (ANSIBLE / "roles/hub/templates/ecluse-hub.service.j2").read_text()
    assert "\nKillMode=process\n" in unit
    assert "EnvironmentFile={{ hub_secrets_env_file }}" in unit


def test_the_hub_settings_carry_the_route_filter_port():
    """Production gets the host-side route filter: hubconfig turns it on for the Écluse
    spawner; its port comes from the role (a free one per host)."""
    settings = (ANSIBLE / "roles/hub/templates/ecluse.yaml.j2").read_text()
    assert "  route_filter_port: {{ hub_route_filter_port | int }}\n" in settings
    assert "  spawner: ecluse\n" in settings


def test_the_docker_parts_are_skipped_with_the_local_backend():
    tasks = []
    for phase in PHASES:
        tasks += yaml.safe_load((ANSIBLE / f"roles/workspace_host/tasks/{phase}.yml").read_text())
    docker = [t for t in tasks if "docker" in yaml.safe_dump(t).lower()
              and "local_packages" not in yaml.safe_dump(t)]
    assert docker
    for t in docker:
        assert "docker" in t.get("tags", []), t["name"]
        assert "ecluse_sandbox_backend == 'docker'" in str(t.get("when")), t["name"]


# ------------------------------------------------------------- ecluse-daemon


def _daemon(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DAEMON), *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def test_daemon_start_is_idempotent_and_stop_spares_children(tmp_path):
    pidfile, log = tmp_path / "svc.pid", tmp_path / "svc.log"
    env_file = tmp_path / "svc.env"
    env_file.write_text("# comment\nGREETING='hello there'\n")
    marker = tmp_path / "child.pid"
    script = f"echo $GREETING; sleep 300 & echo $! > {marker}; sleep 300"
    common = ["--pidfile", str(pidfile), "--log-file", str(log), "--env-file", str(env_file),
              "--settle", "0.3"]
    try:
        r = _daemon(tmp_path, "start", *common, "--", "/bin/sh", "-c", script)
        assert r.returncode == 0 and r.stdout.startswith("started"), r.stderr
        r2 = _daemon(tmp_path, "start", *common, "--", "/bin/sh", "-c", script)
        assert r2.stdout.startswith("running")
        assert _daemon(tmp_path, "status", "--pidfile", str(pidfile)).returncode == 0
        assert "hello there" in log.read_text()
        child = int(marker.read_text())
        r3 = _daemon(tmp_path, "stop", "--pidfile", str(pidfile), "--timeout", "5")
        assert r3.stdout.startswith("stopped pid")
        assert _daemon(tmp_path, "status", "--pidfile", str(pidfile)).returncode == 3
        os.kill(child, 0)  # KillMode=process: the child survived its parent's stop
    finally:
        if marker.exists():
            try:
                os.kill(int(marker.read_text()), 9)
            except ProcessLookupError:
                pass
        if pidfile.exists():
            _daemon(tmp_path, "stop", "--pidfile", str(pidfile), "--timeout", "1")


def test_daemon_reports_a_service_that_dies_at_once(tmp_path):
    r = _daemon(tmp_path, "start", "--pidfile", str(tmp_path / "p"), "--log-file",
                str(tmp_path / "l"), "--settle", "0.5", "--", "/bin/sh", "-c",
                "echo bad config >&2; exit 3")
    assert r.returncode == 1 and "bad config" in r.stderr


def test_daemon_ignores_a_recycled_pid(tmp_path):
    pidfile = tmp_path / "p"
    pidfile.write_text(f"{os.getpid()}\n/no/such/service\n")
    r = _daemon(tmp_path, "status", "--pidfile", str(pidfile))
    assert r.returncode == 3


def test_generate_secrets_writes_the_environment_secrets_only(tmp_path):
    """The hub role's secrets script once failed on the TOTP key (a file secret, not an
    environment one): KeyError, and no deploy."""
    script = Path(__file__).resolve().parents[2] / "ansible/roles/hub/files/generate-secrets.py"
    env_file = tmp_path / "ecluse-secrets.env"
    subprocess.run([sys.executable, str(script), str(tmp_path / "state"), str(env_file)],
                   check=True, capture_output=True, text=True)
    names = {line.split("=", 1)[0] for line in env_file.read_text().splitlines()
             if line and not line.startswith("#")}
    assert names == {"JUPYTERHUB_CRYPT_KEY", "JPY_COOKIE_SECRET", "CONFIGPROXY_AUTH_TOKEN"}
    assert env_file.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "state" / "secrets" / "totp_key").exists()
