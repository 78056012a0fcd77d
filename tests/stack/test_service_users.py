"""The embedded stack runs the hub, the airlock, dask-gateway and the batch service as
system users of their own (issue 14 item 4).

A real stack (:class:`~ecluse.dev.stack.Stack`, as ``ecluse up`` starts it as
root, slapd, JupyterHub, the sandbox launcher, the Écluse spawner and
dask-gateway) with the default service users: the hub starts ``ecluse airlock
serve`` as ``ecluse-airlock``, which checks uploads in sandboxes and writes its
audit records through the launcher, and ``ecluse.dask.gateway`` as
``ecluse-dask``, which starts its clusters (sandboxes) and writes its audit
records through the launcher, and ``ecluse batch serve`` as ``ecluse-batch``,
which starts its runs, makes and reads their folders and writes its audit
records through the launcher, and exports through the airlock's API. Their processes are read from ``/proc``; what
they may not read is tried as their uid and groups. The stack's folder is
under ``/tmp`` (traversable): a state directory under a private folder leaves
the services root's, with a warning (last test).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.ldapserver import DEMO_USERS, free_port
from ecluse.dev.serviceusers import DEFAULT_USERS, run_services_as
from ecluse.dev.testing import HubClient, project_token_scopes, write_config
from ecluse.hubservice import instances
from ecluse.sandbox.launcher import STARTED_EVENT
from tests.support.hubstack import running_hub

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

PASSWORD_ENV = "ECLUSE_TEST_AIRLOCK_USER_LDAP"
DEFAULT_USER = DEFAULT_USERS["airlock"]
DASK_USER = DEFAULT_USERS["dask"]
BATCH_USER = DEFAULT_USERS["batch"]
#: a staff member who is also a member of cardio-los (the demo directory has none)
STAFF = ("sam", 20110)
HUB_USER = DEFAULT_USERS["hub"]
ROWS = b"patient_id,age,postcode\n" + b"".join(
    f"P{i:05d},{20 + i % 60},75{i % 20:03d}\n".encode() for i in range(40))


@pytest.fixture(scope="module")
def stack(slapd) -> Iterator:
    if os.geteuid() != 0:
        pytest.fail("the airlock user tests need root (useradd, the sandbox launcher)")
    directory = Path(tempfile.mkdtemp(prefix="ecluse-serviceusers-", dir="/tmp"))
    os.chmod(directory, 0o755)
    path = write_config(directory, slapd, overrides={
        "ldap.bind_password_env": PASSWORD_ENV, "hub.spawner": "ecluse",
        "sandbox.stop_grace": 5, "dask.gateway": True, "dask.proxy_port": free_port(),
        "dask.front_port": free_port(), "dask.api_port": free_port(),
        "dask.proxy_http_port": free_port(), "dask.control_port": free_port()})
    try:
        for slug in ("cardio-los", "air-quality"):  # the projects' datasets (write_config's)
            (directory / "data" / slug).mkdir(parents=True, exist_ok=True)
            (directory / "data" / slug / "stays.csv").write_text("stay,days\n1,3\n")
        # the hub adds its own route to the proxy once its services answer: the
        # gateway's start (dask, distributed) takes a while on a loaded machine
        slapd.add_user(STAFF[0], f"pw-{STAFF[0]}-Secret1", STAFF[1], cn="Sam Staff")
        slapd.passwords[STAFF[0]] = f"pw-{STAFF[0]}-Secret1"
        for group in ("ecluse-staff", "proj-cardio-los"):
            slapd.add_member(group, STAFF[0])
        with running_hub(path, airlock_user=DEFAULT_USER, dask_user=DASK_USER,
                         batch_user=BATCH_USER, hub_user=HUB_USER, start_timeout=240,
                         wait_for=("batch",),
                         extra_env={PASSWORD_ENV: slapd.service_password}) as s:
            yield s
    finally:
        for group in ("ecluse-staff", "proj-cardio-los"):  # the session's directory
            with contextlib.suppress(Exception):
                slapd.remove_member(group, STAFF[0])
        shutil.rmtree(directory, ignore_errors=True)


def service_pid(stack, *words: str) -> int:
    """The pid of the stack's service whose command line has ``words``."""
    state = str(stack.state_dir)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = instances.cmdline(int(entry.name))
            if cmd and all(w in cmd for w in words) and state in cmd:
                return int(entry.name)
    raise AssertionError(f"no {' '.join(words)} process for {state}")


