"""The chaos test's workload, killer and end checks (``tests/stack/test_supervise.py::test_chaos``,
``benchmarks/bench_chaos.py``).

* :class:`Workload` — what researchers, output checkers and staff do, in turn:
  sign-ins, a workspace spawned and stopped, code run in a real kernel of that
  workspace through the proxy, export requests (file, submission, two reviews,
  release), batch runs. It counts what succeeded and what clients saw fail, by
  kind, and never stops for a failure.
* :class:`Killer` — a thread that SIGKILLs one component at random every
  20-40 s (hub, proxy, slapd, airlock, batch, gateway, the workspace) and
  measures, for each kill, how long until that component serves again.
* :func:`leftovers` — what a stopped stack left: processes, sandboxes,
  network namespaces, cgroups, mounts, and on the docker backend containers
  and networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from ecluse.dev.testing import HubClient, KernelError, project_token_scopes, run_in_kernel
from ecluse.hubservice import instances
from ecluse.sandbox import get_backend

TABLE = b"sex,age_band,n\nF,18-40,25\nM,18-40,31\nF,41-65,44\nM,41-65,52\n"
#: what the killer picks from
TARGETS = ["hub", "proxy", "slapd", "airlock", "batch", "gateway", "workspace"]
PROJECT, SERVER = "cardio-los", "cardio-los"
GATEWAY = "dask-gateway"


def pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if instances._alive(pid) else None


def our_sandboxes(settings, alive_only: bool = True) -> list[dict]:
    """Sandboxes of this stack (they may reach its airlock port), on its backend."""
    return [m for m in get_backend(settings).list()
            if settings.airlock.port in m.get("allowed_ports", [])
            and (m.get("alive") or not alive_only)]


def notebook(*sources: str) -> dict[str, Any]:
    import nbformat

    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    return json.loads(nbformat.writes(book))


class Workload:
    """Researchers', checkers' and staff's work against the stack at ``url``."""

    def __init__(self, url: str, users: dict[str, dict[str, str]]) -> None:
        self.url, self.users = url, users
        self.api = f"{url}/services/airlock/api/v1"
        self.batch_api = f"{url}/services/batch/api/v1"
        self.ops: dict[str, int] = {}
        #: op -> seconds spent in its successful calls (for the report)
        self.seconds: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.released: list[str] = []
        self.runs: list[str] = []
        self.run_in_flight: str | None = None
        self.tokens: dict[str, str] = {}
        self._turn = 0

    def _count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def step(self, op: str, fn: Callable[[], Any]) -> Any | None:
        """``fn`` counted as ``op`` done, or as a failure of its kind (None)."""
        t0 = time.monotonic()
        try:
            value = fn()
        except (requests.RequestException, OSError, TimeoutError) as e:
            self._count(self.failures, f"{op}: {type(e).__name__}")
            return None
        except HTTPClientError as e:  # the kernel's websocket refused (the proxy's 502, 503)
            self._count(self.failures, f"{op}: websocket HTTP {e.code}")
            return None
        except (StreamClosedError, WebSocketClosedError) as e:  # it closed under the kernel
            self._count(self.failures, f"{op}: {type(e).__name__}")
            return None
        except (AssertionError, KernelError) as e:
            self._count(self.failures, f"{op}: {str(e).splitlines()[0][:50]}")
            return None
        self._count(self.ops, op)
        self.seconds[op] = self.seconds.get(op, 0.0) + time.monotonic() - t0
        return value

    def mean_seconds(self) -> dict[str, float]:
        return {op: round(self.seconds[op] / self.ops[op], 1) for op in self.seconds}

    def retried(self, op: str, fn: Callable[[], Any], attempts: int = 3) -> Any | None:
        """A component may be down: try again shortly."""
        for attempt in range(attempts):
            value = self.step(op, fn)
            if value is not None:
                return value
            if attempt < attempts - 1:
                time.sleep(2)
        return None

    # ------------------------------------------------------------ sign-ins

    def sign_in(self, user: str, project: str | None = None) -> str:
        c = HubClient(self.url)
        r = c.login(user, self.users[user]["password"], totp=self.users[user]["totp"])
        assert r.status_code == 302, f"HTTP {r.status_code}"
        token = c.new_token(user, project_token_scopes(project) if project else None)
        self.tokens[user] = token
        return token

    def sign_ins(self) -> bool:
        """Every user without a token signs in, and one more in turn (a second factor
        step each: one sign-in of each user per iteration would outrun the clock)."""
        who = {"alice": PROJECT, "carol": None, "dan": None, "erin": None}
        turn = list(who)[self._turn % len(who)]
        self._turn += 1
        for user, project in who.items():
            if user not in self.tokens or user == turn:
                if self.retried("sign-in", lambda u=user, p=project: self.sign_in(u, p)) is None:
                    return False
        return True

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"token {self.tokens[user]}"}

    def call(self, user: str, method: str, path: str, expect: int, *, base: str | None = None,
             **kw) -> dict:
        r = requests.request(method, f"{base or self.api}{path}", timeout=30,
                             headers={**self.headers(user), **kw.pop("headers", {})}, **kw)
        assert r.status_code == expect, f"HTTP {r.status_code}"
        return r.json() if r.content else {}

    # ------------------------------------------------------------ export requests

    def export_once(self, n: int) -> None:
        """A request, its file, submission, two reviews, release."""
        req = self.retried("request", lambda: self.call(
            "alice", "POST", "/requests", 201, json={
                "project": PROJECT, "title": f"chaos {n}", "justification": "t"}))
        if req is None:
            return
        rid = req["id"]
        steps = [
            ("upload", lambda: self.call(
                "alice", "POST", f"/requests/{rid}/files?filename=t{n}.csv", 201,
                data=TABLE, headers={"Content-Type": "text/csv"})),
            ("checked", lambda: self.checked("alice", rid)),
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
            if self.retried(op, fn) is None:
                return
        self.released.append(rid)

    def checked(self, user: str, rid: str, timeout: float = 600) -> dict:
        """The request once none of its files is ``checking`` (the airlock checks an
        upload after answering it); fails the step past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            req = self.call(user, "GET", f"/requests/{rid}", 200)
            if all(f["verdict"] != "checking" for f in req["files"]):
                return req
            assert time.monotonic() < deadline, f"{rid} still checking after {timeout}s"
            time.sleep(0.5)

    # ------------------------------------------------------------ the workspace

    def server(self) -> dict | None:
        """The hub's model of alice's workspace (None: not running, not starting)."""
        r = requests.get(f"{self.url}/hub/api/users/alice", headers=self.headers("alice"),
                         timeout=30)
        assert r.status_code == 200, f"HTTP {r.status_code}"
        return r.json()["servers"].get(SERVER)

    def _server_request(self, method: str, accepted: tuple[int, ...]) -> int:
        r = requests.request(method, f"{self.url}/hub/api/users/alice/servers/{SERVER}",
                             headers=self.headers("alice"), timeout=60)
        assert r.status_code in accepted, f"HTTP {r.status_code}"
        return r.status_code

    def _until(self, cond: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(1)
        raise AssertionError(f"not {what} in time")

    def spawn(self, timeout: float = 180) -> bool:
        def ready() -> bool:
            s = self.server()
            if s is None:  # not started yet, or it was stopping: start it
                # 400: already running or starting (a re-adopted workspace)
                self._server_request("POST", (201, 202, 400))
                return False
            return bool(s.get("ready"))

        return self._until(ready, timeout, "ready")

    def stop(self, timeout: float = 120) -> bool:
        self._server_request("DELETE", (202, 204, 404))
        return self._until(lambda: self.server() is None, timeout, "stopped")

    def kernel(self) -> str:
        """Code in a new kernel of the workspace, through the proxy."""
        out = asyncio.run(run_in_kernel(f"{self.url}/user/alice/{SERVER}/",
                                        self.tokens["alice"],
                                        "print('chaos', sum(range(10)))", timeout=90))
        assert "chaos 45" in out, f"output {out[:40]!r}"
        return out

    def workspace_once(self, n: int) -> None:
        """The workspace (spawned when it is not running: the killer may have stopped it,
        or the last iteration did), a kernel execution, and every other time a stop."""
        s = self.step("workspace state", self.server)
        if s is None and "workspace state" not in self.ops:
            return
        if not (s and s.get("ready")) and self.retried("spawn", self.spawn, 2) is None:
            return
        self.retried("kernel execution", self.kernel, 2)
        if n % 2 == 1:
            self.step("stop", self.stop)

    # ------------------------------------------------------------ batch runs

    def follow_run(self) -> bool:
        """The run in flight followed: counted when it has ended (killed with the batch
        service: failed). Whether none is in flight any more."""
        if self.run_in_flight is None:
            return True
        run = self.step("batch status", lambda: self.call(
            "erin", "GET", f"/runs/{self.run_in_flight}", 200, base=self.batch_api))
        if run is None or run["status"] in ("queued", "running"):
            return False
        if run["status"] == "succeeded":
            self._count(self.ops, "batch run")
        else:
            self._count(self.failures, f"batch run: {run['status']}")
        self.run_in_flight = None
        return True

    def batch_once(self, n: int) -> None:
        """A run submitted by staff (erin, as alice) when none is in flight."""
        if not self.follow_run():
            return
        run = self.retried("batch submit", lambda: self.call(
            "erin", "POST", "/runs", 201, base=self.batch_api, json={
                "project": PROJECT, "as_user": "alice", "timeout": 120,
                "notebook": {"name": f"chaos-{n}.ipynb",
                             "content": notebook("print('rows', 6 * 7)")}}))
        if run is not None:
            self.runs.append(run["id"])
            self.run_in_flight = run["id"]

    def runs_ended(self) -> bool:
        """Whether no run of the project is queued or running (False: cannot tell)."""
        try:
            runs = self.call("erin", "GET", "/runs?project=cardio-los", 200,
                             base=self.batch_api)["runs"]
        except (requests.RequestException, AssertionError):
            return False
        return all(r["status"] not in ("queued", "running") for r in runs)

    def iteration(self, n: int) -> None:
        if not self.sign_ins():
            return
        self.batch_once(n)
        self.export_once(n)
        self.workspace_once(n)


# ---------------------------------------------------------------- the killer


def answers(url: str, expect: int, **kw) -> bool:
    try:
        return requests.get(url, timeout=3, allow_redirects=False, **kw).status_code == expect
    except requests.RequestException:
        return False


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


class Killer(threading.Thread):
    """SIGKILL one component at random every 20-40 s; for each kill, the seconds until
    that component serves again (None: not within ``recovery_timeout``)."""

    def __init__(self, settings, work: Workload, seed: int, *,
                 targets: list[str] = TARGETS, recovery_timeout: float = 240) -> None:
        super().__init__(daemon=True)
        self.settings, self.work, self.rng = settings, work, random.Random(seed)
        self.state = settings.state_dir
        self.url = f"http://127.0.0.1:{settings.hub.port}"
        self.targets = targets
        self.recovery_timeout = recovery_timeout
        self.done = threading.Event()
        self.t0 = time.monotonic()
        #: (seconds since start, target, pid killed or None when it was not running)
        self.kills: list[tuple[float, str, int | None]] = []
        #: target -> recovery times (None: not recovered in time)
        self.recovery: dict[str, list[float | None]] = {}
        #: every sandbox of the stack seen while the test ran (for the orphan check)
        self.seen: set[str] = set()
        self._probes: list[threading.Thread] = []

    def run(self) -> None:
        next_kill = time.monotonic() + self.rng.uniform(20, 40)
        while not self.done.wait(1):
            with contextlib.suppress(Exception):
                self.seen.update(m["id"] for m in our_sandboxes(self.settings, False))
            if time.monotonic() >= next_kill:
                target = self.rng.choice(self.targets)
                pid = self.kill(target)
                self.kills.append((round(time.monotonic() - self.t0, 1), target, pid))
                if pid is not None:
                    probe = threading.Thread(target=self._recover, daemon=True,
                                             args=(target, time.monotonic()))
                    probe.start()
                    self._probes.append(probe)
                next_kill = time.monotonic() + self.rng.uniform(20, 40)

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        for p in self._probes:
            p.join(self.recovery_timeout + 10)

    def kill(self, target: str) -> int | None:
        """SIGKILL one component's process; its pid, or None when it was not running."""
        if target == "workspace":
            return self.kill_workspace()
        if target in ("hub", "proxy"):
            pid = pid_in(self.state / ("jupyterhub.pid" if target == "hub" else "proxy.pid"))
        elif target == "slapd":
            pid = pid_in(self.state / "ldap" / "slapd.pid")
        else:
            found = [i for i in instances.find(self.state, target if target != "gateway"
                                               else GATEWAY)
                     if i.ppid not in {j.pid for j in instances.find(self.state)}]
            pid = found[0].pid if found else None
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def kill_workspace(self) -> int | None:
        """The whole sandbox, as an out-of-memory kill would (its cgroup, its container)."""
        boxes = our_sandboxes(self.settings)
        workspaces = [b for b in boxes if not b.get("one_shot")] or boxes
        if not workspaces:
            return None
        box = workspaces[0]
        if box.get("backend") == "docker":
            get_backend(self.settings).client.api.kill(box["container"])
            return box.get("pid") or 0
        from ecluse.sandbox.cgroups import Cgroups

        for p in Cgroups.from_state(box["id"], box["cgroup"]).pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return box.get("pid") or 0

    def serving(self, target: str) -> bool:
        url = self.url
        if target in ("hub", "proxy"):
            return answers(f"{url}/hub/api/", 200) and (
                target == "proxy" or (answers(f"{url}/services/airlock/api/v1/me", 401)
                                      and answers(f"{url}/services/batch/api/v1/me", 401)))
        if target == "slapd":
            ldap = self.settings.ldap
            return bool(pid_in(self.state / "ldap" / "slapd.pid")) and port_open(
                "127.0.0.1", ldap.port or ldap.uri_port)
        if target in ("airlock", "batch"):
            return answers(f"{url}/services/{target}/api/v1/me", 401)
        if target == "gateway":  # the service's front refuses its API on the public port
            return answers(f"{url}/services/{GATEWAY}/api/v1/clusters", 403)
        # the workspace: the workload spawns it again when the hub sees it gone
        return answers(f"{url}/user/alice/{SERVER}/api/status", 200,
                       headers=self.work.headers("alice"))

    def _recover(self, target: str, since: float) -> None:
        time.sleep(1)  # let the death be seen (a port still open for a moment)
        deadline = since + self.recovery_timeout
        while time.monotonic() < deadline:
            if target == "workspace" and self.done.is_set():
                return  # only the workload spawns it again, and it has stopped: not counted
            if self.serving(target):
                self.recovery.setdefault(target, []).append(round(time.monotonic() - since, 1))
                return
            time.sleep(0.5)
        self.recovery.setdefault(target, []).append(None)

    def recovery_summary(self) -> dict[str, str]:
        out = {}
        for target, times in sorted(self.recovery.items()):
            ok = [t for t in times if t is not None]
            text = (f"median {statistics.median(ok):.1f} s, max {max(ok):.1f} s over {len(ok)}"
                    if ok else "never")
            if len(ok) < len(times):
                text += f", {len(times) - len(ok)} not recovered"
            out[target] = text
        return out


# ---------------------------------------------------------------- leftovers


def docker_leftovers(settings, seen: set[str]) -> list[str]:
    """Containers and networks of the sandboxes seen, still on the stack's Docker engine;
    an engine of the stack's own (``ecluse up --sandbox docker``) still running, or its
    folder left."""
    from ecluse.sandbox.docker import LABEL

    out = []
    sock = (settings.sandbox.docker_url or "").removeprefix("unix://")
    own = Path(sock).parent if Path(sock).name == "docker.sock" and "ecluse-docker-" in sock \
        else None
    if own is not None:
        out += [f"engine folder {own}"] if own.exists() else []
        out += [f"engine process {pid}" for pid in os.listdir("/proc") if pid.isdigit()
                and str(own) in instances.cmdline(int(pid))]
        if not Path(sock).exists():
            return out
    with contextlib.suppress(Exception):  # an engine that does not answer holds nothing
        client = get_backend(settings).client.api
        out += [f"container {c['Id'][:12]} ({c['Labels'].get(LABEL)})"
                for c in client.containers(all=True) if c["Labels"].get(LABEL) in seen]
        out += [f"network {n['Name']}" for n in client.networks()
                if (n.get("Labels") or {}).get(LABEL) in seen]
    return out


def holders(root: Path) -> list[str]:
    """Processes with a file or their working folder under ``root``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            links = [entry / "cwd", *(entry / "fd").iterdir()]
            for link in links:
                with contextlib.suppress(OSError):
                    if os.readlink(link).startswith(str(root)):
                        out.append(f"pid {entry.name} ({instances.cmdline(int(entry.name))[:100]})"
                                   f" holds {os.readlink(link)}")
                        break
    return out


def leftovers(settings, root: Path, seen: set[str],
              processes: Callable[[], list[str]]) -> list[str]:
    """Everything of a stopped stack still there: processes, sandboxes, network
    namespaces, cgroups, mounts under its folder, containers and docker networks."""
    from ecluse.sandbox.cgroups import list_ids
    from ecluse.sandbox.network import list_netns, netns_name

    out = list(processes())
    if settings.sandbox.backend == "docker":
        # the stack's own engine went with it (docker_leftovers: its folder, processes,
        # containers); what the backend registered on the host must be gone too
        out += [f"sandbox {s} (registered)" for s in sorted(seen)
                if Path("/run/ecluse/sandboxes", s).exists()]
    else:
        out += [f"sandbox {m['id']}" for m in our_sandboxes(settings, False)]
    netns = set(list_netns())
    out += [f"netns {netns_name(s)}" for s in sorted(seen) if netns_name(s) in netns]
    cgroups = list_ids()
    out += [f"cgroup ecluse/{s}" for s in sorted(seen) if s in cgroups]
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(root) in line.split(" - ")[0]]
    out += [f"mount {m}" for m in mounts] + (holders(root) if mounts else [])
    if settings.sandbox.backend == "docker":
        out += docker_leftovers(settings, seen)
    return out
