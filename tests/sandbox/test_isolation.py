"""Isolation suite: code inside real sandboxes tries to break out; every attempt must fail.

Each attempt is counted by the ``escape`` fixture; the run ends with
``isolation: N escape attempts, N blocked``. Network attempts are also
checked from the receiving side: the listeners of the "outside" host and of
the host services must not have seen a single packet from a sandbox.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import (
    AIRLOCK_PORT,
    ALICE,
    BOB,
    CAROL,
    CONTROL_IP,
    HUB_PORT,
    OUTSIDE_IP,
    both_backends,
)

pytestmark = pytest.mark.root

PRELUDE = r"""
import ctypes, errno, json, os, socket, subprocess, sys, time
RESULTS = {}
class NotReached(Exception):
    pass
def need(cond, why="not possible"):
    if not cond:
        raise NotReached(why)
def attempt(name, fn):
    # fn returning normally means the escape WORKED
    try:
        r = fn()
        RESULTS[name] = {"blocked": False, "detail": repr(r)[:300]}
    except Exception as e:
        RESULTS[name] = {"blocked": True, "detail": f"{type(e).__name__}: {e}"[:300]}
LATER = []
def attempt_later(name, fn):
    LATER.append((name, fn))
def run_later():
    # network attempts wait for time-outs: run them side by side
    import threading
    threads = [threading.Thread(target=attempt, args=a) for a in LATER]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
def done():
    run_later()
    print(json.dumps(RESULTS), flush=True)
def read(path):
    with open(path, "rb") as f:
        return f.read(100)
def write(path):
    with open(path, "w") as f:
        f.write("x")
def tcp(addr, port, timeout=1.5):
    s = socket.create_connection((addr, port), timeout=timeout)
    data = s.recv(10)
    s.close()
    need(data, "connected but no data")
    return data
