"""The local backend does its job: mounts, identity, limits, lifecycle, re-adoption.

Positive tests (what a researcher must be able to do) and the lifecycle the
spawner relies on: start / poll / stop, state that survives a hub restart,
crash clean-up, concurrent starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ecluse.sandbox import Mount, SandboxError, SandboxSpec, UserIdentity, get_backend
from ecluse.sandbox import network as net
from ecluse.sandbox.cgroups import Cgroups
from ecluse.sandbox.local import LocalSandbox, _python_dirs

from .conftest import ALICE, BOB, CREATED, HUB_PORT, TrackingLocalSandbox

pytestmark = pytest.mark.root


async def test_researcher_sees_data_project_home_and_python(run_py, backend, covid):
    paths = backend.prepare_project_dirs(covid, ALICE)
    code = """
import grp, json, os, pwd, sys
out = {}
out["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
out["whoami"] = pwd.getpwuid(os.getuid()).pw_name
out["project_group"] = grp.getgrgid(7001).gr_name
out["data"] = open("/data/covid/cohort.csv").read()
open("/project/shared.txt", "w").write("team")
st = os.stat("/project/shared.txt")
out["project_file_gid"] = st.st_gid
open(os.path.expanduser("~/mine.txt"), "w").write("me")
out["cwd"] = os.getcwd()
out["home"] = os.environ["HOME"]
out["env"] = sorted(k for k in os.environ)
out["prefix"] = sys.prefix
out["root"] = sorted(os.listdir("/"))
import pandas
out["pandas"] = pandas.DataFrame({"a": [1, 2]}).a.sum().item()
print(json.dumps(out))
"""
    result, out = await run_py(code)
    assert result.exit_code == 0, result.stderr
    assert out["ids"] == [5001, 5001, 5001, [7001]]
    assert out["whoami"] == "alice" and out["project_group"] == "covid-los"
    assert out["data"].startswith("patient,los")
    assert out["project_file_gid"] == 7001  # setgid shared folder
    assert out["cwd"] == out["home"] == "/home/alice"
    assert out["prefix"] == sys.prefix
    assert out["pandas"] == 3
    # the workspace environment is mounted at its own path (wherever the checkout
    # lives: /work, /check, /opt...), so its top-level directory is allowed too
    env_tops = {Path(d).parts[1] for d in _python_dirs(Path(sys.prefix))}
    assert set(out["root"]) <= {"bin", "data", "dev", "etc", "home", "lib", "lib64", "proc",
                                "project", "root", "sbin", "tmp", "usr", "lib32",
                                "libx32"} | env_tops
    assert "JUPYTERHUB_API_TOKEN" not in out["env"]  # host env never leaks in
    assert (paths.shared / "shared.txt").read_text() == "team"
    assert (paths.home / "mine.txt").stat().st_uid == 5001


def test_project_dirs_owners_and_modes(backend, covid, deployment):
    paths = backend.prepare_project_dirs(covid, ALICE)
    s = paths.shared.stat()
    assert (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) == (0, 7001, 0o2770)
    h = paths.home.stat()
    assert (h.st_uid, h.st_gid, stat.S_IMODE(h.st_mode)) == (5001, 5001, 0o700)
    assert stat.S_IMODE(paths.home.parent.stat().st_mode) == 0o711
    assert paths.shared == deployment.projects_root / "covid-los" / "shared"
    # idempotent, and repairs a wrong mode
    os.chmod(paths.shared, 0o777)
    backend.prepare_project_dirs(covid, ALICE)
    assert stat.S_IMODE(paths.shared.stat().st_mode) == 0o2770


async def test_allowed_hub_port_is_reachable(run_py, host_listeners):
    code = f"""
import json, socket
s = socket.create_connection(("{host_listeners['host_ip']}", {HUB_PORT}), timeout=5)
print(json.dumps({{"got": s.recv(10).decode()}}))
"""
    result, out = await run_py(code, allowed_ports=[HUB_PORT])
    assert out == {"got": "hello\n"}, result.stderr


async def test_one_shot_captures_output_and_status(run_py):
    result, _ = await run_py("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.oom_killed and not result.ok


async def test_one_shot_timeout(run_py):
    t0 = time.monotonic()
    result, _ = await run_py("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1)
    assert result.timed_out and result.stdout == "started\n"
    assert time.monotonic() - t0 < 10


async def test_limits_from_quota(backend, covid):
    state = await backend.start(SandboxSpec(covid, ALICE, ["sleep", "30"]))
    try:
        cg = Cgroups.from_state(state["id"], state["cgroup"])
        if cg.version == 1:
            mem, pids, cpu = cg.dirs
            assert int((mem / "memory.limit_in_bytes").read_text()) == covid.quota.memory
            assert int((pids / "pids.max").read_text()) == covid.quota.pids
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == int(covid.quota.cpu * 100_000)
            assert int((cpu / "cpu.shares").read_text()) == int(covid.quota.cpu * 1024)
            assert int((cpu.parent / "cpu.shares").read_text()) == 1024 * os.cpu_count()
        else:
            (d,) = cg.dirs
            assert int((d / "memory.max").read_text()) == covid.quota.memory
            assert int((d / "pids.max").read_text()) == covid.quota.pids
            assert int((d / "cpu.weight").read_text()) == int(covid.quota.cpu * 100)
        assert cg.pids()
    finally:
        await backend.stop(state)


async def test_server_lifecycle_and_graceful_stop(backend, server, covid):
    state = await server(covid, ALICE, port=8888)
    assert json.loads(json.dumps(state)) == state  # JSON-able
    assert state["port"] == 8888 and state["ip"].startswith("10.213.")
    r, w = await asyncio.open_connection(state["ip"], 8888)
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    assert (await r.read()).startswith(b"HTTP/1.0 200")
    assert await backend.poll(state) is None
    assert net.table_exists()
    home = Path(backend.settings.projects_root) / "covid-los" / "home" / "alice"
    (home / "terminated").unlink(missing_ok=True)
    await backend.stop(state, grace=5)
    assert (home / "terminated").read_text() == "graceful"  # SIGTERM reached the server
    assert await backend.poll(state) == 0
    await backend.stop(state)  # idempotent
    assert not os.path.exists(net.netns_path(state["id"]))
    assert not Path(f"/sys/class/net/{state['veth']}").exists()
    assert not Cgroups(state["id"]).exists()
    assert not any(i == state["veth"] for i, _ in net.allowed_elements())


async def test_server_ignoring_sigterm_is_killed_after_grace(backend, server, covid):
    state = await server(covid, ALICE, extra="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    t0 = time.monotonic()
    await backend.stop(state, grace=1.0)
    assert 0.9 < time.monotonic() - t0 < 8
    assert await backend.poll(state) == 137
    assert not Cgroups(state["id"]).exists()


async def test_readopt_after_hub_restart(deployment, covid, tmp_path):
    """A "hub" process starts a sandbox and exits; a new backend adopts and stops it."""
    script = tmp_path / "hub.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.sandbox.conftest import ALICE
        from ecluse.sandbox import SandboxSpec
        from ecluse.sandbox.local import LocalSandbox
        import pickle
        settings = pickle.loads(bytes.fromhex(sys.argv[1]))
        async def main():
            sb = LocalSandbox(settings=settings)
            state = await sb.start(SandboxSpec(settings.projects["covid-los"], ALICE,
                                               ["sleep", "300"]))
            print(json.dumps(state))
        asyncio.run(main())
    """))
    import pickle

    out = subprocess.run([sys.executable, str(script), pickle.dumps(deployment).hex()],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.strip().splitlines()[-1])
    CREATED[state["id"]] = state["slot"]
    adopter = TrackingLocalSandbox(settings=deployment)
    try:
        assert await adopter.poll(state) is None  # survived its parent's exit
        pid = Cgroups(state["id"]).pids()[0]
        assert pid
    finally:
        await adopter.stop(state, grace=1)
    assert await adopter.poll(state) is not None
    assert not Cgroups(state["id"]).exists()


