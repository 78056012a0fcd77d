"""``ecluse up`` under crashes: real processes killed with SIGKILL, what comes back,
what is re-adopted, and that nothing is left behind.

``ecluse up`` runs as a process of its own on the repository's configuration
(``tests/support/hubstack.py:up_config``: embedded slapd, hub, proxy, route
filter, the hub-managed airlock and batch services, real sandboxes). Every
process of the run is found by its state folder (command line or environment),
and killed at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.demo import read_demo_users
from ecluse.dev.ldapserver import free_port
from ecluse.dev.supervisor import RESTARTED
from ecluse.dev.testing import HubClient, project_token_scopes
from ecluse.hubservice import instances
from ecluse.hubservice.instances import LEFTOVERS_EVENT
from ecluse.sandbox import get_backend
from ecluse.sandbox.local import teardown_host_network
from ecluse.settings.airlock import airlock_settings
from ecluse.statevolume import ensure_state_volume, release_state_volume
from tests.stack.chaos import PROJECT, SERVER, answers, our_sandboxes, pid_in
from tests.support import leftovers
from tests.support.hubstack import up_config

pytestmark = pytest.mark.root

UP_TIMEOUT = 300  # a shared 2-core host


def wait_for(cond, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail}")


def own_engines(root: Path, state: Path) -> list[str]:
    """Folders of the Docker engines ``ecluse up --sandbox docker`` started for this run
    (the dockerd children of its ``ecluse up``, or the hub's configuration copy)."""
    found = set()
    with contextlib.suppress(Exception):
        found.add(yaml.safe_load((state / "ecluse-docker.yaml").read_text())["sandbox"][
            "docker_url"].removeprefix("unix://").removesuffix("/docker.sock"))
    ups = {int(line.split(":")[0]) for line in run_processes(root, state)
           if " ecluse up " in line}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and instances._ppid(int(entry.name)) in ups:
            argv = instances.cmdline(int(entry.name)).split()
            if argv and argv[0].endswith("dockerd") and "--data-root" in argv:
                found.add(str(Path(argv[argv.index("--data-root") + 1]).parent))
    return sorted(found)


def run_processes(root: Path, state: Path, exclude: int | None = None,
                  engines: list[str] = ()) -> list[str]:
    """Every live process of this run: its command line names our folder (or the folder
    of the stack's own Docker engine), or its environment our state folder (the hub, its
    services and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), exclude):
            continue
        pid = int(entry.name)
        cmd = instances.cmdline(pid)
        if not cmd or not instances._alive(pid):
            continue
        env = instances.environ(pid)
        if str(root) in cmd or any(e in cmd for e in engines) or str(state) in (
                env.get("ECLUSE_STATE_DIR"), env.get(instances.MARK),
                env.get(instances.SUPERVISED_MARK)):
            found.append(f"{pid}: {cmd[:150]}")
    return found


class Up:
    """One ``ecluse up`` process on ``config``; its output in ``log``."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        #: where this run's output starts in a log shared with an earlier run
        self.offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ecluse", "up", "--config", str(config), *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_up(self, timeout: float = UP_TIMEOUT) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ecluse up exited {self.proc.returncode}:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            return "Écluse is up".encode() in self.log.read_bytes()[self.offset:]
        wait_for(up, timeout, "ecluse up", self.log)


@pytest.fixture
def up_stack(tmp_path: Path, request) -> Iterator[tuple[Path, object]]:
    """``ecluse up``'s configuration in a folder of its own; ``request.param`` (indirect
    parametrization) may choose the sandbox ``backend`` and start the ``gateway``.
    Whatever runs of it at the end is killed, pass or fail: its processes, its
    sandboxes, the host network, the state volume."""
    options = getattr(request, "param", {})
    backend = options.get("backend", "local")
    if backend == "docker":
        if not up_sandbox_option():
            pytest.skip("`ecluse up --sandbox docker` does not exist yet (issue 17, branch "
                        "wt/17-docker): the docker case runs as soon as `ecluse up` has "
                        "the --sandbox option")
        if shutil.which("dockerd") is None:
            pytest.skip("`ecluse up --sandbox docker` starts a Docker engine of its own: "
                        "no dockerd on this host (scripts/install-system-deps.sh)")
    if options.get("service_users"):
        # a folder the service users reach (pytest's are private: they would stay root's)
        root = Path(tempfile.mkdtemp(prefix="ecluse-up-", dir="/tmp"))
        os.chmod(root, 0o755)
    else:
        root = tmp_path / "up"
        root.mkdir()
    leftovers.register(root)  # `ecluse up` in a process of its own: the session checks it
    config = up_config(root)
    cfg = yaml.safe_load(config.read_text())
    cfg["hub"]["route_filter_port"] = free_port()  # two stacks on one host
    if options.get("gateway"):
        cfg["dask"].update(gateway=True, proxy_port=free_port(), api_port=free_port(),
                           proxy_http_port=free_port(), front_port=free_port())
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    settings = load_settings(config)
    try:
        yield config, settings
    finally:
        engines = own_engines(root, settings.state_dir)
        for line in run_processes(root, settings.state_dir, engines=engines):
            pid = int(line.split(":")[0])
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        import asyncio

        with contextlib.suppress(Exception):  # killed as well, whatever the backend does
            sandboxes = get_backend(settings)
            for meta in our_sandboxes(settings, alive_only=False):
                asyncio.run(sandboxes.stop(meta, grace=0))
        teardown_host_network()
        for engine in engines:  # a killed engine leaves its folder and a netns mount
            mounts = [line.split()[4] for line in
                      Path("/proc/self/mountinfo").read_text().splitlines()
                      if line.split()[4].startswith(engine)]
            for m in sorted(mounts, reverse=True):
                subprocess.run(["umount", "-l", m], check=False)
            shutil.rmtree(engine, ignore_errors=True)
        # the state volume (config/ecluse.yaml: image mode) of a stack killed by the test
        release_state_volume(settings)
        mounted = os.path.ismount(settings.state_dir / "db")
        if options.get("service_users"):
            shutil.rmtree(root, ignore_errors=True)
        assert not mounted, "the state volume stays mounted"


def services_answer(url: str) -> bool:
    """The airlock and batch services answer through the proxy (401/302: no token)."""
    try:
        a = requests.get(f"{url}/services/airlock/api/v1/me", timeout=3,
                         allow_redirects=False)
        b = requests.get(f"{url}/services/batch/api/v1/me", timeout=3, allow_redirects=False)
    except requests.RequestException:
        return False
    return a.status_code == 401 and b.status_code == 401


@pytest.mark.timeout(900)  # five kills and two starts of the whole stack on a shared host
@pytest.mark.parametrize("up_stack", [{}, {"service_users": True}], indirect=True,
                         ids=["root", "service-users"])
def test_up_restarts_what_dies_readopts_workspaces_and_leaves_nothing(up_stack, tmp_path,
                                                                       request):
    """Both ways ``ecluse up`` runs as root: everything root's (its folder is private),
    or the hub, the airlock (and dask-gateway) as their own users, the services then
    started and restarted by ``ecluse up`` itself, never by the hub."""
    config, settings = up_stack
    state, root = settings.state_dir, config.parent
    url = f"http://127.0.0.1:{settings.hub.port}"
    log = tmp_path / "up.log"
    up = Up(config, log)
    up.wait_up()
    # the hub has a folder of its own when it runs as ecluse-hub (the service_users case)
    users_on = (state / "hub").is_dir()
    assert users_on == bool(request.node.callspec.params["up_stack"].get("service_users"))
    hub_dir = state / "hub" if users_on else state
    mark = instances.SUPERVISED_MARK if users_on else instances.MARK
    wait_for(lambda: services_answer(url), 120, "services after start", log)
    users = read_demo_users(state / "demo-users.json")  # {"alice": {"password", "totp"}}

    # a workspace, running
    client = HubClient(url)
    assert client.login("alice", users["alice"]["password"],
                        totp=users["alice"]["totp"]).status_code == 302
    token = client.new_token("alice")
    r = client.api("POST", "/users/alice/servers/cardio-los", token)
    assert r.status_code in (201, 202), r.text
    ws = f"{url}/user/alice/cardio-los/api/status"
    auth = {"Authorization": f"token {token}"}

    def ws_started() -> str | None:
        try:
            r = requests.get(ws, headers=auth, timeout=5)
        except requests.RequestException:
            return None
        return r.json()["started"] if r.status_code == 200 else None

    started = wait_for(ws_started, 120, "workspace", log)
    (sandbox,) = our_sandboxes(settings)

    # 1. SIGKILL of the hub: restarted; proxy and services replaced, not doubled;
    #    the workspace re-adopted (the same server, not a new one)
    hub = pid_in(hub_dir / "jupyterhub.pid")
    proxy = pid_in(hub_dir / "proxy.pid")
    if users_on:
        hub_user = pwd.getpwnam("ecluse-hub").pw_uid
        assert Path(f"/proc/{hub}").stat().st_uid == hub_user != 0
    old_services = {i.pid: i.service for i in instances.find(state, mark_var=mark)}
    assert {"airlock", "batch"} <= set(old_services.values()), old_services
    t0 = time.monotonic()
    os.kill(hub, signal.SIGKILL)
    wait_for(lambda: (pid_in(hub_dir / "jupyterhub.pid") or hub) != hub, 60, "new hub", log)
    # the new hub replaced the proxy (the old one may serve on until then: the services
    # of a hub of its own user are not restarted with it)
    wait_for(lambda: pid_in(hub_dir / "proxy.pid") not in (None, proxy)
             and services_answer(url) and ws_started(), 240, "hub restart", log)
    recovery = time.monotonic() - t0
    print(f"hub SIGKILL: everything answers again after {recovery:.1f} s")
    if users_on:  # the services are not the hub's: the same processes serve on
        assert not any(instances._alive(p) for p in [hub, proxy])
        assert {i.pid: i.service for i in instances.find(state, mark_var=mark)} == \
            old_services
    else:
        assert not any(instances._alive(p) for p in [hub, proxy, *old_services]), \
            "processes of the killed hub still run"
    names = sorted(i.service for i in instances.find(state, mark_var=mark))
    assert names.count("airlock") == 1 and names.count("batch") == 1, names
    assert pid_in(hub_dir / "proxy.pid") not in (None, proxy)
    assert ws_started() == started, "the workspace was restarted, not re-adopted"
    assert [m["id"] for m in our_sandboxes(settings)] == [sandbox["id"]]

    # 2. SIGKILL of slapd: restarted; sign-in works again
    slapd = pid_in(state / "ldap" / "slapd.pid")
    os.kill(slapd, signal.SIGKILL)
    wait_for(lambda: (pid_in(state / "ldap" / "slapd.pid") or slapd) != slapd, 60,
             "new slapd", log)
    wait_for(lambda: HubClient(url).login("alice", users["alice"]["password"],
                                          totp=users["alice"]["totp"]).status_code == 302,
             60, "sign-in after slapd restart", log)

    # 3. SIGKILL of the airlock during an upload: the hub restarts it, the request
    #    stays a draft without the file, and the partial upload is swept and audited
    ptoken = client.new_token("alice", project_token_scopes("cardio-los"))
    pauth = {"Authorization": f"token {ptoken}"}
    api = f"{url}/services/airlock/api/v1"
    r = requests.post(f"{api}/requests", json={"project": "cardio-los", "title": "crash",
                                                 "justification": "restart test"},
                      headers=pauth, timeout=30)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    tmp_dir = airlock_settings(settings).resolved_storage_dir(state) / "tmp"
    stop_upload = threading.Event()

    def body() -> Iterator[bytes]:
        for _ in range(2000):  # up to 2 GB, slowly: killed long before
            if stop_upload.is_set():
                return
            yield b"1,2,3\n" * 100_000
            time.sleep(0.02)

    def upload() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{api}/requests/{rid}/files?filename=big.csv", data=body(),
                          headers={**pauth, "Content-Type": "text/csv"}, timeout=120)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        def partial() -> int:
            return sum(p.stat().st_size for p in tmp_dir.glob("upload-*"))
        wait_for(lambda: partial() > 5_000_000, 60, "a partial upload", log)
        (airlock,) = instances.find(state, "airlock", mark_var=mark)
        t0 = time.monotonic()
        os.kill(airlock.pid, signal.SIGKILL)
    finally:
        stop_upload.set()
        uploader.join(60)
    wait_for(lambda: [i for i in instances.find(state, "airlock", mark_var=mark)
                      if i.pid != airlock.pid] and services_answer(url), 120,
             "airlock restart", log)
    print(f"airlock SIGKILL: answers again after {time.monotonic() - t0:.1f} s")
    assert list(tmp_dir.iterdir()) == [], "the partial upload was left behind"
    r = requests.get(f"{api}/requests/{rid}", headers=pauth, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "draft" and r.json()["files"] == []

    audit = AuditLog.from_settings(settings, writer=False)
    swept = [r for r in audit.records(event=LEFTOVERS_EVENT) if r.actor == "airlock"]
    assert swept and swept[-1].details["kind"] == "temporary files"
    assert [f["bytes"] > 5_000_000 for f in swept[-1].details["removed"]] == [True]

    restarted = [r.details["component"] for r in audit.records(event=RESTARTED)]
    stopped = [r for r in audit.records(event=LEFTOVERS_EVENT) if r.actor == "hub"]
    if users_on:  # ecluse up restarted the airlock; the hub stopped no service
        assert restarted == ["hub", "slapd", "airlock"]
        assert not {"airlock", "batch"} & {
            s.split(" ")[0] for r in stopped for s in r.details["removed"]}
    else:
        assert restarted == ["hub", "slapd"]
        assert stopped and {"airlock", "batch"} <= {
            s.split(" ")[0] for s in stopped[-1].details["removed"]}
    audit.engine.dispose()  # an open connection would keep the state volume busy at stop

    # 4. SIGKILL of `ecluse up` itself: its keeper (the process that owns the stack)
    #    stops everything in order, as Ctrl-C does: the services, the hub (which stops
    #    the workspace through the launcher: with the hub as its own user, only the
    #    launcher can), what the hub left, then the launcher, slapd, the state volume.
    #    It runs without --keep-servers: no sandbox is left either
    up.proc.kill()
    up.proc.wait(10)
    wait_for(lambda: not run_processes(root, state), 180,
             f"processes after SIGKILL of ecluse up: {run_processes(root, state)}", log)
    assert our_sandboxes(settings) == [], "a workspace outlived the killed ecluse up"
    wait_for(lambda: not os.path.ismount(state / "db"), 60, "the state volume released", log)
    if users_on:  # the hub stopped its workspace through the launcher, recorded
        ensure_state_volume(settings)  # released by the keeper: mounted to read the log
        try:
            audit = AuditLog.from_settings(settings, writer=False)
            stops = [e for e in audit.records(event="workspace.stop")
                     if e.details.get("owner") == "alice"]
            audit.engine.dispose()
        finally:
            release_state_volume(settings)
        assert stops and stops[-1].details.get("via") == "hub", stops[-1:]

    # 5. the next `ecluse up` on the same state starts (no port taken), Ctrl-C-like
    #    SIGTERM stops it cleanly and leaves nothing
    up2 = Up(config, log)
    up2.wait_up()
    wait_for(lambda: services_answer(url), 120, "services after the second start", log)
    up2.proc.send_signal(signal.SIGTERM)
    assert up2.proc.wait(120) == 0
    assert run_processes(root, state) == []


def signs_in(work) -> bool:
    """Whether alice signs in (not counted: the hub may be starting again)."""
    try:
        work.sign_in("alice", PROJECT)
    except (requests.RequestException, AssertionError):
        return False
    return True


def workspace_settled(work) -> bool:
    """Whether alice's workspace is running and answers through the proxy, or is not
    running (not starting, stopping, or running dead before the hub's poll sees it)."""
    try:
        server = work.server()
    except (requests.RequestException, AssertionError):
        return False
    return server is None or bool(server.get("ready")) and answers(
        f"{work.url}/user/alice/{SERVER}/api/status", 200, headers=work.headers("alice"))


#: how long the chaos test runs: one minute in `make test`, five as a benchmark
CHAOS_SECONDS = float(os.environ.get("ECLUSE_CHAOS_SECONDS", "60"))


def up_sandbox_option() -> bool:
    """Whether ``ecluse up`` takes the sandbox backend (``--sandbox``, issue 17)."""
    import argparse

    from ecluse.cli import up

    sub = argparse.ArgumentParser().add_subparsers()
    up.register(sub)
    return "--sandbox" in sub.choices["up"]._option_string_actions




@pytest.mark.chaos
@pytest.mark.timeout(int(CHAOS_SECONDS) + 2100)  # start (an image build), checks, stop
@pytest.mark.parametrize("up_stack", [
    {"backend": "local", "gateway": True},
    # the docker case loads the workspace image the docker suites built (or builds it on
    # first use, a few minutes cold): a docker_full test, in `make test`
    pytest.param({"backend": "docker", "gateway": True}, marks=pytest.mark.docker_full),
], indirect=True, ids=["local", "docker"])
def test_chaos(up_stack, tmp_path, request):
    """For CHAOS_SECONDS, sign-ins, a workspace spawned, stopped and running code in
    a real kernel, export requests (submitted, reviewed, released) and batch runs go
    on while one component is killed every 20-40 s (hub, proxy, slapd, airlock,
    batch, gateway, the workspace). Then: everything answers again, one more round of
    every kind of work succeeds first time, the audit log verifies, no request or run
    is half-recorded, every released file's bytes match its sha256, the workspace
    is running and reachable or cleanly stopped, and after `ecluse up` stops
    nothing is left (processes, sandboxes, netns, cgroups, mounts, containers)."""
    import random

    from tests.stack.chaos import Killer, Workload, holders, leftovers

    config, settings = up_stack
    state, root = settings.state_dir, config.parent
    backend = request.node.callspec.params["up_stack"]["backend"]  # ecluse up --sandbox
    url = f"http://127.0.0.1:{settings.hub.port}"
    log = tmp_path / "up.log"
    up = Up(config, log, *(["--sandbox", backend] if backend != "local" else []))
    up.wait_up(UP_TIMEOUT if backend == "local" else 1200)  # docker: the image built once
    if backend == "docker":  # the hub's configuration: the stack's own engine and image
        settings = load_settings(state / "ecluse-docker.yaml")
    wait_for(lambda: services_answer(url), 120, "services after start", log)
    work = Workload(url, read_demo_users(state / "demo-users.json"))
    # a loaded machine: the hub may answer its API before its sign-in and spawns do
    wait_for(work.sign_ins, 120, "the first sign-ins", log)
    assert work.retried("spawn", work.spawn, 2), "the workspace did not start before the chaos"

    seed = int(os.environ.get("ECLUSE_CHAOS_SEED", random.randrange(1 << 30)))
    killer = Killer(settings, work, seed)
    killer.start()
    n = 0
    try:
        while time.monotonic() - killer.t0 < CHAOS_SECONDS:
            n += 1
            work.iteration(n)
            assert up.proc.poll() is None, "ecluse up gave up"
    finally:
        killer.stop()

    # recovery: everything answers again (the hub may still be starting while the
    # proxy serves the services: its error page is not yet a sign-in), the run in
    # flight ends
    t1 = time.monotonic()
    wait_for(lambda: services_answer(url) and signs_in(work), 240, "recovery", log)
    recovery = time.monotonic() - t1
    work.tokens.clear()
    assert work.sign_ins()
    wait_for(lambda: work.runs_ended(), 240, "batch runs to end", log)
    assert work.follow_run()  # the last run's outcome counted

    report = {
        "backend": backend, "seed": seed, "seconds": CHAOS_SECONDS, "iterations": n,
        "kills": killer.kills, "operations": work.ops, "client failures": work.failures,
        "mean seconds": work.mean_seconds(),
        "recovery": killer.recovery_summary(), "recovery times": killer.recovery,
        "released": len(work.released), "batch runs": len(work.runs),
        "recovered after the chaos": round(recovery, 1)}
    print("chaos report:", json.dumps(report))
    if os.environ.get("ECLUSE_CHAOS_REPORT"):
        Path(os.environ["ECLUSE_CHAOS_REPORT"]).write_text(json.dumps(report, indent=1))
    assert killer.kills

    # after the chaos, nothing killed: every kind of work succeeds again, first time
    # (the workspace stopped, spawned again, its kernel run; a request released; a
    # batch run succeeded)
    wait_for(lambda: workspace_settled(work), 150, "the workspace running and reachable, "
             "or stopped (a killed one seen dead by the hub's 30 s poll)", log)
    ops, failures = dict(work.ops), dict(work.failures)
    work.iteration(1)
    assert work.step("spawn", work.spawn) and work.step("kernel execution", work.kernel)
    wait_for(lambda: work.runs_ended(), 240, "the batch run after the chaos to end", log)
    assert work.follow_run()
    new_failures = {k: v - failures.get(k, 0) for k, v in work.failures.items()
                    if v != failures.get(k, 0)}
    done = {k for k, v in work.ops.items() if v > ops.get(k, 0)}
    kinds = {"sign-in", "spawn", "stop", "kernel execution", "request", "upload", "submit",
             "review", "release", "batch submit", "batch run"}
    assert not new_failures and kinds <= done, \
        f"after the chaos: failed {new_failures}, not done {kinds - done}"

    # released files: the bytes downloaded are those recorded
    for rid in work.released:
        detail = work.call("alice", "GET", f"/requests/{rid}", 200)
        assert detail["state"] == "released"
        for f in detail["files"]:
            r = requests.get(f"{work.api}/requests/{rid}/files/{f['id']}/content", timeout=30,
                             headers=work.headers("alice"))
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == f["sha256"]
    # no request half-recorded: every file a request holds is staged, intact; a request
    # past its draft has its file
    from ecluse.airlock.storage import Staging

    staging = Staging(airlock_settings(settings).resolved_storage_dir(state))
    listing = work.call("alice", "GET", "/requests?project=cardio-los", 200)
    requests_ = listing["requests"] if isinstance(listing, dict) else listing
    assert len(requests_) >= len(work.released)
    for req in requests_:
        detail = work.call("alice", "GET", f"/requests/{req['id']}", 200)
        assert detail["files"] or detail["state"] == "draft", detail
        for f in detail["files"]:
            staging.verify(f["sha256"], name=f.get("name", ""))
    # the workspace: running and reachable, or cleanly stopped (no sandbox left)
    server = work.server()
    if server and server.get("ready"):
        r = requests.get(f"{url}/user/alice/cardio-los/api/status", timeout=30,
                         headers=work.headers("alice"))
        assert r.status_code == 200
    else:
        wait_for(lambda: [b for b in our_sandboxes(settings) if not b.get("one_shot")] == [],
                 60, "sandbox of a stopped workspace")

    # no run half-recorded: each ended (a run killed with its service: failed), when; a
    # succeeded one has its output notebook (read by alice: a token for every service)
    work.sign_in("alice")
    runs = work.call("erin", "GET", "/runs?project=cardio-los", 200,
                     base=work.batch_api)["runs"]
    assert sorted(r["id"] for r in runs) == sorted(work.runs)
    for run in runs:
        assert run["status"] in ("succeeded", "failed", "timed-out"), run
        assert run.get("finished_at"), run
        if run["status"] == "succeeded":
            files = work.call("alice", "GET", f"/runs/{run['id']}/files", 200,
                              base=work.batch_api)
            names = [f["name"] for f in (files["files"] if isinstance(files, dict) else files)]
            assert "output.ipynb" in names, names

    up.proc.send_signal(signal.SIGTERM)
    t_stop = time.monotonic()
    # docker: the stack's own engine goes too (containers, daemon, and its folder with the
    # loaded workspace image: over two minutes on the loaded 2-core test machine)
    assert up.proc.wait(120 if backend == "local" else 900) == 0
    print(f"chaos: ecluse up stopped in {time.monotonic() - t_stop:.1f} s")
    # the stack is stopped: its state volume (image mode) is mounted again to read the log
    left_mounted = os.path.ismount(settings.state_dir / "db")
    held = holders(root) if left_mounted else []
    ensure_state_volume(settings)
    try:
        audit = AuditLog.from_settings(settings, writer=False)
        result = audit.verify()
        audit.engine.dispose()
    finally:
        release_state_volume(settings)
    assert result.ok, result.problems
    assert not left_mounted, f"`ecluse up` left its state volume mounted (held by {held})"
    assert leftovers(settings, root, killer.seen, lambda: run_processes(root, state)) == []
