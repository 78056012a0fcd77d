"""The sandbox launcher: services start sandboxes through it, each within its policy.

A real launcher (:class:`ecluse.sandbox.launcher.Launcher`, root, on a Unix
socket) runs in a thread of the test; its callers are real processes running
as other uids (``subprocess`` with ``user=``), so the launcher knows them by
``SO_PEERCRED`` as in production. Every refusal is checked in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.audit import AuditLog
from ecluse.auditevents import AuditEvent
from ecluse.config import Settings
from ecluse.sandbox import sandbox_for
from ecluse.sandbox.cgroups import CHECKS_PARENT, Cgroups
from ecluse.sandbox.launcher import REFUSED_EVENT, STARTED_EVENT, Launcher
from ecluse.sandbox.local import LocalSandbox

pytestmark = pytest.mark.timeout(240)

AIRLOCK_UID = 64950  # the airlock service's user (a system account in production)
STRANGER_UID = 64951  # a local user who is no caller
BATCH_UID = 64952  # the batch service's user
DASK_UID = 64953  # dask-gateway's user
HUB_UID = 0


class LauncherThread:
    """A real launcher serving on its socket from an event loop in a thread."""

    def __init__(self, settings: Settings, backend: LocalSandbox):
        self.settings = settings
        self.launcher = Launcher(settings, backend=backend)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LauncherThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.launcher.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.launcher.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def launch_settings(deployment: Settings, sandbox_tmp: Path) -> Iterator[Settings]:
    storage = Path(tempfile_dir(sandbox_tmp, "airlock-"))
    (storage / "tmp").mkdir(mode=0o700)
    (storage / "objects").mkdir(mode=0o700)
    for p in (storage, storage / "tmp", storage / "objects"):
        os.chown(p, AIRLOCK_UID, AIRLOCK_UID)
    run = Path(tempfile_dir(sandbox_tmp, "launcher-"))
    os.chmod(run, 0o755)
    sandbox = deployment.sandbox.model_copy(update={
        "launcher_socket": run / "launcher.sock",
        "launcher_group": str(AIRLOCK_UID),
        "launcher_callers": {"airlock": str(AIRLOCK_UID), "hub": str(HUB_UID),
                             "batch": str(BATCH_UID), "dask": str(DASK_UID)},
    })
    airlock = deployment.airlock.model_copy(update={
        "storage_dir": storage, "check_timeout": 60.0, "check_memory": 512 * 1024**2})
    yield deployment.model_copy(update={"sandbox": sandbox, "airlock": airlock,
                                        "audit_database_url": f"sqlite:///{run}/audit.sqlite"})
    shutil.rmtree(storage, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)


def tempfile_dir(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)


@pytest.fixture
def launcher(launch_settings: Settings, backend) -> Iterator[LauncherThread]:
    with LauncherThread(launch_settings, backend) as lt:
        yield lt
    projects = Path(launch_settings.projects_root)
    left = [p.name for p in projects.iterdir()] if projects.exists() else []
    assert not [n for n in left if n.startswith("airlock-check-")], left


ASK = textwrap.dedent(r"""
    import json, socket, sys
    out = []
    for req in json.loads(sys.argv[2]):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out.append(json.loads(data))
    print(json.dumps(out))
