"""Sandbox start overhead vs a bare process (run as root).

    python benchmarks/bench_sandbox.py [-n 20]

Prints, for the same command (``python -c pass`` and ``true``): a bare
subprocess, a one-shot sandbox run (start + wait + clean-up), the time to
*start* a long-running sandbox, and 20 concurrent starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import SandboxSpec, UserIdentity
from ecluse.sandbox.local import LocalSandbox


def _settings(tmp: Path) -> tuple[Settings, Project]:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=b", bind_dn="cn=s,dc=b",
                        user_search_base="ou=p,dc=b", group_search_base="ou=g,dc=b")
    settings = Settings(state_dir=tmp, ldap=ldap, sandbox=SandboxSettings(stop_grace=1))
    (tmp / "data").mkdir()
    project = Project(slug="bench-proj", title="bench", ldap_group="g", gid=7100,
                      datasets=[Dataset(name="d", path=tmp / "data")],
                      quota=Quota(cpu=1, memory="512M", pids=128))
    return settings, project


async def bare(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = await asyncio.create_subprocess_exec(*cmd)
    await p.wait()
    return time.perf_counter() - t


async def main(n: int) -> None:
    if os.geteuid() != 0:
        sys.exit("run as root")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        settings, project = _settings(tmp)
        sb = LocalSandbox(settings=settings)
        user = UserIdentity("bench", 6100, 6100)
        print(f"{'command':28} {'bare ms':>9} {'sandbox ms':>11} {'overhead ms':>12} {'ratio':>6}")
        for cmd in (["true"], [sys.executable, "-c", "pass"]):
            await bare(cmd)
            await sb.run(SandboxSpec(project, user, cmd))  # warm caches
            b = statistics.median([await bare(cmd) for _ in range(n)])
            s = statistics.median([(await sb.run(SandboxSpec(project, user, cmd))).duration
                                   for _ in range(n)])
            name = " ".join(c if len(c) < 20 else "python" for c in cmd)
            print(f"{name:28} {b * 1000:9.1f} {s * 1000:11.1f} {(s - b) * 1000:12.1f} "
                  f"{s / b:6.1f}")
        starts = []
        for _ in range(n):
            t = time.perf_counter()
            st = await sb.start(SandboxSpec(project, user, ["sleep", "60"], port=8888))
            starts.append(time.perf_counter() - t)
            await sb.stop(st, grace=0)
        print(f"start() of a long-running sandbox: median {statistics.median(starts) * 1000:.1f} "
              f"ms (bare fork+exec of sleep: {statistics.median([await bare(['true']) for _ in range(n)]) * 1000:.1f} ms)")
        users = [UserIdentity(f"bench{i:02d}", 6200 + i, 6200 + i) for i in range(20)]
        t = time.perf_counter()
        states = await asyncio.gather(*(sb.start(SandboxSpec(project, u, ["sleep", "60"]))
                                        for u in users))
        took = time.perf_counter() - t
        t = time.perf_counter()
        await asyncio.gather(*(sb.stop(s, grace=0) for s in states))
        print(f"20 concurrent starts: {took:.2f} s; 20 concurrent stops: "
              f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    asyncio.run(main(ap.parse_args().n))
