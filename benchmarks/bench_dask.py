"""Dask in project sandboxes vs plain processes on the host (run as root).

    python benchmarks/bench_dask.py [-n 3] [--size default]

1. An xarray + Dask reduction over the exposure cube (time × lat × lon,
   float32; ``default`` size: 365 × 200 × 200, pm25 and no2) inside a project
   sandbox vs the same script in a plain process on the host, with the bytes/s
   of both (uncompressed array bytes reduced per second) and of a raw read of
   the same Zarr chunk files for context. Target: ours ≥ 0.9 × baseline.
2. dask-gateway: time from ``new_cluster()`` to the first worker connected,
   with :class:`ecluse.dask.gateway.SandboxBackend` vs the stock
   ``UnsafeLocalBackend``, same machine, same authenticator, both launching
   ``dask scheduler`` / ``dask worker``. Target: ours ≤ 1.5 × baseline.

Each figure is the median of ``-n`` runs, ours and baseline interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.dev.warehouse import generate
from ecluse.sandbox import SandboxSpec, UserIdentity
from ecluse.sandbox.local import LocalSandbox

USER = UserIdentity("bench", 6200, 6200)
PYTHON = os.path.abspath(sys.executable)  # the venv path, not its base interpreter

REDUCE = r"""
import json, sys, time
import dask
import xarray as xr
path, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dask.config.set(scheduler="threads", num_workers=threads)
times = []
for _ in range(reps + 1):  # the first run warms the page cache and imports
    t = time.perf_counter()
    ds = xr.open_zarr(path, chunks={"time": 62, "lat": -1, "lon": -1}, consolidated=False)
    means = [float(ds[v].mean(skipna=False)) for v in ("pm25", "no2")]
    monthly = ds["pm25"].resample(time="1MS").mean(skipna=False).compute()
    times.append(time.perf_counter() - t)
nbytes = sum(ds[v].nbytes for v in ("pm25", "no2"))
print(json.dumps({"seconds": min(times[1:]), "nbytes": nbytes}))
"""

RAW = r"""
import json, os, sys, time
root = sys.argv[1]
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
for attempt in range(2):
    t = time.perf_counter(); n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += len(fh.read())
    dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "nbytes": n}))
"""


def _settings(tmp: Path, data: Path) -> tuple[Settings, Project]:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=b", bind_dn="cn=s,dc=b",
                        user_search_base="ou=p,dc=b", group_search_base="ou=g,dc=b")
    settings = Settings(state_dir=tmp / "state", ldap=ldap,
                        sandbox=SandboxSettings(stop_grace=1))
    cpus = len(os.sched_getaffinity(0))
    project = Project(slug="air-quality", title="bench", ldap_group="g", gid=7200,
                      datasets=[Dataset(name="exposure", path=data)],
                      quota=Quota(cpu=cpus, memory="4G", pids=512, dask_workers=1))
    settings.projects = {project.slug: project}
    return settings, project


async def _sandboxed(sb: LocalSandbox, project: Project, code: str, *args: str) -> dict:
    r = await sb.run(SandboxSpec(project, USER, [PYTHON, "-c", code, *args]),
                     timeout=600)
    if not r.ok:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


async def _plain(code: str, *args: str) -> dict:
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args,
                                             stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


def _row(name: str, ours: float, base: float, unit: str, better: str) -> None:
    ratio = ours / base if base else float("nan")
    print(f"{name:46} {ours:10.3f} {base:10.3f} {unit:6} ratio {ratio:5.2f} ({better})")


async def bench_reduction(sb: LocalSandbox, project: Project, data: Path, n: int) -> None:
    zarr = data / "exposure.zarr"
    threads = int(project.quota.cpu)
    ours, base = [], []
    for _ in range(n):
        ours.append(await _sandboxed(sb, project, REDUCE, "/data/exposure/exposure.zarr", "2",
                                     str(threads)))
        base.append(await _plain(REDUCE, str(zarr), "2", str(threads)))
    raw_s = await _sandboxed(sb, project, RAW, "/data/exposure/exposure.zarr")
    raw_h = await _plain(RAW, str(zarr))
    o = statistics.median(r["nbytes"] / r["seconds"] for r in ours) / 1e6
    b = statistics.median(r["nbytes"] / r["seconds"] for r in base) / 1e6
    print(f"\n1. xarray + Dask reduction over the exposure cube "
          f"({ours[0]['nbytes'] / 1e6:.0f} MB uncompressed, {threads} threads)")
    print(f"{'':46} {'ours':>10} {'baseline':>10}")
    _row("seconds (sandbox vs host process)", statistics.median(r["seconds"] for r in ours),
         statistics.median(r["seconds"] for r in base), "s", "lower is better")
    _row("throughput (sandbox vs host process)", o, b, "MB/s", "target >= 0.9")
    _row("raw read of the Zarr files, for context", raw_s["nbytes"] / raw_s["seconds"] / 1e6,
         raw_h["nbytes"] / raw_h["seconds"] / 1e6, "MB/s", f"{raw_h['nbytes'] / 1e6:.0f} MB "
         "on disk, page cache")


# --------------------------------------------------------------- gateway


async def _gateway(settings: Settings, backend: str, port: int):
    """``(app, host address, API port, API listener or None)``: the sandbox gateway as
    deployed (API through the front's API listener on ``port + 10``, the proxy's HTTP on
    loopback ``port + 20``), the stock one with its proxy's HTTP and TLS on ``port``."""
    from dask_gateway_server.app import DaskGateway
    from traitlets.config import Config

    from ecluse.dask.gateway import (
        DaskSettings,
        gateway_config,
        host_address,
        serve_api_listener,
    )

    addr = host_address(settings)
    api_port, listener = port, None
    ds = DaskSettings(proxy_port=port, api_port=port + 10, proxy_http_port=port + 20,
                      idle_timeout=0)
    if backend == "sandbox":
        c = gateway_config(settings, dask=ds, authenticator="bench_dask.BenchAuthenticator")
        c.DaskGateway.backend_class = "bench_dask.BenchSandboxBackend"
    else:
        c = Config()
        c.DaskGateway.address = "127.0.0.1:0"
        c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
        c.DaskGateway.authenticator_class = "bench_dask.BenchAuthenticator"
        c.Proxy.address = f"{addr}:{port}"
        c.ClusterConfig.scheduler_cmd = [str(Path(sys.prefix) / "bin" / "dask"), "scheduler"]
        c.ClusterConfig.worker_cmd = [str(Path(sys.prefix) / "bin" / "dask"), "worker"]
    c.DaskGateway.log_level = "WARN"
    app = DaskGateway(config=c)
    app.initialize([])
    if backend == "sandbox":
        app.backend.settings = settings
    await app.setup()
    if backend == "sandbox":
        api_port, listener = ds.api_port, serve_api_listener(app, settings, dask=ds)
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"http://{addr}:{api_port}/api/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    return app, addr, api_port, listener


