"""Workspace spawn time: EcluseSpawner (sandbox) vs a bare LocalProcessSpawner.

Starts slapd and, in turn, two real hubs (JupyterHub + configurable-http-
proxy) on loopback:

* baseline: ``SimpleLocalProcessSpawner`` (a plain local process, no isolation);
* ours: ``EcluseSpawner`` on the local sandbox backend (bubblewrap + network
  namespace + cgroups + nftables).

For each, the time from the start request (POST /hub/api/users/U/servers/S)
to the server answering through the proxy (the progress stream's ``ready``
event, then GET /user/U/S/api/status → 200). Both spawners run the same
server command (``ecluse-singleuser``), so the ratio is the sandbox's cost;
sequentially (``--rounds``; both hubs run side by side and the starts
alternate, so drift of the host falls on both alike), then ``--concurrent``
servers started at once
(ours only): time until all are ready, and memory per sandbox (cgroup
``memory.usage_in_bytes`` / ``memory.current`` and the RSS of its processes).

Targets (issue #3): ratio ≤ 1.3×; 20 concurrent servers ready within 90 s.
Needs root.

``--backend docker`` (issue 17): ours is ``EcluseSpawner`` on the docker backend
(``Stack(sandbox="docker")``: a Docker engine of its own, the workspace image
built FROM the debootstrap base, or loaded from the image cache), the baseline
is ``EcluseSpawner`` on the local backend, both running ``ecluse-singleuser``;
memory per workspace is the container's cgroup (Engine API stats) and its
processes' RSS; the engine's start and the image (warm: loaded from the cache,
or built when its inputs changed) are timed.

    .venv/bin/python benchmarks/bench_spawn.py [--rounds 5] [--concurrent 20]
    .venv/bin/python benchmarks/bench_spawn.py --backend docker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

from ecluse.config import load_settings
from ecluse.dev.ldapserver import EmbeddedSlapd
from ecluse.dev.stack import Stack
from ecluse.dev.testing import HubClient, write_config


def spawn_and_wait(stack: Stack, c: HubClient, token: str, user: str, server: str,
                   timeout: float = 180) -> float:
    """Seconds from the start request to the server answering through the proxy.

    Readiness is followed the way the hub's spawn page follows it in a
    browser: one server-sent event stream (``.../progress``) per start, until
    its ``ready`` event; then a request through the proxy confirms it.
    Polling instead (every 50 ms through the proxy, or the user model every
    0.25 s) would measure the benchmark: each poll is answered by the single
    hub process that is starting the very same servers (40 % of its CPU in a
    20-server run, measured with py-spy).
    """
    t0 = time.perf_counter()
    r = c.api("POST", f"/users/{user}/servers/{server}", token)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn {user}/{server}: {r.status_code} {r.text[:200]}")
    headers = {"Authorization": f"token {token}"}
    progress = f"{stack.url}/hub/api/users/{user}/servers/{server}/progress"
    try:
        with requests.get(progress, headers=headers, stream=True, timeout=timeout) as events:
            for line in events.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise RuntimeError(f"{user}/{server} failed: {event.get('message')}")
                if event.get("ready"):
                    break
    except requests.RequestException as e:
        raise RuntimeError(f"{user}/{server}: progress stream: {e}") from e
    url = f"{stack.url}/user/{user}/{server}/api/status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return time.perf_counter() - t0
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{user}/{server} did not answer within {timeout}s")


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time used so far by the hub, the proxy and all sandboxes."""
    import psutil

    out = {"hub": 0.0, "proxy": 0.0, "sandboxes": 0.0}
    if stack.hub is not None:
        try:
            hub = psutil.Process(stack.hub.pid)
            t = hub.cpu_times()
            out["hub"] = t.user + t.system
            for child in hub.children(recursive=True):
                if "configurable-http-proxy" in " ".join(child.cmdline()):
                    ct = child.cpu_times()
                    out["proxy"] += ct.user + ct.system
        except psutil.Error:
            pass
    # every process of every sandbox (the memory cgroup lists them on v1 and v2):
    # the servers are still running at the end of the phase, so their CPU time
    # covers their whole start
    for procs in (*Path("/sys/fs/cgroup/memory/ecluse").glob("*/cgroup.procs"),
                  *Path("/sys/fs/cgroup/ecluse").glob("*/cgroup.procs")):
        for pid in procs.read_text().split():
            try:
                t = psutil.Process(int(pid)).cpu_times()
                out["sandboxes"] += t.user + t.system + t.children_user + t.children_system
            except (psutil.Error, ValueError):
                pass
    return out


def stop_and_wait(c: HubClient, token: str, user: str, server: str) -> None:
    c.api("DELETE", f"/users/{user}/servers/{server}", token)
    for _ in range(600):
        if server not in c.api("GET", f"/users/{user}", token).json()["servers"]:
            return
        time.sleep(0.1)