""")


def as_user(uid: int) -> list[str]:
    """The prefix running a command as ``uid`` (group: the socket's), no capabilities."""
    return ["setpriv", f"--reuid={uid}", f"--regid={AIRLOCK_UID}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all"]


def ask(settings: Settings, uid: int, *requests: dict) -> list[dict]:
    """Send raw requests to the launcher from a process running as ``uid``."""
    proc = subprocess.run(
        [*as_user(uid), sys.executable, "-I", "-c", ASK, str(settings.sandbox.launcher_socket),
         json.dumps(list(requests))], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_spec(settings: Settings, **changes) -> dict:
    """A request the airlock's policy allows (a check sandbox), with ``changes``."""
    a = settings.airlock
    spec = {
        "project": "airlock-check-0123abcd", "project_gid": a.check_gid,
        "user": {"name": a.check_user, "uid": a.check_uid, "gid": a.check_gid},
        "command": ["/bin/true"], "env": {}, "port": None, "allowed_ports": [],
        "workdir": "/tmp", "mounts": [], "name": "airlock-check",
    }
    spec.update(changes)
    return spec


def refusals(settings: Settings) -> list[dict]:
    audit = AuditLog.from_settings(settings, writer=False)
    return [r.details | {"actor": r.actor, "outcome": r.outcome}
            for r in audit.records() if r.event == REFUSED_EVENT]


def _sbx(settings: Settings, name: str = "sbx-job", owner: int = AIRLOCK_UID) -> Path:
    d = Path(settings.airlock.storage_dir) / "tmp" / name
    d.mkdir()
    os.chown(d, owner, owner)
    return d


def test_the_airlock_may_run_check_sandboxes_only(launch_settings, launcher):
    s = launch_settings
    hub_port = s.hub.hub_port
    cases = [
        # a workspace (a long-running server) instead of a check
        ({"op": "launch", "spec": check_spec(s, name="workspace")},
         "the airlock may not ask the launcher to launch (allowed: audit, run)"),
        ({"op": "run", "spec": check_spec(s, name="workspace")},
         "may not start a sandbox named 'workspace'"),
        # a project with its datasets under /data
        ({"op": "run", "spec": check_spec(s, project="covid-los", project_gid=7001)},
         "the airlock may start check sandboxes only"),
        # a port to serve on, a host port to reach
        ({"op": "run", "spec": check_spec(s, port=8888)}, "serve no port"),
        ({"op": "run", "spec": check_spec(s, allowed_ports=[hub_port])},
         f"may not reach host port(s) {hub_port}"),
        # another uid: a researcher's, root's
        ({"op": "run", "spec": check_spec(s, user={"name": "alice", "uid": 5001, "gid": 5001})},
         "may run checks as ecluse-check (64900:64900) only, not as alice"),
        ({"op": "run", "spec": check_spec(s, user={"name": "root", "uid": 0, "gid": 0})},
         "uid/gid 0/0 below 1000"),
        # other operations
        ({"op": "host_address"}, "the airlock may not ask the launcher to host_address"),
        ({"op": "poll", "id": "s0123456789"}, "the airlock may not ask the launcher to poll"),
        # acting as another caller
        ({"op": "launch", "caller": "hub", "spec": check_spec(s)}, "is not the hub caller"),
    ]
    answers = ask(s, AIRLOCK_UID, *[req for req, _ in cases])
    for (req, expected), answer in zip(cases, answers, strict=True):
        assert answer["ok"] is False and answer["refused"] is True, (req, answer)
        assert expected in answer["error"], (expected, answer["error"])
    audited = refusals(s)
    assert len(audited) == len(cases)
    assert {r["actor"] for r in audited} == {f"uid:{AIRLOCK_UID}"}
    assert [r["reason"] for r in audited] == [a["error"] for a in answers]
    assert all(r["outcome"] == "denied" for r in audited)
    assert launcher.launcher.owners == {}


def test_check_mounts_are_the_airlocks_own_folders_only(launch_settings, launcher):
    s = launch_settings
    tmp = Path(s.airlock.storage_dir) / "tmp"
    good = _sbx(s, "sbx-good")
    _sbx(s, "sbx-roots", owner=0)  # a folder the airlock does not own
    (tmp / "sbx-link").symlink_to(s.state_dir)  # a symlink to the state directory
    (tmp / "sbx-etc").symlink_to("/etc")

    def mount(source, target="/airlock-check", read_only=True):
        return check_spec(s, mounts=[{"source": str(source), "target": target,
                                      "read_only": read_only}])

    cases = [
        (mount(s.state_dir), f"may mount folders under {tmp} only"),
        (mount("/etc"), f"may mount folders under {tmp} only"),
        (mount(s.state_dir, target="/etc"), "may not mount anything at '/etc'"),
        (mount(f"{good}/../../../state"), "is not a plain absolute path"),
        (mount(tmp / "sbx-link"), "'sbx-link' is not a folder"),
        (mount(tmp / "sbx-etc"), "'sbx-etc' is not a folder"),
        (mount(tmp / "sbx-roots"), "is not the airlock's own (owner uid 0)"),
        (mount(good, read_only=False), "must be mounted read-only"),
        (mount(tmp), "is not a airlock folder"),
        (mount(Path(s.projects["covid-los"].datasets[0].path), target="/data/covid"),
         "may not mount anything at '/data/covid'"),
    ]
    answers = ask(s, AIRLOCK_UID, *[{"op": "run", "spec": spec} for spec, _ in cases])
    for (_spec, expected), answer in zip(cases, answers, strict=True):
        assert answer["ok"] is False and answer["refused"], answer
        assert expected in answer["error"], (expected, answer["error"])
    assert len(refusals(s)) == len(cases)


def test_the_airlock_mounts_the_ledger_of_a_differencing_job_and_nothing_else(launch_settings,
                                                                               launcher):
    s = launch_settings
    tmp = Path(s.airlock.storage_dir) / "tmp"
    job, rows = _sbx(s, "sbx-job"), _sbx(s, "ledger-rows")
    _sbx(s, "ledger-roots", owner=0)
    (tmp / "ledger-link").symlink_to(s.state_dir)

    def mounts(*pairs, read_only=True):
        return check_spec(s, mounts=[{"source": str(src), "target": target,
                                      "read_only": read_only} for src, target in pairs])

    objects = Path(s.airlock.storage_dir) / "objects"
    cases = [
        # the staging area's objects, the state directory (its audit and hub databases)
        (mounts((job, "/airlock-check"), (objects, "/airlock-ledger")),
         f"may mount folders under {tmp} only"),
        (mounts((s.state_dir, "/airlock-ledger")), f"may mount folders under {tmp} only"),
        # a job folder as the ledger, the ledger as a job folder
        (mounts((job, "/airlock-ledger")), "is not a airlock folder"),
        (mounts((rows, "/airlock-check")), "is not a airlock folder"),
        (mounts((rows, "/airlock-ledger"), read_only=False), "must be mounted read-only"),
        (mounts((tmp / "ledger-link", "/airlock-ledger")), "'ledger-link' is not a folder"),
        (mounts((tmp / "ledger-roots", "/airlock-ledger")),
         "is not the airlock's own (owner uid 0)"),
        # two ledgers (or job folders) in one sandbox
        (mounts((rows, "/airlock-ledger"), (job, "/airlock-ledger")),
         "may mount one folder per target"),
        (mounts((rows, "/airlock-ledger/sub")), "may not mount anything at '/airlock-ledger/sub'"),
    ]
    answers = ask(s, AIRLOCK_UID, *[{"op": "run", "spec": spec} for spec, _ in cases])
    for (_spec, expected), answer in zip(cases, answers, strict=True):
        assert answer["ok"] is False and answer["refused"], answer
        assert expected in answer["error"], (expected, answer["error"])
    assert len(refusals(s)) == len(cases)


def test_an_unknown_uid_is_refused(launch_settings, launcher):
    s = launch_settings
    [answer] = ask(s, STRANGER_UID, {"op": "run", "spec": check_spec(s)})
    assert answer == {"ok": False, "refused": True, "error":
                      f"uid {STRANGER_UID} is not a caller of the sandbox launcher "
                      "(sandbox.launcher_callers)"}
    [rec] = refusals(s)
    assert rec["actor"] == f"uid:{STRANGER_UID}" and rec["caller"] is None


def test_a_hub_may_not_start_check_sandboxes_nor_use_reserved_uids(launch_settings, launcher):
    s = launch_settings
    a = s.airlock
    cases = [
        ({"op": "run", "spec": check_spec(s)}, "the hub may not ask the launcher to run"),
        ({"op": "launch", "spec": check_spec(s, name="workspace")},
         "only the airlock starts check sandboxes"),
        ({"op": "launch", "spec": check_spec(s, name="workspace", project="covid-los",
                                             project_gid=7001)},
         f"uid {a.check_uid} is reserved"),
        ({"op": "launch", "spec": check_spec(
            s, name="workspace", project="covid-los", project_gid=7002,
            user={"name": "alice", "uid": 5001, "gid": 5001})},
         "group id 7002 is not the project's"),
        ({"op": "launch", "spec": check_spec(
            s, name="workspace", project="nope-proj",
            user={"name": "alice", "uid": 5001, "gid": 5001})},
         "no project 'nope-proj'"),
    ]
    answers = ask(s, HUB_UID, *[req for req, _ in cases])
    for (_req, expected), answer in zip(cases, answers, strict=True):
        assert answer["ok"] is False and answer["refused"], answer
        assert expected in answer["error"], (expected, answer["error"])


CHECKER = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    from ecluse.airlock.checkbox import SandboxChecker
    from ecluse.config import Settings
    from ecluse.sdc import DisclosurePolicy
    settings = Settings.model_validate_json(sys.argv[1])
    chk = SandboxChecker(settings, settings.airlock)
    assert type(chk.backend).__name__ == "LauncherSandbox"
    out = {}
    for name, path in json.loads(sys.argv[2]):
        tmp = Path(settings.airlock.storage_dir) / "tmp"
        out[name] = chk(Path(path), name, DisclosurePolicy(), tmp, 200)
    # differencing against the ledger, mounted read-only at /airlock-ledger
    older = {"name": "older.csv", "findings": [], "details": {"count_tables": [
        {"source": "older.csv", "measure": "n", "dims": ["age"], "cells": [[[">= 19"], 115]]}]}}
    released = [{"source": "adults.csv", "measure": "n", "dims": ["age"],
                 "cells": [[[">= 18"], 120]], "origin": {"request": "ar-0123456789abcdef"}}]
    out["~differencing"] = chk.difference([older], released, DisclosurePolicy(), tmp)
    print(json.dumps(out))
""")


def test_the_airlock_checks_through_the_launcher_as_a_non_root_user(launch_settings, launcher):
    s = launch_settings
    objects = Path(s.airlock.storage_dir) / "objects"
    rows = "".join(f"P{100000 + i},{20 + i % 70},{1 + i % 29}\n" for i in range(40))
    files = {
        "patients.csv": "patient_id,age,los_days\n" + rows,
        "counts_small.csv": "sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\nM,41-65,40\n",
        "counts_safe.csv": "sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n",
    }
    staged = []
    for name, text in files.items():
        obj = objects / name.replace(".", "-")
        obj.write_text(text)
        os.chown(obj, AIRLOCK_UID, AIRLOCK_UID)
        obj.chmod(0o400)
        staged.append((name, str(obj)))
    proc = subprocess.run(
        [*as_user(AIRLOCK_UID), sys.executable, "-I", "-c", CHECKER, s.model_dump_json(),
         json.dumps(staged)], capture_output=True, text=True, timeout=180, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    [[found]] = out.pop("~differencing")
    assert found["rule"] == "differencing"
    assert found["location"]["released_in"] == "ar-0123456789abcdef"
    verdicts = {name: r["report"]["verdict"] for name, r in out.items()}
    assert verdicts == {"patients.csv": "block", "counts_small.csv": "fail",
                        "counts_safe.csv": "pass"}, out
    assert "P100000" not in proc.stdout
    # each check ran in a sandbox the launcher started as the airlock's caller, as the
    # check uid; nothing is left in the staging area
    audit = AuditLog.from_settings(s, writer=False)
    started = [r for r in audit.records() if r.event == STARTED_EVENT]
    assert len(started) == 4
    assert all(r.details["caller"] == "airlock" and r.actor == f"uid:{AIRLOCK_UID}"
               and r.details["user"] == s.airlock.check_user for r in started)
    assert list((Path(s.airlock.storage_dir) / "tmp").iterdir()) == []


def test_the_hub_starts_workspaces_through_the_launcher_and_owns_them(launch_settings, launcher,
                                                                      covid):
    from ecluse.sandbox import Mount, SandboxSpec, UserIdentity

    s = launch_settings
    hub = sandbox_for(s, "hub")
    assert type(hub).__name__ == "LauncherSandbox"
    alice = UserIdentity("alice", 5001, 5001)
    jupyter = Path(s.state_dir) / "workspace" / "jupyter"  # the export guard's config
    jupyter.mkdir(parents=True, exist_ok=True)
    (jupyter / "jupyter_server_config.json").write_text("{}")
    spec = SandboxSpec(covid, alice, ["/bin/sh", "-c", "id -u; ls /data /etc/jupyter; sleep 30"],
                       name="workspace", allowed_ports=[s.hub.hub_port],
                       extra_mounts=[Mount(jupyter, "/etc/jupyter")])

    async def scenario():
        state = await hub.launch(spec)
        try:
            assert await hub.poll(state) is None
            # the batch service may not stop, poll or read another caller's sandbox
            answers = await asyncio.to_thread(
                ask, s, BATCH_UID, {"op": "terminate", "id": state["id"]},
                {"op": "read_logs", "id": state["id"]})
            for answer in answers:
                assert answer["refused"] and answer["error"] == (
                    f"sandbox {state['id']} is not the batch's"), answer
            assert await hub.poll(state) is None
            # a project's datasets come from the launcher's settings, not the request
            out = ""
            for _ in range(100):
                out, _err = await hub.read_logs(state)
                if "jupyter_server_config.json" in out:
                    break
                await asyncio.sleep(0.05)
            assert out.split() == ["5001", "/data:", "covid", "/etc/jupyter:",
                                   "jupyter_server_config.json"], out
        finally:
            await hub.stop(state, grace=0)
        assert state["released"] and await hub.poll(state) is not None

    asyncio.run(scenario())
    assert launcher.launcher.owners == {}
    assert [r["caller"] for r in refusals(s)] == ["batch", "batch"]


def test_a_check_whose_caller_goes_away_is_stopped(launch_settings, launcher):
    """A killed airlock (or a cancelled check) leaves no sandbox running."""
    s = launch_settings
    req = {"op": "run", "timeout": 120, "spec": check_spec(s, command=["/bin/sleep", "100"])}
    client = subprocess.Popen(
        [*as_user(AIRLOCK_UID), sys.executable, "-I", "-c", ASK,
         str(s.sandbox.launcher_socket), json.dumps([req])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    check = launcher.launcher.check_backend
    try:
        deadline = time.monotonic() + 60
        while not check._children and time.monotonic() < deadline:
            time.sleep(0.05)
        [sid] = list(check._children)
        # in the checks' own cgroup, not the workspaces'
        assert not Cgroups(sid).exists()
        while not Cgroups(sid, parent=CHECKS_PARENT).pids() and time.monotonic() < deadline:
            time.sleep(0.05)  # sleep is running
        assert Cgroups(sid, parent=CHECKS_PARENT).pids()
    finally:
        client.kill()
        client.wait(10)
    deadline = time.monotonic() + 30
    while Path(f"/run/ecluse/sandboxes/{sid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/run/ecluse/sandboxes/{sid}").exists()
    assert not Cgroups(sid, parent=CHECKS_PARENT).exists()
    assert check._children == {}


def test_batch_runs_through_the_launcher_with_its_own_input_folder_only(launch_settings,
                                                                        launcher):
    s = launch_settings
    runs = Path(s.state_dir) / "batch-records"
    inputs = runs / "r42" / "input"
    inputs.mkdir(parents=True)
    (inputs / "notebook.ipynb").write_text("the run's notebook\n")
    for p in (runs / "r42", inputs, inputs / "notebook.ipynb"):
        os.chown(p, BATCH_UID, BATCH_UID)
    os.chmod(inputs / "notebook.ipynb", 0o444)
    try:
        def spec(source, **changes):
            return check_spec(s, **{
                "project": "covid-los", "project_gid": 7001, "name": "batch",
                "user": {"name": "alice", "uid": 5001, "gid": 5001}, "workdir": None,
                "command": ["/bin/sh", "-c", "cat /batch-input/notebook.ipynb; ls /data"],
                "mounts": [{"source": str(source), "target": "/batch-input",
                            "read_only": True}], **changes})

        # another caller's kinds of sandbox: a workspace, a Dask cluster, a check
        kinds = ask(s, BATCH_UID,
                    {"op": "launch", "one_shot": True, "spec": spec(inputs, name="workspace")},
                    {"op": "launch", "one_shot": True, "spec": spec(inputs, name="dask-x")},
                    {"op": "launch", "one_shot": True, "spec": spec(
                        inputs, project="airlock-check-0123abcd")})
        assert [a["error"] for a in kinds] == [
            "the batch may not start a sandbox named 'workspace'",
            "the batch may not start a sandbox named 'dask-x'",
            "only the airlock starts check sandboxes (airlock-check-0123abcd)"]
        refused = ask(s, BATCH_UID,
                      {"op": "launch", "one_shot": True, "spec": spec(runs)},
                      {"op": "launch", "one_shot": True, "spec": spec(s.state_dir)},
                      {"op": "launch", "one_shot": True, "spec": spec(inputs, port=8888)},
                      {"op": "run", "spec": spec(inputs)})
        assert [a["error"] for a in refused] == [
            f"mount source {runs} is not a batch folder",
            f"the batch may mount folders under {runs} only, not {s.state_dir}",
            "the batch's sandboxes serve no port (asked 8888)",
            "the batch may not ask the launcher to run (allowed: audit, launch, list, poll, "
            "prepare_project_dirs, read_logs, release, run_folder_create, run_folder_list, "
            "run_folder_read, terminate)",
        ]
        [started] = ask(s, BATCH_UID, {"op": "launch", "one_shot": True, "spec": spec(inputs)})
        assert started["ok"], started
        sid = started["state"]["id"]
        for _ in range(200):
            [polled] = ask(s, BATCH_UID, {"op": "poll", "id": sid})
            if polled["status"] is not None:
                break
            time.sleep(0.05)
        logs, released = ask(s, BATCH_UID, {"op": "read_logs", "id": sid},
                             {"op": "release", "id": sid})
        assert polled["status"] == 0, logs
        assert logs["stdout"].split() == ["the", "run's", "notebook", "covid"], logs
        assert released["ok"] and not Path(f"/run/ecluse/sandboxes/{sid}").exists()
        # a run left by a batch service that restarted: listed for the batch (only) and
        # stopped by it
        [started] = ask(s, BATCH_UID, {"op": "launch", "one_shot": True,
                                       "spec": spec(inputs, command=["/bin/sleep", "60"])})
        sid = started["state"]["id"]
        mine, = ask(s, BATCH_UID, {"op": "list"})
        assert [(m["id"], m["alive"]) for m in mine["sandboxes"]] == [(sid, True)]
        assert sid in [m["id"] for m in launcher.launcher.backend.list()]
        hubs = asyncio.run(asyncio.to_thread(sandbox_for(s, "hub").list))
        assert hubs == []
        stopped, released, polled = ask(s, BATCH_UID, {"op": "terminate", "id": sid, "grace": 0},
                                        {"op": "release", "id": sid}, {"op": "poll", "id": sid})
        assert stopped["ok"] and released["ok"] and polled == {"ok": True, "gone": True}
    finally:
        shutil.rmtree(runs)


def test_the_embedded_stack_starts_and_stops_the_launcher(launch_settings):
    """``ecluse up`` as root with ``sandbox.launcher_socket``: the launcher runs as a child
    process from the same config file, and is gone with the stack."""
    import yaml

    from ecluse.config import load_settings
    from ecluse.dev.stack import Stack

    s = launch_settings
    folder = Path(s.sandbox.launcher_socket).parent
    (folder / "projects.yaml").write_text("projects: {}\n")
    data = json.loads(s.model_dump_json())
    data["projects_file"] = str(folder / "projects.yaml")
    (folder / "ecluse.yaml").write_text(yaml.safe_dump(data))
    stack = Stack(load_settings(folder / "ecluse.yaml"))
    try:
        stack.start_launcher()
        assert stack.launcher is not None and stack.launcher.proc.poll() is None
        [answer] = ask(s, STRANGER_UID, {"op": "run", "spec": check_spec(s)})
        assert answer["error"] == (f"uid {STRANGER_UID} is not a caller of the sandbox "
                                   "launcher (sandbox.launcher_callers)")
        proc = stack.launcher.proc
    finally:
        stack.stop()
    assert proc.returncode == 0 and stack.launcher is None
    assert not Path(s.sandbox.launcher_socket).exists()


def test_an_unprivileged_airlock_without_a_launcher_refuses_to_start(launch_settings):
    s = launch_settings
    settings = s.model_copy(update={"sandbox": s.sandbox.model_copy(
        update={"launcher_socket": None})})
    code = textwrap.dedent("""
        import sys
        from ecluse.airlock.checkbox import CheckSandboxUnavailable, SandboxChecker
        from ecluse.config import Settings
        settings = Settings.model_validate_json(sys.argv[1])
        try:
            SandboxChecker(settings, settings.airlock)
        except CheckSandboxUnavailable as e:
            print(e)
    """)
    proc = subprocess.run([*as_user(AIRLOCK_UID), sys.executable, "-I", "-c", code,
                           settings.model_dump_json()], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "started by root only; set sandbox.launcher_socket" in proc.stdout


def audit_records(settings: Settings, prefix: str) -> list:
    return [r for r in AuditLog.from_settings(settings, writer=False).records()
            if r.event.startswith(prefix)]


def test_the_airlock_records_its_own_audit_events_through_the_launcher(launch_settings,
                                                                       launcher):
    s = launch_settings
    ok, other, launch, stamped, hub = ask(
        s, AIRLOCK_UID,
        {"op": "audit", "event": "airlock.request.created", "actor": "alice",
         "audit_project": "covid-los", "details": {"request_id": "r-1", "title": "LOS"}},
        {"op": "audit", "event": "auth.login", "actor": "alice"},
        {"op": "audit", "event": STARTED_EVENT, "actor": "uid:0"},
        {"op": "audit", "event": "airlock.request.released", "actor": "carol",
         "details": {"via": "hub", "via_uid": 0}},
        {"op": "audit", "caller": "hub", "event": "airlock.request.released", "actor": "x"})
    assert ok["ok"] and isinstance(ok["seq"], int), ok
    assert other == {"ok": False, "refused": True,
                     "error": "the airlock may not record the audit event 'auth.login'"}
    assert launch["refused"] and STARTED_EVENT in launch["error"]
    assert stamped == {"ok": False, "refused": True,
                       "error": "audit details may not set via, via_uid"}
    assert hub["refused"] and hub["error"] == f"uid {AIRLOCK_UID} is not the hub caller"
    # another service's events (batch), and a stranger: refused
    [batch] = ask(s, BATCH_UID, {"op": "audit", "event": "airlock.request.released"})
    [stranger] = ask(s, STRANGER_UID, {"op": "audit", "event": "airlock.request.released"})
    assert batch["refused"] and batch["error"] == (
        "the batch may not record the audit event 'airlock.request.released'")
    assert stranger["refused"] and "is not a caller" in stranger["error"]
    # one record, stamped with the caller the kernel named
    [rec] = audit_records(s, "airlock.")
    assert (rec.event, rec.actor, rec.project, rec.outcome) == (
        "airlock.request.created", "alice", "covid-los", "success")
    assert rec.details["via"] == "airlock" and rec.details["via_uid"] == AIRLOCK_UID
    assert rec.details["request_id"] == "r-1" and rec.details["via_pid"] > 0
    assert len(refusals(s)) == 6
    # an airlock-shaped name that is not an audit event
    [unknown] = ask(s, AIRLOCK_UID, {"op": "audit", "event": "airlock.request.eaten",
                                     "actor": "alice"})
    assert unknown == {"ok": False, "refused": True,
                       "error": "'airlock.request.eaten' is not an audit event"}
    assert len(audit_records(s, "airlock.")) == 1
    # what its start swept (a killed instance's partial uploads), stamped likewise
    [swept] = ask(s, AIRLOCK_UID, {"op": "audit", "event": "platform.leftovers_removed",
                                   "actor": "airlock", "details": {"kind": "temporary files",
                                                                   "removed": []}})
    assert swept["ok"], swept
    # the chain (HMAC, checkpoints) holds; the JSON Lines copy is the state directory's,
    # shared by this module's tests, so it is not this log's alone
    problems = AuditLog.from_settings(s, writer=False).verify().problems
    assert [p for p in problems if "mirror" not in p] == [], problems


def test_the_gateway_records_its_own_audit_events_through_the_launcher(launch_settings,
                                                                       launcher):
    """dask-gateway as its own user: its refusals, revocations and start clean-up only;
    never another service's events, a sign-in or a launcher record."""
    s = launch_settings
    denied, leftovers, airlock, login, launch = ask(
        s, DASK_UID,
        {"op": "audit", "event": "dask.denied", "actor": "bob", "audit_project": "covid-los",
         "outcome": "denied", "details": {"reason": "not-a-member"}},
        {"op": "audit", "event": "platform.leftovers_removed", "actor": "dask-gateway",
         "details": {"kind": "service processes", "removed": ["pid 1"]}},
        {"op": "audit", "event": "airlock.request.released", "actor": "carol"},
        {"op": "audit", "event": "auth.login", "actor": "alice"},
        {"op": "audit", "event": STARTED_EVENT, "actor": "uid:0"})
    assert denied["ok"] and leftovers["ok"], (denied, leftovers)
    for answer, event in ((airlock, "airlock.request.released"), (login, "auth.login"),
                          (launch, str(STARTED_EVENT.value))):
        assert answer == {"ok": False, "refused": True,
                          "error": f"the dask may not record the audit event {event!r}"}
    [rec] = audit_records(s, "dask.")
    assert (rec.event, rec.actor, rec.project, rec.outcome) == (
        "dask.denied", "bob", "covid-los", "denied")
    assert rec.details["via"] == "dask" and rec.details["via_uid"] == DASK_UID
    assert audit_records(s, "airlock.") == []


def test_the_hub_records_its_own_audit_events_through_the_launcher(launch_settings,
                                                                   launcher):
    """The hub as its own user (hub.service_user): sign-ins, the second factor, group
    changes, revocations, workspaces and its start's clean-up only; never a service's
    events, the launcher's own, nor details the launcher stamps."""
    s = launch_settings
    answers = ask(
        s, HUB_UID,
        {"op": "audit", "event": "login.success", "actor": "alice",
         "details": {"groups": ["cardio-los"]}},
        {"op": "audit", "event": "workspace.start", "actor": "alice",
         "audit_project": "covid-los", "details": {"sandbox": "s0123456789"}},
        {"op": "audit", "event": "membership.revoked", "actor": "reconciler"},
        {"op": "audit", "event": "airlock.request.released", "actor": "carol"},
        {"op": "audit", "event": "dask.denied", "actor": "bob"},
        {"op": "audit", "event": str(STARTED_EVENT.value), "actor": "uid:0"},
        {"op": "audit", "event": "platform.component_restarted", "actor": "ecluse-up"},
        {"op": "audit", "event": "login.success", "actor": "alice",
         "details": {"via_uid": 1234}})
    assert all(a["ok"] for a in answers[:3]), answers[:3]
    for answer, event in zip(answers[3:7], ("airlock.request.released", "dask.denied",
                                            str(STARTED_EVENT.value),
                                            "platform.component_restarted"), strict=True):
        assert answer == {"ok": False, "refused": True,
                          "error": f"the hub may not record the audit event {event!r}"}
    assert answers[7] == {"ok": False, "refused": True,
                          "error": "audit details may not set via_uid"}
    recs = [r for r in audit_records(s, "workspace.") + audit_records(s, "login.")
            if r.actor == "alice"]
    assert {r.event for r in recs} >= {"workspace.start", "login.success"}
    assert all(r.details["via"] == "hub" and r.details["via_uid"] == HUB_UID for r in recs)
    assert not [r for r in audit_records(s, "dask.") + audit_records(s, "airlock.")
                if r.details.get("via") == "hub"]


AIRLOCK_AS_USER = textwrap.dedent(r"""
    import json, os, sys
    from pathlib import Path
    from ecluse.airlock.service import AirlockService
    from ecluse.config import Project, Settings
    settings = Settings.model_validate_json(sys.argv[1])
    settings.projects = {k: Project.model_validate(v) for k, v in json.loads(sys.argv[3]).items()}
    out = {"uid": os.getuid()}
    # what the airlock's user may not touch: the state directory, the audit log
    for what, path, mode in (("secrets", settings.state_dir / "secrets.env", "r"),
                             ("hub_db", settings.state_dir / "jupyterhub.sqlite", "r+b"),
                             ("audit_db", sys.argv[2], "r+b")):
        try:
            open(path, mode).close()
            out[what] = "opened"
        except PermissionError:
            out[what] = "denied"
    service = AirlockService.from_settings(settings, process_checks=True)
    out["audit"] = type(service.audit).__name__
    out["checker"] = type(service.checker.backend).__name__
    alice = service.identity("alice", ["covid-los"])
    rid = service.create_request(alice, project="covid-los", title="LOS counts",
                                 justification="the paper's table 1")["id"]
    f = service.add_file(alice, rid, "counts.csv",
                         [b"sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\n"])
    out["verdict"] = f["verdict"]
    out["request"] = rid
    service.close()
    print(json.dumps(out))
""")


def test_the_airlock_service_runs_as_its_own_user_with_the_launcher(launch_settings, launcher):
    """The whole airlock as a non-root uid without the state directory: its database in its
    own folder, checks and audit records through the launcher; what it may not touch."""
    s = launch_settings
    s = s.model_copy(update={"airlock": s.airlock.model_copy(update={"reviewers_by": "name"})})
    audit_db = str(s.audit_database_url).removeprefix("sqlite:///")
    AuditLog.from_settings(s).record(AuditEvent.PLATFORM_COMPONENT_RESTARTED, actor="root")  # the audit db exists
    proc = subprocess.run(
        [*as_user(AIRLOCK_UID), sys.executable, "-I", "-c", AIRLOCK_AS_USER,
         s.model_dump_json(), audit_db,
         json.dumps({k: p.model_dump(mode="json") for k, p in s.projects.items()})],
        capture_output=True, text=True, timeout=180, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["uid"] == AIRLOCK_UID
    assert (out["secrets"], out["hub_db"], out["audit_db"]) == ("denied",) * 3
    assert (out["audit"], out["checker"]) == ("LauncherAudit", "LauncherSandbox")
    assert out["verdict"] == "fail", out
    db = Path(s.airlock.storage_dir) / "airlock.sqlite"
    assert db.stat().st_uid == AIRLOCK_UID
    assert not (s.state_dir / "airlock.sqlite").exists()
    recs = {r.event: r for r in audit_records(s, "airlock.")}
    assert {"airlock.request.created", "airlock.file.uploaded"} <= set(recs), list(recs)
    up = recs["airlock.file.uploaded"]
    assert (up.actor, up.project, up.details["via_uid"]) == ("alice", "covid-los", AIRLOCK_UID)
    assert up.details["request_id"] == out["request"]


# ------------------------------------------------------------------ batch run folders

RUN = "br-0123456789ab"
ALICE_WIRE = {"name": "alice", "uid": 5001, "gid": 5001}


def folder_request(op: str, **fields) -> dict:
    return {"op": op, "project": "covid-los", "project_gid": 7001, "run": RUN, **fields}


def test_attack_batch_run_folders_are_made_and_read_within_the_batch_policy(launch_settings,
                                                                          launcher):
    """The batch service (its own uid, no access to project folders) has the launcher make
    a run's folder for the run's identity and read back bounded, regular files of it:
    links, hard links, FIFOs, hidden and path-like names, other folders, files over the
    limit and other callers are refused, each audited."""
    from ecluse.batch.files import shared_dir

    s = launch_settings
    shared = shared_dir(s, "covid-los")
    folder = shared / "batch" / RUN
    try:
        bad_create = ask(
            s, BATCH_UID,
            folder_request("run_folder_create", user={"name": "svc", "uid": BATCH_UID,
                                                      "gid": BATCH_UID}),
            folder_request("run_folder_create", user={"name": s.airlock.check_user,
                                                      "uid": s.airlock.check_uid,
                                                      "gid": s.airlock.check_gid}),
            folder_request("run_folder_create", user=ALICE_WIRE, project_gid=7002),
            folder_request("run_folder_create", user=ALICE_WIRE, project="no-such"),
            folder_request("run_folder_create", user=ALICE_WIRE, run="br-../../etc"),
            folder_request("run_folder_create", user={"name": "daemon", "uid": 1, "gid": 1}))
        assert [a.get("refused") for a in bad_create] == [True] * 6, bad_create
        assert "uid 64952 is reserved" in bad_create[0]["error"]
        assert "is reserved" in bad_create[1]["error"]
        assert "group id 7002 is not the project's" in bad_create[2]["error"]
        assert "no project 'no-such' in this deployment" in bad_create[3]["error"]
        assert bad_create[4]["error"].startswith("malformed request: run:")
        assert "below 1000" in bad_create[5]["error"]
        assert not (shared / "batch").exists() or not any((shared / "batch").iterdir())

        made, again = ask(s, BATCH_UID, folder_request("run_folder_create", user=ALICE_WIRE),
                          folder_request("run_folder_create", user=ALICE_WIRE))
        assert made == {"ok": True}, made
        assert again["refused"] and again["error"] == f"run folder {RUN} exists already"
        st = folder.lstat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (5001, 7001, 0o2750)
        assert (shared / "batch").stat().st_uid == 0  # the launcher's, sticky
        # what a run writes, and what a hostile notebook leaves for the service to read
        (folder / "result.json").write_text('{"status": "succeeded"}')
        (folder / "out.csv").write_bytes(b"x" * 5000)
        os.symlink(s.state_dir / "secrets.env", folder / "link.csv")
        os.link(s.state_dir / "secrets.env", folder / "hard.csv")
        os.mkfifo(folder / "fifo.csv")
        (folder / ".hidden").write_text("h")
        with open(folder / "huge.bin", "wb") as f:  # sparse: no disk used
            f.truncate(s.airlock.max_file_bytes + 1)
        for p in folder.iterdir():
            os.lchown(p, 5001, 7001)

        [listed] = ask(s, BATCH_UID, folder_request("run_folder_list"))
        assert [(f["name"], f["size"]) for f in listed["files"]] == [
            ("hard.csv", len((s.state_dir / "secrets.env").read_bytes())),
            ("huge.bin", s.airlock.max_file_bytes + 1), ("out.csv", 5000),
            ("result.json", 23)]
        result, part, missing = ask(
            s, BATCH_UID, folder_request("run_folder_read", file="result.json"),
            folder_request("run_folder_read", file="out.csv", offset=4000, length=2000),
            folder_request("run_folder_read", file="nothing.csv"))
        assert base64.b64decode(result["data"]) == b'{"status": "succeeded"}'
        assert result["size"] == 23
        assert base64.b64decode(part["data"]) == b"x" * 1000
        assert missing == {"ok": True, "missing": True}
        # reads name the project only (its group may come from the directory), and only a
        # project of the deployment: never a check sandbox's
        plain, check = ask(
            s, BATCH_UID, {"op": "run_folder_read", "project": "covid-los", "run": RUN,
                           "file": "result.json"},
            {"op": "run_folder_read", "project": "airlock-check-0123abcd", "run": RUN,
             "file": "result.json"})
        assert plain["ok"] and plain["size"] == 23, plain
        assert check["refused"] and check["error"] == (
            "no project 'airlock-check-0123abcd' in this deployment"), check
        bad_reads = ask(
            s, BATCH_UID,
            folder_request("run_folder_read", file="link.csv"),
            folder_request("run_folder_read", file="hard.csv"),
            folder_request("run_folder_read", file="fifo.csv"),
            folder_request("run_folder_read", file="huge.bin", length=10),
            folder_request("run_folder_read", file=".hidden"),
            folder_request("run_folder_read", file=".."),
            folder_request("run_folder_read", file="../../../state/secrets.env"),
            folder_request("run_folder_read", file="out.csv", length=64 * 1024 * 1024),
            folder_request("run_folder_read", file="out.csv", inode=1),
            folder_request("run_folder_read", file="result.json", project="onco-surv",
                           project_gid=7002))
        errors = [a.get("error", a) for a in bad_reads]
        assert [a.get("refused") for a in bad_reads] == [True] * 10, errors
        assert errors[0] == f"run folder {RUN}: link.csv is not a regular file"
        assert errors[1] == f"run folder {RUN}: hard.csv has 2 names (a hard link): not read"
        assert errors[2] == f"run folder {RUN}: fifo.csv is not a regular file"
        assert errors[3] == (f"run folder {RUN}: huge.bin is {s.airlock.max_file_bytes + 1} "
                             f"bytes, over the limit of {s.airlock.max_file_bytes}")
        assert errors[4] == "run_folder_read: '.hidden' is a hidden name (never '.' or '..')"
        assert errors[5] == "run_folder_read: '..' is a hidden name (never '.' or '..')"
        assert errors[6] == ("run_folder_read: '../../../state/secrets.env' is not a single "
                             "file name (no '/' nor NUL)")
        assert errors[7].startswith("malformed request: length:")
        assert errors[8] == f"run folder {RUN}: out.csv was replaced while it was read"
        assert errors[9] == f"run folder {RUN}: the run's folder is gone"
        # the run folder swapped for a link to the state directory: not entered
        os.rename(folder, folder.with_name(RUN + "-real"))
        os.symlink(s.state_dir, folder)
        [swapped] = ask(s, BATCH_UID, folder_request("run_folder_read", file="secrets.env"))
        assert swapped["refused"] and swapped["error"] == (
            f"run folder {RUN}: {RUN} is not a plain folder"), swapped
        # no other caller has these operations
        for uid, who in ((AIRLOCK_UID, "airlock"), (DASK_UID, "dask"), (HUB_UID, "hub")):
            [other] = ask(s, uid, folder_request("run_folder_read", file="result.json",
                                                 caller=who))
            assert other["refused"] and other["error"].startswith(
                f"the {who} may not ask the launcher to run_folder_read"), other
        # each refusal audited (a malformed request has no operation yet: two of them)
        reasons = [r["reason"] for r in refusals(s)
                   if (r["op"] or "").startswith("run_folder_")]
        assert len(reasons) == 5 + 1 + 1 + 9 + 1 + 3, reasons
        assert len([r for r in refusals(s) if r["op"] is None]) == 2
    finally:
        shutil.rmtree(shared / "batch", ignore_errors=True)


def test_the_batch_records_its_own_audit_events_through_the_launcher(launch_settings,
                                                                     launcher):
    s = launch_settings
    finish, leftovers, airlock, launch = ask(
        s, BATCH_UID,
        {"op": "audit", "event": "batch.finish", "actor": "erin", "audit_project": "covid-los",
         "details": {"run_id": RUN, "status": "succeeded"}},
        {"op": "audit", "event": "platform.leftovers_removed", "actor": "batch",
         "details": {"kind": "temporary files", "removed": []}},
        {"op": "audit", "event": "airlock.request.created", "actor": "erin"},
        {"op": "audit", "event": STARTED_EVENT, "actor": "uid:0"})
    assert finish["ok"] and leftovers["ok"], (finish, leftovers)
    for answer, event in ((airlock, "airlock.request.created"),
                          (launch, str(STARTED_EVENT.value))):
        assert answer == {"ok": False, "refused": True,
                          "error": f"the batch may not record the audit event {event!r}"}
    [rec] = audit_records(s, "batch.")
    assert (rec.event, rec.actor, rec.project) == ("batch.finish", "erin", "covid-los")
    assert rec.details["via"] == "batch" and rec.details["via_uid"] == BATCH_UID


def test_the_ids_of_every_backend_are_well_formed_and_nothing_else():
    """A docker (``d…``) or kubernetes (``k…``) sandbox is polled, stopped and released
    by its id like a local one (``s…``); an id that could name another folder is not."""
    import pydantic

    from ecluse.sandbox import docker, kubernetes, local
    from ecluse.sandbox.launcher import Request

    for backend in (local, docker, kubernetes):  # each makes "<letter>" + token_hex(5)
        letter = {local: "s", docker: "d", kubernetes: "k"}[backend]
        assert f'"{letter}" + secrets.token_hex(5)' in Path(backend.__file__).read_text()
        assert Request.model_validate({"op": "poll", "id": f"{letter}0123456789"}).id
    for bad in ("x0123456789", "d012345678", "d0123456789a", "../s012345678", "d01234567/9",
                "D0123456789"):
        with pytest.raises(pydantic.ValidationError):
            Request.model_validate({"op": "poll", "id": bad})
