"""Unit tests that need no root: cgroup files (v1 and v2 on a fake tree), seccomp
program, address plan, firewall script, spec validation."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import pytest

from ecluse.config import Project, Quota
from ecluse.sandbox import Mount, SandboxSpec, UserIdentity, seccomp
from ecluse.sandbox import network as net
from ecluse.sandbox.cgroups import Cgroups, Limits, detect


def _fake_v2(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")


def test_cgroup_v2_files(tmp_path, monkeypatch):
    root = tmp_path / "cg"
    _fake_v2(root)
    assert detect(root) == 2
    parent = root / "ecluse"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("")
    cg = Cgroups("s0123", root=root)
    cg.create(Limits(memory=512 * 2**20, cpu=1.5, pids=100))
    (d,) = cg.dirs
    assert d == root / "ecluse" / "s0123"
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "pids.max").read_text() == "100"
    assert (d / "cpu.max").read_text() == "150000 100000"
    # weight under contention: in proportion to the quota; the sandboxes'
    # parent weighs one busy process per core
    assert (d / "cpu.weight").read_text() == "150"
    assert (parent / "cpu.weight").read_text() == str(100 * (os.cpu_count() or 1))
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert cg.procs_files == [str(d / "cgroup.procs")]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_kills() == 1
    assert Cgroups.from_state("s0123", cg.to_state()).dirs == cg.dirs


def test_cgroup_v1_files(tmp_path):
    root = tmp_path / "cg"
    for c in ("memory", "pids", "cpu"):
        (root / c).mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert detect(root) == 1
    cg = Cgroups("s1", root=root)
    cg.create(Limits(memory=2**30, cpu=0.5, pids=64))
    mem, pids, cpu = cg.dirs
    assert (mem / "memory.limit_in_bytes").read_text() == str(2**30)
    assert (pids / "pids.max").read_text() == "64"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.shares").read_text() == "512"
    assert (cpu.parent / "cpu.shares").read_text() == str(1024 * (os.cpu_count() or 1))
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cg.oom_kills() == 2
    with pytest.raises(ValueError):
        Cgroups("../escape", root=root)


def test_no_memory_controller(tmp_path):
    with pytest.raises(OSError):
        detect(tmp_path)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_program(arch):
    prog = seccomp.build(arch)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    # checks the architecture first, kills a foreign one
    assert insns[0] == (seccomp.LD_W_ABS, 0, 0, 4)
    assert insns[1][3] == seccomp.AUDIT_ARCH[arch]
    assert insns[2] == (seccomp.RET_K, 0, 0, seccomp.RET_KILL_PROCESS)
    col = 0 if arch == "x86_64" else 1
    denied = {k for (code, jt, jf, k) in insns if code == seccomp.JEQ_K and jt > 1}
    for name in ("ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "process_vm_readv"):
        assert seccomp.DENIED[name][col] in denied, name
    # every jump lands inside the program, on a return
    for i, (code, jt, _jf, _k) in enumerate(insns):
        if code in (seccomp.JEQ_K, seccomp.JGE_K, seccomp.JSET_K):
            target = insns[i + 1 + jt]
            assert target[0] in (seccomp.RET_K, seccomp.LD_W_ABS)
    assert insns[-2] == (seccomp.RET_K, 0, 0, seccomp.RET_ERRNO | 1)  # EPERM
    assert insns[-1] == (seccomp.RET_K, 0, 0, seccomp.RET_ERRNO | 38)  # ENOSYS


def test_seccomp_unknown_arch():
    with pytest.raises(ValueError):
        seccomp.build("mips")


def test_subnet_plan():
    s = net.Subnet("10.213.0.0/16")
    assert s.host_address == "10.213.0.1"
    assert s.slots == 16384
    assert s.addresses(1) == ("10.213.0.5", "10.213.0.6")
    assert s.addresses(16383) == ("10.213.255.253", "10.213.255.254")
    with pytest.raises(ValueError):
        s.addresses(0)  # slot 0 holds the host address
    with pytest.raises(ValueError):
        net.Subnet("10.0.0.0/30")
    assert net.veth_name(12) == "eclv12" and len(net.veth_name(16383)) <= 15


def test_firewall_script_is_ours_only():
    script = net.table_script(net.Subnet("10.213.0.0/16"))
    assert script.strip().startswith("table inet ecluse {")
    assert "flush" not in script and "ruleset" not in script
    assert 'iifname "eclv*" counter drop' in script
    assert 'ip daddr 10.213.0.1' in script
    assert "hook forward" in script and 'oifname "eclv*" counter drop' in script


def test_spec_validation():
    p = Project(slug="abc-def", title="t", ldap_group="g", gid=7000, quota=Quota())
    u = UserIdentity("alice", 5001, 5001)
    with pytest.raises(ValueError):
        SandboxSpec(p, u, [])
    with pytest.raises(ValueError):
        SandboxSpec(p, u, ["x"], port=70000)
    with pytest.raises(ValueError):
        SandboxSpec(p, u, ["x"], extra_mounts=[Mount(Path("/a"), "../etc")])
    spec = SandboxSpec(p, u, ["x"])
    assert spec.home == spec.cwd == "/home/alice"


# ------------------------------------------------- the reference test doubles


@pytest.fixture
def plain_spec():
    p = Project(slug="abc-def", title="t", ldap_group="g", gid=7000, quota=Quota())
    return p, UserIdentity("alice", 5001, 5001)


def test_plain_double_refuses_without_opt_in():
    from ecluse.sandbox import SandboxError
    from ecluse.sandbox.testing import PlainProcessSandbox

    with pytest.raises(SandboxError, match="isolates nothing"):
        PlainProcessSandbox()


async def test_plain_double_follows_the_contract(plain_spec, tmp_path):
    import sys

    from ecluse.sandbox.testing import PlainProcessSandbox

    project, user = plain_spec
    sb = PlainProcessSandbox(unsafe_no_isolation=True, root=str(tmp_path))
    r = await sb.run(SandboxSpec(project, user, [sys.executable, "-c",
                                                 "import sys; print('o'); print('e', file=sys.stderr); sys.exit(4)"]))
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (4, "o\n", "e\n", False)
    r = await sb.run(SandboxSpec(project, user, ["sleep", "30"]), timeout=0.3)
    assert r.timed_out
    code = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(60)"
    state = await sb.start(SandboxSpec(project, user, [sys.executable, "-c", code], port=8888))
    assert state["ip"] == "127.0.0.1" and await sb.poll(state) is None
    adopted = PlainProcessSandbox(unsafe_no_isolation=True, root=str(tmp_path))  # a "restart"
    assert await adopted.poll(dict(state)) is None
    assert await adopted.poll(dict(state, pid_start=1)) == 1  # PID reused by another process
    await asyncio.sleep(0.3)
    await sb.stop(state, grace=5)
    assert await sb.poll(state) == 0


async def test_failing_double(plain_spec, tmp_path):
    from ecluse.sandbox import SandboxError
    from ecluse.sandbox.testing import FailingSandbox

    project, user = plain_spec
    with pytest.raises(SandboxError) as e:
        await FailingSandbox(unsafe_no_isolation=True, root=str(tmp_path)).start(
            SandboxSpec(project, user, ["x"]))
    assert "test double" in e.value.log_message


def _run_bpf(prog: bytes, arch: str, nr: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate a classic BPF seccomp program on one system call (seccomp_data)."""
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, seccomp.AUDIT_ARCH[arch], 0, *args)
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == seccomp.RET_K:
            return k
        else:
            cond = {seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k,
                    seccomp.JSET_K: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
    raise AssertionError("the program does not end")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_socket_families(arch):
    """socket()/socketpair(): the families network namespaces isolate pass, the others
    (AF_VSOCK first) get EAFNOSUPPORT; other calls are unaffected."""
    import errno

    prog = seccomp.build(arch)
    allow, eafnosupport = seccomp.RET_ALLOW, seccomp.RET_ERRNO | errno.EAFNOSUPPORT
    for call in (seccomp.SOCKET[arch], seccomp.SOCKETPAIR[arch]):
        for family in (1, 2, 10, 16):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
            assert _run_bpf(prog, arch, call, (family, 1, 0)) == allow, family
        for family in (40, 38, 30, 21, 15, 44, 31, 29, 17, 3, 0, 255):
            assert _run_bpf(prog, arch, call, (family, 1, 0)) == eafnosupport, family
    # the family check reads args[0] only: other calls with such a first argument pass
    assert _run_bpf(prog, arch, 0 if arch == "x86_64" else 63, (40,)) == allow  # read
    assert _run_bpf(prog, arch, seccomp.DENIED["ptrace"][0 if arch == "x86_64" else 1]) == (
        seccomp.RET_ERRNO | errno.EPERM)
    assert _run_bpf(prog, arch, seccomp.CLONE[arch], (0x10000000,)) == (
        seccomp.RET_ERRNO | errno.EPERM)
    assert _run_bpf(prog, arch, seccomp.CLONE[arch], (0x11,)) == allow