def airlock_pid(stack) -> int:
    return service_pid(stack, "airlock", "serve")


def gateway_pid(stack) -> int:
    return service_pid(stack, "ecluse.dask.gateway")


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
    # answered once stored ("checking"); checked in a sandbox in the background
    assert r.json()["verdict"] in ("checking", "block"), r.json()
    deadline = time.monotonic() + 600
    while (verdict := api.get(f"{base}/requests/{rid}", timeout=60).json()["files"][0][
            "verdict"]) == "checking":
        assert time.monotonic() < deadline, "the upload is still being checked"
        time.sleep(0.5)
    assert verdict == "block"  # row-level: checked, in a sandbox
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
    secrets = sorted((s.state_dir / "secrets").iterdir()) + sorted(s.hub_secrets_dir.iterdir())
    assert secrets
    targets = [*secrets, Path(s.hub_database_url.removeprefix("sqlite:///")),
               s.db_dir / "audit.sqlite",
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


# ------------------------------------------------------------------ dask-gateway


def test_the_gateway_process_runs_as_its_own_user(stack):
    user = pwd.getpwnam(DASK_USER)
    uid, gid, groups = proc_ids(gateway_pid(stack))
    assert (uid, gid) == (user.pw_uid, user.pw_gid) and uid != 0
    assert stack.settings.sandbox.launcher_callers["dask"] == DASK_USER
    assert stack.settings.dask.service_user == DASK_USER
    # the launcher's group (its socket, the stack's settings), no other
    assert set(groups) <= {user.pw_gid, grp.getgrnam(stack.settings.sandbox.launcher_group).gr_gid}


async def _compute_on_a_cluster(stack, token: str) -> int:
    from dask_gateway import Gateway, JupyterHubAuth

    from ecluse.dask.gateway import host_address
    from tests.dask.conftest import wait_port

    addr = host_address(stack.settings, ensure=False)
    ds = stack.settings.dask
    await wait_port(addr, ds.api_port, timeout=60, prefix="/services/dask-gateway")
    async with Gateway(address=f"http://{addr}:{ds.api_port}/services/dask-gateway",
                       proxy_address=f"gateway://{addr}:{ds.proxy_port}",
                       auth=JupyterHubAuth(api_token=token), asynchronous=True) as g:
        cluster = await g.new_cluster(project="cardio-los")
        try:
            await cluster.scale(1)
            client = await cluster.get_client(set_as_default=False)
            try:
                await client.wait_for_workers(1, timeout=120)
                return await client.submit(sum, range(10), pure=False)
            finally:
                await client.close()
        finally:
            await cluster.shutdown()


def test_a_cluster_starts_through_the_launcher_and_computes(stack, ldap_passwords):
    from ecluse.dask.hub import WORKSPACE_TOKEN_SCOPES
    from ecluse.hub.roles import project_scope

    c = HubClient(stack.url)
    assert c.login("alice", ldap_passwords["alice"]).status_code == 302
    token = c.new_token("alice", [*WORKSPACE_TOKEN_SCOPES, project_scope("cardio-los")])
    assert asyncio.run(_compute_on_a_cluster(stack, token)) == 45
    audit = AuditLog.from_settings(stack.settings, writer=False)
    started = [e for e in audit.records(event=STARTED_EVENT)
               if e.details.get("caller") == "dask"]
    assert [(e.project, e.details["user"]) for e in started] == [("cardio-los", "alice")]
    assert started[0].actor == f"uid:{pwd.getpwnam(DASK_USER).pw_uid}"


def test_a_refused_cluster_is_audited_through_the_launcher(stack, ldap_passwords):
    """bob is not in air-quality: refused, and the gateway's record (it holds no audit
    key) is written by the launcher, stamped with the gateway's uid."""
    from dask_gateway import Gateway, JupyterHubAuth

    from ecluse.dask.gateway import host_address
    from ecluse.dask.hub import WORKSPACE_TOKEN_SCOPES
    from ecluse.hub.roles import project_scope

    c = HubClient(stack.url)
    assert c.login("bob", ldap_passwords["bob"]).status_code == 302
    token = c.new_token("bob", [*WORKSPACE_TOKEN_SCOPES, project_scope("cardio-los")])
    addr = host_address(stack.settings, ensure=False)
    ds = stack.settings.dask

    async def ask() -> None:
        async with Gateway(address=f"http://{addr}:{ds.api_port}/services/dask-gateway",
                           auth=JupyterHubAuth(api_token=token), asynchronous=True) as g:
            with pytest.raises(ValueError, match="not a member of project 'air-quality'"):
                await g.new_cluster(project="air-quality")

    asyncio.run(ask())
    audit = AuditLog.from_settings(stack.settings, writer=False)
    [denied] = [e for e in audit.records(event="dask.denied") if e.actor == "bob"]
    assert denied.project == "air-quality"
    assert denied.details["via"] == "dask"
    assert denied.details["via_uid"] == pwd.getpwnam(DASK_USER).pw_uid


def test_attack_the_gateway_user_cannot_read_the_secrets_nor_the_audit_keys(stack):
    """A cluster escape or a gateway exploit gets the gateway's uid: the state directory's
    secrets (the hub's cookie secret, the proxy token), the hub and audit databases and
    the audit chain's keys stay out of its reach."""
    s = stack.settings
    targets = [*sorted((s.state_dir / "secrets").iterdir()),
               *sorted(s.hub_secrets_dir.iterdir()),
               *sorted(p for p in Path(s.audit.key_dir).iterdir() if p.is_file()),
               Path(s.hub_database_url.removeprefix("sqlite:///")), s.db_dir / "audit.sqlite"]
    assert any(t.name == "cookie_secret" for t in targets), targets
    result = try_read_as(gateway_pid(stack), *[t for t in targets if t.exists()])
    assert set(result.values()) == {"PermissionError"}, result
    # the settings (no secret in them) it reads
    assert try_read_as(gateway_pid(stack), s.config_file) == {str(s.config_file): "read"}


# ------------------------------------------------------------------ batch


def batch_pid(stack) -> int:
    return service_pid(stack, "ecluse batch serve")


def test_the_batch_process_runs_as_its_own_user(stack):
    user = pwd.getpwnam(BATCH_USER)
    uid, gid, groups = proc_ids(batch_pid(stack))
    assert (uid, gid) == (user.pw_uid, user.pw_gid) and uid != 0
    assert stack.settings.sandbox.launcher_callers["batch"] == BATCH_USER
    assert stack.settings.batch.service_user == BATCH_USER
    # the launcher's group, no project's group (project folders are the launcher's to read)
    assert set(groups) <= {user.pw_gid, grp.getgrnam(stack.settings.sandbox.launcher_group).gr_gid}
    # its record store and queue are its own
    s = stack.settings
    assert (s.state_dir / "batch-records").stat().st_uid == user.pw_uid
    queue = Path(s.batch.resolved_database_url(s.db_dir).removeprefix("sqlite:///"))
    assert queue.parent.stat().st_uid == user.pw_uid


def test_attack_the_batch_user_cannot_read_the_secrets_nor_the_audit_keys(stack):
    """A batch service exploit (it reads what researchers' notebooks wrote) gets its uid:
    the state directory's secrets, the hub and audit databases, the audit keys and the
    airlock's database stay out of its reach (a run's folder: the next test)."""
    s = stack.settings
    targets = [*sorted((s.state_dir / "secrets").iterdir()),
               *sorted(p for p in Path(s.audit.key_dir).iterdir() if p.is_file()),
               s.db_dir / "jupyterhub.sqlite", s.db_dir / "audit.sqlite",
               s.airlock.resolved_storage_dir(s.db_dir) / "airlock.sqlite"]
    result = try_read_as(batch_pid(stack), *[t for t in targets if t.exists()])
    assert len(result) >= 5 and set(result.values()) == {"PermissionError"}, result
    own = Path(s.batch.resolved_database_url(s.db_dir).removeprefix("sqlite:///"))
    assert try_read_as(batch_pid(stack), own, s.config_file) == {
        str(own): "read", str(s.config_file): "read"}


NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
               "outputs": [], "source": src} for i, src in enumerate([
                   "import csv\nrows = [('ward', 'stays'), ('A', 20), ('B', 30)]\n"
                   "with open('summary.csv', 'w', newline='') as fh:\n"
                   "    csv.writer(fh).writerows(rows)",
                   "print('total', 50)"])],
}


