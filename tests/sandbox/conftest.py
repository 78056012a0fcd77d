"""Fixtures for the sandbox tests: real sandboxes, a fake "internet", host listeners.

Components (each is the real thing, and is gone when the run ends, pass or fail):

* ``backend`` — a :class:`TrackingLocalSandbox` (a real ``LocalSandbox`` that
  records every sandbox it launches, so the final check can prove each one
  was removed), or, for a test parametrized with ``backend=docker``
  (``both_backends``), a :class:`TrackingDockerSandbox` on ``docker_engine``;
  on a deployment with two projects (``covid-los``: alice and
  carol; ``onco-surv``: bob), each with a dataset.
* ``outside`` (session) — an "internet" host: a network namespace linked to
  this host by a veth pair and routed from the host like any outside address
  (IP forwarding switched on for the run, then restored), running TCP (80,
  443) and UDP (53) listeners that log every packet they receive. A control
  namespace that is *not* a sandbox proves the route works. A safety-net
  table ``inet ecluse_test_<pid>`` (ours, removed at the end) drops any forwarded
  packet that is not going to or coming from that namespace, so no test can
  send traffic off this machine even if the sandbox firewall were broken.
* ``host_listeners`` (session) — TCP listeners on the LDAP and database ports,
  on loopback and on every non-loopback host address, logging connections.
* ``docker_engine`` (session, only for docker tests) — a ``dockerd`` of the run's
  own (data root, exec root and socket in the temporary directory,
  ``--iptables=false --bridge=none``) and the debootstrap base image, built
  once and cached (``ecluse.sandbox.engine``); at the end every container and
  network is removed, the daemon stopped and its directory deleted.
* ``escape`` — records escape attempts; the run ends with
  ``isolation: N escape attempts, N blocked``.

The session teardown checks that no sandbox, network namespace, veth,
cgroup, nftables table, process or temporary directory created here is left
and fails the run otherwise. These tests need root: without it they fail
with a clear message (they are never silently skipped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import SandboxSpec, UserIdentity
from ecluse.sandbox import network as net
from ecluse.sandbox.cgroups import CHECKS_PARENT, Cgroups
from ecluse.sandbox.docker import DockerSandbox
from ecluse.sandbox.local import LocalSandbox, teardown_host_network
from tests.support.sandboxes import CREATED, TrackingLocalSandbox

HUB_PORT = 18081
AIRLOCK_PORT = 18082
# RFC 2544 benchmarking range: never a real host, and not the package registries'
# address (this workplace serves them from TEST-NET-3, which a route to our own
# namespace would hijack while the tests run)
OUTSIDE_IP = "198.18.0.10"
OUTSIDE_GW = "198.18.0.1"
CONTROL_IP = "100.64.213.2"
CONTROL_GW = "100.64.213.1"
SAFETY_TABLE = f"ecluse_test_{os.getpid()}"  # forward safety net of this run

ESCAPES: list[tuple[str, str, bool]] = []  # (test, attempt, blocked)

ALICE = UserIdentity("alice", 5001, 5001)
BOB = UserIdentity("bob", 5002, 5002)
CAROL = UserIdentity("carol", 5003, 5003)


def _sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class TrackingDockerSandbox(DockerSandbox):
    """A real DockerSandbox that records the ids it launched (for the leak check)."""

    python = "python3"

    def _allocate(self, spec, meta):
        super()._allocate(spec, meta)
        CREATED[meta["id"]] = meta["slot"]

#: ``@both_backends``: the test runs against the local and the docker backend
both_backends = pytest.mark.parametrize("backend", ["local", "docker"], indirect=True)


# --------------------------------------------------------------- session


@pytest.fixture(scope="session")
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "tests/sandbox need root (network namespaces, cgroups, nftables, bubblewrap "
            "as root); run them as root, e.g. `sudo make test` (CI runs as root)",
            pytrace=False,
        )
    for tool in ("bwrap", "nft", "ip", "nsenter", "setpriv"):
        if not shutil.which(tool):
            pytest.fail(f"tests/sandbox need `{tool}` installed", pytrace=False)


@pytest.fixture(scope="session")
def sandbox_tmp(_require_root) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ecluse-sbtest-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
    assert not d.exists(), f"temporary directory {d} left behind"


@pytest.fixture(scope="session")
def deployment(sandbox_tmp: Path) -> Settings:
    state = sandbox_tmp / "state"
    state.mkdir(mode=0o700)
    # what the hub keeps: database, cookie secret, service tokens
    (state / "jupyterhub.sqlite").write_text("SQLite format 3 (fake hub database)")
    (state / "jupyterhub_cookie_secret").write_text("cookie-secret-0123456789abcdef")
    (state / "secrets.env").write_text("LDAP_BIND_PASSWORD=hunter2\n")
    for p in state.iterdir():
        p.chmod(0o600)
    data = sandbox_tmp / "data"
    for name, gid, content in (("covid", 7001, "patient,los\n1,3\n"),
                               ("onco", 7002, "patient,stage\nB-secret,IV\n")):
        d = data / name
        d.mkdir(parents=True)
        (d / "cohort.csv").write_text(content)
        os.chown(d, 0, gid)
        os.chmod(d, 0o750)
        os.chown(d / "cohort.csv", 0, gid)
        os.chmod(d / "cohort.csv", 0o640)
    os.chmod(data, 0o755)
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=test", bind_dn="cn=svc,dc=test",
                        user_search_base="ou=people,dc=test", group_search_base="ou=groups,dc=test")
    settings = Settings(state_dir=state, ldap=ldap,
                        sandbox=SandboxSettings(stop_grace=3.0, subnet="10.213.0.0/16"))
    settings.projects = {
        "covid-los": Project(slug="covid-los", title="Length of stay", ldap_group="p-covid",
                             gid=7001, datasets=[Dataset(name="covid", path=data / "covid")],
                             quota=Quota(cpu=1, memory="256M", pids=64)),
        "onco-surv": Project(slug="onco-surv", title="Oncology survival", ldap_group="p-onco",
                             gid=7002, datasets=[Dataset(name="onco", path=data / "onco")],
                             quota=Quota(cpu=1, memory="256M", pids=64)),
    }
    return settings


def _host_state() -> dict:
    return {
        "netns": {n for n in _list_netns_all() if n.startswith("eclt")},
        "veths": {v for v in os.listdir("/sys/class/net") if v.startswith("eclt")},
        "table": net.table_exists(),
        "iface": Path(f"/sys/class/net/{net.DUMMY_IFACE}").exists(),
        "logs": os.path.ismount("/run/ecluse/logs"),
    }


def _list_netns_all() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


@pytest.fixture(scope="session", autouse=True)
def _leak_check() -> Iterator[None]:
    """Session teardown: prove that everything the run created is gone."""
    if os.geteuid() != 0:  # root tests fail on their own (see _require_root)
        yield
        return
    before = _host_state()
    yield
    problems = []
    others = {}  # sandboxes of other processes (e.g. a concurrent hub test run)
    for sid in os.listdir("/run/ecluse/sandboxes") if os.path.isdir("/run/ecluse/sandboxes") else []:
        if sid not in CREATED:
            try:
                others[sid] = json.loads(Path(f"/run/ecluse/sandboxes/{sid}/meta.json").read_text())["slot"]
            except (OSError, ValueError, KeyError):
                others[sid] = None
    for sid, slot in CREATED.items():
        if Path(f"/sys/class/net/{net.veth_name(slot)}").exists() and slot not in others.values():
            problems.append(f"veth {net.veth_name(slot)}")
        if os.path.exists(net.netns_path(sid)):
            problems.append(f"network namespace {net.netns_name(sid)}")
        for parent in ("ecluse", CHECKS_PARENT):  # workspaces', and checks'
            if Cgroups(sid, parent=parent).exists():
                problems.append(f"cgroup {parent}/{sid}")
        if Path(f"/run/ecluse/sandboxes/{sid}").exists():
            problems.append(f"runtime dir of {sid}")
        if Path(f"/run/ecluse/logs/{sid}").exists():
            problems.append(f"log space of {sid}")
    for pid in os.listdir("/proc"):  # helper processes (listeners) carry the temp dir name
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ecluse-sbtest-" in cmd:
                problems.append(f"process {pid} ({cmd[:60]!r})")
    after = _host_state()
    for n in sorted(after["netns"] - before["netns"]):
        problems.append(f"network namespace {n}")
    for v in sorted(after["veths"] - before["veths"]):
        problems.append(f"veth {v}")
    if _sh("nft", "list", "table", "inet", SAFETY_TABLE, check=False).returncode == 0:
        problems.append(f"nftables table inet {SAFETY_TABLE}")
    if after["table"] and not before["table"] and not others:
        problems.append("nftables table inet ecluse with no sandbox left")
    if problems:  # clean up for the next run, then fail loudly
        asyncio.run(LocalSandbox(settings=None).cleanup_orphans())
    if not before["iface"]:
        teardown_host_network()
    if not before["logs"] and not others and os.path.ismount("/run/ecluse/logs"):
        problems.append("the /run/ecluse/logs tmpfs")
    assert not problems, "left behind by the sandbox tests: " + ", ".join(problems)


# ----------------------------------------------------------- per test


@pytest.fixture(scope="session")
def docker_engine(sandbox_tmp: Path) -> Iterator[tuple]:
    """(our own running Dockerd, the base image name); everything gone at the end."""
    from ecluse.sandbox import images
    from ecluse.sandbox.engine import Dockerd, _pids_mentioning, base_image

    if not shutil.which("dockerd") or not shutil.which("debootstrap"):
        pytest.fail("the docker tests need dockerd (docker.io) and debootstrap "
                    "(scripts/install-system-deps.sh test)", pytrace=False)
    engine = Dockerd(sandbox_tmp / "docker")
    try:
        engine.start()
        # the images' wheels (the host's pip) are fetched while debootstrap makes the base
        with contextlib.closing(engine.client(timeout=600)) as client, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            wheels = pool.submit(images.wheelhouse, [images.REPO / r for r in images.REQUIREMENTS],
                                 progress=lambda m: print(m, flush=True))
            image = base_image(client, progress=lambda m: print(m, flush=True))
            wheels.result()
        yield engine, image
    finally:
        engine.stop()
    left = _pids_mentioning(str(engine.root))
    assert not left, f"docker engine processes left: {left}"
    assert not engine.root.exists(), f"{engine.root} left behind"


@pytest.fixture(scope="session")
def workspace_image(docker_engine) -> str:
    """images/workspace built FROM the base image on the run's engine (cached by inputs)."""
    from ecluse.sandbox.images import workspace_image as build

    engine, _ = docker_engine
    with contextlib.closing(engine.client(timeout=1800)) as client:
        return build(client, progress=lambda m: print(m, flush=True))