async def test_poll_is_not_fooled_by_pid_reuse(backend, covid):
    state = await backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"]))
    try:
        Cgroups(state["id"]).kill_all()  # the sandbox dies behind our back
        state = dict(state, pid=os.getpid(), pid_start=None)  # a live, unrelated PID
        fresh = LocalSandbox(settings=backend.settings)
        assert await fresh.poll(state) is not None  # dead, whatever the PID says
    finally:
        await backend.stop(state)


async def test_crash_cleanup_orphans(backend, covid):
    """The hub dies and the sandbox is killed: cleanup_orphans removes what is left."""
    state = await backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"]))
    Cgroups(state["id"]).kill_all()
    await asyncio.sleep(0.1)
    stray_ns = "ecluse-sdeadbeef00"
    subprocess.run(["ip", "netns", "add", stray_ns], check=True)
    stray_cg = Cgroups("sdeadbeef01")
    stray_cg.dirs[0].parent.mkdir(exist_ok=True)
    for d in stray_cg.dirs:
        d.mkdir(parents=True, exist_ok=True)
    removed = await LocalSandbox(settings=backend.settings).cleanup_orphans(min_age=0)
    assert state["id"] in removed
    assert not os.path.exists(net.netns_path(state["id"]))
    assert not os.path.exists(f"/run/netns/{stray_ns}")
    assert not stray_cg.exists()
    assert not Cgroups(state["id"]).exists()
    assert not Path(f"/sys/class/net/{state['veth']}").exists()