def test_a_batch_run_succeeds_and_its_export_reaches_the_airlock(stack, ldap_passwords):
    """End to end as staff through the hub: the run's sandbox, its folder (made by the
    launcher for alice), its progress and log (read through the launcher), and its
    export (the batch service's token on the airlock's API, for sam) — the audit records
    written through the launcher with each service's uid."""
    from ecluse.batch.files import shared_dir
    from ecluse.batch.hub import STAFF_SCOPES

    c = HubClient(stack.url)
    assert c.login(STAFF[0], ldap_passwords[STAFF[0]]).status_code == 302
    api = requests.Session()
    api.headers["Authorization"] = f"token {c.new_token(STAFF[0], list(STAFF_SCOPES))}"
    base = f"{stack.url}/services/batch/api/v1"
    r = api.post(f"{base}/runs", timeout=60, json={
        "project": "cardio-los", "as_user": "alice", "timeout": 200,
        "notebook": {"name": "wards.ipynb", "content": NOTEBOOK}})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    deadline = time.monotonic() + 240
    while True:
        run = api.get(f"{base}/runs/{rid}", timeout=60).json()
        if run["final"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    if run["status"] != "succeeded":
        print(run, stack.log_tail())
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"]["cells_done"] == run["progress"]["cells_total"] == 2
    folder = shared_dir(stack.settings, "cardio-los") / "batch" / rid
    alice = next(u for u in DEMO_USERS if u.uid == "alice")
    assert folder.stat().st_uid == alice.uid_number  # made by the launcher, alice's
    # the service's own uid cannot read the run's outputs: only through the launcher
    outputs = try_read_as(batch_pid(stack), folder / "summary.csv", folder / "log.txt")
    assert set(outputs.values()) == {"PermissionError"}, outputs
    r = api.get(f"{base}/runs/{rid}/logs", timeout=60)
    assert r.status_code == 200 and "total 50" in r.json()["log"], r.text
    # the executed notebook cannot be judged automatically (review): it needs its context
    # and controls to be submitted, which staff give with the export (issue 21 item 3)
    about = {n: {"context": "Stays per ward, from the batch run", "controls": "none needed"}
             for n in ("output.ipynb", "summary.csv")}
    r = api.post(f"{base}/runs/{rid}/export", json={"title": "Wards", "about": about},
                 timeout=600)
    assert r.status_code == 201, r.text
    req = r.json()
    assert (req["state"], req["requester"]) == ("submitted", STAFF[0]), req.get("submit_refused")
    assert sorted(f["name"] for f in req["files"]) == ["output.ipynb", "summary.csv"]

    batch_uid = pwd.getpwnam(BATCH_USER).pw_uid
    audit = AuditLog.from_settings(stack.settings, writer=False)
    [exported] = [e for e in audit.records(event="batch.export")
                  if e.details.get("run_id") == rid]
    assert exported.actor == STAFF[0] and exported.details["request_id"] == req["id"]
    assert exported.details["via_uid"] == batch_uid
    [finish] = [e for e in audit.records(event="batch.finish") if e.details["run_id"] == rid]
    assert finish.details["via"] == "batch" and finish.outcome == "success"
    started = [e for e in audit.records(event=STARTED_EVENT)
               if e.details.get("caller") == "batch"]
    assert started and started[-1].actor == f"uid:{batch_uid}"
    # the airlock's own records: created and uploaded by the airlock (its uid), for sam
    created = [e for e in audit.records(event="airlock.request.created")
               if e.details.get("request_id") == req["id"]]
    assert [(e.actor, e.details["via_uid"]) for e in created] == [
        (STAFF[0], pwd.getpwnam(DEFAULT_USER).pw_uid)]


def test_attack_the_batch_token_acts_on_the_airlock_for_staff_exports_only(stack,
                                                                          ldap_passwords):
    """The batch service's own token on the airlock's API: only for a staff member, one
    project, and only create, upload, describe a file, submit and read — never review,
    decide on a file, release (whole or in part) or withdraw; the lists of requests stay
    closed to it."""
    pid = batch_pid(stack)
    token = dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes()
                 .decode().split("\0") if "=" in line)["JUPYTERHUB_API_TOKEN"]
    base = f"{stack.url}/services/airlock/api/v1"
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"

    def as_(user: str, project: str = "cardio-los") -> dict[str, str]:
        return {"X-Ecluse-On-Behalf-Of": user, "X-Ecluse-Project": project}

    body = {"project": "cardio-los", "title": "t", "justification": "j"}
    r = api.post(f"{base}/requests", json=body, timeout=60)  # nobody named
    assert r.status_code == 403 and "must name the staff member" in r.text, r.text
    r = api.post(f"{base}/requests", json=body, headers=as_("alice"), timeout=60)
    assert r.status_code == 403 and "exports for platform staff only" in r.text, r.text
    r = api.get(f"{base}/requests", headers=as_(STAFF[0]), timeout=60)  # a list: no
    assert r.status_code == 403, r.text
    r = api.post(f"{base}/requests", json=body, headers=as_(STAFF[0], "air-quality"),
                 timeout=60)  # the credential's one project is not the body's
    assert r.status_code in (403, 404), r.text
    r = api.post(f"{base}/requests", json=body, headers=as_(STAFF[0]), timeout=60)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    for action in ("withdraw", "release", "release_partial"):
        r = api.post(f"{base}/requests/{rid}/{action}", json={}, headers=as_(STAFF[0]),
                     timeout=60)
        assert r.status_code == 403 and f"not {action} it" in r.text, r.text
    r = api.post(f"{base}/requests/{rid}/reviews", json={"decision": "approve"},
                 headers=as_(STAFF[0]), timeout=60)
    assert r.status_code == 403, r.text
    # nor decide on one file (it may describe one: PATCH, the export's --context)
    r = api.post(f"{base}/requests/{rid}/files/1/decision", json={"decision": "approve"},
                 headers=as_(STAFF[0]), timeout=60)
    assert r.status_code == 403 and "only users may use the airlock" in r.text, r.text