def udp(addr, port, timeout=1.5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    # a DNS query for example.org
    q = bytes.fromhex("abcd01000001000000000000076578616d706c65036f72670000010001")
    s.sendto(q, (addr, port))
    return s.recvfrom(512)
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
    raise NotReached("no default route")
libc = ctypes.CDLL(None, use_errno=True)
def check(ret):
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret
"""


def check_all(escape, payload: dict | None, result) -> None:
    assert payload, f"sandbox produced no result: {result.stderr[-2000:]}"
    for name, outcome in payload.items():
        escape(name, outcome["blocked"])
    leaked = {k: v["detail"] for k, v in payload.items() if not v["blocked"]}
    assert not leaked, f"escape attempts that worked: {leaked}"


# ------------------------------------------------------------ filesystem


@both_backends
async def test_filesystem_escapes(run_py, escape, deployment, covid, onco, backend):
    backend.prepare_project_dirs(covid, ALICE)
    carol_home = backend.prepare_project_dirs(covid, CAROL).home
    (carol_home / "notes.txt").write_text("carol's notes")
    onco_paths = backend.prepare_project_dirs(onco, BOB)
    (onco_paths.shared / "results.csv").write_text("onco shared results")
    state = deployment.state_dir
    onco_data = onco.datasets[0].path
    code = PRELUDE + f"""
attempt("read another project's dataset (host path)", lambda: read("{onco_data}/cohort.csv"))
attempt("read another project's dataset (/data)", lambda: read("/data/onco/cohort.csv"))
attempt("list another project's dataset", lambda: need("onco" in os.listdir("/data")))
attempt("read another project's shared folder", lambda: read("{onco_paths.shared}/results.csv"))
attempt("write to /data", lambda: write("/data/covid/new.csv"))
attempt("write to /data root", lambda: write("/data/new.csv"))
attempt("delete from /data", lambda: os.unlink("/data/covid/cohort.csv"))
attempt("chmod /data", lambda: os.chmod("/data/covid", 0o777))
attempt("rename in /data", lambda: os.rename("/data/covid/cohort.csv", "/data/covid/c.csv"))
attempt("list another user's home (/home)", lambda: need(set(os.listdir("/home")) - {{"alice"}}))
attempt("list another user's home (/home/carol)", lambda: os.listdir("/home/carol"))
attempt("read another user's home (host path)", lambda: read("{carol_home}/notes.txt"))
attempt("list the hub state dir", lambda: os.listdir("{state}"))
attempt("read the hub database", lambda: read("{state}/jupyterhub.sqlite"))
attempt("read the hub cookie secret", lambda: read("{state}/jupyterhub_cookie_secret"))
attempt("read the deployment secrets", lambda: read("{state}/secrets.env"))
attempt("read the sandbox runtime registry", lambda: os.listdir("/run/ecluse"))
attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("read the LDAP client config", lambda: os.listdir("/etc/ldap"))
attempt("read ssh host keys", lambda: os.listdir("/etc/ssh"))
attempt("read TLS private keys", lambda: os.listdir("/etc/ssl/private"))
attempt("write /etc/passwd", lambda: write("/etc/passwd"))
attempt("write /usr", lambda: write("/usr/bin/evil"))
attempt("write the Python environment", lambda: write(sys.prefix + "/evil.pth"))
attempt("write the filesystem root", lambda: write("/evil"))
attempt("write a kernel setting", lambda: write("/proc/sys/kernel/hostname"))
attempt("see /sys and the host cgroups", lambda: need(os.listdir("/sys/fs/cgroup"), "empty"))
attempt("reach the host root through /proc/1/root", lambda: os.listdir("/proc/1/root{state}"))
attempt("open a host block device", lambda: need([d for d in os.listdir("/dev") if d.startswith(("sd", "vd", "nvme", "xvd", "loop"))]))
attempt("read kernel memory", lambda: need(read("/proc/kcore"), "nothing read"))
done()
"""
    result, payload = await run_py(code)
    check_all(escape, payload, result)
    assert (onco_data / "cohort.csv").exists()
    assert not (covid.datasets[0].path / "new.csv").exists()


# --------------------------------------------------------------- network


@both_backends
async def test_network_escapes(run_py, escape, server, onco, covid, outside, host_listeners):
    other = await server(onco, BOB, port=8888)
    hl = host_listeners
    host_ip = hl["host_ip"]
    before_host = len(hl["listeners"].hits())
    # positive controls: the route to the "internet" works for a namespace that is
    # not a sandbox, and the host reaches the other sandbox's server
    ctl = outside["reach"](OUTSIDE_IP, 80)
    assert "hello" in ctl.stdout, (f"control namespace cannot reach the outside host: "
                                   f"{ctl.stderr}\n{outside['diagnose']()}")
    assert outside["listeners"].hits()[-1][3] == CONTROL_IP
    # ... and the host's services answer a routed neighbour that is not a sandbox
    targets = [(a, p) for a in hl["addrs"][1:] for p in (hl["ldap"], hl["db"], hl["any"])]
    ctl = subprocess.run(
        ["ip", "netns", "exec", outside["control_ns"], sys.executable, "-c",
         "import socket, sys\n"
         f"for a, p in {targets!r}:\n"
         "    socket.create_connection((a, p), timeout=3).recv(10)\n"
         "print('all reached')"], capture_output=True, text=True, timeout=60)
    assert "all reached" in ctl.stdout, ctl.stderr
    outside_before = len(outside["listeners"].hits())
    before_host = len(hl["listeners"].hits())
    r, w = await asyncio.open_connection(other["ip"], 8888)
    w.close()

    lines = []
    for addr in hl["addrs"]:
        for port, what in ((hl["ldap"], "LDAP"), (hl["db"], "database")):
            lines.append(f'attempt_later("connect to the host {what} port on {addr}", '
                         f'lambda: tcp("{addr}", {port}))')
        if not addr.startswith("127."):
            lines.append(f'attempt_later("connect to a host service on {addr}", '
                         f'lambda: tcp("{addr}", {hl["any"]}))')
    code = PRELUDE + f"""
attempt_later("TCP to an outside host (80)", lambda: tcp("{OUTSIDE_IP}", 80))
attempt_later("TCP to an outside host (443)", lambda: tcp("{OUTSIDE_IP}", 443))
attempt_later("UDP/53 to an outside host", lambda: udp("{OUTSIDE_IP}", 53))
attempt_later("resolve a name (DNS)", lambda: socket.getaddrinfo("example.org", 443))
attempt_later("UDP/53 to the host address", lambda: udp("{host_ip}", 53))
attempt_later("connect to LDAP on the host address", lambda: tcp("{host_ip}", {hl["ldap"]}))
attempt_later("connect to the database on the host address", lambda: tcp("{host_ip}", {hl["db"]}))
attempt_later("connect to the hub port without being allowed", lambda: tcp("{host_ip}", {HUB_PORT}))
attempt_later("connect to the airlock port without being allowed", lambda: tcp("{host_ip}", {AIRLOCK_PORT}))
attempt_later("connect to another sandbox's server", lambda: tcp("{other['ip']}", 8888))
attempt_later("connect to another sandbox's gateway (host)", lambda: tcp("{other['gateway']}", {hl["any"]}))
attempt_later("connect to the own gateway (host)", lambda: tcp(gateway(), {hl["any"]}))
attempt_later("connect to a host service bound to all addresses", lambda: tcp("{host_ip}", {hl["any"]}))
attempt_later("open a raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt_later("open a packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt_later("change the sandbox address", lambda: need(subprocess.run(["ip", "addr", "add", "10.213.0.99/32", "dev", "eth0"]).returncode == 0))
attempt_later("connect over IPv6 to the host", lambda: socket.create_connection(("fe80::1%eth0", {hl["ldap"]}), timeout=1.5))
""" + "\n".join(lines) + "\ndone()\n"
    result, payload = await run_py(code, timeout=120)
    check_all(escape, payload, result)
    # nothing arrived anywhere
    assert len(outside["listeners"].hits()) == outside_before, outside["listeners"].hits()
    new_host_hits = hl["listeners"].hits()[before_host:]
    assert not new_host_hits, new_host_hits


@both_backends
async def test_allowed_ports_only_for_that_sandbox(run_py, escape, host_listeners):
    """A sandbox allowed the hub port reaches it; the airlock port stays closed."""
    hl = host_listeners
    code = PRELUDE + f"""
attempt("connect to a port allowed to another sandbox only", lambda: tcp("{hl['host_ip']}", {AIRLOCK_PORT}))
print(json.dumps({{"hub": tcp("{hl['host_ip']}", {HUB_PORT}).decode()}}))
done()
"""
    result, payload = await run_py(code, allowed_ports=[HUB_PORT])
    assert '"hub": "hello\\n"' in result.stdout, result.stdout + result.stderr
    check_all(escape, payload, result)


# -------------------------------------------------------------- processes


@both_backends
async def test_process_escapes(run_py, escape, backend, covid):
    paths = backend.prepare_project_dirs(covid, ALICE)
    suid = paths.shared / "id-suid"
    shutil.copy("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    marker = "61.424242"
    host = subprocess.Popen(["sleep", marker])
    try:
        code = PRELUDE + f"""
def host_procs():
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if b"{marker[:3]}" + b"{marker[3:]}" in open(f"/proc/{{p}}/cmdline", "rb").read():
                    found.append(p)
            except OSError:
                pass
    need(found, "no host process visible")
    return found
attempt("see host processes", host_procs)
attempt("signal a host process", lambda: os.kill({host.pid}, 0))
attempt("see more than the sandbox's processes", lambda: need(len([p for p in os.listdir("/proc") if p.isdigit()]) > 3))
attempt("kill the sandbox init (root)", lambda: (need(os.stat("/proc/1").st_uid == 0, "the init is the user's own"), os.kill(1, 9)))
child = subprocess.Popen(["sleep", "30"])
attempt("ptrace a sibling process", lambda: check(libc.ptrace(16, child.pid, None, None)))
attempt("ptrace the sandbox init", lambda: check(libc.ptrace(16, 1, None, None)))
attempt("read another process's memory", lambda: read(f"/proc/1/mem"))
child.kill()
os.makedirs("/tmp/m", exist_ok=True)
attempt("mount a filesystem", lambda: check(libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)))
attempt("mount with the setuid mount binary", lambda: need(subprocess.run(["mount", "-t", "tmpfs", "none", "/tmp/m"], capture_output=True).returncode == 0))
attempt("unshare a user namespace", lambda: check(libc.unshare(0x10000000)))
attempt("unshare a network namespace", lambda: check(libc.unshare(0x40000000)))
attempt("chroot", lambda: os.chroot("/tmp"))
attempt("become root with setuid(0)", lambda: os.setuid(0))
attempt("setuid-root binary gives euid 0", lambda: need(subprocess.run(["/project/id-suid", "-u"], capture_output=True, text=True).stdout.strip() == "0", "euid stays the user's"))
attempt("su to root", lambda: need(subprocess.run(["su", "-c", "id -u", "root"], input="", capture_output=True, text=True, timeout=10).stdout.strip() == "0"))
attempt("hold a capability", lambda: need(int([l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1], 16) != 0))
attempt("regain privileges (no_new_privs off)", lambda: need([l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1] == "0"))
attempt("change the hostname", lambda: socket.sethostname("evil"))
attempt("load a BPF program", lambda: check(libc.syscall(321, 0, None, 0)))
attempt("create a keyring entry", lambda: check(libc.syscall(248, b"user", b"k", b"v", 1, -4)))
done()
"""
        result, payload = await run_py(code)
        check_all(escape, payload, result)
    finally:
        host.kill()
        host.wait()
        suid.unlink()


@both_backends
async def test_socket_families_a_network_namespace_does_not_isolate(run_py, escape):
    """AF_VSOCK reaches the hypervisor or host whatever the network namespace; other
    families are kernel surface a workspace never needs. The usual ones still work."""
    code = PRELUDE + """
def sock(family, kind=socket.SOCK_STREAM, proto=0):
    s = socket.socket(family, kind, proto)
    s.close()
    return family
def vsock_host():
    s = socket.socket(40, socket.SOCK_STREAM)
    s.settimeout(1.5)
    try:
        s.connect((2, 22))  # VMADDR_CID_HOST
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT):
            raise
    return "socket created"
