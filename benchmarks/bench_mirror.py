"""The package mirror's filtering front: index latency under concurrent clients.

Starts a local upstream index of wheels (``tests/support/pypi.py``) and ``ecluse
mirror serve`` on loopback (proxpi behind the front), allows ``alpha`` (and its
closure) for one project, then runs ``--clients`` concurrent clients (aiohttp), each
doing ``--rounds`` rounds of: the project's page of an allowed name (PEP 691 JSON,
filtered to the pinned files), the same page of a refused name (answered by the front
alone), and a wheel download. Baseline: the same allowed page straight from proxpi.

Prints p50/p99 latency per operation and the ratio to the baseline, and the number of
upstream requests naming the refused package (must be 0). Bounded: clients × rounds
× 4 requests, nothing else.

    .venv/bin/python benchmarks/bench_mirror.py [--clients 16] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pypi import LocalIndex  # noqa: E402

from ecluse.cli import main as ecluse_main  # noqa: E402
from ecluse.config import load_settings  # noqa: E402
from ecluse.dev.ldapserver import free_port  # noqa: E402
from ecluse.mirror.allowlist import mirror_key, project_token  # noqa: E402

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


async def timed(session: aiohttp.ClientSession, url: str, headers=None) -> tuple[float, int]:
    t0 = time.perf_counter()
    async with session.get(url, headers=headers or {}) as r:
        await r.read()
        return time.perf_counter() - t0, r.status


async def run(base: str, backend: str, clients: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"allowed page": [], "refused page": [], "wheel": [],
                                   "proxpi page (baseline)": []}
    statuses: dict[str, set[int]] = {k: set() for k in out}
    async with aiohttp.ClientSession() as session:
        async def client() -> None:
            for _ in range(rounds):
                for name, url, headers in (
                        ("allowed page", f"{base}alpha/", JSON),
                        ("refused page", f"{base}secretpkg/", JSON),
                        ("wheel", base.replace("/simple/", "/files/alpha/")
                         + "alpha-1.0-py3-none-any.whl", None),
                        ("proxpi page (baseline)", f"{backend}/index/alpha/", JSON)):
                    dt, status = await timed(session, url, headers)
                    out[name].append(dt)
                    statuses[name].add(status)

        await asyncio.gather(*(client() for _ in range(clients)))
    assert statuses["allowed page"] == {200} and statuses["wheel"] == {200}, statuses
    assert statuses["refused page"] == {404}, statuses
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecluse-bench-mirror-") as tmp:
        tmp = Path(tmp)
        upstream = LocalIndex(tmp / "upstream")
        upstream.add("alpha", "1.0", requires=("beta>=1.0",))
        upstream.add("beta", "1.0")
        upstream.add("secretpkg", "1.0")
        upstream.start()
        port, backend_port = free_port(), free_port()
        (tmp / "projects.yaml").write_text(yaml.safe_dump({"projects": {
            "bench": {"title": "Bench", "ldap_group": "proj-bench"}}}))
        cfg = tmp / "ecluse.yaml"
        cfg.write_text(yaml.safe_dump({
            "state_dir": "state", "projects_file": "projects.yaml",
            "ldap": {"uri": "ldap://127.0.0.1:1", "security": "none", "base_dn": "dc=b",
                     "bind_dn": "cn=s,dc=b", "user_search_base": "ou=p,dc=b",
                     "group_search_base": "ou=g,dc=b"},
            "mirror": {"enabled": True, "upstream": upstream.url, "port": port,
                       "backend_port": backend_port}}))
        proc = subprocess.Popen([sys.executable, "-m", "ecluse", "mirror", "--config",
                                 str(cfg), "serve", "--listen", f"127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/x/simple/", timeout=2)
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the mirror did not start") from None
                    time.sleep(0.3)
            assert ecluse_main(["--log-level", "WARNING", "packages", "--config", str(cfg),
                                "allow", "bench", "alpha"]) == 0
            settings = load_settings(str(cfg))
            key = mirror_key(settings.mirror.resolved_data_dir(settings.state_dir))
            base = f"http://127.0.0.1:{port}/{project_token(key, 'bench')}/simple/"
            # warm the cache (one fetch upstream per allowed page and file)
            asyncio.run(run(base, f"http://127.0.0.1:{backend_port}", 1, 1))
            upstream.paths.clear()
            t0 = time.perf_counter()
            res = asyncio.run(run(base, f"http://127.0.0.1:{backend_port}", args.clients,
                                  args.rounds))
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
            upstream.stop()
    base_p50 = pct(res["proxpi page (baseline)"], 50)
    print(f"{args.clients} clients x {args.rounds} rounds, {wall:.1f} s, "
          f"{sum(map(len, res.values())) / wall:.0f} req/s overall")
    for name, values in res.items():
        p50, p99 = pct(values, 50), pct(values, 99)
        print(f"  {name:<24} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
              f"({p50 / base_p50:.1f}x baseline p50)" if base_p50 else "")
    leaked = len(upstream.asked_about("secretpkg"))
    print(f"upstream requests naming the refused package: {leaked}")
    return 1 if leaked else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