async def _first_worker(addr: str, api_port: int, port: int, options: dict) -> float:
    from dask_gateway import BasicAuth, Gateway

    async with Gateway(f"http://{addr}:{api_port}", proxy_address=f"gateway://{addr}:{port}",
                       auth=BasicAuth("bench", "x"), asynchronous=True) as g:
        t = time.perf_counter()
        cluster = await g.new_cluster(**options)
        await cluster.scale(1)
        client = await cluster.get_client(set_as_default=False)
        await client.wait_for_workers(1, timeout=300)
        dt = time.perf_counter() - t
        await client.close()
        await cluster.shutdown()
        return dt


async def bench_gateway(settings: Settings, n: int) -> None:
    results: dict[str, list[float]] = {"sandbox": [], "local": []}
    for kind, port in (("sandbox", 18796), ("local", 18797)):
        app, addr, api_port, listener = await _gateway(settings, kind, port)
        try:
            opts = {"project": "air-quality"} if kind == "sandbox" else {}
            await _first_worker(addr, api_port, port, opts)  # warm-up
            for _ in range(n):
                results[kind].append(await _first_worker(addr, api_port, port, opts))
        finally:
            if listener is not None:
                listener.stop()
            await app.cleanup()
    print("\n2. dask-gateway: new_cluster() to first worker connected")
    print(f"{'':46} {'ours':>10} {'baseline':>10}")
    _row("SandboxBackend vs UnsafeLocalBackend", statistics.median(results["sandbox"]),
         statistics.median(results["local"]), "s", "target <= 1.5")


# the test doubles the gateways load by name
from dask_gateway_server.auth import SimpleAuthenticator, User  # noqa: E402

from ecluse.dask.gateway import SandboxBackend  # noqa: E402


class BenchAuthenticator(SimpleAuthenticator):
    """Any password; member of every project (the benchmark has one)."""

    async def authenticate(self, request):
        user = await super().authenticate(request)
        return User(user.name, groups=["air-quality"])


class BenchSandboxBackend(SandboxBackend):
    """No directory in the benchmark: a fixed identity (an LDAP lookup is ~1 ms)."""

    async def resolve_identity(self, username, project):
        return USER, project


async def main(n: int, size: str) -> None:
    if os.geteuid() != 0:
        sys.exit("run as root")
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        data = tmp / "exposure"
        t = time.perf_counter()
        generate("air-quality", "exposure", data, size)
        print(f"exposure cube ({size}) written in {time.perf_counter() - t:.1f} s")
        settings, project = _settings(tmp, data)
        sb = LocalSandbox(settings=settings)
        await bench_reduction(sb, project, data, n)
        await bench_gateway(settings, n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--size", default="default")
    args = ap.parse_args()
    asyncio.run(main(args.n, args.size))