@pytest.fixture(scope="session")
def hub_image(docker_engine) -> str:
    """images/hub built FROM the base image on the run's engine (cached by inputs)."""
    from ecluse.sandbox.images import hub_image as build

    engine, _ = docker_engine
    with contextlib.closing(engine.client(timeout=1800)) as client:
        return build(client, progress=lambda m: print(m, flush=True))


@pytest.fixture
def backend(request, deployment: Settings):
    """The local backend, or the docker one when parametrized so (``both_backends``)."""
    kind = getattr(request, "param", "local")
    if kind == "docker":
        engine, image = request.getfixturevalue("docker_engine")
        return TrackingDockerSandbox(settings=deployment, docker_url=engine.url, image=image)
    return TrackingLocalSandbox(settings=deployment)


@pytest.fixture
def covid(deployment: Settings) -> Project:
    return deployment.projects["covid-los"]


@pytest.fixture
def onco(deployment: Settings) -> Project:
    return deployment.projects["onco-surv"]


@pytest.fixture
def run_py(backend: TrackingLocalSandbox, covid: Project):
    """Run Python code in a one-shot sandbox; return (RunResult, last JSON line or None)."""

    async def run(code: str, *, project: Project | None = None, user: UserIdentity = ALICE,
                  timeout: float = 60, allowed_ports: list[int] | None = None, env=None):
        spec = SandboxSpec(project or covid, user, [backend.python, "-c", textwrap.dedent(code)],
                           env=env or {}, allowed_ports=allowed_ports or [])
        result = await backend.run(spec, timeout=timeout)
        payload = None
        for line in reversed(result.stdout.strip().splitlines()):
            if line.startswith("{"):
                payload = json.loads(line)
                break
        return result, payload

    return run


