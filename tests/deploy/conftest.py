"""Fixtures of the deployment tests (images, config examples, Ansible).

* ``ansible_bin`` — the directory holding ``ansible-playbook`` and
  ``ansible-lint`` (the virtualenv's ``bin``; the ``test`` extra installs them).
* ``deployment`` (module) — the single-host playbook applied to THIS machine
  (``connection: local``, local sandbox backend, ``ecluse_service_manager:
  direct``) into an isolated prefix ``/opt/ecluse-test-deploy-*`` with its
  own config, state, log and run directories, free ports, SQLite, and the
  session's ``slapd`` as the directory. It yields a :class:`Deployment`
  whose ``run()`` applies the playbook again; at the end, pass or fail, it
  stops the workspaces and the hub, removes the host network of the local
  backend, kills anything still running from the prefix, unmounts the
  dataset mount and deletes the prefix.

The playbook skips the ``common`` role (time, auditd, unattended upgrades):
it configures the host itself (/etc), which is not ours to change on a CI
machine. Its tasks are linted and syntax-checked like the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecluse.dev.ldapserver import EmbeddedSlapd, free_port

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      re.M)
#: Debian packages the deploy test needs (installed by scripts/install-system-deps.sh)
NEEDED_COMMANDS = {"bwrap": "bubblewrap", "nft": "nftables", "ip": "iproute2",
                   "npm": "npm (or NodeSource nodejs)", "ldapsearch": "ldap-utils",
                   "findmnt": "util-linux", "mountpoint": "util-linux"}


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    bindir = Path(sys.executable).parent
    for tool in ("ansible-playbook", "ansible-lint"):
        if not (bindir / tool).exists():
            pytest.fail(f"{tool} is missing from {bindir}: install the test extra "
                        "(pip install -e '.[test]') — it brings ansible-core and ansible-lint")
    return bindir


@dataclass
class Run:
    rc: int
    seconds: float
    output: str
    changed: int = -1
    failed: int = -1

    def changed_tasks(self) -> list[str]:
        """Names of the tasks reported changed (from the default callback's output)."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(current)
        return tasks


@dataclass
class Deployment:
    prefix: Path
    extra_vars_file: Path
    hub_url: str
    ansible_bin: Path
    vars: dict
    runs: list[Run] = field(default_factory=list)
    #: the playbook applied (site.yml; the docker workspace host test: one role)
    playbook: Path = ANSIBLE_DIR / "site.yml"

    @property
    def config_dir(self) -> Path:
        return self.prefix / "etc"

    @property
    def state_dir(self) -> Path:
        return self.prefix / "state"

    @property
    def opt(self) -> Path:
        return self.prefix / "opt"

    def run(self, *extra: str) -> Run:
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(self.prefix / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.prefix / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
            "PATH": os.pathsep.join([str(self.ansible_bin), env.get("PATH", "")]),
        })
        cmd = [
            str(self.ansible_bin / "ansible-playbook"),
            "-i", str(ANSIBLE_DIR / "inventories/single-host/hosts.yml"),
            "-e", f"@{self.extra_vars_file}",
            "--skip-tags", "common",
            str(self.playbook),
            *extra,
        ]
        n = len(self.runs) + 1
        start = time.monotonic()
        lines: list[str] = []
        # the log gets each line's elapsed time: where a slow run spends it
        with open(self.prefix / f"ansible-run{n}.log", "w") as log, subprocess.Popen(
            cmd, cwd=ANSIBLE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                log.write(f"{time.monotonic() - start:7.1f} {line}")
            rc = proc.wait(timeout=900)
        seconds = time.monotonic() - start
        output = "".join(lines)
        result = Run(rc, seconds, output)
        recaps = RECAP_RE.findall(output)
        if recaps:
            result.changed = sum(int(r[2]) for r in recaps)
            result.failed = sum(int(r[4]) for r in recaps)
        self.runs.append(result)
        print(f"\nansible-playbook run {n}: {seconds:.1f}s, rc={rc}, "
              f"changed={result.changed}", flush=True)
        return result

    def daemon(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(self.opt / "bin/ecluse-daemon"), action,
             "--pidfile", str(self.prefix / "run/ecluse-hub.pid"), "--timeout", "30"],
            capture_output=True, text=True, timeout=60,
        )


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("the deploy test needs root (sandboxes: namespaces, cgroups, nftables; "
                    "mounts)")
    missing = [pkg for cmd, pkg in NEEDED_COMMANDS.items() if not shutil.which(cmd)]
    # the hub role creates its virtualenv with Debian's Python (ecluse_python)
    if subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"],
                      capture_output=True).returncode != 0:
        missing.append("python3-venv")
    if missing:
        pytest.fail("the deploy test needs these Debian packages: " + ", ".join(sorted(
            set(missing))) + " (run scripts/install-system-deps.sh test as root)")