# ------------------------------------------------------------------ the hub


def hub_pid(stack) -> int:
    assert stack.hub is not None and stack.hub.poll() is None
    return stack.hub.pid


def test_the_hub_runs_as_its_own_user_and_starts_no_service(stack):
    """The hub (JupyterHub, the spawner) and its proxy run as ``ecluse-hub``; the airlock
    and the gateway are the stack's children (external services of the hub, marked as
    the supervisor's), not the hub's."""
    user = pwd.getpwnam(HUB_USER)
    uid, gid, groups = proc_ids(hub_pid(stack))
    assert (uid, gid) == (user.pw_uid, user.pw_gid) and uid != 0
    assert set(groups) <= {user.pw_gid,
                           grp.getgrnam(stack.settings.sandbox.launcher_group).gr_gid}
    assert stack.settings.hub.service_user == HUB_USER
    assert stack.settings.sandbox.launcher_callers["hub"] == HUB_USER
    proxy = int((stack.settings.hub_dir / "proxy.pid").read_text())
    assert proc_ids(proxy)[0] == user.pw_uid
    for pid in (airlock_pid(stack), gateway_pid(stack)):
        assert instances._ppid(pid) == os.getpid()  # the stack's, not the hub's
        env = instances.environ(pid)
        assert env[instances.SUPERVISED_MARK] == str(stack.state_dir.resolve())
        assert instances.MARK not in env
    # batch too: the stack's, as its service_user
    assert sorted(stack.services) == ["airlock", "batch", "dask-gateway"]
    assert instances._ppid(stack.services["batch"].pid) == os.getpid()


