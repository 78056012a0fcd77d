"""The chaos test in full: five minutes of work against ``ecluse up`` while a driver
kills one component at random every 20-40 s (issue 18).

It is ``tests/stack/test_supervise.py::test_chaos`` (one minute in
``make test``) run for ``--seconds`` (default 300); the report line gives the
kills, the operations done, the failures clients saw by kind and the recovery
time. Exit 0 when every end check passed (audit log verifies, no request
half-recorded, released bytes match their sha256, workspace running or cleanly
stopped, nothing left). Root needed (sandboxes).

    .venv/bin/python benchmarks/bench_chaos.py [--seconds 300] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    env = dict(os.environ, ECLUSE_CHAOS_SECONDS=str(args.seconds))
    if args.seed is not None:
        env["ECLUSE_CHAOS_SEED"] = str(args.seed)
    return subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/stack/test_supervise.py::test_chaos"], cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())