attempt("AF_VSOCK stream socket (to the hypervisor or host)", lambda: sock(40))
attempt("AF_VSOCK datagram socket", lambda: sock(40, socket.SOCK_DGRAM))
attempt("AF_VSOCK connect to the host", vsock_host)
attempt("AF_VSOCK through socketpair", lambda: socket.socketpair(40, socket.SOCK_STREAM))
attempt("AF_ALG kernel crypto socket", lambda: sock(38, socket.SOCK_SEQPACKET))
attempt("AF_TIPC socket", lambda: sock(30, socket.SOCK_RDM))
attempt("AF_RDS socket", lambda: sock(21, socket.SOCK_SEQPACKET))
attempt("AF_KEY socket", lambda: sock(15, socket.SOCK_RAW, 2))
attempt("AF_XDP socket", lambda: sock(44, socket.SOCK_RAW))
attempt("AF_BLUETOOTH socket", lambda: sock(31, socket.SOCK_STREAM, 3))
attempt("AF_CAN socket", lambda: sock(29, socket.SOCK_DGRAM, 2))
attempt("AF_PACKET socket", lambda: sock(17, socket.SOCK_DGRAM))
errors = {}
for name, args in {"AF_VSOCK": (40,), "AF_ALG": (38, socket.SOCK_SEQPACKET)}.items():
    try:
        sock(*args)
    except OSError as e:
        errors[name] = e.errno