def _snapshot_sources(dest: Path) -> None:
    """A fixed copy of the working tree: edits made while the test runs do not leak in."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", dest / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    # the workspace extension, built by the hub role; node_modules is linked,
    # not copied (150 MB), when the checkout has it (else build.sh runs npm)
    shutil.copytree(REPO / "extensions", dest / "extensions", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.egg-info", "node_modules", "build", "lib", "labextension"))
    for modules in (REPO / "extensions").glob("*/node_modules"):
        (dest / "extensions" / modules.parent.name / "node_modules").symlink_to(modules)
    (dest / "docs").mkdir()


def _prefix_vars(prefix: Path) -> dict:
    """Run here, as root, without systemd, every path of the deployment in ``prefix``."""
    return {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "ecluse_prefix": str(prefix / "opt"),
        "ecluse_config_dir": str(prefix / "etc"),
        "ecluse_state_dir": str(prefix / "state"),
        "ecluse_log_dir": str(prefix / "log"),
        "ecluse_run_dir": str(prefix / "run"),
        "ecluse_systemd_dir": str(prefix / "systemd"),
        "ecluse_service_manager": "direct",
        "ecluse_group": "root",
    }


def _extra_vars(prefix: Path, slapd: EmbeddedSlapd, state_device: str) -> tuple[dict, str]:
    hub_port = free_port()
    data_target = prefix / "data/cardio-los/stays"
    data_src = prefix / "datasrc/cardio-los/stays"
    data_src.mkdir(parents=True)
    (data_src / "stays.csv").write_text("patient_id,los\ncardio-los-1,4\n")
    return {
        **_prefix_vars(prefix),
        # no syslog daemon on CI machines: checkpoints to a file, keys group root
        "hub_audit_group": "root",
        "hub_audit_checkpoint_sink": "file",
        # no loop-mounted project volumes left behind on the CI machine
        "hub_project_volumes": "none",
        # the state's databases on a device of their own (a loop device the test
        # makes and removes), mounted now only
        "hub_state_volume": "device",
        "hub_state_device": state_device,
        "hub_state_fstab": False,
        "ecluse_apt_install": False,
        "ecluse_sandbox_backend": "local",
        "ecluse_instance": prefix.name,
        "ldap_client_uri": slapd.uri,
        "ldap_client_security": "none",
        "ldap_client_ca_cert": "",
        "ldap_client_base_dn": slapd.base_dn,
        "ldap_client_bind_dn": slapd.service_dn,
        "ldap_client_bind_password": slapd.service_password,
        "ldap_client_user_search_base": f"ou=people,{slapd.base_dn}",
        "ldap_client_group_search_base": f"ou=groups,{slapd.base_dn}",
        "ldap_client_user_object_class": "posixAccount",
        "ldap_client_username_attribute": "uid",
        "ldap_client_group_member_attributes": ["member", "uniqueMember", "memberUid"],
        "ldap_client_connect_timeout": 2,
        "ldap_client_receive_timeout": 3,
        "data_mounts": [{"target": str(data_target), "src": str(data_src),
                         "fstype": "none", "opts": "ro,nosuid,nodev"}],
        "data_persist": False,
        "hub_source_dir": str(prefix / "source"),
        "hub_ip": "127.0.0.1",
        "hub_port": hub_port,
        "hub_public_url": f"http://127.0.0.1:{hub_port}",
        "hub_api_port": free_port(),
        "hub_proxy_api_port": free_port(),
        "hub_route_filter_port": free_port(),
        "hub_postgresql_enabled": False,
        "hub_projects_root": str(prefix / "projects"),
        "hub_start_timeout": 120,
        "hub_stop_grace": 5,
        "hub_idle_timeout": 0,
        "hub_ready_timeout": 90,
        "hub_projects": {
            "cardio-los": {
                "title": "Cardiac LOS",
                "ldap_group": "proj-cardio-los",
                "datasets": [{"name": "stays", "path": str(data_target)}],
                "quota": {"cpu": 1, "memory": "1G", "disk": "1G", "dask_workers": 1},
            },
        },
        "airlock_port": free_port(),
        "airlock_postgresql_database": "",
        "airlock_check_url": f"http://127.0.0.1:{hub_port}/services/airlock/",
    }, f"http://127.0.0.1:{hub_port}"


def _processes_under(prefix: Path) -> list[int]:
    mine, marker = os.getpid(), str(prefix)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _teardown(dep: Deployment, token_for_cleanup: dict) -> None:
    import requests

    token = token_for_cleanup.get("token")
    if token:  # stop workspaces through the hub: they outlive a hub stop (KillMode=process)
        try:
            headers = {"Authorization": f"token {token}"}
            users = requests.get(f"{dep.hub_url}/hub/api/users/alice", headers=headers,
                                 timeout=10).json()
            for name in users.get("servers", {}):
                requests.delete(f"{dep.hub_url}/hub/api/users/alice/servers/{name}",
                                headers=headers, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                model = requests.get(f"{dep.hub_url}/hub/api/users/alice", headers=headers,
                                     timeout=10).json()
                if not model.get("servers"):
                    break
                time.sleep(0.5)
        except (requests.RequestException, ValueError):
            pass
    if (dep.opt / "bin/ecluse-daemon").exists():
        dep.daemon("stop")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_under(dep.prefix):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1)
    try:
        from ecluse.sandbox.local import teardown_host_network

        teardown_host_network()
    except Exception as e:  # report, keep cleaning
        print(f"teardown_host_network: {e}")
    for target in (dep.prefix / "data/cardio-los/stays", dep.prefix / "state/db"):
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
            subprocess.run(["umount", "-l", str(target)], check=False)
    keep = os.environ.get("ECLUSE_DEPLOY_KEEP_LOGS")
    if keep:  # for debugging: the playbook and hub logs survive the cleanup
        dest = Path(keep) / dep.prefix.name
        dest.mkdir(parents=True, exist_ok=True)
        for log in [*dep.prefix.glob("ansible-run*.log"), *dep.prefix.glob("log/*.log")]:
            shutil.copy2(log, dest / log.name)
        print(f"deploy logs kept in {dest}")
    shutil.rmtree(dep.prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(slapd: EmbeddedSlapd, ansible_bin: Path) -> Iterator[Deployment]:
    _check_prerequisites()
    prefix = Path(tempfile.mkdtemp(prefix="ecluse-test-deploy-", dir="/opt"))
    os.chmod(prefix, 0o755)
    cleanup: dict = {}
    dep = None
    state_device = ""
    try:
        image = prefix / "state-device.img"
        with open(image, "wb") as fh:
            fh.truncate(256 * 1024 * 1024)
        state_device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                                      capture_output=True, text=True).stdout.strip()
        _snapshot_sources(prefix / "source")
        variables, hub_url = _extra_vars(prefix, slapd, state_device)
        vars_file = prefix / "extra-vars.json"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(variables, fh)
        dep = Deployment(prefix, vars_file, hub_url, ansible_bin, variables)
        dep.cleanup = cleanup  # type: ignore[attr-defined]
        yield dep
    finally:
        if dep is not None:
            _teardown(dep, cleanup)
        else:
            shutil.rmtree(prefix, ignore_errors=True)
        if state_device:
            subprocess.run(["losetup", "-d", state_device], capture_output=True)


WORKSPACE_HOST_PLAY = """\
- name: Workspace host (docker backend)
  hosts: ecluse_workspaces
  become: false
  roles:
    - role: workspace_host