def sandbox_memory(stack: Stack | None = None) -> list[tuple[int, int]]:
    """(cgroup memory bytes, RSS bytes) of each running sandbox."""
    import psutil

    if stack is not None and stack.sandbox == "docker":
        return container_memory(stack)

    out = []
    for sid in sorted(os.listdir("/run/ecluse/sandboxes")):
        for base in (f"/sys/fs/cgroup/memory/ecluse/{sid}", f"/sys/fs/cgroup/ecluse/{sid}"):
            usage = Path(base, "memory.usage_in_bytes")
            if not usage.exists():
                usage = Path(base, "memory.current")
            if usage.exists():
                procs = [int(p) for p in Path(base, "cgroup.procs").read_text().split()]
                rss = 0
                for pid in procs:
                    try:
                        rss += psutil.Process(pid).memory_info().rss
                    except psutil.Error:
                        pass
                out.append((int(usage.read_text()), rss))
                break
    return out


def container_memory(stack: Stack) -> list[tuple[int, int]]:
    """(cgroup memory bytes, RSS bytes) of each running workspace container."""
    import contextlib

    import docker
    import psutil

    out = []
    with contextlib.closing(docker.DockerClient(base_url=stack.settings.sandbox.docker_url,
                                                timeout=60)) as client:
        for ctr in client.containers.list(filters={"label": "ecluse.project"}):
            usage = ctr.stats(stream=False)["memory_stats"].get("usage", 0)
            rss = 0
            for row in ctr.top(ps_args="-o pid").get("Processes") or []:
                with contextlib.suppress(psutil.Error, ValueError):
                    rss += psutil.Process(int(row[0])).memory_info().rss
            out.append((usage, rss))
    return out


def open_stack(es: ExitStack, tmp: Path, slapd: EmbeddedSlapd, spawner: str,
               users: dict[str, str], sandbox: str = "local") -> tuple[Stack, dict]:
    """A running hub with ``spawner`` (and the ``sandbox`` backend), and a signed-in
    client and token per user."""
    path = write_config(tmp / f"cfg-{spawner}-{sandbox}", slapd, overrides={
        "hub.spawner": spawner, "sandbox.start_timeout": 180,
        "sandbox.stop_grace": 3})
    log = es.enter_context(open(tmp / f"hub-{spawner}-{sandbox}.log", "wb"))
    t0 = time.perf_counter()
    stack = es.enter_context(Stack(load_settings(path), hub_log=log, sandbox=sandbox,
                                   progress=lambda m: print(f"[{sandbox}] {m}", flush=True)))
    STARTS[sandbox if spawner == "ecluse" else spawner] = time.perf_counter() - t0
    clients = {}
    for u, pw in users.items():
        c = HubClient(stack.url)
        c.login(u, pw)
        clients[u] = (c, c.new_token(u))
    return stack, clients


#: seconds each stack took to start (the docker one: engine and workspace image included)
STARTS: dict[str, float] = {}


def sequential(sides: dict[str, tuple[Stack, HubClient, str, str]],
               rounds: int) -> dict[str, list[float]]:
    """Paired rounds: one start on each hub in turn, the order alternating.

    Both hubs run for the whole phase, so drift of the host (page cache, other
    load) falls on both sides alike instead of on whichever phase ran second.
    """
    for stack, c, tok, user in sides.values():  # warm-up (page cache, db rows)
        spawn_and_wait(stack, c, tok, user, "cardio-los")
        stop_and_wait(c, tok, user, "cardio-los")
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            stack, c, tok, user = sides[name]
            times[name].append(spawn_and_wait(stack, c, tok, user, "cardio-los"))
            stop_and_wait(c, tok, user, "cardio-los")
    for name, ts in times.items():
        print(f"[{name}] sequential spawn times (s): " + ", ".join(f"{t:.2f}" for t in ts),
              flush=True)
    return times