allowed = {}
for name, args in {"AF_UNIX": (socket.AF_UNIX,), "AF_INET": (socket.AF_INET,),
                   "AF_INET6": (socket.AF_INET6,),
                   "AF_NETLINK": (socket.AF_NETLINK, socket.SOCK_RAW, 0)}.items():
    try:
        sock(*args)
        allowed[name] = "ok"
    except OSError as e:
        allowed[name] = str(e)
a, b = socket.socketpair()
allowed["socketpair(AF_UNIX)"] = "ok" if a.send(b"x") == 1 and b.recv(1) == b"x" else "no"
RESULTS["_allowed"] = {"blocked": True, "detail": json.dumps(allowed)}
RESULTS["_errors"] = {"blocked": True, "detail": json.dumps(errors)}
done()
"""
    result, payload = await run_py(code)
    assert payload, result.stderr[-2000:]
    allowed = json.loads(payload.pop("_allowed")["detail"])
    errors = json.loads(payload.pop("_errors")["detail"])
    check_all(escape, payload, result)
    # refused as on a kernel without the family, which programs already handle
    assert errors == {"AF_VSOCK": errno.EAFNOSUPPORT, "AF_ALG": errno.EAFNOSUPPORT}, errors
    assert set(allowed.values()) == {"ok"}, allowed


@both_backends
async def test_host_sockets_and_descriptors(run_py, escape, deployment):
    """Abstract unix sockets of the host, and descriptors the hub holds open, stay out."""
    import socket

    name = f"ecluse-test-abstract-{os.getpid()}"
    host_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host_sock.bind("\0" + name)
    host_sock.listen(1)
    secret = open(deployment.state_dir / "jupyterhub_cookie_secret")  # held open by the "hub"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect("\0" + name)  # control: reachable from the host
    probe.close()
    try:
        code = PRELUDE + f"""
def abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.5)
    s.connect("\\0{name}")
attempt("connect to a host abstract unix socket", abstract)
def inherited():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            continue
        if "secret" in target or "sqlite" in target or "{deployment.state_dir}" in target:
            found.append(target)
    need(found, "no hub descriptor inherited")
    return found
attempt("use a descriptor inherited from the hub", inherited)
attempt("read the hub's environment", lambda: need("ECLUSE_TEST_SECRET" in os.environ))
done()
"""
        os.environ["ECLUSE_TEST_SECRET"] = "s3cret"
        result, payload = await run_py(code)
        check_all(escape, payload, result)
    finally:
        os.environ.pop("ECLUSE_TEST_SECRET", None)
        secret.close()
        host_sock.close()


@both_backends
async def test_memory_limit_kills(run_py, escape, covid):
    code = """
chunks = []
for i in range(64):          # 1 GiB, 4x the project's 256M
    chunks.append(bytearray(16 * 1024 * 1024))
print("survived")
"""
    result, _ = await run_py(code)
    escape("exceed the memory limit", result.oom_killed and "survived" not in result.stdout)
    assert result.oom_killed and result.exit_code == 137, result


@both_backends
async def test_tmpfs_is_bounded_by_memory(run_py, escape):
    code = """
import os
with open("/tmp/fill", "wb") as f:
    for i in range(64):
        f.write(b"x" * 16 * 1024 * 1024)
        f.flush()
print("filled")
"""
    result, _ = await run_py(code)
    escape("fill host memory through /tmp", "filled" not in result.stdout)
    assert "filled" not in result.stdout


async def test_log_output_is_bounded_by_its_own_log_space(run_py, escape, backend):
    """A sandbox's output goes to its own tmpfs of ``log_space``: 1 GiB of output ends
    there, neither in the host's memory nor in /run."""
    code = """
import os, sys
chunk = "x" * (1024 * 1024)
for i in range(1024):        # 1 GiB of output, 16x the sandbox's log space
    sys.stdout.write(chunk)
sys.stdout.flush()
os.write(2, b"wrote it all")
"""
    result, _ = await run_py(code)
    cap = 64 * 2**20
    assert backend.log_space == "64m"
    bounded = "wrote it all" not in result.stderr and len(result.stdout) <= cap
    escape("fill host memory through the log", bounded)
    assert bounded, (result.exit_code, len(result.stdout))
    assert result.exit_code != 0 and not result.oom_killed, result


