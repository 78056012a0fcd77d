"""The docker backend on the tests' own engine: what only containers have.

Limits and controls read back from the engine, re-adoption by labels after a
hub restart that lost its saved state, the process limit against a fork bomb,
a daemonized process killed with its container, and the engine's own clean-up.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from ecluse.sandbox import SandboxSpec

from .conftest import ALICE, TrackingDockerSandbox

pytestmark = pytest.mark.root


@pytest.fixture
def docker_backend(docker_engine, deployment) -> TrackingDockerSandbox:
    engine, image = docker_engine
    return TrackingDockerSandbox(settings=deployment, docker_url=engine.url, image=image)


async def test_container_controls_from_the_engine(docker_backend, covid):
    state = await docker_backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"],
                                                   allowed_ports=[18081]))
    try:
        info = docker_backend.client.api.inspect_container(state["container"])
        hc = info["HostConfig"]
        assert info["Config"]["User"] == "5001:5001" and hc["GroupAdd"] == ["7001"]
        assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"] and not hc["Privileged"]
        assert "no-new-privileges:true" in hc["SecurityOpt"]
        assert any(o.startswith("seccomp=") for o in hc["SecurityOpt"])
        assert hc["ReadonlyRootfs"] is True and "/tmp" in hc["Tmpfs"]
        assert hc["Memory"] == hc["MemorySwap"] == covid.quota.memory
        assert hc["NanoCpus"] == int(covid.quota.cpu * 1e9)
        assert hc["PidsLimit"] == covid.quota.pids
        binds = {b.split(":")[1]: b.split(":")[2] for b in hc["Binds"]}
        assert binds["/data/covid"] == "ro" and binds["/project"] == "rw"
        assert binds["/home/alice"] == "rw" and binds["/etc/passwd"] == "ro"
        net = docker_backend.client.api.inspect_network(state["network"])
        assert net["Options"]["com.docker.network.bridge.name"] == state["veth"]
        assert net["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert list(net["Containers"]) == [state["container"]]  # alone on its network
    finally:
        await docker_backend.stop(state, grace=0)


async def test_readoption_by_labels_after_a_hub_restart(docker_backend, covid):
    state = await docker_backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"],
                                                   name="workspace"))
    try:
        restarted = TrackingDockerSandbox(settings=docker_backend.settings,
                                          docker_url=docker_backend.docker_url,
                                          image=docker_backend.image)
        found = restarted.adopt("covid-los", "alice")
        assert found and found["id"] == state["id"] and found["alive"]
        assert restarted.adopt("covid-los", "bob") is None
        assert [m["id"] for m in restarted.list()] == [state["id"]]
        assert await restarted.poll(found) is None
        await restarted.stop(found, grace=0)
        assert await docker_backend.poll(state) is not None
    finally:
        await docker_backend.stop(state, grace=0)
    assert not docker_backend.list()


async def test_fork_bomb_is_bounded_by_the_pids_limit(docker_backend, covid, escape):
    code = ("import os, sys, time\nn = 0\nfor i in range(1000):\n    try:\n"
            "        if os.fork() == 0:\n            time.sleep(60); os._exit(0)\n"
            "        n += 1\n    except OSError:\n        break\nprint(n, flush=True)\n"
            "time.sleep(60)\n")
    state = await docker_backend.start(SandboxSpec(covid, ALICE, ["python3", "-c", code]))
    try:
        for _ in range(100):
            out, _ = await docker_backend.read_logs(state)
            if out.strip():
                break
            await asyncio.sleep(0.2)
        forked = int(out.split()[0])
        escape("fork bomb beyond the process limit", forked < covid.quota.pids)
        assert forked < covid.quota.pids, out
    finally:
        await docker_backend.stop(state, grace=0)


async def test_a_daemonized_process_dies_with_its_container(docker_backend, covid, escape):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(300)\n    os._exit(0)\ntime.sleep(300)\n")
    state = await docker_backend.start(SandboxSpec(covid, ALICE, ["python3", "-c", code]))
    await asyncio.sleep(1)
    top = docker_backend.client.api.top(state["container"])
    pids = [int(p[top["Titles"].index("PID")]) for p in top["Processes"]]
    assert len(pids) >= 3, top
    await docker_backend.stop(state, grace=0.5)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    escape("a daemonized process survives the sandbox", not alive)
    assert not alive


async def test_no_package_installable_at_run_time(docker_backend, covid, escape):
    """The user is not root and the image is read-only: neither APT nor pip installs."""
    code = """
