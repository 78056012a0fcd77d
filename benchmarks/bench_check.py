"""Benchmark of ``ecluse check`` against the baselines named in issue 4.

Three measurements, each printed as ours / baseline / ratio, in one run on
the same data:

1. a ~1 GB, 10-column, ~10-million-row CSV: ``check_file`` vs
   ``pyarrow.csv.read_csv`` (target: at most 2x), with the peak memory of
   each (target for ours: at most 1.5 GB); then an aggregate CSV whose every
   row is a table cell (seven group columns, a count column all above the
   threshold, two statistics), at 100 MB and 1 GB (``--aggregate-mb``):
   ``check_file`` vs ``read_csv`` (issue 20 item 7: at most 2x);
2. a 3-million-row Parquet file: ``check_file`` vs ``pyarrow.parquet.read_table``
   (target: at most 1.5x);
3. a checked 3-way crosstab of a 1-million-row table: ``pandas.crosstab`` +
   ``ecluse.sdc.check_frame`` vs ACRO's ``crosstab`` with its checks (pip
   package ``acro``, installed into ``benchmarks/.venv-acro`` by this script
   since it pins its own pandas), and plain ``pandas.crosstab`` for reference.

Every measured step runs in its own fresh Python process, so peak memory
(``ru_maxrss``) is that step's alone; times are taken inside the process
around the measured call (imports excluded), best of ``--repeat`` runs. The
aggregate CSV is measured against ``read_csv`` in alternated runs (at least
five of each at 100 MB), wall-clock and CPU time (every thread's) apart, with
the median of the paired ratios: on a loaded machine the CPU figure is the
one that holds. The data is generated into a temporary directory that is
deleted at the end.

    .venv/bin/python benchmarks/bench_check.py            # full size (~1 GB CSV)
    .venv/bin/python benchmarks/bench_check.py --quick    # ~1/10 size
    .venv/bin/python benchmarks/bench_check.py --aggregate-only --aggregate-mb 100,1000

Wall times depend on what else runs: the load average is printed beside each
figure (on a machine with two cores, a load above 2 makes every ratio worse
for the single-threaded parts of ours than for pyarrow's threads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACRO_VENV = HERE / ".venv-acro"

GEN = r"""
import sys, numpy as np, pyarrow as pa, pyarrow.csv as pcsv, pyarrow.parquet as pq
kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(42)
wards = np.array(["CARDIOLOGIE INTERVENTIONNELLE ADULTE", "NEUROLOGIE VASCULAIRE - UNV",
                  "REANIMATION MEDICALE POLYVALENTE", "MEDECINE INTERNE ET INFECTIOLOGIE",
                  "PNEUMOLOGIE ET ONCOLOGIE THORACIQUE"])
days = np.array([f"2023-{m:02d}-{d:02d}T{h:02d}:{(7 * d) % 60:02d}:00"
                 for m in range(1, 13) for d in range(1, 29) for h in range(0, 24, 3)])
def chunk(start, size):
    i = np.arange(start, start + size)
    return pa.table({
        "patient_id": pa.array(np.char.add("PAT", np.char.zfill(i.astype(str), 10))),
        "sexe": rng.choice(np.array(["F", "M"]), size),
        "age": rng.integers(0, 100, size),
        "date_entree": rng.choice(days, size),
        "service": rng.choice(wards, size),
        "duree_sejour": rng.integers(0, 90, size),
        "poids_kg": np.round(rng.normal(70, 12, size), 1),
        "pas_mmhg": rng.integers(80, 200, size),
        "diagnostic": rng.choice(np.array([f"I{k:02d}.{k % 10}" for k in range(100)]), size),
        "cout_eur": np.round(rng.gamma(2.0, 1800.0, size), 2),
    })
