"""``ecluse up`` under crashes: real processes killed with SIGKILL, what comes back,
what is re-adopted, and that nothing is left behind.

``ecluse up`` runs as a process of its own on the repository's configuration
(``tests/batch/hubstack.py:up_config``: embedded slapd, hub, proxy, route
filter, the hub-managed airlock and batch services, real sandboxes). Every
process of the run is found by its state folder (command line or environment),
and killed at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from ecluse.airlock.settings import airlock_settings
from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.dev.demo import read_demo_users
from ecluse.dev.ldapserver import free_port
from ecluse.dev.supervisor import RESTARTED
from ecluse.dev.testing import HubClient, project_token_scopes
from ecluse.hubservice import instances
from ecluse.hubservice.instances import LEFTOVERS_EVENT
from ecluse.sandbox.local import LocalSandbox, teardown_host_network
from ecluse.statevolume import ensure_state_volume, release_state_volume
from tests.batch.hubstack import up_config

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


def run_processes(root: Path, state: Path, exclude: int | None = None) -> list[str]:
    """Every live process of this run: its command line names our folder, or its
    environment our state folder (the hub, its services and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), exclude):
            continue
        pid = int(entry.name)
        cmd = instances.cmdline(pid)
        if not cmd or not instances._alive(pid):
            continue
        env = instances.environ(pid)
        if str(root) in cmd or str(state) in (env.get("ECLUSE_STATE_DIR"),
                                              env.get(instances.MARK)):
            found.append(f"{pid}: {cmd[:150]}")
    return found


def pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if instances._alive(pid) else None