async def test_twenty_concurrent_starts(backend, covid, onco):
    users = [UserIdentity(f"user{i}", 6000 + i, 6000 + i) for i in range(20)]
    specs = [SandboxSpec(covid if i % 2 else onco, u, ["sleep", "300"], port=8888)
             for i, u in enumerate(users)]
    t0 = time.monotonic()
    states = await asyncio.gather(*(backend.start(s) for s in specs), return_exceptions=True)
    elapsed = time.monotonic() - t0
    ok = [s for s in states if isinstance(s, dict)]
    try:
        assert len(ok) == 20, [s for s in states if not isinstance(s, dict)]
        assert len({s["ip"] for s in ok}) == 20 and len({s["veth"] for s in ok}) == 20
        assert all([await backend.poll(s) is None for s in ok])
        print(f"20 concurrent starts: {elapsed:.2f}s")
        assert elapsed < 20
    finally:
        await asyncio.gather(*(backend.stop(s, grace=0.5) for s in ok))
    assert not any(Cgroups(s["id"]).exists() for s in ok)


async def test_start_failure_cleans_up(backend, covid, deployment):
    bad = covid.model_copy(deep=True)
    bad.datasets[0].path = Path("/nonexistent/dataset")
    before = set(CREATED)
    with pytest.raises(SandboxError) as e:
        await backend.start(SandboxSpec(bad, ALICE, ["true"]))
    assert "unavailable" in str(e.value)
    with pytest.raises(SandboxError) as e:
        await backend.run(SandboxSpec(covid, ALICE, ["true"], extra_mounts=[
            Mount(Path("/nonexistent/src"), "/extra")]))
    assert "/extra is unavailable" in str(e.value) and "nonexistent" in e.value.log_message
    # a failure inside (here: a missing working directory) is reported, not hidden
    result = await backend.run(SandboxSpec(covid, ALICE, ["true"], workdir="/nowhere"))
    assert result.exit_code == 126 and "nowhere" in result.stderr
    failed = set(CREATED) - before
    assert len(failed) == 1  # the two others failed before allocating anything
    for sid in failed:
        assert not Path(f"/run/ecluse/sandboxes/{sid}").exists()
        assert not os.path.exists(net.netns_path(sid))
        assert not Cgroups(sid).exists()


async def test_a_mount_over_the_python_environment_is_refused_before_launch(backend, covid,
                                                                              tmp_path):
    """A checkout under /check (where CI cloned it) once hid the airlock's check
    sandbox its own interpreter: ``exec: ...python: not found``, exit 127, every
    file ``review``. Such a mount is now refused at once, saying which."""
    hidden = Path(sys.prefix).resolve()
    before = set(CREATED)
    for target in (str(hidden.parent), str(hidden)):
        with pytest.raises(SandboxError) as e:
            await backend.run(SandboxSpec(covid, ALICE, ["true"], extra_mounts=[
                Mount(tmp_path, target, read_only=True)]))
        assert f"mount {target} would hide its Python environment" in str(e.value)
        assert str(hidden) in e.value.log_message
    assert not [sid for sid in set(CREATED) - before
                if Path(f"/run/ecluse/sandboxes/{sid}").exists()]
    # a mount beside it is fine
    result = await backend.run(SandboxSpec(covid, ALICE, ["python", "-c", "print(1)"],
                                           extra_mounts=[Mount(tmp_path, "/airlock-check")]))
    assert result.exit_code == 0 and result.stdout.strip() == "1"


def test_project_without_gid_is_refused(backend, covid):
    nogid = covid.model_copy(update={"gid": None})
    with pytest.raises(SandboxError, match="no group id"):
        backend.prepare_project_dirs(nogid, ALICE)


def test_identity_validation():
    with pytest.raises(ValueError):
        UserIdentity("root", 0, 0)
    with pytest.raises(ValueError):
        UserIdentity("../etc", 5000, 5000)
    with pytest.raises(ValueError):
        UserIdentity("daemon", 1, 1)