class EscapeRecorder:
    def __init__(self, test: str):
        self.test = test

    def __call__(self, attempt: str, blocked: bool) -> bool:
        ESCAPES.append((self.test, attempt, bool(blocked)))
        return blocked


@pytest.fixture
def escape(request) -> EscapeRecorder:
    """``escape("what was tried", blocked)``: count an escape attempt and its outcome."""
    return EscapeRecorder(request.node.name)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ESCAPES:
        return
    blocked = sum(1 for *_, b in ESCAPES if b)
    tr = terminalreporter
    tr.section("sandbox isolation")
    for test, attempt, b in ESCAPES:
        if not b:
            tr.write_line(f"NOT BLOCKED: {attempt} ({test})", red=True)
    tr.write_line(f"isolation: {len(ESCAPES)} escape attempts, {blocked} blocked",
                  green=blocked == len(ESCAPES), red=blocked != len(ESCAPES))


# ------------------------------------------------------------ listeners


LISTENER = r"""
import json, socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
specs = json.loads(sys.argv[2])
def tcp(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(64)
    while True:
        c, peer = s.accept(); log.write(json.dumps(["tcp", addr, port, peer[0]]) + "\n")
        try: c.sendall(b"hello\n")
        except OSError: pass
        c.close()
def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048); log.write(json.dumps(["udp", addr, port, peer[0]]) + "\n")
        s.sendto(b"answer", peer)
for kind, addr, port in specs:
    threading.Thread(target=tcp if kind == "tcp" else udp, args=(addr, port), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


class Listeners:
    """A process serving TCP/UDP listeners that logs every connection it gets."""

    def __init__(self, specs: list[tuple[str, str, int]], log: Path, netns: str | None = None):
        self.specs, self.log = specs, log
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", LISTENER, str(log), json.dumps(specs)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "listener did not start"

    def hits(self) -> list[list]:
        return [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _free_port(addr: str, preferred: int) -> int:
    for port in (preferred, 0):
        s = socket.socket()
        try:
            s.bind((addr, port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def _host_addresses() -> list[str]:
    out = json.loads(_sh("ip", "-j", "-4", "addr").stdout)
    return [a["local"] for i in out for a in i.get("addr_info", [])
            if not a["local"].startswith("127.") and i["ifname"] != net.DUMMY_IFACE
            and not i["ifname"].startswith(("eclv", "eclt"))]


@pytest.fixture(scope="session")
def host_listeners(sandbox_tmp: Path, deployment: Settings) -> Iterator[dict]:
    """LDAP and database ports on loopback and the host's own addresses; the hub
    and airlock ports on the sandbox host address (the only ones a sandbox may use)."""
    host_ip = LocalSandbox(settings=deployment).host_address()
    addrs = ["127.0.0.1", *_host_addresses()]
    ldap_port = _free_port("0.0.0.0", 389)
    db_port = _free_port("0.0.0.0", 5432)
    specs = [("tcp", a, p) for a in addrs for p in (ldap_port, db_port)]
    any_port = _free_port("0.0.0.0", 2222)  # a service bound to every address (e.g. SSH)
    specs += [("tcp", host_ip, HUB_PORT), ("tcp", host_ip, AIRLOCK_PORT),
              ("tcp", host_ip, ldap_port), ("tcp", host_ip, db_port),
              ("udp", host_ip, 53), ("tcp", "0.0.0.0", any_port)]
    lst = Listeners(specs, sandbox_tmp / "host-listeners.log")
    try:
        yield {"listeners": lst, "addrs": addrs, "ldap": ldap_port, "db": db_port,
               "any": any_port, "host_ip": host_ip}
    finally:
        lst.close()


@pytest.fixture(scope="session")
def outside(sandbox_tmp: Path) -> Iterator[dict]:
    """An 'internet' host in its own namespace, routed from this host."""
    tag = f"{os.getpid() % 100000}"
    ns_out, ns_ctl = f"eclt-out-{tag}", f"eclt-ctl-{tag}"
    v_out, v_ctl = f"ecltout{tag}"[:15], f"ecltctl{tag}"[:15]
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    old_forward = forward.read_text().strip()
    lst = None
    try:
        # the safety net first: forwarded packets may only go to/from the outside namespace
        _sh("nft", "-f", "-", input=f"""