def agg_chunk(start, size):
    i = np.arange(start, start + size)
    n = rng.integers(10, 2000, size)  # all above the threshold: every cell is judged
    return pa.table({
        "region": pa.array(np.char.add("R", (i % 13).astype(str))),
        "departement": pa.array(np.char.add("D", ((i // 13) % 101).astype(str))),
        "annee": 2015 + (i // 1313) % 9,
        "mois": 1 + (i // 11817) % 12,
        "classe_age": pa.array(np.char.add("age-", ((i // 141804) % 8).astype(str))),
        "sexe": np.where((i // 1134432) % 2 == 0, "F", "M"),
        "strate": pa.array(np.char.add("S", (i // 2268864).astype(str))),
        "n": n,
        "duree_moyenne": np.round(rng.gamma(2.0, 3.0, size), 2),
        "taux_pour_mille": np.round(rng.random(size) * 100, 3),
    })
step = 1_000_000
if kind == "aggregate":
    with pa.OSFile(path, "wb") as sink:
        w = None
        for s in range(0, n, step):
            t = agg_chunk(s, min(step, n - s))
            if w is None:
                w = pcsv.CSVWriter(sink, t.schema)
            w.write_table(t)
        w.close()
elif kind == "aggregate-parquet":
    w = None
    for s in range(0, n, step):
        t = agg_chunk(s, min(step, n - s))
        if w is None:
            w = pq.ParquetWriter(path, t.schema)
        w.write_table(t)
    w.close()
elif kind == "csv":
    with pa.OSFile(path, "wb") as sink:
        w = None
        for s in range(0, n, step):
            t = chunk(s, min(step, n - s))
            if w is None:
                w = pcsv.CSVWriter(sink, t.schema)
            w.write_table(t)
        w.close()
elif kind == "parquet":
    w = None
    for s in range(0, n, step):
        t = chunk(s, min(step, n - s))
        if w is None:
            w = pq.ParquetWriter(path, t.schema)
        w.write_table(t)
    w.close()
elif kind == "table":
    t = pa.table({
        "region": rng.choice(np.array([f"R{k:02d}" for k in range(13)]), n),
        "sexe": rng.choice(np.array(["F", "M"]), n),
        "classe_age": rng.choice(np.array(["0-17", "18-39", "40-59", "60-79", "80+"]), n,
                                 p=[0.05, 0.25, 0.3, 0.3, 0.1]),
        "duree_sejour": rng.integers(0, 90, n),
    })
    pcsv.write_csv(t, path)
"""

MEASURE = r"""
import json, resource, sys, time
what, path = sys.argv[1], sys.argv[2]
if what == "pyarrow-csv":
    import pyarrow.csv as pcsv
    c0, t0 = time.process_time(), time.perf_counter(); t = pcsv.read_csv(path); rows = t.num_rows
elif what == "pyarrow-parquet":
    import pyarrow.parquet as pq
    t0 = time.perf_counter(); t = pq.read_table(path); rows = t.num_rows
elif what == "ecluse":
    from ecluse.sdc import check_file
    c0, t0 = time.process_time(), time.perf_counter(); rep = check_file(path); rows = rep.details.get("rows")
    extra = {"verdict": str(rep.verdict), "rules": sorted({f.rule for f in rep.findings})}
elif what in ("pandas-crosstab", "ecluse-crosstab", "acro-crosstab"):
    import pandas as pd
    df = pd.read_csv(path)
    if what == "acro-crosstab":
        import contextlib, io, logging
        logging.disable(logging.CRITICAL)
        from acro import ACRO
        with contextlib.redirect_stdout(io.StringIO()):
            acro = ACRO(suppress=False)
            t0 = time.perf_counter()
            ct = acro.crosstab(df.region, [df.sexe, df.classe_age])
        extra = {"status": str(list(acro.results.results.values())[-1].status)}
    else:
        if what == "ecluse-crosstab":
            from ecluse.sdc import check_frame
        t0 = time.perf_counter()
        ct = pd.crosstab(df.region, [df.sexe, df.classe_age])
        if what == "ecluse-crosstab":
            rep = check_frame(ct)
            extra = {"verdict": str(rep.verdict)}
    rows = len(df)
else:
    raise SystemExit(f"unknown measurement {what}")
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"seconds": dt, "peak_bytes": peak, "rows": rows}
if "c0" in globals():  # CPU of every thread: a figure that holds on a loaded machine
    out["cpu_seconds"] = time.process_time() - c0
out.update(locals().get("extra", {}))
print(json.dumps(out))
"""


def run_py(python: str, code: str, *args: str) -> dict:
    res = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode != 0:
        raise RuntimeError(f"{args[0] if args else code[:20]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def best(python: str, what: str, path: Path, repeat: int) -> dict:
    runs = [run_py(python, MEASURE, what, str(path)) for _ in range(repeat)]
    out = min(runs, key=lambda r: r["seconds"])
    out["peak_bytes"] = max(r["peak_bytes"] for r in runs)
    if all("cpu_seconds" in r for r in runs):
        out["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
    return out


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(64 * 1024 * 1024):
            pass


def acro_python() -> str | None:
    py = ACRO_VENV / "bin" / "python"
    if ACRO_VENV.is_symlink() and not ACRO_VENV.exists():
        ACRO_VENV.unlink()
    if not py.exists():
        print(f"# installing acro into {ACRO_VENV} (one time)", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(ACRO_VENV)
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "acro"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"# acro install failed: {res.stderr[-500:]}")
            return None
    return str(py)


def gb(n: float) -> str:
    return f"{n / 1024**3:.2f} GB"


def line(label: str, ours: float, base: float, base_label: str, target: float | None) -> str:
    ratio = ours / base if base else float("inf")
    verdict = "" if target is None else (" OK" if ratio <= target else f" OVER TARGET {target}x")
    return (f"{label:34} ours {ours:7.2f} s | {base_label} {base:7.2f} s | "
            f"ratio {ratio:5.2f}x{verdict}")


def bench_differencing(n_request: int = 20, n_ledger: int = 1000, seed: int = 7,
                       repeat: int = 3) -> dict:
    """Differencing a request of ``n_request`` count tables against each other and a
    ledger of ``n_ledger`` released ones (issue 20 item 7: adds at most 1 s).

    The tables are what a busy extract accumulates: counts by one to three of age
    band, sex, region and year, each over its own population (a tenth of them
    nested in another, so that the exact solve runs too). Timed: reading the
    ledger's JSON and every comparison."""
    import numpy as np

    from ecluse.sdc import DisclosurePolicy
    from ecluse.sdc.differencing import CountTable, differencing_findings

    rng = np.random.default_rng(seed)
    values = {"age": ["0-17", "18-39", "40-64", ">= 65"], "sex": ["F", "M"],
              "region": ["Nord", "Sud", "Est", "Ouest", "Centre"],
              "year": ["2021", "2022", "2023"]}

    def table(name: str) -> dict:
        dims = sorted(rng.choice(list(values), size=int(rng.integers(1, 4)), replace=False))
        keys = [()]
        for d in dims:
            keys = [k + (v,) for k in keys for v in values[d]]
        cells = [[list(k), float(rng.integers(10, 500))] for k in keys]
        if rng.random() < 0.5:  # with its grand total
            cells.append([["*"] * len(dims), float(sum(c[1] for c in cells))])
        return {"source": name, "measure": "n", "dims": list(dims), "cells": cells}

    ledger = [table(f"released-{i}.csv") for i in range(n_ledger)]
    request = [table(f"new-{i}.csv") for i in range(n_request)]
    for i in range(0, n_request, 10):  # a margin of a released table: compared for real
        src = ledger[i]
        if len(src["dims"]) > 1:
            d0 = src["dims"][0]
            sums: dict = {}
            for key, v in src["cells"]:
                if "*" not in key:
                    sums[key[0]] = sums.get(key[0], 0.0) + v
            request[i] = {"source": f"new-{i}.csv", "measure": "n", "dims": [d0],
                          "cells": [[[k], v] for k, v in sums.items()]}
    blob = json.dumps(ledger)
    policy = DisclosurePolicy()
    walls, cpus = [], []
    for _ in range(repeat):  # best of: the wall-clock time swings with the machine's load
        t0, c0 = time.perf_counter(), time.process_time()
        released = [CountTable.from_dict(t) for t in json.loads(blob)]
        for t in released:
            t.origin = {"request": "r"}
        new = [CountTable.from_dict(t) for t in request]
        found = differencing_findings(new, policy, released)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    seconds, cpu = min(walls), min(cpus)
    return {"seconds": seconds, "cpu_seconds": cpu, "runs": repeat,
            "worst_seconds": max(walls), "request_tables": n_request,
            "ledger_tables": n_ledger,
            "findings": sum(len(v) for v in found.values())}


def differencing_line(res: dict) -> str:
    ok = "OK" if res["seconds"] <= 1.0 else (
        "OVER TARGET 1 s (wall)" if res["cpu_seconds"] <= 1.0 else "OVER TARGET 1 s")
    return (f"{'differencing, request x ledger':34} {res['seconds']:7.2f} s "
            f"(CPU {res['cpu_seconds']:.2f} s; best of {res['runs']}, worst wall "
            f"{res['worst_seconds']:.2f} s) for "
            f"{res['request_tables']} tables x {res['ledger_tables']} released "
            f"({res['findings']} findings) {ok}; {load()}")


def load() -> str:
    """The load average now (1, 5 minutes), to read a wall time by."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


def bench_aggregate(py: str, d: Path, sizes_mb: list[int], repeat: int,
                    results: dict[str, dict]) -> None:
    """The aggregate CSV at each size: ``check_file`` against ``read_csv`` (issue 20
    item 7: at most 2x). Each file is deleted once measured; the largest runs once."""
    for mb in sizes_mb:
        path = d / f"counts-{mb}mb.csv"
        rows = int(mb * 1_000_000 / 51.7)  # ~51.7 bytes a row
        subprocess.run([py, "-c", GEN, "aggregate", str(path), str(rows)], check=True)
        try:
            reps = max(1, repeat // 2) if mb >= 1000 else max(repeat, 5)
            warm(path)
            base, ours, paired = paired_best(py, path, reps)
        finally:
            size = path.stat().st_size
            path.unlink()
        results[f"csv_aggregate_{mb}mb"] = {"ours": ours, "baseline": base, "bytes": size,
                                             "rows": rows, "load": os.getloadavg(),
                                             "runs": reps, "paired_ratios": paired}
        print(line(f"aggregate CSV {size / 1e6:.0f} MB vs read_csv", ours["seconds"],
                   base["seconds"], "pyarrow", 2.0))
        cpu_ratio = ours["cpu_seconds"] / base["cpu_seconds"]
        print(f"{'':34} CPU ours {ours['cpu_seconds']:.2f} s | pyarrow "
              f"{base['cpu_seconds']:.2f} s | ratio {cpu_ratio:.2f}x"
              f"{' OK' if cpu_ratio <= 2.0 else ' OVER TARGET 2.0x'} (best of {reps} each, "
              f"alternated); median of the paired ratios wall {paired['wall']:.2f}x / CPU "
              f"{paired['cpu']:.2f}x")
        print(f"{'':34} {rows} rows; peak memory ours {gb(ours['peak_bytes'])} | pyarrow "
              f"{gb(base['peak_bytes'])}; verdict {ours['verdict']} {ours['rules']}; {load()}")


def paired_best(py: str, path: Path, reps: int) -> tuple[dict, dict, dict]:
    """``read_csv`` and ``check_file`` run alternately ``reps`` times each, so that both
    see the same load: the best run of each (wall and CPU taken apart) and the median
    of the ratios of the runs made one after the other."""
    import statistics

    pairs = []
    for k in range(reps):
        order = ("pyarrow-csv", "ecluse") if k % 2 == 0 else ("ecluse", "pyarrow-csv")
        got = {what: run_py(py, MEASURE, what, str(path)) for what in order}
        pairs.append((got["pyarrow-csv"], got["ecluse"]))
    out = []
    for side in (0, 1):
        runs = [p[side] for p in pairs]
        best_run = dict(min(runs, key=lambda r: r["seconds"]))
        best_run["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
        best_run["peak_bytes"] = max(r["peak_bytes"] for r in runs)
        out.append(best_run)
    paired = {"wall": statistics.median(o["seconds"] / b["seconds"] for b, o in pairs),
              "cpu": statistics.median(o["cpu_seconds"] / b["cpu_seconds"] for b, o in pairs)}
    return out[0], out[1], paired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about a tenth of the full sizes")
    ap.add_argument("--csv-rows", type=int, default=None)
    ap.add_argument("--parquet-rows", type=int, default=None)
    ap.add_argument("--table-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-aggregate", dest="aggregate", action="store_false",
                    help="skip the aggregate CSVs (long aggregates whose counts are all checked)")
    ap.add_argument("--aggregate-mb", default=None,
                    help="sizes of the aggregate CSV in MB, comma-separated (default 100,1000; "
                         "100 with --quick)")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="only the aggregate CSVs and differencing")
    ap.add_argument("--no-acro", action="store_true", help="skip the ACRO comparison")
    ap.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    ap.add_argument("--differencing-only", action="store_true",
                    help="only the differencing measurement (20 tables x a ledger of 1,000)")
    args = ap.parse_args(argv)
    if args.differencing_only:
        print(differencing_line(bench_differencing()))
        return 0
    csv_rows = args.csv_rows or (1_000_000 if args.quick else 10_000_000)
    pq_rows = args.parquet_rows or (300_000 if args.quick else 3_000_000)
    agg_mb = [int(x) for x in (args.aggregate_mb or ("100" if args.quick else "100,1000"))
              .split(",") if x.strip()]
    py = sys.executable
    results: dict[str, dict] = {}
    print(f"# {load()}")
    if args.aggregate_only:
        with tempfile.TemporaryDirectory(prefix="ecluse-bench-") as tmp:
            bench_aggregate(py, Path(tmp), agg_mb, args.repeat, results)
        results["differencing"] = bench_differencing()
        print(differencing_line(results["differencing"]))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="ecluse-bench-") as tmp:
        d = Path(tmp)
        csv_path, pq_path, tab_path = d / "stays.csv", d / "stays.parquet", d / "table.csv"
        aggpq_path = d / "counts.parquet"
        t0 = time.perf_counter()
        run_gen = lambda kind, p, n: subprocess.run(  # noqa: E731
            [py, "-c", GEN, kind, str(p), str(n)], check=True)
        run_gen("csv", csv_path, csv_rows)
        run_gen("parquet", pq_path, pq_rows)
        if args.aggregate:
            run_gen("aggregate-parquet", aggpq_path, pq_rows)
        run_gen("table", tab_path, args.table_rows)
        print(f"# data generated in {time.perf_counter() - t0:.0f} s: CSV {gb(csv_path.stat().st_size)}"
              f" ({csv_rows} rows x 10), Parquet {pq_rows} rows, table {args.table_rows} rows")
        # 1. CSV
        warm(csv_path)
        base = best(py, "pyarrow-csv", csv_path, args.repeat)
        ours = best(py, "ecluse", csv_path, args.repeat)
        results["csv"] = {"ours": ours, "baseline": base}
        print(line("CSV check_file vs pyarrow read_csv", ours["seconds"], base["seconds"],
                   "pyarrow", 2.0))
        print(f"{'':34} peak memory ours {gb(ours['peak_bytes'])} (target <= 1.5 GB) | "
              f"pyarrow {gb(base['peak_bytes'])}; verdict {ours['verdict']} {ours['rules']}")
        if args.aggregate:
            # 1b. long aggregates: not blocked, every count cell checked
            bench_aggregate(py, d, agg_mb, args.repeat, results)
        # 2. Parquet
        warm(pq_path)
        base = best(py, "pyarrow-parquet", pq_path, args.repeat)
        ours = best(py, "ecluse", pq_path, args.repeat)
        results["parquet"] = {"ours": ours, "baseline": base}
        print(line("Parquet check_file vs read_table", ours["seconds"], base["seconds"],
                   "pyarrow", 1.5))
        print(f"{'':34} peak memory ours {gb(ours['peak_bytes'])} | pyarrow "
              f"{gb(base['peak_bytes'])}; verdict {ours['verdict']} {ours['rules']}")
        if args.aggregate:
            warm(aggpq_path)
            base = best(py, "pyarrow-parquet", aggpq_path, args.repeat)
            ours = best(py, "ecluse", aggpq_path, args.repeat)
            results["parquet_aggregate"] = {"ours": ours, "baseline": base}
            print(line("aggregate Parquet (all read)", ours["seconds"], base["seconds"],
                       "pyarrow", 1.5))
            print(f"{'':34} peak memory ours {gb(ours['peak_bytes'])} | pyarrow "
                  f"{gb(base['peak_bytes'])}; verdict {ours['verdict']} {ours['rules']}")
        # 3. crosstab
        pandas_ct = best(py, "pandas-crosstab", tab_path, args.repeat)
        ours = best(py, "ecluse-crosstab", tab_path, args.repeat)
        results["crosstab"] = {"ours": ours, "pandas": pandas_ct}
        print(f"{'3-way crosstab, plain pandas':34} {pandas_ct['seconds']:7.2f} s")
        if not args.no_acro and (apy := acro_python()):
            acro = best(apy, "acro-crosstab", tab_path, args.repeat)
            results["crosstab"]["acro"] = acro
            print(line("checked crosstab: ecluse vs ACRO", ours["seconds"], acro["seconds"],
                       "ACRO", None))
            print(f"{'':34} ecluse verdict {ours['verdict']}; ACRO status {acro['status']}; "
                  f"ecluse overhead over pandas {ours['seconds'] / pandas_ct['seconds']:.2f}x, "
                  f"ACRO over pandas {acro['seconds'] / pandas_ct['seconds']:.2f}x")
        else:
            print(f"{'checked crosstab (ecluse)':34} {ours['seconds']:7.2f} s (ACRO skipped)")
    results["differencing"] = bench_differencing()
    print(differencing_line(results["differencing"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

