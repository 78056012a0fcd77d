"""Airlock API latency and throughput under concurrent load, against the real service.

Starts JupyterHub + configurable-http-proxy + the hub-managed airlock on
loopback (the test stack of ``tests/airlock/hubstack.py``), then runs
``--clients`` concurrent clients (aiohttp), each doing ``--rounds`` rounds of:
list its requests, create a request, upload a small CSV (checked by
``ecluse.sdc``). Each client is a researcher of their own (``--researchers``,
default one per client); ``--researchers 2`` is the earlier workload, where the
clients shared two researchers and each list carried eight clients' requests.
Baseline: the same clients calling the hub's own
token-authenticated ``GET /hub/api/user`` through the same proxy.

Then (``--upload-mb``, default 1) the same clients upload a CSV table of that
size ``--big-rounds`` times each (issue 21: p99 < 500 ms for a 1 MB upload),
with the deployment's own checker — ``check_runner: sandbox``, one sandbox per
file — and the hub-group (membership) re-check of every call, as configured in
the stack; the hub baseline runs again beside it. The stack's staging quota is
raised so the uploads fit.

Prints p50/p99 latency per operation, throughput, and the ratio to the
baseline. Bounded: clients × (rounds × 3 + big rounds) requests, nothing else.

    .venv/bin/python benchmarks/bench_airlock.py [--clients 16] [--rounds 15]
        [--upload-mb 1] [--big-rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.airlock import hubstack  # noqa: E402
from tests.airlock.hubstack import AirlockHub  # noqa: E402

CSV = b"sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n"
RESEARCHERS = ["alice", "bob"]


def researchers(n: int) -> list[str]:
    """``n`` researchers of the project: alice and bob, then r03, r04... added to the
    stack's users (hub groups from the test double's table)."""
    names = RESEARCHERS[:n] + [f"r{i:02d}" for i in range(len(RESEARCHERS) + 1, n + 1)]
    for name in names:
        hubstack.USERS.setdefault(name, ["cardio-los"])
    return names


def big_csv(mb: float) -> bytes:
    """A count table of about ``mb`` MiB whose every count is safe (a ``pass``)."""
    out = [b"region,site,age_band,sex,n\n"]
    size, i = len(out[0]), 0
    while size < mb * 1024 * 1024:
        row = f"R{i % 97:02d},S{i:07d},{18 + i % 60}-{19 + i % 60},{'FM'[i % 2]},{20 + i % 500}\n"
        out.append(row.encode())
        size += len(row)
        i += 1
    return b"".join(out)


async def settle(base: str, token: str, rids: list[str], timeout: float = 1800) -> float:
    """Seconds until every file of ``rids`` has its verdict (checks run in the background:
    ``check_in_background``); the checks' own pace, not a latency."""
    t0 = time.perf_counter()
    left = list(rids)
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as s:
        while left and time.perf_counter() - t0 < timeout:
            still = []
            for rid in left:
                async with s.get(f"{base}/requests/{rid}") as r:
                    body = await r.json()
                if any(f["verdict"] == "checking" for f in body.get("files", [])):
                    still.append(rid)
            left = still
            if left:
                await asyncio.sleep(2.0)  # the polls are load too
    return time.perf_counter() - t0


async def big_client(base: str, token: str, rounds: int, data: bytes, samples: dict) -> None:
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(rounds):
            async with s.post(f"{base}/requests", json={
                "project": "cardio-los", "title": f"big {i}", "justification": "load"}) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"create: HTTP {r.status}: {body}")
            samples.setdefault("rids", []).append((token, body["id"]))
            await _timed(samples, "upload_big", s.post(
                f"{base}/requests/{body['id']}/files", params={"filename": "big.csv"},
                data=data, headers={"Content-Type": "application/octet-stream"}))


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
            samples.setdefault("rids", []).append((token, body["id"]))
            await _timed(samples, "upload", s.post(
                f"{base}/requests/{body['id']}/files", params={"filename": "t.csv"}, data=CSV,
                headers={"Content-Type": "application/octet-stream"}))


async def hub_client(url: str, token: str, rounds: int, samples: dict,
                     path: str = "/hub/api/user") -> None:
    """``rounds`` x 3 GETs of ``url + path`` (the hub's own API), or one when 0."""
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as s:
        for _ in range(rounds * 3 or 1):
            await _timed(samples, "hub", s.get(f"{url}{path}"))


async def run(hub: AirlockHub, clients: int, rounds: int, big_rounds: int = 0,
              upload_mb: float = 1.0, settle: bool = True,
              names: list[str] = RESEARCHERS) -> dict:
    tokens = [hub.token(names[i % len(names)]) for i in range(clients)]
    base = f"{hub.airlock_url}/api/v1"
    # warm-up: the first sdc import, and each client's token once (the airlock checks a
    # token at the hub on its first use and then keeps it cached: a one-off round trip
    # per token, which the steady state measured below does not have)
    await asyncio.gather(*(airlock_client(base, t, 1, {}) for t in tokens[:2]))
    await asyncio.gather(*(hub_client(f"{base}/requests", t, 0, {}, path="") for t in tokens))
    out: dict = {}
    samples: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*(airlock_client(base, t, rounds, samples) for t in tokens))
    out["airlock_wall"] = time.perf_counter() - t0
    rids = samples.pop("rids", [])
    out["settle"] = await _settle_all(base, rids) if settle else None
    out["airlock"] = samples
    hub_samples: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*(hub_client(hub.url, t, rounds, hub_samples) for t in tokens))
    out["hub_wall"] = time.perf_counter() - t0
    out["hub"] = hub_samples
    if big_rounds:
        data = big_csv(upload_mb)
        out["big_bytes"] = len(data)
        await asyncio.gather(*(big_client(base, t, 1, data, {}) for t in tokens[:2]))
        big: dict[str, list[float]] = {}
        hub_beside: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        await asyncio.gather(
            *(big_client(base, t, big_rounds, data, big) for t in tokens),
            *(hub_client(hub.url, t, big_rounds, hub_beside) for t in tokens[:2]))
        out["big_wall"] = time.perf_counter() - t0
        out["big_settle"] = await _settle_all(base, big.pop("rids", []))
        out["big"] = big
        out["hub_beside"] = hub_beside
    return out