async def test_a_sandbox_filling_its_logs_costs_no_other_its_logs(backend, covid, run_py,
                                                                 escape):
    """One sandbox writes until its log space is full and stays running; another one's
    output is still kept whole."""
    from ecluse.config import Quota
    from ecluse.sandbox import SandboxSpec

    # memory enough to fill far more than one sandbox's log space
    big = covid.model_copy(update={"quota": Quota(cpu=1, memory="1G", pids=64)})
    filler = ("import sys, time\nchunk = 'f' * (1024 * 1024)\n"
              "try:\n    for i in range(400):\n        sys.stdout.write(chunk)\n"
              "    sys.stdout.flush()\nexcept OSError:\n    pass\ntime.sleep(120)\n")
    state = await backend.start(SandboxSpec(big, ALICE, [sys.executable, "-c", filler]))
    try:
        log = backend._log(state["id"], "output")
        last, stable_since = -1, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            size = log.stat().st_size if log.exists() else 0
            if size != last:
                last, stable_since = size, loop.time()
            elif size > 0 and loop.time() - stable_since > 1.5:
                break
            await asyncio.sleep(0.2)
        assert last >= 32 * 2**20, f"the filler wrote only {last} bytes"
        result, _ = await run_py(
            "import sys\nsys.stdout.write('kept:' + 'k' * (1024 * 1024) + ':end')\n")
        kept = result.stdout.startswith("kept:") and result.stdout.endswith(":end")
        escape("fill another sandbox's log space", kept)
        assert kept and result.exit_code == 0, (result.exit_code, len(result.stdout),
                                                result.stderr[-500:])
    finally:
        await backend.stop(state, grace=0.5)


@both_backends
async def test_a_uid_of_a_host_account_is_refused(backend, covid):
    """A directory user whose uidNumber is a host account's never gets a sandbox."""
    from ecluse.sandbox import SandboxError, SandboxSpec, UserIdentity

    host = [line.split(":") for line in open("/etc/passwd").read().splitlines()]
    name, uid = next((f[0], int(f[2])) for f in host if len(f) > 3 and int(f[2]) >= 1000)
    intruder = UserIdentity("mallory", uid, uid)
    with pytest.raises(SandboxError) as e:
        await backend.run(SandboxSpec(covid, intruder, ["/bin/true"]), timeout=30)
    assert f"user id ({uid}) is also the id of an account of this server" in str(e.value)
    assert name in e.value.log_message and "collides" in e.value.log_message
    # the same user under its own name, known to the name service, is not a collision
    import pwd

    entry = pwd.getpwuid(uid)
    from ecluse.sandbox.local import check_host_account

    with pytest.raises(SandboxError):  # a local account: always refused
        check_host_account(UserIdentity(entry.pw_name, uid, uid))
    empty = backend.settings.state_dir.parent / "passwd-empty"
    empty.write_text("root:x:0:0::/root:/bin/sh\n")
    check_host_account(UserIdentity(entry.pw_name, uid, uid), passwd=empty)  # NSS, same user
    with pytest.raises(SandboxError):
        check_host_account(UserIdentity("mallory", uid, uid), passwd=empty)  # NSS, other user
    empty.unlink()


async def test_fork_bomb_is_bounded(backend, covid, escape):
    from ecluse.sandbox import SandboxSpec

    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    state = await backend.start(SandboxSpec(covid, ALICE, [sys.executable, "-c", code]))
    try:
        await asyncio.sleep(2.0)
        cg = backend._cgroups(state)
        pids_dir = [d for d in cg.dirs if "pids" in str(d) or cg.version == 2][0]
        current = int((pids_dir / "pids.current").read_text())
        events = (pids_dir / "pids.events").read_text()
        limit = covid.quota.pids
        hit = int(events.split()[-1]) > 0
        escape("fork bomb beyond the process limit", current <= limit and hit)
        assert current <= limit and hit, (current, events)
    finally:
        await backend.stop(state, grace=0.5)
    assert not backend._cgroups(state).exists()
    assert await backend.poll(state) is not None


async def test_sandbox_cannot_outlive_a_signal_to_its_session(backend, covid, escape):
    """A process that double-forks and daemonizes is still killed by stop()."""
    from ecluse.sandbox import SandboxSpec

    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(300)\n    os._exit(0)\ntime.sleep(300)\n")
    state = await backend.start(SandboxSpec(covid, ALICE, [sys.executable, "-c", code]))
    await asyncio.sleep(0.5)
    pids = backend._cgroups(state).pids()
    await backend.stop(state, grace=0.5)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")
             and "sleep" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]
    escape("a daemonized process survives the sandbox", not alive)
    assert not alive
    assert not backend._cgroups(state).exists()
