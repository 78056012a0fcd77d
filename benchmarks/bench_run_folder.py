"""Reading a batch run's folder through the sandbox launcher vs directly (run as root).

    python benchmarks/bench_run_folder.py [--mib 64] [--polls 200]

A batch service of its own user (``batch.service_user``) cannot enter project
folders: the launcher reads a run's files for it (``run_folder_read``: 4 MiB
per answer, base64 over its Unix socket, each read opened beneath the run
folder without following a link). This measures what that costs against the
root service's own reads (a directory fd held open, :class:`ecluse.batch.files.RunFolder`):

* one ``progress.json`` read (what the service does every ``poll_interval``
  while a run goes), median and p90 over ``--polls`` reads;
* an export-sized output (``--mib`` MiB) read end to end: MB/s.

A real launcher (``python -m ecluse.sandbox.launcher``, its own process as in
production) serves on a socket of a temporary folder, with the batch caller mapped to root (the
caller's uid does not change the cost). Targets: a progress read ≤ 20 ms at the
median (the default poll interval is 250 ms), and ≥ 10 MB/s for outputs (the
largest file an export stages, ``airlock.max_file_bytes`` = 512 MiB, read in under a
minute; the airlock's check of it in a sandbox takes longer).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import yaml  # noqa: E402

from ecluse.batch.files import LauncherRunFolders, LocalRunFolders, shared_dir  # noqa: E402
from ecluse.config import LDAPSettings, Project, Settings, load_settings  # noqa: E402
from ecluse.sandbox.base import UserIdentity  # noqa: E402
from ecluse.sandbox.launcher import LauncherProcess  # noqa: E402
from ecluse.sandbox.local import LocalSandbox  # noqa: E402

RUN = "br-0123456789ab"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--polls", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (the launcher)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ecluse-bench-runfolder-"))
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=b", bind_dn="cn=s,dc=b",
                        user_search_base="ou=p,dc=b", group_search_base="ou=g,dc=b")
    settings = Settings(state_dir=tmp / "state", ldap=ldap)
    settings.projects = {"bench": Project(slug="bench", title="bench", ldap_group="p-bench",
                                          gid=7100)}
    settings.sandbox.launcher_socket = tmp / "launcher.sock"
    settings.sandbox.launcher_callers = {"batch": "root"}
    settings.audit_database_url = f"sqlite:///{tmp / 'audit.sqlite'}"
    backend = LocalSandbox(settings=settings)
    (tmp / "projects.yaml").write_text(yaml.safe_dump({"projects": {
        k: p.model_dump(mode="json") for k, p in settings.projects.items()}}))
    data = json.loads(settings.model_dump_json())
    data["projects_file"] = str(tmp / "projects.yaml")
    (tmp / "ecluse.yaml").write_text(yaml.safe_dump(data))
    settings = load_settings(tmp / "ecluse.yaml")
    launcher = LauncherProcess(settings)  # its own process, as in production
    try:
        launcher.start()
        user = UserIdentity("bench", 5100, 5100)
        remote = LauncherRunFolders(settings)
        remote.create(settings.projects["bench"], user, 7100, RUN)
        local = LocalRunFolders(settings, backend).open("bench", RUN)
        folder = shared_dir(settings, "bench") / "batch" / RUN
        (folder / "progress.json").write_text('{"done": 3, "total": 10}')
        with open(folder / "output.bin", "wb") as f:
            f.write(os.urandom(1024 * 1024) * args.mib)
        theirs = remote.open("bench", RUN)
        for f in (theirs, local):
            f.read("progress.json", 65536)  # warm
        ours_poll = timed(lambda: theirs.read("progress.json", 65536), args.polls)
        base_poll = timed(lambda: local.read("progress.json", 65536), args.polls)

        def whole(f) -> float:
            t = time.perf_counter()
            n = sum(len(c) for c in f.iter("output.bin"))
            assert n == args.mib * 1024 * 1024
            return n / (time.perf_counter() - t) / 1e6

        ours_mbs = statistics.median(whole(theirs) for _ in range(3))
        base_mbs = statistics.median(whole(local) for _ in range(3))
        local.close()

        def ms(xs: list[float], q: float) -> float:
            return sorted(xs)[int(q * (len(xs) - 1))] * 1000

        print(f"progress.json read: ours p50 {ms(ours_poll, .5):.2f} ms p90 "
              f"{ms(ours_poll, .9):.2f} ms; baseline p50 {ms(base_poll, .5):.3f} ms; ratio "
              f"{ms(ours_poll, .5) / max(ms(base_poll, .5), 1e-6):.0f}x")
        print(f"{args.mib} MiB output read: ours {ours_mbs:.0f} MB/s; baseline "
              f"{base_mbs:.0f} MB/s; ratio {base_mbs / ours_mbs:.1f}x slower")
        ok = ms(ours_poll, .5) <= 20 and ours_mbs >= 10
        print("targets (progress p50 <= 20 ms, output >= 10 MB/s):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        launcher.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
