"""Airlock API latency and throughput under concurrent load, against the real service.

Starts JupyterHub + configurable-http-proxy + the hub-managed airlock on
loopback (the test stack of ``tests/airlock/hubstack.py``), then runs
``--clients`` concurrent clients (aiohttp), each doing ``--rounds`` rounds of:
list its requests, create a request, upload a small CSV (checked by
``ecluse.sdc``). Baseline: the same clients calling the hub's own
token-authenticated ``GET /hub/api/user`` through the same proxy.

Prints p50/p99 latency per operation, throughput, and the ratio to the
baseline. Bounded: clients × rounds × 3 requests, nothing else.

    .venv/bin/python benchmarks/bench_airlock.py [--clients 16] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.airlock.hubstack import AirlockHub  # noqa: E402

CSV = b"sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n"
RESEARCHERS = ["alice", "bob"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


async def _timed(samples: dict[str, list[float]], op: str, coro) -> aiohttp.ClientResponse:
    t0 = time.perf_counter()
    resp = await coro
    async with resp:
        await resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{op}: HTTP {resp.status}: {await resp.text()}")
    samples.setdefault(op, []).append((time.perf_counter() - t0) * 1000)
    return resp


async def airlock_client(base: str, token: str, rounds: int, samples: dict) -> None:
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(rounds):
            await _timed(samples, "list", s.get(f"{base}/requests"))
            t0 = time.perf_counter()
            async with s.post(f"{base}/requests", json={
                "project": "cardio-los", "title": f"bench {i}", "justification": "load"}) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"create: HTTP {r.status}: {body}")
            samples.setdefault("create", []).append((time.perf_counter() - t0) * 1000)
            await _timed(samples, "upload", s.post(
                f"{base}/requests/{body['id']}/files", params={"filename": "t.csv"}, data=CSV,
                headers={"Content-Type": "application/octet-stream"}))


async def hub_client(url: str, token: str, rounds: int, samples: dict) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as s:
        for _ in range(rounds * 3):
            await _timed(samples, "hub", s.get(f"{url}/hub/api/user"))


async def run(hub: AirlockHub, clients: int, rounds: int) -> dict:
    tokens = [hub.token(RESEARCHERS[i % len(RESEARCHERS)]) for i in range(clients)]
    base = f"{hub.airlock_url}/api/v1"
    # warm-up (token caches, connections, first sdc import)
    await asyncio.gather(*(airlock_client(base, t, 1, {}) for t in tokens[:2]))
    out: dict = {}
    samples: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*(airlock_client(base, t, rounds, samples) for t in tokens))
    out["airlock_wall"] = time.perf_counter() - t0
    out["airlock"] = samples
    hub_samples: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*(hub_client(hub.url, t, rounds, hub_samples) for t in tokens))
    out["hub_wall"] = time.perf_counter() - t0
    out["hub"] = hub_samples
    return out


def sdc_cost_ms(n: int = 20) -> float:
    """CPU time of one disclosure check of the uploaded CSV, in this process."""
    import tempfile

    from ecluse.sdc import DisclosurePolicy, check_file

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.csv"
        p.write_bytes(CSV)
        check_file(p, DisclosurePolicy(), display_name="t.csv")
        t0 = time.process_time()
        for _ in range(n):
            check_file(p, DisclosurePolicy(), display_name="t.csv")
        return (time.process_time() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    hub = AirlockHub()
    try:
        t0 = time.perf_counter()
        hub.start()
        print(f"stack up in {time.perf_counter() - t0:.1f}s "
              f"(hub + proxy + airlock on 127.0.0.1:{hub.settings.hub.port})")
        res = asyncio.run(run(hub, args.clients, max(1, args.rounds)))
    finally:
        hub.stop()
    n_air = sum(len(v) for v in res["airlock"].values())
    n_hub = len(res["hub"]["hub"])
    print(f"\nairlock API, {args.clients} concurrent clients x {args.rounds} rounds "
          f"(list + create + upload):")
    print(f"{'operation':<10} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for op in ("list", "create", "upload"):
        v = res["airlock"].get(op, [])
        print(f"{op:<10} {len(v):>5} {pct(v, 50):>9.1f} {pct(v, 99):>9.1f} "
              f"{statistics.fmean(v):>9.1f}")
    air_rps = n_air / res["airlock_wall"]
    hub_rps = n_hub / res["hub_wall"]
    hv = res["hub"]["hub"]
    print(f"{'hub user':<10} {len(hv):>5} {pct(hv, 50):>9.1f} {pct(hv, 99):>9.1f} "
          f"{statistics.fmean(hv):>9.1f}   (baseline: GET /hub/api/user, same proxy)")
    print(f"\nthroughput: airlock {air_rps:.0f} req/s ({n_air} requests in "
          f"{res['airlock_wall']:.1f}s); hub baseline {hub_rps:.0f} req/s")
    all_air = [x for v in res["airlock"].values() for x in v]
    print(f"ratio airlock/hub: p50 latency x{pct(all_air, 50) / pct(hv, 50):.2f}, "
          f"throughput x{air_rps / hub_rps:.2f}")
    print(f"of which: one ecluse.sdc check of the uploaded CSV costs {sdc_cost_ms():.1f} ms CPU "
          f"({len(res['airlock'].get('upload', []))} uploads on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
