"""Batch run overhead vs bare papermill, side by side in one run (run as root).

    python benchmarks/bench_batch.py [-n 20] [--concurrency 2]

Queues ``n`` runs of the same small parameterised notebook in the batch
service (concurrency 2: the queue, a one-shot project sandbox per run, the
papermill driver, progress, logs written back, audit) and runs bare papermill
``n`` times on the same notebook, two at a time, in the same process run.
Prints per-run time (median and p90), ours vs baseline and the ratio (target
≤ 1.5×), and total throughput of the ``n`` runs. The load of a shared host
drifts within minutes, so the per-run ratio is also measured in paired
rounds (two runs of ours through the queue, then two bare runs, repeated):
each pair sees the same load.

Two baselines are measured: papermill with the same start-up setting as our
driver (``rfc3987_syntax`` not imported: jsonschema otherwise builds an IRI
parser at import, which nbformat never uses) — the ratio is against this
one — and the stock ``papermill`` command, for reference.

Both sides get the same CPU scheduling: each sandbox sits in a cgroup under
``ecluse-bench-ours`` and every bare papermill process in the cgroup
``ecluse-bench-base``, two siblings of equal weight. (On a loaded host with
cgroup v1, a cgroup competes for CPU as *one* entity against every process
of the root group: bare processes left in the root would each get a full
share while all sandboxes together get one — a scheduling effect, not
overhead. Both cgroups are removed at the end.)

The project's CPU quota defaults to 2 (the host's cores): bare papermill has
no limit, and a 1-CPU quota would measure the quota rather than the
mechanism (``--cpu 1`` shows it). The directory is not involved: the run identity is given (an LDAP lookup
adds a few milliseconds per run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat

from ecluse.audit import AuditLog
from ecluse.batch.runs import make_engine
from ecluse.batch.service import BatchService, RunIdentity
from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox.local import LocalSandbox
from ecluse.settings.batch import BatchSettings

FAIR = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); import papermill as pm; "
        "pm.execute_notebook(sys.argv[1], sys.argv[2], parameters={'n': 3}, "
        "kernel_name='python3', progress_bar=False)")


def notebook() -> dict:
    p = nbformat.v4.new_code_cell("n = 1")
    p.metadata["tags"] = ["parameters"]
    cells = [p, nbformat.v4.new_code_cell("import math\nresult = sum(math.sqrt(i) for i in "
                                          "range(10000 * n))"),
             nbformat.v4.new_code_cell("print('result', round(result, 2))")]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return json.loads(nbformat.writes(nb))


def _settings(tmp: Path, cpu: float = 2) -> Settings:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=b", bind_dn="cn=s,dc=b",
                        user_search_base="ou=p,dc=b", group_search_base="ou=g,dc=b")
    (tmp / "data").mkdir(exist_ok=True)
    project = Project(slug="bench-proj", title="bench", ldap_group="g", gid=7100,
                      datasets=[Dataset(name="d", path=tmp / "data")],
                      quota=Quota(cpu=cpu, memory="1G", pids=256))
    settings = Settings(state_dir=tmp / "state", ldap=ldap,
                        sandbox=SandboxSettings(stop_grace=1))
    settings.projects = {"bench-proj": project}
    return settings


BASE_CGROUP = "ecluse-bench-base"
OURS_CGROUP = "ecluse-bench-ours"


def _cpu_root() -> Path:
    v1 = Path("/sys/fs/cgroup/cpu")
    return v1 if (v1 / "cgroup.procs").exists() else Path("/sys/fs/cgroup")


def _join_base_cgroup() -> None:  # in the child, before exec
    with open(_cpu_root() / BASE_CGROUP / "cgroup.procs", "w") as fh:
        fh.write(str(os.getpid()))


def _remove_cgroups() -> None:
    roots = [Path("/sys/fs/cgroup") / c for c in ("cpu", "memory", "pids")] + [
        Path("/sys/fs/cgroup")]
    for root in roots:
        for name in (BASE_CGROUP, OURS_CGROUP):
            with contextlib.suppress(OSError):
                (root / name).rmdir()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def bare(n: int, concurrency: int, tmp: Path, cmd: list[str]) -> tuple[list[float], float]:
    src = tmp / "bare-in.ipynb"
    src.write_text(json.dumps(notebook()))
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> float:
        async with sem:
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                *cmd, str(src), str(tmp / f"bare-out-{i}.ipynb"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                preexec_fn=_join_base_cgroup)
            if await p.wait() != 0:
                raise RuntimeError(f"bare papermill failed: {cmd}")
            return time.perf_counter() - t

    t0 = time.perf_counter()
    times = await asyncio.gather(*(one(i) for i in range(n)))
    return list(times), time.perf_counter() - t0


async def ours(n: int, concurrency: int, tmp: Path,
               cpu: float) -> tuple[list[float], float, list[float]]:
    settings = _settings(tmp, cpu)
    service = BatchService(
        settings, engine=make_engine(f"sqlite:///{tmp / 'batch.sqlite'}"),
        backend=LocalSandbox(settings=settings, cgroup_parent=OURS_CGROUP),
        audit=AuditLog(f"sqlite:///{tmp / 'audit.sqlite'}", tmp / "audit.jsonl"),
        conf=BatchSettings(concurrency=concurrency, poll_interval=0.1),
        resolve_identity=lambda project, user: RunIdentity(user, 6100, 6100, 7100),
    )
    staff = service.identity("bench-staff", ["staff"])
    scheduler = asyncio.create_task(service.run_scheduler())
    try:
        t0 = time.perf_counter()
        ids = [service.submit(staff, project="bench-proj", notebook="small.ipynb",
                              content=notebook(), parameters={"n": 3}, as_user="bench",
                              timeout=600)["id"] for _ in range(n)]
        while True:  # one cheap query per half second, as `ecluse batch list` would
            runs = [r for r in service.list_runs(staff, limit=1000) if r["id"] in ids]
            if all(r["final"] for r in runs):
                break
            await asyncio.sleep(0.5)
        total = time.perf_counter() - t0
    finally:
        await service.close()
        scheduler.cancel()
    bad = [r for r in runs if r["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not succeed: {bad[0]}")
    per_run = [_ts(r["finished_at"]) - _ts(r["started_at"]) for r in runs]
    latency = [_ts(r["finished_at"]) - _ts(r["created_at"]) for r in runs]
    return per_run, total, latency


def _p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]


async def main(n: int, concurrency: int, cpu: float, rounds: int, stock: int) -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (sandboxes)")
    (_cpu_root() / BASE_CGROUP).mkdir(exist_ok=True)
    try:
        await _main(n, concurrency, cpu, rounds, stock)
    finally:
        _remove_cgroups()


async def _main(n: int, concurrency: int, cpu: float, rounds: int, stock: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ecluse-bench-batch-") as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        py = sys.executable
        fair = [py, "-c", FAIR]
        await bare(2, 2, tmp, fair)  # warm the page cache
        # 1. n queued runs; the baseline runs half before and half after them
        b1, t1 = await bare(n // 2, concurrency, tmp, fair)
        o_times, o_total, latency = await ours(n, concurrency, tmp, cpu)
        b2, t2 = await bare(n - n // 2, concurrency, tmp, fair)
        b_times, b_total = b1 + b2, t1 + t2
        # 2. paired rounds: `concurrency` runs of ours then as many bare, under the same load
        po: list[float] = []
        pb: list[float] = []
        for _ in range(rounds):
            po += (await ours(concurrency, concurrency, tmp, cpu))[0]
            pb += (await bare(concurrency, concurrency, tmp, fair))[0]
        s_times, s_total = await bare(stock, concurrency, tmp,
                                      [py, "-m", "papermill", "--no-progress-bar", "-p", "n",
                                       "3"])
    med_o, med_b = statistics.median(o_times), statistics.median(b_times)
    med_po, med_pb = statistics.median(po), statistics.median(pb)
    print(f"{n} queued runs of a 3-cell parameterised notebook, concurrency {concurrency}, "
          f"{os.cpu_count()} cores, project CPU quota {cpu:g}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'':40} {'runs':>4} {'median s':>9} {'p90 s':>7} {'total s':>8} {'runs/min':>9}")
    for name, times, total in (
        ("ours: queued (queue+sandbox+papermill)", o_times, o_total),
        ("baseline: bare papermill (around ours)", b_times, b_total),
        ("ours: paired rounds", po, None),
        ("baseline: paired rounds", pb, None),
        ("reference: stock papermill CLI", s_times, s_total),
    ):
        rate = f"{total:8.1f} {60 * len(times) / total:9.1f}" if total else f"{'':8} {'':9}"
        print(f"{name:40} {len(times):4d} {statistics.median(times):9.2f} {_p90(times):7.2f} "
              f"{rate}")
    print(f"per-run ratio ours/baseline, paired rounds: {med_po / med_pb:.2f}x "
          f"(target <= 1.5x); overhead {med_po - med_pb:+.2f} s per run")
    print(f"per-run ratio ours/baseline, queued runs: {med_o / med_b:.2f}x; "
          f"overhead {med_o - med_b:+.2f} s per run")
    print(f"per-run ratio ours/stock papermill CLI: {med_o / statistics.median(s_times):.2f}x")
    print(f"throughput at concurrency {concurrency}: ours {60 * n / o_total:.1f} runs/min, "
          f"baseline {60 * n / b_total:.1f} runs/min, ratio {b_total / o_total:.2f}")
    print(f"submit-to-finish latency in the queue: median {statistics.median(latency):.2f} s, "
          f"max {max(latency):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cpu", type=float, default=2,
                        help="project CPU quota (default 2: the host's cores, so that the "
                        "comparison measures the mechanism, not the quota)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="paired rounds (ours then bare) for the per-run ratio")
    parser.add_argument("--stock", type=int, default=6, help="runs of the stock papermill CLI")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency, args.cpu, args.rounds, args.stock))
