"""Image build time: the base, workspace and hub images, cold and warm.

Cold: a fresh cache folder (``--cache``, default a new temporary one) and a fresh
Docker engine of our own — debootstrap of the base, the wheels downloaded by the
host's pip, each image built with no network and saved to the cache. Warm: another
fresh engine on the same cache — the base root filesystem imported and each saved
image loaded, as every test run and ``ecluse up --sandbox docker`` do. The load
average is printed with the figures (the machine may be shared).

Target (issue 17 item 4): the docker suites within 15 min of CI, image builds
included; this prints the builds' share of it.

    .venv/bin/python benchmarks/bench_images.py [--image workspace] [--cache DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ecluse.sandbox import images
from ecluse.sandbox.engine import Dockerd, base_image

BUDGET_S = 15 * 60


def _cpu_of_tree(root: int) -> float:
    """CPU seconds (user + system, with waited-for children) of ``root`` and every live
    descendant: the engine, its containerd and the builds' processes."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError, IndexError):
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                stats[int(pid)] = (int(f[1]), sum(int(x) for x in f[11:15]))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += [p for p, (ppid, _) in stats.items() if ppid == pid]
    return total / tick


def _cpu_self() -> float:
    import resource

    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF,
               resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def phase(tmp: Path, name: str, cache: Path, which: list[str]) -> dict[str, float]:
    """Each step's seconds on a fresh engine with ``cache``; ``cpu``: the CPU seconds of
    the whole phase (this process, its children — pip, debootstrap — and the engine)."""
    out: dict[str, float] = {}
    cpu0 = _cpu_self()

    def progress(msg: str) -> None:
        print(f"[{name} {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    t0 = time.monotonic()
    with Dockerd(tmp / f"engine-{name}") as engine, \
            contextlib.closing(engine.client(timeout=3600)) as client:
        t = time.monotonic()
        base_image(client, progress=progress, cache=cache)
        out["base"] = time.monotonic() - t
        for image in which:
            t = time.monotonic()
            getattr(images, f"{image}_image")(client, progress=progress, cache=cache)
            out[image] = time.monotonic() - t
        out["total"] = sum(out.values())
        out["cpu"] = _cpu_self() - cpu0 + _cpu_of_tree(engine.proc.pid)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", action="append", choices=("workspace", "hub"), dest="images")
    ap.add_argument("--cache", type=Path, help="cache folder (default: a fresh one: cold)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_images needs root (dockerd)")
        return 2
    which = args.images or ["workspace", "hub"]
    tmp = Path(tempfile.mkdtemp(prefix="ecluse-bench-images-"))
    cache = args.cache or tmp / "cache"
    load = [os.getloadavg()[0]]
    try:
        first = phase(tmp, "cold" if args.cache is None else "first", cache, which)
        load.append(os.getloadavg()[0])
        warm = phase(tmp, "warm", cache, which)
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbench_images — seconds per step (load average {', '.join(f'{x:.1f}' for x in load)}"
          f" on {os.cpu_count()} CPUs)")
    print(f"{'step':<12}{'cold' if args.cache is None else 'first':>10}{'warm':>10}"
          "   (cpu: CPU seconds of the phase, engine included)")
    for step in ["base", *which, "total", "cpu"]:
        print(f"{step:<12}{first[step]:>10.0f}{warm[step]:>10.0f}")
    print(f"{'CI budget of the docker suites, builds included':<50}{BUDGET_S:>8} s")
    ok = first["total"] <= BUDGET_S
    print("builds within the budget" if ok else "BUILDS ALONE EXCEED THE BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