def test_get_backend_picks_local(deployment):
    sb = get_backend(deployment)
    assert isinstance(sb, LocalSandbox)
    assert sb.host_address() == "10.213.0.1"


async def test_stop_of_unknown_state_is_harmless(backend, covid):
    state = await backend.start(SandboxSpec(covid, BOB, ["sleep", "30"]))
    await backend.stop(state)
    copy = {k: v for k, v in state.items() if k != "released"}
    await LocalSandbox(settings=backend.settings).stop(copy)  # after a restart: no error


async def test_multiprocessing_and_dask_local_cluster(run_py, covid):
    """Dask's LocalCluster (processes, semaphores in /dev/shm, TCP on loopback) works inside."""
    from ecluse.config import Quota

    roomy = covid.model_copy(update={"quota": Quota(cpu=2, memory="1G", pids=256)})
    code = """
import json, multiprocessing as mp
if __name__ == "__main__":
    with mp.Pool(2) as pool:
        squares = pool.map(abs, [-1, -2])
    from dask.distributed import Client, LocalCluster
    import dask.array as da
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        total = float(da.ones((1000, 1000), chunks=250).sum().compute())
        workers = sorted(client.scheduler_info()["workers"])
    print(json.dumps({"pool": squares, "total": total, "workers": workers}))
"""
    result, out = await run_py(code, project=roomy, timeout=180)
    assert out, result.stderr[-3000:]
    assert out["pool"] == [1, 2] and out["total"] == 1e6
    assert len(out["workers"]) == 2 and all("127.0.0.1" in w for w in out["workers"])


async def test_secrets_in_env_never_reach_the_host_process_table(backend, covid):
    """The hub API token is in the sandbox's environment, not in any host command line."""
    token = "tok-" + os.urandom(8).hex()
    spec = SandboxSpec(covid, ALICE, ["sleep", "60"], env={
        "JUPYTERHUB_API_TOKEN": token, "LD_LIBRARY_PATH": "/opt/lib"})
    state = await backend.start(spec)
    try:
        seen = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        seen.append(pid)
                except OSError:
                    pass
        assert not seen
        for _ in range(100):  # until the launcher chain has exec'd the command
            main = [p for p in Cgroups(state["id"]).pids()
                    if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")]
            if main:
                break
            await asyncio.sleep(0.05)
        environ = Path(f"/proc/{main[0]}/environ").read_bytes().split(b"\0")
        assert f"JUPYTERHUB_API_TOKEN={token}".encode() in environ
        assert b"LD_LIBRARY_PATH=/opt/lib" in environ
        assert any(e.startswith(f"PATH={sys.prefix}/bin:".encode()) for e in environ)
        bwrap_env = Path(f"/proc/{state['pid']}/environ").read_bytes()
        assert b"LD_LIBRARY_PATH" not in bwrap_env  # the root-run launcher never sees it
    finally:
        await backend.stop(state)


def _made_by_another_sandbox_first(made_by_root: bool):
    """``os.mkdir`` as it fails when another sandbox of the project (a second batch run
    started at the same moment) made the inbox's mount point just before: the folder
    exists (root's, or a member's link made in between), then FileExistsError."""
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, *a, **kw):
        if str(path).endswith("/shared/inbox"):
            if made_by_root:
                real_mkdir(path, 0o755)
            else:
                os.symlink("/tmp", path)
            raise FileExistsError(17, "File exists", str(path))
        return real_mkdir(path, mode, *a, **kw)
    return mkdir


@pytest.mark.parametrize("made_by_root", [True, False])
def test_two_sandboxes_preparing_the_inbox_at_once(tmp_path, monkeypatch, made_by_root):
    """Two launches of one project at once both find no mount point and both make it:
    the second accepts root's folder the first made, and refuses anything else (a link
    there would redirect the mount). Found by the CI run: a batch run failed with
    ``[Errno 17] File exists: …/shared/inbox``."""
    from ecluse.sandbox.local import prepare_inbox

    pdir = tmp_path / "cardio-los"
    (pdir / "shared").mkdir(parents=True)
    monkeypatch.setattr(os, "mkdir", _made_by_another_sandbox_first(made_by_root))
    if made_by_root:
        prepare_inbox(pdir, gid=os.getgid())
        st = os.lstat(pdir / "shared" / "inbox")
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0
    else:
        with pytest.raises(FileExistsError):
            prepare_inbox(pdir, gid=os.getgid())
        assert (pdir / "shared" / "inbox").is_symlink()  # refused, never followed