table inet {SAFETY_TABLE} {{
    chain forward {{
        type filter hook forward priority filter - 20; policy drop;
        oifname "{v_out}" accept
        iifname "{v_out}" accept
    }}
}}
""")
        for ns, veth, ip, gw in ((ns_out, v_out, OUTSIDE_IP, OUTSIDE_GW),
                                 (ns_ctl, v_ctl, CONTROL_IP, CONTROL_GW)):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "addr", "add", f"{gw}/24", "dev", veth)
            _sh("ip", "link", "set", veth, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "route", "add", "default", "via", gw)
        forward.write_text("1")
        lst = Listeners([("tcp", OUTSIDE_IP, 80), ("tcp", OUTSIDE_IP, 443),
                         ("udp", OUTSIDE_IP, 53)], sandbox_tmp / "outside.log", netns=ns_out)

        def diagnose() -> str:
            """What the host's routing looked like, for a failed positive control."""
            cmds = [["cat", str(forward)], ["nft", "list", "ruleset"], ["ip", "-br", "addr"],
                    ["ip", "route"], ["ip", "neigh"], ["ip", "-n", ns_out, "-br", "addr"],
                    ["ip", "-n", ns_ctl, "route"],
                    ["sh", "-c", "cat /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/conf/*/rp_filter"
                     " | tr '\\n' ' '"],
                    ["sh", "-c", "cat /proc/sys/net/netfilter/nf_conntrack_count "
                     "/proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null"]]
            out = [f"listener alive: {lst.proc.poll() is None}"]
            for c in cmds:
                r = _sh(*c, check=False)
                out.append(f"$ {' '.join(c)}\n{r.stdout}{r.stderr}")
            return "\n".join(out)

        def reach(ip: str, port: int, attempts: int = 3) -> subprocess.CompletedProcess:
            """Connect from the control namespace (a routed neighbour that is no sandbox).

            The forwarding this fixture switched on is checked again first: it is
            host-wide, and the run is long.
            """
            for i in range(attempts):
                if forward.read_text().strip() != "1":
                    forward.write_text("1")
                r = subprocess.run(
                    ["ip", "netns", "exec", ns_ctl, sys.executable, "-c",
                     f"import socket; s=socket.create_connection(('{ip}', {port}), timeout=5); "
                     "print(s.recv(10))"], capture_output=True, text=True, timeout=30)
                if "hello" in r.stdout or i == attempts - 1:
                    return r
                time.sleep(2)
            raise AssertionError("unreachable")

        yield {"ip": OUTSIDE_IP, "listeners": lst, "control_ns": ns_ctl,
               "reach": reach, "diagnose": diagnose}
    finally:
        if lst:
            lst.close()
        forward.write_text(old_forward)
        for ns, veth in ((ns_out, v_out), (ns_ctl, v_ctl)):
            _sh("ip", "link", "del", veth, check=False)
            _sh("ip", "netns", "del", ns, check=False)
        _sh("nft", "delete", "table", "inet", SAFETY_TABLE, check=False)


@pytest.fixture
async def server(backend: TrackingLocalSandbox):
    """Start a long-running HTTP server sandbox; stopped (and checked gone) after the test."""
    started = []

    async def start(project: Project, user: UserIdentity, *, port: int = 8888,
                    allowed_ports: list[int] | None = None, extra: str = ""):
        code = textwrap.dedent(f"""
            import http.server, os, signal, sys, threading, time
            def term(*a):
                open(os.path.expanduser("~/terminated"), "w").write("graceful")
                sys.exit(0)
            signal.signal(signal.SIGTERM, term)
            {extra}
            h = http.server.HTTPServer(("0.0.0.0", {port}), http.server.SimpleHTTPRequestHandler)
            print("serving", flush=True)
            h.serve_forever()
        """)
        spec = SandboxSpec(project, user, [backend.python, "-c", code], port=port,
                           allowed_ports=allowed_ports or [])
        state = await backend.start(spec)
        started.append(state)
        await wait_http(state["ip"], port)
        return state

    yield start
    for state in started:
        await backend.stop(state, grace=1)
        assert not Cgroups(state["id"]).exists()
        assert await backend.poll(state) is not None


async def wait_http(ip: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
            w.close()
            return
        except (TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
