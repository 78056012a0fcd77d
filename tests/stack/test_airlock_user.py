"""The embedded stack runs the airlock as its own system user (issue 14 item 4).

A real stack (:class:`~ecluse.dev.stack.Stack`, as ``ecluse up`` starts it as
root, slapd, JupyterHub, the sandbox launcher) with ``airlock_user``: the hub
starts ``ecluse airlock serve`` as ``ecluse-airlock``, which checks uploads in
sandboxes and writes its audit records through the launcher. Its process is
read from ``/proc``; what it may not read is tried as its uid and groups.
The stack's folder is under ``/tmp`` (traversable): a state directory under a
private folder leaves the airlock root's, with a warning (last test).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.airlockuser import DEFAULT_USER, run_airlock_as
from ecluse.dev.testing import HubClient, project_token_scopes, write_config
from ecluse.hubservice import instances
from ecluse.sandbox.launcher import STARTED_EVENT
from tests.support.hubstack import running_hub

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

PASSWORD_ENV = "ECLUSE_TEST_AIRLOCK_USER_LDAP"
ROWS = b"patient_id,age,postcode\n" + b"".join(
    f"P{i:05d},{20 + i % 60},75{i % 20:03d}\n".encode() for i in range(40))


@pytest.fixture(scope="module")
def stack(slapd) -> Iterator:
    if os.geteuid() != 0:
        pytest.fail("the airlock user tests need root (useradd, the sandbox launcher)")
    directory = Path(tempfile.mkdtemp(prefix="ecluse-airlockuser-", dir="/tmp"))
    os.chmod(directory, 0o755)
    path = write_config(directory, slapd, overrides={"ldap.bind_password_env": PASSWORD_ENV})
    try:
        with running_hub(path, airlock_user=DEFAULT_USER,
                         extra_env={PASSWORD_ENV: slapd.service_password}) as s:
            yield s
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def airlock_pid(stack) -> int:
    state = str(stack.state_dir)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = instances.cmdline(int(entry.name))
            if cmd and "airlock" in cmd and "serve" in cmd and state in cmd:
                return int(entry.name)
    raise AssertionError(f"no airlock process for {state}")


def proc_ids(pid: int) -> tuple[int, int, list[int]]:
    """(real uid, real gid, supplementary groups) of ``pid``, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0]),
            [int(g) for g in fields["Groups"].split()])


def try_read_as(pid: int, *paths: Path) -> dict[str, str]:
    """Open each path for reading as ``pid``'s uid, gid and groups: what happened."""
    uid, gid, groups = proc_ids(pid)
    code = ("import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'rb').read(1)\n"
            "        print('read')\n    except OSError as e:\n        print(type(e).__name__)")
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}",
         f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
         "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-I", "-c", code,
         *map(str, paths)], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return dict(zip(map(str, paths), proc.stdout.split(), strict=True))


def test_the_airlock_process_runs_as_its_own_user(stack):
    user = pwd.getpwnam(DEFAULT_USER)
    uid, gid, _ = proc_ids(airlock_pid(stack))
    assert (uid, gid) == (user.pw_uid, user.pw_gid) and uid != 0
    assert stack.launcher is not None and stack.launcher.proc.poll() is None
    assert stack.settings.sandbox.launcher_callers["airlock"] == DEFAULT_USER


def test_an_upload_through_the_hub_is_checked_and_audited(stack, ldap_passwords):
    c = HubClient(stack.url)
    assert c.login("alice", ldap_passwords["alice"]).status_code == 302
    token = c.new_token("alice", project_token_scopes("cardio-los"))
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    base = f"{stack.url}/services/airlock/api/v1"
    r = api.post(f"{base}/requests", json={"project": "cardio-los", "title": "LOS",
                                           "justification": "paper"}, timeout=60)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = api.post(f"{base}/requests/{rid}/files", params={"filename": "rows.csv"}, data=ROWS,
                 headers={"Content-Type": "application/octet-stream"}, timeout=120)
    assert r.status_code == 201, r.text
    assert r.json()["verdict"] == "block", r.json()  # row-level: checked, in a sandbox
    audit = AuditLog.from_settings(stack.settings, writer=False)
    [uploaded] = [e for e in audit.records(event="airlock.file.uploaded")
                  if e.details.get("request_id") == rid]
    assert (uploaded.actor, uploaded.project) == ("alice", "cardio-los")
    # written by the launcher for the airlock's uid: the service holds no audit key
    assert uploaded.details["via_uid"] == pwd.getpwnam(DEFAULT_USER).pw_uid
    checks = [e for e in audit.records(event=STARTED_EVENT)
              if e.details.get("caller") == "airlock"]
    assert checks, "the check did not run in a sandbox started through the launcher"
    staged = Path(stack.settings.airlock.resolved_storage_dir(stack.state_dir))
    assert staged.stat().st_uid == pwd.getpwnam(DEFAULT_USER).pw_uid


def test_the_airlock_cannot_read_the_secrets_nor_the_hub_database(stack):
    s = stack.settings
    secrets = sorted((s.state_dir / "secrets").iterdir())
    assert secrets
    targets = [*secrets, s.db_dir / "jupyterhub.sqlite", s.db_dir / "audit.sqlite",
               s.state_dir / "demo-users.json"]
    result = try_read_as(airlock_pid(stack), *[t for t in targets if t.exists()])
    assert set(result.values()) == {"PermissionError"}, result
    # its own database it reads
    own = s.airlock.resolved_storage_dir(s.db_dir) / "airlock.sqlite"
    assert try_read_as(airlock_pid(stack), own) == {str(own): "read"}


def test_attack_the_airlock_user_cannot_read_the_audit_keys(stack):
    """A checker exploit in the service (it parses researchers' files) gets its uid:
    with it, the audit chain's keys stay out of reach (it could forge the log)."""
    keys = sorted(p for p in Path(stack.settings.audit.key_dir).iterdir() if p.is_file())
    assert keys
    result = try_read_as(airlock_pid(stack), *keys)
    assert set(result.values()) == {"PermissionError"}, result


def test_an_unreachable_state_directory_leaves_the_airlock_roots(tmp_path, slapd, caplog):
    """pytest's own folders are private (0700): the user could not reach the state
    directory, so nothing changes and one warning says why."""
    settings = load_settings(write_config(tmp_path / "private", slapd))
    settings.state_dir.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="ecluse.dev.airlockuser"):
        assert run_airlock_as(settings) is False
    assert settings.airlock.service_user is None and settings.sandbox.launcher_socket is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"the airlock runs as root, not as {DEFAULT_USER}" in warning
    assert str(settings.state_dir) in warning