async def _settle_all(base: str, rids: list[tuple[str, str]]) -> float:
    by_token: dict[str, list[str]] = {}
    for token, rid in rids:
        by_token.setdefault(token, []).append(rid)
    waits = await asyncio.gather(*(settle(base, t, r) for t, r in by_token.items()))
    return max(waits, default=0.0)


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
    ap.add_argument("--upload-mb", type=float, default=1.0)
    ap.add_argument("--big-rounds", type=int, default=4)
    ap.add_argument("--researchers", type=int, default=0,
                    help="researchers the clients act for (default: one per client)")
    ap.add_argument("--workers", type=int, default=0,
                    help="the airlock's worker threads (airlock.workers; default: its own)")
    ap.add_argument("--no-launcher", action="store_true",
                    help="the airlock (root in this stack) starts the check sandboxes "
                    "itself, in its own process, instead of asking the sandbox launcher")
    ap.add_argument("--skip-settle", action="store_true",
                    help="do not wait for the background checks' verdicts (quicker runs "
                    "while tuning; the checks still run beside the API)")
    ap.add_argument("--check-before-answer", action="store_true",
                    help="check_in_background: false (each upload answers after its check)")
    args = ap.parse_args()
    launcher_dir = None
    if not args.no_launcher:
        # as deployed: the airlock asks the sandbox launcher (its own process) for each
        # check sandbox; without it the stack's root airlock starts them itself
        launcher_dir = Path(tempfile.mkdtemp(prefix="ecluse-bench-launcher-"))
        hubstack.ECLUSE_YAML["sandbox"] = {
            "launcher_socket": str(launcher_dir / "launcher.sock"),
            "launcher_callers": {"hub": "root", "airlock": "root"}}
    # every client's uploads must fit in the stack's per-user staging quota
    hubstack.ECLUSE_YAML["airlock"]["staging_quota_bytes"] = "64G"
    if args.workers:
        hubstack.ECLUSE_YAML["airlock"]["workers"] = args.workers
    # the deployment's default: uploads answer once stored, checked in the background
    # (the test stack turns it off for tests that read a verdict from the answer)
    hubstack.ECLUSE_YAML["airlock"]["check_in_background"] = not args.check_before_answer
    # a SIGTERM (timeout, kill) still stops the stack in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = researchers(args.researchers or args.clients)  # the hub's users, before it starts
    hub = AirlockHub()
    try:
        t0 = time.perf_counter()
        hub.start()
        print(f"stack up in {time.perf_counter() - t0:.1f}s "
              f"(hub + proxy + airlock on 127.0.0.1:{hub.settings.hub.port})")
        conf = hub.settings.airlock
        print(f"airlock: check_runner={conf.check_runner}, check_processes="
              f"{conf.check_processes}, check_in_background={conf.check_in_background}, "
              f"group_cache_seconds={conf.group_cache_seconds}, workers={conf.workers}")
        res = asyncio.run(run(hub, args.clients, max(1, args.rounds), args.big_rounds,
                              args.upload_mb, settle=not args.skip_settle,
                              names=names))
    finally:
        hub.stop()
        if launcher_dir is not None:
            shutil.rmtree(launcher_dir, ignore_errors=True)
    n_air = sum(len(v) for v in res["airlock"].values())
    n_hub = len(res["hub"]["hub"])
    print(f"\nairlock API, {args.clients} concurrent clients x {args.rounds} rounds "
          f"(list + create + upload), {len(names)} researchers:")
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
    if res["settle"] is not None:
        print(f"every upload had its verdict {res['settle']:.1f}s after the last one answered "
              "(background checks)")
    print(f"of which: one ecluse.sdc check of the uploaded CSV costs {sdc_cost_ms():.1f} ms CPU "
          f"({len(res['airlock'].get('upload', []))} uploads on {os.cpu_count()} cores)")
    if "big" in res:
        v = res["big"].get("upload_big", [])
        hv = res["hub_beside"].get("hub", [])
        print(f"\n{res['big_bytes']} byte CSV upload, {args.clients} concurrent clients x "
              f"{args.big_rounds}, the hub API beside it:")
        print(f"{'operation':<10} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
        print(f"{'upload 1MB':<10} {len(v):>5} {pct(v, 50):>9.1f} {pct(v, 99):>9.1f} "
              f"{statistics.fmean(v):>9.1f}   (target: p99 < 500 ms)")
        print(f"{'hub user':<10} {len(hv):>5} {pct(hv, 50):>9.1f} {pct(hv, 99):>9.1f} "
              f"{statistics.fmean(hv):>9.1f}")
        print(f"uploads: {len(v) / res['big_wall']:.1f}/s, "
              f"{len(v) * res['big_bytes'] / res['big_wall'] / 1e6:.1f} MB/s; every one had "
              f"its verdict {res['big_settle']:.1f}s after the last answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