import json, os, subprocess, sys
def ok(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False
def writable(d):
    try:
        open(os.path.join(d, "evil.py"), "w").close()
        return True
    except OSError:
        return False
print(json.dumps({"uid": os.getuid(), "apt": ok(["apt-get", "install", "-y", "curl"]),
                  "dpkg": ok(["dpkg", "-i", "/nonexistent.deb"]),
                  "pip": ok([sys.executable, "-m", "pip", "--version"]),
                  "ensurepip": ok([sys.executable, "-m", "ensurepip", "--user"]),
                  "site": any(writable(d) for d in sys.path if d.startswith("/usr"))}))
"""
    result = await docker_backend.run(SandboxSpec(covid, ALICE, ["python3", "-c", code]),
                                      timeout=120)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["uid"] == ALICE.uid
    for what in ("apt", "dpkg", "pip", "ensurepip", "site"):
        escape(f"install a package at run time ({what})", not out[what])
    assert not any(out[w] for w in ("apt", "dpkg", "pip", "ensurepip", "site")), out


async def test_no_capability_in_any_set_seccomp_and_no_new_privs(docker_backend, covid, escape):
    """All five capability sets empty (the bounding set too: cap_drop ALL), no_new_privs,
    a seccomp filter, as for a local sandbox's command."""
    code = ("import json\nst = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
            "print(json.dumps({k: st[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', "
            "'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp')}))\n")
    result = await docker_backend.run(SandboxSpec(covid, ALICE, ["python3", "-c", code]),
                                      timeout=60)
    st = json.loads(result.stdout.strip().splitlines()[-1])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        escape(f"hold a capability ({cap})", int(st[cap], 16) == 0)
    assert all(int(st[c], 16) == 0 for c in ("CapInh", "CapPrm", "CapEff", "CapBnd",
                                             "CapAmb")), st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st


async def test_cleanup_after_a_container_removed_behind_our_back(docker_backend, covid):
    """An operator (or a crash) removed the container: its network, firewall elements and
    registry entry are swept."""
    from ecluse.sandbox import network as net

    state = await docker_backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"],
                                                   allowed_ports=[18081]))
    docker_backend.client.api.remove_container(state["container"], force=True)
    removed = await docker_backend.cleanup_orphans(min_age=0)
    assert state["id"] in removed
    assert not docker_backend.client.api.networks(filters={"name": state["network"]})
    assert (state["veth"], 18081) not in net.allowed_elements()
    assert not os.path.exists(f"/run/ecluse/sandboxes/{state['id']}")
    assert not os.path.exists(f"/sys/class/net/{state['veth']}")


def test_an_engine_in_a_tmpfs_leaves_no_mount_no_process_and_no_folder(sandbox_tmp):
    """``Dockerd(tmpfs=True)`` (the tests' engines, ``ECLUSE_DOCKER_TMPFS=1``): the data
    root is a tmpfs of its own, overlay2 runs on it, and stopping the engine unmounts it
    and removes the folder; an engine whose folder is kept never gets one."""
    import contextlib

    from ecluse.sandbox.engine import Dockerd, _mounts_under, _pids_mentioning

    root = sandbox_tmp / "tmpfs-engine"
    engine = Dockerd(root, tmpfs=True)
    try:
        engine.start()
        mounts = {f[1]: f[2] for f in (ln.split() for ln in open("/proc/mounts"))}
        assert mounts.get(str(root / "data")) == "tmpfs", mounts.get(str(root / "data"))
        with contextlib.closing(engine.client()) as client:
            info = client.info()
        assert info["Driver"] == "overlay2"
        assert ["Backing Filesystem", "tmpfs"] in info["DriverStatus"], info["DriverStatus"]
    finally:
        engine.stop()
    assert not _mounts_under(root) and not root.exists()
    assert not _pids_mentioning(str(root) + "/")
    assert Dockerd(root, temporary=False, tmpfs=True).tmpfs is False