"""


@pytest.fixture(scope="module")
def docker_workspace_host(ansible_bin: Path) -> Iterator[Deployment]:
    """The ``workspace_host`` role alone, docker backend, applied to THIS machine into a
    prefix of its own: its Docker engine (``ecluse-daemon``, data and exec root, pid
    file and socket in the prefix), the workspace image built with the test run's
    ``ecluse`` (loaded from the image cache when its inputs are unchanged). At the end,
    pass or fail: the engine's containers, the daemon and its processes, its mounts and
    the prefix are gone."""
    from ecluse.sandbox.engine import ENGINE_PROGRAMS, _mounts_under, _pids_mentioning, cache_dir

    if os.geteuid() != 0:
        pytest.fail("the docker workspace host test needs root (a Docker engine)")
    missing = [t for t in ("dockerd", "docker", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"the docker workspace host test needs {missing} (Debian packages "
                    "docker.io and debootstrap: scripts/install-system-deps.sh test)")
    prefix = Path(tempfile.mkdtemp(prefix="ecluse-test-wshost-", dir="/opt"))
    os.chmod(prefix, 0o755)
    engine = prefix / "docker"
    if os.environ.get("ECLUSE_DOCKER_TMPFS") == "1":  # as the suites' own engines (conftest)
        engine.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "ecluse-docker",
                        str(engine)], check=True)
    playbook = prefix / "workspace-host.yml"
    playbook.write_text(WORKSPACE_HOST_PLAY)
    variables = {
        **_prefix_vars(prefix),
        "ecluse_apt_install": False,
        "ecluse_sandbox_backend": "docker",
        "ecluse_instance": prefix.name,
        "workspace_host_docker_data_root": str(engine / "data"),
        "workspace_host_docker_exec_root": str(engine / "exec"),
        "workspace_host_docker_socket": str(engine / "docker.sock"),
        "workspace_host_docker_pidfile": str(engine / "dockerd.pid"),
        "workspace_host_ecluse_command": str(Path(sys.executable).parent / "ecluse"),
        # the test run's image cache: a workspace image built by the docker suites loads
        "workspace_host_image_cache": str(cache_dir()),
    }
    vars_file = prefix / "extra-vars.json"
    vars_file.write_text(json.dumps(variables))
    dep = Deployment(prefix, vars_file, "", ansible_bin, variables, playbook=playbook)
    try:
        yield dep
    finally:
        pidfile = prefix / "run/ecluse-docker.pid"
        if (dep.opt / "bin/ecluse-daemon").exists() and pidfile.exists():
            socket_ = engine / "docker.sock"
            if socket_.exists():
                subprocess.run(["docker", "--host", f"unix://{socket_}", "rm", "-f",
                                *subprocess.run(["docker", "--host", f"unix://{socket_}",
                                                 "ps", "-aq"], capture_output=True,
                                                text=True).stdout.split()],
                               capture_output=True)
            subprocess.run([sys.executable, str(dep.opt / "bin/ecluse-daemon"), "stop",
                            "--pidfile", str(pidfile), "--timeout", "30"],
                           capture_output=True, timeout=60)
        for pid in _pids_mentioning(str(prefix) + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mnt in sorted(_mounts_under(prefix), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mnt], capture_output=True)
        shutil.rmtree(prefix, ignore_errors=True)
        left = _pids_mentioning(str(prefix) + "/")
        assert not left, f"engine processes left ({ENGINE_PROGRAMS}): {left}"
        assert not prefix.exists(), f"{prefix} left behind"