def test_attack_the_hub_cannot_read_the_audit_keys_nor_the_services_secrets(stack):
    """A hub exploit (it parses every sign-in, every request to the hub) gets the hub's
    uid: the audit chain's keys, the audit database, the services' tokens and
    databases, the demo passwords stay out of its reach; its own files it reads."""
    s = stack.settings
    root_secrets = sorted((s.state_dir / "secrets").iterdir())
    assert any(p.name.startswith("service-token-") for p in root_secrets), root_secrets
    keys = sorted(p for p in Path(s.audit.key_dir).iterdir() if p.is_file())
    assert keys
    targets = [*root_secrets, *keys, s.db_dir / "audit.sqlite",
               s.airlock.resolved_storage_dir(s.db_dir) / "airlock.sqlite",
               s.state_dir / "demo-users.json"]
    result = try_read_as(hub_pid(stack), *[t for t in targets if t.exists()])
    assert set(result.values()) == {"PermissionError"}, result
    own = [s.hub_secrets_dir / "cookie_secret", s.hub_secrets_dir / "proxy_token",
           Path(s.hub_database_url.removeprefix("sqlite:///"))]
    assert own[2].parent == s.db_dir / "hub"
    assert set(try_read_as(hub_pid(stack), *own).values()) == {"read"}
    # and the services cannot read the hub's
    for pid in (airlock_pid(stack), gateway_pid(stack)):
        assert set(try_read_as(pid, *own).values()) == {"PermissionError"}


