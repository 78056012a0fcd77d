"""The sandbox contract, run against every backend that starts something (local, docker).

What the spawner, batch runs and Dask clusters rely on: one-shot output and
status, time-outs, a long-running server reachable at ``state["ip"]:port``,
SIGTERM then SIGKILL after the grace period, a JSON state another backend
instance (a restarted hub) can poll and stop, the quota's limits, clean-up of
whatever a crash left, and nothing left after ``stop``.

The docker cases run on the tests' own ``dockerd`` (``docker_engine``).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from ecluse.sandbox import SandboxError, SandboxSpec
from ecluse.sandbox import network as net

from .conftest import ALICE, BOB, TrackingDockerSandbox, TrackingLocalSandbox, both_backends

pytestmark = [pytest.mark.root, both_backends]


def fresh(backend):
    """Another instance of the same backend, as a restarted hub would make it."""
    if isinstance(backend, TrackingDockerSandbox):
        return TrackingDockerSandbox(settings=backend.settings, docker_url=backend.docker_url,
                                     image=backend.image)
    return TrackingLocalSandbox(settings=backend.settings)


def gone(backend, state) -> list[str]:
    """Resources of a stopped sandbox that are still there."""
    left = []
    if Path(f"/sys/class/net/{state['veth']}").exists():
        left.append(f"interface {state['veth']}")
    if any(i == state["veth"] for i, _ in net.allowed_elements()):
        left.append("allowed-port elements")
    if Path(backend.runtime_dir, "sandboxes", state["id"]).exists():
        left.append("runtime dir")
    if isinstance(backend, TrackingDockerSandbox):
        c = backend.client
        if c.api.containers(all=True, filters={"label": f"ecluse.sandbox-id={state['id']}"}):
            left.append("container")
        if c.api.networks(filters={"label": f"ecluse.sandbox-id={state['id']}"}):
            left.append("network")
    return left


async def test_one_shot_output_status_and_timeout(run_py):
    result, _ = await run_py("import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
                             "sys.exit(3)")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.oom_killed and not result.ok
    t0 = time.monotonic()
    result, _ = await run_py("import time\nprint('started', flush=True)\ntime.sleep(60)",
                             timeout=2)
    assert result.timed_out and result.stdout == "started\n", result
    assert time.monotonic() - t0 < 20


async def test_researcher_identity_mounts_and_environment(run_py, backend, covid):
    code = """
import grp, json, os, pwd
def writable(p):
    try:
        open(p, "w").close(); os.unlink(p); return True
    except OSError:
        return False
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(set(os.getgroups()) | {os.getgid()}),
                  "name": pwd.getpwuid(os.getuid()).pw_name, "cwd": os.getcwd(),
                  "data": os.listdir("/data/covid"), "home": writable(os.path.expanduser("~/x")),
                  "project": writable("/project/x"), "tmp": writable("/tmp/x"),
                  "root": writable("/x"), "env": os.environ.get("ECLUSE_PROJECT")}))
"""
    result, out = await run_py(code)
    assert out == {"uid": 5001, "gid": 5001, "groups": [5001, 7001], "name": "alice",
                   "cwd": "/home/alice", "data": ["cohort.csv"], "home": True,
                   "project": True, "tmp": True, "root": False, "env": "covid-los"}, result


async def test_server_lifecycle_graceful_stop_and_nothing_left(backend, server, covid):
    state = await server(covid, ALICE, port=8888, allowed_ports=[18081])
    assert json.loads(json.dumps(state)) == state  # JSON-able, for the hub's database
    assert state["ip"].startswith("10.213.")
    r, w = await asyncio.open_connection(state["ip"], 8888)
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    assert (await r.read()).startswith(b"HTTP/1.0 200")
    assert await backend.poll(state) is None
    assert (state["veth"], 18081) in net.allowed_elements()
    home = Path(backend.settings.projects_root) / "covid-los" / "home" / "alice"
    (home / "terminated").unlink(missing_ok=True)
    await backend.stop(state, grace=5)
    assert (home / "terminated").read_text() == "graceful"  # SIGTERM reached the server
    assert await backend.poll(state) == 0
    await backend.stop(state)  # idempotent
    assert not gone(backend, state)


async def test_sigterm_ignored_is_killed_after_grace(backend, server, covid):
    state = await server(covid, ALICE, extra="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    t0 = time.monotonic()
    await backend.stop(state, grace=1.0)
    assert 0.9 < time.monotonic() - t0 < 15
    assert await backend.poll(state) == 137
    assert not gone(backend, state)


async def test_a_restarted_hub_polls_and_stops_from_the_saved_state(backend, covid):
    state = await backend.start(SandboxSpec(covid, ALICE, ["sleep", "300"]))
    saved = json.loads(json.dumps(state))
    adopter = fresh(backend)
    try:
        assert await adopter.poll(saved) is None
    finally:
        await adopter.stop(saved, grace=1)
    assert await adopter.poll(saved) is not None
    assert not gone(backend, saved)


async def test_memory_limit_is_the_quota(run_py):
    result, _ = await run_py("chunks = [bytearray(16 * 2**20) for i in range(64)]\n"
                             "print('survived')")
    assert result.oom_killed and result.exit_code == 137 and "survived" not in result.stdout


async def test_crash_leftovers_are_cleaned_up(backend, covid):
    state = await backend.start(SandboxSpec(covid, ALICE, ["sleep", "1"]))
    assert await backend.wait(state, 30) is not None  # ended while the "hub" was away
    removed = await fresh(backend).cleanup_orphans(min_age=0)
    assert state["id"] in removed
    assert not gone(backend, state)


async def test_start_failure_leaves_nothing(backend, covid):
    bad = covid.model_copy(deep=True)
    bad.datasets[0].path = Path("/nonexistent/dataset")
    with pytest.raises(SandboxError, match="unavailable"):
        await backend.start(SandboxSpec(bad, ALICE, ["true"]))
    if isinstance(backend, TrackingDockerSandbox):
        nowhere = TrackingDockerSandbox(settings=backend.settings, docker_url=backend.docker_url,
                                        image="ecluse/no-such-image:0")
        with pytest.raises(SandboxError, match="image is not available"):
            await nowhere.start(SandboxSpec(covid, ALICE, ["true"]))
        assert not backend.client.api.networks(filters={"label": "ecluse.backend=docker"})
        assert not backend.client.api.containers(all=True)


async def test_concurrent_starts_get_their_own_network(backend, covid, onco):
    specs = [SandboxSpec(covid, ALICE, ["sleep", "300"]), SandboxSpec(onco, BOB, ["sleep", "300"]),
             SandboxSpec(covid, ALICE, ["sleep", "300"], name="batch")]
    states = await asyncio.gather(*(backend.start(s) for s in specs))
    try:
        assert len({s["ip"] for s in states}) == 3 and len({s["veth"] for s in states}) == 3
    finally:
        await asyncio.gather(*(backend.stop(s, grace=0.5) for s in states))
    left = {s["id"]: gone(backend, s) for s in states}
    assert not any(left.values()), left