class Up:
    """One ``ecluse up`` process on ``config``; its output in ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ecluse", "up", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_up(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ecluse up exited {self.proc.returncode}:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            return "Écluse is up" in self.log.read_text(errors="replace")
        wait_for(up, UP_TIMEOUT, "ecluse up", self.log)


@pytest.fixture
def up_stack(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    root = tmp_path / "up"
    root.mkdir()
    config = up_config(root)
    cfg = yaml.safe_load(config.read_text())
    cfg["hub"]["route_filter_port"] = free_port()  # two stacks on one host
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    settings = load_settings(config)
    try:
        yield config, settings
    finally:
        for line in run_processes(root, settings.state_dir):
            pid = int(line.split(":")[0])
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        backend = LocalSandbox()
        for meta in backend.list():
            if settings.airlock.port in meta.get("allowed_ports", []):
                import asyncio

                asyncio.run(backend.stop(meta, grace=0))
        teardown_host_network()
        # the state volume (config/ecluse.yaml: image mode) of a stack killed by the test
        release_state_volume(settings)
        assert not os.path.ismount(settings.state_dir / "db"), "the state volume stays mounted"


def services_answer(url: str) -> bool:
    """The airlock and batch services answer through the proxy (401/302: no token)."""
    try:
        a = requests.get(f"{url}/services/airlock/api/v1/me", timeout=3,
                         allow_redirects=False)
        b = requests.get(f"{url}/services/batch/api/v1/me", timeout=3, allow_redirects=False)
    except requests.RequestException:
        return False
    return a.status_code == 401 and b.status_code == 401


def our_sandboxes(settings) -> list[dict]:
    return [m for m in LocalSandbox().list()
            if settings.airlock.port in m.get("allowed_ports", []) and m.get("alive")]


def test_up_restarts_what_dies_readopts_workspaces_and_leaves_nothing(up_stack, tmp_path):
    config, settings = up_stack
    state, root = settings.state_dir, config.parent
    url = f"http://127.0.0.1:{settings.hub.port}"
    log = tmp_path / "up.log"
    up = Up(config, log)
    up.wait_up()
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
    hub = pid_in(state / "jupyterhub.pid")
    proxy = pid_in(state / "proxy.pid")
    old_services = {i.pid: i.service for i in instances.find(state)}
    assert {"airlock", "batch"} <= set(old_services.values()), old_services
    t0 = time.monotonic()
    os.kill(hub, signal.SIGKILL)
    wait_for(lambda: (pid_in(state / "jupyterhub.pid") or hub) != hub, 60, "new hub", log)
    wait_for(lambda: services_answer(url) and ws_started(), 240, "hub restart", log)
    recovery = time.monotonic() - t0
    print(f"hub SIGKILL: everything answers again after {recovery:.1f} s")
    assert not any(instances._alive(p) for p in [hub, proxy, *old_services]), \
        "processes of the killed hub still run"
    names = sorted(i.service for i in instances.find(state))
    assert names.count("airlock") == 1 and names.count("batch") == 1, names
    assert pid_in(state / "proxy.pid") not in (None, proxy)
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
        (airlock,) = instances.find(state, "airlock")
        t0 = time.monotonic()
        os.kill(airlock.pid, signal.SIGKILL)
    finally:
        stop_upload.set()
        uploader.join(60)
    wait_for(lambda: [i for i in instances.find(state, "airlock") if i.pid != airlock.pid]
             and services_answer(url), 120, "airlock restart", log)
    print(f"airlock SIGKILL: answers again after {time.monotonic() - t0:.1f} s")
    assert list(tmp_dir.iterdir()) == [], "the partial upload was left behind"
    r = requests.get(f"{api}/requests/{rid}", headers=pauth, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "draft" and r.json()["files"] == []

    audit = AuditLog.from_settings(settings, writer=False)
    swept = [r for r in audit.records(event=LEFTOVERS_EVENT) if r.actor == "airlock"]
    assert swept and swept[-1].details["kind"] == "temporary files"
    assert [f["bytes"] > 5_000_000 for f in swept[-1].details["removed"]] == [True]

    restarted = [r.details["component"] for r in audit.records(event=RESTARTED)]
    assert restarted == ["hub", "slapd"]
    stopped = [r for r in audit.records(event=LEFTOVERS_EVENT) if r.actor == "hub"]
    assert stopped and {"airlock", "batch"} <= {
        s.split(" ")[0] for s in stopped[-1].details["removed"]}
    audit.engine.dispose()  # an open connection would keep the state volume busy at stop

    # 4. SIGKILL of `ecluse up` itself: hub and slapd die with it and stop the rest
    #    (proxy, services, workspaces: it runs without --keep-servers)
    up.proc.kill()
    up.proc.wait(10)
    wait_for(lambda: not run_processes(root, state), 120,
             f"processes after SIGKILL of ecluse up: {run_processes(root, state)}", log)
    assert our_sandboxes(settings) == []

    # 5. the next `ecluse up` on the same state starts (no port taken), Ctrl-C-like
    #    SIGTERM stops it cleanly and leaves nothing
    up2 = Up(config, log)
    up2.wait_up()
    wait_for(lambda: services_answer(url), 120, "services after the second start", log)
    up2.proc.send_signal(signal.SIGTERM)
    assert up2.proc.wait(120) == 0
    assert run_processes(root, state) == []


#: how long the chaos test runs: one minute in `make test`, five as a benchmark
CHAOS_SECONDS = float(os.environ.get("ECLUSE_CHAOS_SECONDS", "60"))
TABLE = b"sex,age_band,n\nF,18-40,25\nM,18-40,31\nF,41-65,44\nM,41-65,52\n"


class Workload:
    """Researchers' and checkers' work against the stack, counting what succeeded and
    what clients saw fail (by kind) — never stopping for a failure: it retries."""

    def __init__(self, url: str, users: dict[str, dict[str, str]]) -> None:
        self.url, self.users = url, users
        self.api = f"{url}/services/airlock/api/v1"
        self.ops: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.released: list[str] = []
        self.tokens: dict[str, str] = {}

    def _count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def step(self, op: str, fn) -> object | None:
        try:
            value = fn()
        except requests.RequestException as e:
            self._count(self.failures, f"{op}: {type(e).__name__}")
            return None
        except AssertionError as e:
            self._count(self.failures, f"{op}: {str(e).splitlines()[0][:40]}")
            return None
        self._count(self.ops, op)
        return value

    def sign_in(self, user: str, project: str | None = None) -> str:
        c = HubClient(self.url)
        r = c.login(user, self.users[user]["password"], totp=self.users[user]["totp"])
        assert r.status_code == 302, f"HTTP {r.status_code}"
        token = c.new_token(user, project_token_scopes(project) if project else None)
        self.tokens[user] = token
        return token

    def call(self, user: str, method: str, path: str, expect: int, **kw) -> dict:
        r = requests.request(method, f"{self.api}{path}", timeout=30,
                             headers={"Authorization": f"token {self.tokens[user]}",
                                      **kw.pop("headers", {})}, **kw)
        assert r.status_code == expect, f"HTTP {r.status_code}"
        return r.json() if r.content else {}

    def export_once(self, n: int) -> None:
        """Sign-ins, a request, its file, submission, two reviews, release, download."""
        for user, project in (("alice", "cardio-los"), ("carol", None), ("dan", None)):
            if self.step("sign-in", lambda u=user, p=project: self.sign_in(u, p)) is None:
                return
        req = self.step("request", lambda: self.call(
            "alice", "POST", "/requests", 201, json={
                "project": "cardio-los", "title": f"chaos {n}", "justification": "t"}))
        if req is None:
            return
        rid = req["id"]
        steps = [
            ("upload", lambda: self.call(
                "alice", "POST", f"/requests/{rid}/files?filename=t{n}.csv", 201,
                data=TABLE, headers={"Content-Type": "text/csv"})),
            ("submit", lambda: self.call("alice", "POST", f"/requests/{rid}/submit", 200,
                                         json={})),
            ("review", lambda: self.call("carol", "POST", f"/requests/{rid}/reviews", 201,
                                         json={"decision": "approve", "comment": "ok"})),
            ("review", lambda: self.call("dan", "POST", f"/requests/{rid}/reviews", 201,
                                         json={"decision": "approve", "comment": "ok"})),
            ("release", lambda: self.call("carol", "POST", f"/requests/{rid}/release", 200,
                                          json={})),
        ]
        for op, fn in steps:
            for _attempt in range(3):  # a component may be down: try again shortly
                if self.step(op, fn) is not None:
                    break
                time.sleep(2)
            else:
                return
        self.released.append(rid)


def kill_one(target: str, state: Path, settings) -> int | None:
    """SIGKILL one component's process; its pid, or None when it was not running."""
    if target in ("hub", "proxy"):
        pid = pid_in(state / ("jupyterhub.pid" if target == "hub" else "proxy.pid"))
    elif target == "slapd":
        pid = pid_in(state / "ldap" / "slapd.pid")
    elif target == "workspace":
        boxes = our_sandboxes(settings)
        pid = boxes[0].get("pid") if boxes else None
        if boxes:  # the whole sandbox, as an out-of-memory kill would
            from ecluse.sandbox.cgroups import Cgroups

            for p in Cgroups.from_state(boxes[0]["id"], boxes[0]["cgroup"]).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            return pid
    else:
        found = instances.find(state, target)
        pid = found[0].pid if found else None
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def test_chaos(up_stack, tmp_path):
    """For CHAOS_SECONDS, sign-ins, a workspace and export requests (submitted,
    reviewed, released, downloaded) run while one component is killed every 20-40 s
    (hub, proxy, slapd, airlock, batch, the workspace). Then: the audit log verifies,
    no request is half-recorded, every released file's bytes match its sha256, the
    workspace is running and reachable or cleanly stopped, and after `ecluse up`
    stops nothing is left."""
    import random

    config, settings = up_stack
    state, root = settings.state_dir, config.parent
    url = f"http://127.0.0.1:{settings.hub.port}"
    log = tmp_path / "up.log"
    up = Up(config, log)
    up.wait_up()
    wait_for(lambda: services_answer(url), 120, "services after start", log)
    work = Workload(url, read_demo_users(state / "demo-users.json"))
    work.sign_in("alice", "cardio-los")
    requests.post(f"{url}/hub/api/users/alice/servers/cardio-los", timeout=30,
                  headers={"Authorization": f"token {work.tokens['alice']}"})

    seed = int(os.environ.get("ECLUSE_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    targets = ["hub", "proxy", "slapd", "airlock", "batch", "workspace"]
    kills: list[tuple[float, str, int | None]] = []
    t0 = time.monotonic()
    next_kill = t0 + rng.uniform(20, 40)
    n = 0
    while time.monotonic() - t0 < CHAOS_SECONDS:
        if time.monotonic() >= next_kill:
            target = rng.choice(targets)
            kills.append((round(time.monotonic() - t0, 1), target,
                          kill_one(target, state, settings)))
            next_kill = time.monotonic() + rng.uniform(20, 40)
        n += 1
        work.export_once(n)
        assert up.proc.poll() is None, "ecluse up gave up"

    # recovery: everything answers again
    t1 = time.monotonic()
    wait_for(lambda: services_answer(url) and HubClient(url).login(
        "alice", work.users["alice"]["password"],
        totp=work.users["alice"]["totp"]).status_code == 302, 240, "recovery", log)
    recovery = time.monotonic() - t1
    work.sign_in("alice", "cardio-los")
    report = (f"chaos seed {seed}, {CHAOS_SECONDS:.0f} s: kills {kills}; operations "
              f"{work.ops}; client failures {work.failures}; released {len(work.released)}; "
              f"recovered {recovery:.1f} s after the last kill window")
    print(report)
    assert work.ops.get("sign-in", 0) > 0 and kills

    # released files: the bytes downloaded are those recorded
    for rid in work.released:
        detail = work.call("alice", "GET", f"/requests/{rid}", 200)
        assert detail["state"] == "released"
        for f in detail["files"]:
            r = requests.get(f"{work.api}/requests/{rid}/files/{f['id']}/content", timeout=30,
                             headers={"Authorization": f"token {work.tokens['alice']}"})
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == f["sha256"]
    # no request half-recorded: every file a request holds is staged, intact
    from ecluse.airlock.storage import Staging

    staging = Staging(airlock_settings(settings).resolved_storage_dir(state))
    listing = work.call("alice", "GET", "/requests?project=cardio-los", 200)
    requests_ = listing["requests"] if isinstance(listing, dict) else listing
    for req in requests_:
        for f in work.call("alice", "GET", f"/requests/{req['id']}", 200)["files"]:
            staging.verify(f["sha256"], name=f.get("name", ""))
    # the workspace: running and reachable, or cleanly stopped (no sandbox left)
    model = requests.get(f"{url}/hub/api/users/alice", timeout=30,
                         headers={"Authorization": f"token {work.tokens['alice']}"}).json()
    server = model["servers"].get("cardio-los")
    if server and server.get("ready"):
        r = requests.get(f"{url}/user/alice/cardio-los/api/status", timeout=30,
                         headers={"Authorization": f"token {work.tokens['alice']}"})
        assert r.status_code == 200
    else:
        wait_for(lambda: our_sandboxes(settings) == [], 60, "sandbox of a stopped workspace")

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(120) == 0
    assert run_processes(root, state) == []
    assert our_sandboxes(settings) == []
    # the stack is stopped: its state volume (image mode) is mounted again to read the log
    mounted = ensure_state_volume(settings)
    try:
        audit = AuditLog.from_settings(settings, writer=False)
        result = audit.verify()
        audit.engine.dispose()
    finally:
        release_state_volume(settings, mounted)
    assert result.ok, result.problems