def test_a_workspace_starts_through_the_launcher_and_the_hub_audits_through_it(
        stack, ldap_passwords):
    """Sign-in and a workspace of the hub that holds no audit key: the launcher starts
    the workspace (caller hub) and writes the hub's records, stamped with its uid."""
    from tests.hub.test_spawner import login, wait_ready

    hub_uid = pwd.getpwnam(HUB_USER).pw_uid
    c, token = login(stack, "alice", ldap_passwords)
    r = c.api("POST", "/users/alice/servers/cardio-los", token)
    assert r.status_code in (201, 202), r.text
    try:
        wait_ready(c, token, "alice", "cardio-los", timeout=240)
        r = requests.get(f"{stack.url}/user/alice/cardio-los/api/contents/",
                         headers={"Authorization": f"token {token}"}, timeout=60)
        assert r.status_code == 200, r.text[:300]
    finally:
        r = c.api("DELETE", "/users/alice/servers/cardio-los", token)
        assert r.status_code in (202, 204), r.text
    audit = AuditLog.from_settings(stack.settings, writer=False)
    started = [e for e in audit.records(event=STARTED_EVENT)
               if e.details.get("caller") == "hub"]
    assert [(e.project, e.details["user"], e.actor) for e in started] == [
        ("cardio-los", "alice", f"uid:{hub_uid}")]
    for event in ("login.success", "workspace.start"):
        [rec, *_] = [e for e in audit.records(event=event) if e.actor == "alice"]
        assert (rec.details["via"], rec.details["via_uid"]) == ("hub", hub_uid), rec


def test_a_dead_service_is_restarted_by_the_supervisor(stack):
    """The hub no longer restarts its services: ``ecluse up``'s supervisor does, as the
    service's user again, and audits it."""
    from ecluse.dev.supervisor import Supervisor

    supervisor = Supervisor(stack.supervised(), backoff=0.1)
    assert [c.name for c in supervisor.components][-3:] == ["airlock", "batch", "dask-gateway"]
    old = airlock_pid(stack)
    os.kill(old, 9)
    stack.services["airlock"].wait(30)
    supervisor.poll()
    assert [r[0] for r in supervisor.restarts] == ["airlock"]
    new = stack.services["airlock"].pid
    assert new != old and proc_ids(new)[0] == pwd.getpwnam(DEFAULT_USER).pw_uid
    stack.wait_service("airlock", timeout=120)


def test_an_unreachable_state_directory_leaves_the_services_roots(tmp_path, slapd, caplog):
    """pytest's own folders are private (0700): the users could not reach the state
    directory, so nothing changes and one warning per service says why."""
    settings = load_settings(write_config(tmp_path / "private", slapd, overrides={
        "hub.spawner": "ecluse", "dask.gateway": True}))
    settings.state_dir.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="ecluse.dev.serviceusers"):
        assert run_services_as(settings, DEFAULT_USERS) == {}
    assert settings.airlock.service_user is None and settings.sandbox.launcher_socket is None
    assert settings.dask.service_user is None and settings.hub.service_user is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4, warnings
    assert f"the airlock runs as root, not as {DEFAULT_USER}" in warnings[0]
    assert f"the dask runs as root, not as {DASK_USER}" in warnings[1]
    assert f"the batch runs as root, not as {BATCH_USER}" in warnings[2]
    assert settings.batch.service_user is None
    assert f"the hub runs as root, not as {HUB_USER}" in warnings[3]
    assert all(str(settings.state_dir) in w for w in warnings)


def test_a_stack_without_the_gateway_makes_no_dask_user_of_it(tmp_path, slapd, caplog):
    """``dask.gateway: false`` (or another spawner): there is no gateway to run as
    ``ecluse-dask``; only the airlock is considered."""
    settings = load_settings(write_config(tmp_path / "private", slapd))  # gateway off
    settings.state_dir.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="ecluse.dev.serviceusers"):
        assert run_services_as(settings, DEFAULT_USERS) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # (nor a batch user: without the Écluse spawner there is no batch service either)
    assert [w.split(":")[0] for w in warnings] == [
        f"the airlock runs as root, not as {DEFAULT_USER}",
        f"the hub runs as root, not as {HUB_USER}"]