def concurrent_phase(stack: Stack, clients: dict, names: list[str]) -> dict:
    result: dict = {}
    cpu0 = cpu_seconds(stack)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(names)) as pool:
        jobs = [pool.submit(spawn_and_wait, stack, *clients[u], u, "cardio-los") for u in names]
        each = []
        for j in jobs:
            try:
                each.append(j.result())
            except RuntimeError as e:  # counted, reported, not fatal
                print(f"[ecluse] {e}", flush=True)
                each.append(float("inf"))
    result["concurrent_all_ready_s"] = time.perf_counter() - t0
    cpu1 = cpu_seconds(stack)
    result["cpu"] = {k: cpu1[k] - cpu0[k] for k in cpu1}
    print("[ecluse] concurrent phase CPU (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["cpu"].items()), flush=True)
    result["concurrent_each"] = each
    result["memory"] = sandbox_memory(stack)
    for u in names:
        stop_and_wait(*clients[u], u, "cardio-los")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--backend", choices=("local", "docker"), default="local",
                    help="local: ours on the local backend, baseline a bare local process; "
                    "docker: ours on the docker backend, baseline the local backend")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_spawn needs root (bubblewrap, network namespaces, cgroups)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ecluse-bench-spawn-"))
    slapd = EmbeddedSlapd(tmp / "ldap")
    try:
        slapd.start()
        n = max(1, args.concurrent)
        users = {f"bench{i:02d}": f"pw-bench-{i}-Secret" for i in range(n)}
        for i, (u, pw) in enumerate(users.items()):
            slapd.add_user(u, pw, 21000 + i)
        slapd.add_group("proj-cardio-los", "groupOfNames", 30001, list(users))
        slapd.add_group("proj-air-quality", "groupOfNames", 30002, [])
        # the hub checks that the configured reviewer and staff groups exist
        slapd.add_group("ecluse-output-checkers", "groupOfNames", 30003, [])
        slapd.add_group("ecluse-staff", "groupOfNames", 30004, [])
        first = next(iter(users))
        docker = args.backend == "docker"
        with ExitStack() as ours_es:
            stack, clients = open_stack(ours_es, tmp, slapd, "ecluse", users,
                                        sandbox=args.backend)
            with ExitStack() as base_es:
                # both hubs up at once, starts paired (see sequential())
                base_stack, base_clients = open_stack(base_es, tmp, slapd,
                                                      "ecluse" if docker else "simple",
                                                      {first: users[first]})
                times = sequential({"baseline": (base_stack, *base_clients[first], first),
                                    "ours": (stack, *clients[first], first)}, args.rounds)
            # the baseline hub is stopped before the concurrent phase
            base = {"sequential": times["baseline"]}
            ours = {"sequential": times["ours"]}
            if args.concurrent:
                ours.update(concurrent_phase(stack, clients, list(users)[:args.concurrent]))
    finally:
        slapd.stop()
        from ecluse.sandbox.local import teardown_host_network

        teardown_host_network()
        if not os.environ.get("ECLUSE_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)

    b = statistics.median(base["sequential"])
    o = statistics.median(ours["sequential"])
    print("\nbench_spawn — start request → server answers through the proxy"
          + (" (ours: docker backend; baseline: local backend)" if docker else ""))
    print(f"{'measure':<46}{'ours':>10}{'baseline':>10}{'ratio':>8}")
    print(f"{'spawn time, median of ' + str(args.rounds) + ' (s)':<46}{o:>10.2f}{b:>10.2f}"
          f"{o / b:>8.2f}")
    print(f"{'spawn time, min (s)':<46}{min(ours['sequential']):>10.2f}"
          f"{min(base['sequential']):>10.2f}"
          f"{min(ours['sequential']) / min(base['sequential']):>8.2f}")
    paired = statistics.median(x / y for x, y in zip(ours["sequential"], base["sequential"],
                                                      strict=True))
    print(f"{'spawn time ratio, median of paired rounds':<46}{'':>20}{paired:>8.2f}")
    ok = o / b <= 1.3
    if args.concurrent:
        allr = ours["concurrent_all_ready_s"]
        ready = sum(1 for t in ours["concurrent_each"] if t <= 90)
        print(f"{'ready within 90 s':<46}{ready:>10}/{args.concurrent}")
        print(f"{str(args.concurrent) + ' concurrent sandboxes: all ready (s)':<46}{allr:>10.1f}"
              f"{'90 (target)':>18}")
        mem = ours.get("memory") or []
        if mem:
            cg = statistics.median(m[0] for m in mem) / 2**20
            rss = statistics.median(m[1] for m in mem) / 2**20
            print(f"{'memory per sandbox, median cgroup (MiB)':<46}{cg:>10.0f}")
            print(f"{'memory per sandbox, median RSS (MiB)':<46}{rss:>10.0f}")
        cpu = ours.get("cpu") or {}
        if cpu:
            print(f"{'CPU per sandbox start, in the sandbox (s)':<46}"
                  f"{cpu['sandboxes'] / args.concurrent:>10.2f}")
            print(f"{'CPU per start, hub + proxy (s)':<46}"
                  f"{(cpu['hub'] + cpu['proxy']) / args.concurrent:>10.2f}")
        ok = ok and allr <= 90 and ready == args.concurrent
    if docker:
        print(f"{'docker stack start: engine + workspace image (s)':<46}"
              f"{STARTS.get('docker', 0):>10.1f}")
        print(f"{'local stack start (s)':<46}{STARTS.get('local', 0):>10.1f}")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
