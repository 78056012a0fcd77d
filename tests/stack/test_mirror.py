"""``ecluse up``'s stack runs the package mirror as its own user (issue 24 item 2).

A real stack as root (slapd, JupyterHub, the launcher, the Écluse spawner) with
``mirror.enabled``: the hub starts ``ecluse mirror serve`` as ``ecluse-mirror``, its
front answers on the sandbox host address, a package staff allow installs through it
with the project's token, a name not allowed never reaches the (local, recording)
upstream, and the mirror's user cannot read the stack's secrets nor the audit keys.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.dev.serviceusers import DEFAULT_USERS
from ecluse.dev.testing import write_config
from ecluse.mirror.hub import workspace_pip_env
from tests.stack.test_service_users import proc_ids, service_pid, try_read_as
from tests.support.hubstack import running_hub
from tests.support.pypi import LocalIndex

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]

MIRROR_USER = DEFAULT_USERS["mirror"]


@pytest.fixture(scope="module")
def stack(slapd) -> Iterator:
    if os.geteuid() != 0:
        pytest.fail("the mirror's stack test needs root (useradd, the sandbox network)")
    directory = Path(tempfile.mkdtemp(prefix="ecluse-pkgs-", dir="/tmp"))
    os.chmod(directory, 0o755)
    upstream = LocalIndex(directory / "upstream")
    upstream.add("alpha", "1.0", requires=("beta>=1.0",))
    upstream.add("beta", "1.0")
    upstream.add("secretpkg", "1.0")
    upstream.start()
    path = write_config(directory, slapd, overrides={
        "hub.spawner": "ecluse", "dask.gateway": False, "mirror.enabled": True,
        "mirror.port": free_port(), "mirror.backend_port": free_port(),
        "mirror.upstream": upstream.url})
    try:
        with running_hub(path, mirror_user=MIRROR_USER, start_timeout=240) as s:
            s.upstream = upstream
            s.source_config = path
            yield s
    finally:
        upstream.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _front(stack) -> tuple[str, int]:
    settings = load_settings(str(stack.settings.config_file))
    from ecluse.sandbox import sandbox_host_address

    host = sandbox_host_address(settings, ensure=False)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://{host}:{settings.mirror.port}/-/simple/", timeout=3)
        except urllib.error.HTTPError as e:
            assert e.code == 403
            return host, settings.mirror.port
        except OSError:
            assert time.monotonic() < deadline, "the mirror's front never answered"
            time.sleep(1)


def test_the_mirror_runs_as_its_own_user_and_serves_allowed_packages(stack, tmp_path):
    host, _ = _front(stack)
    pid = service_pid(stack, "-m ecluse mirror ")
    uid, _gid, _groups = proc_ids(pid)
    assert pwd.getpwuid(uid).pw_name == MIRROR_USER, open(f"/proc/{pid}/cmdline").read()[-300:]
    settings = load_settings(str(stack.settings.config_file))
    assert main(["packages", "--config", str(settings.config_file), "allow", "cardio-los",
                 "alpha"]) == 0
    stack.upstream.paths.clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(workspace_pip_env(settings, "cardio-los", host))
    env["PIP_CONFIG_FILE"] = os.devnull
    target = tmp_path / "t"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                          "--target", str(target), "alpha"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert (target / "beta" / "__init__.py").exists()
    refused = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                              "--target", str(target), "secretpkg"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert stack.upstream.asked_about("secretpkg") == []


def test_attack_the_mirror_user_cannot_read_the_secrets_nor_the_audit_keys(stack):
    """The mirror talks to the outside (its upstream) and parses what comes back: with
    its uid, the hub's secrets and the audit chain's keys stay out of reach."""
    _front(stack)
    pid = service_pid(stack, "-m ecluse mirror ")
    state = Path(stack.settings.state_dir)
    secrets = sorted((state / "secrets").iterdir())
    keys = sorted(p for p in Path(stack.settings.audit.key_dir).iterdir() if p.is_file())
    assert secrets and keys
    outcome = try_read_as(pid, *secrets, *keys)
    assert set(outcome.values()) == {"PermissionError"}, outcome
