"""The project's data catalogue: what ``/data`` holds, as structure only, never values.

Each dataset of the project is mounted read-only at ``/data/<name>``; its
description comes from the workspace environment (``ECLUSE_DATASETS``, a JSON
list of ``{"name", "description"}`` the spawner sets from ``projects.yaml``).
:func:`catalogue` walks each dataset folder and describes what it finds:

* **tables** — a Parquet file, or a folder of Parquet parts (one table): the
  footer's ``num_rows`` and Arrow schema, **never its column statistics**
  (min/max, null and distinct counts are values in disguise); a CSV/TSV file:
  its header, the type of each column (pandas' inference on the first rows,
  only the type name is kept) and the number of records;
* **arrays** — a Zarr store (v2 ``.zarray``/``.zattrs`` or v3 ``zarr.json``):
  each array's dimension names, shape and dtype, from the JSON metadata only
  (no chunk is read, no attribute is copied: attributes may hold anything);
  a netCDF file: the same, through xarray without loading a variable.

What it returns is all a researcher needs to start writing code, and nothing
an output checker would need to review: no cell, no statistic, no attribute,
no coordinate value. Everything is computed in the workspace, as the user, on
the read-only mount; the answer is cached per file (path, size, mtime).

This module imports no Écluse platform code (the extension must not).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: where the project's datasets are mounted in a workspace
DATA_ROOT = "/data"
#: environment variable with the datasets' names and descriptions (JSON)
ENV_DATASETS = "ECLUSE_DATASETS"

#: bounds of a walk: files listed per dataset, folder depth
MAX_ENTRIES = 200
MAX_DEPTH = 4
#: rows pandas looks at to name a CSV column's type
TYPE_SAMPLE_ROWS = 1000

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


@dataclass
class Column:
    name: str
    type: str


@dataclass
class TableInfo:
    path: str  # relative to /data
    format: str  # parquet | csv | tsv
    rows: int | None = None
    columns: list[Column] = field(default_factory=list)
    parts: int = 1
    error: str | None = None
    header: bool = True  # CSV/TSV: False when the first line is data (columns numbered)


@dataclass
class ArrayInfo:
    name: str
    dims: list[str]
    shape: list[int]
    dtype: str


@dataclass
class ArrayStore:
    path: str
    format: str  # zarr | netcdf
    arrays: list[ArrayInfo] = field(default_factory=list)
    error: str | None = None


@dataclass
class DatasetInfo:
    name: str
    description: str
    path: str
    tables: list[TableInfo] = field(default_factory=list)
    arrays: list[ArrayStore] = field(default_factory=list)
    other_files: int = 0
    truncated: bool = False
    error: str | None = None


def declared_datasets(environ: dict[str, str] | None = None,
                      root: str = DATA_ROOT) -> list[dict[str, str]]:
    """The project's datasets: names and descriptions from ``ECLUSE_DATASETS``, else the
    folders under ``root`` (no description)."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_DATASETS, "")
    if raw:
        try:
            items = json.loads(raw)
            out = [{"name": str(d["name"]), "description": str(d.get("description") or "")}
                   for d in items if isinstance(d, dict) and d.get("name")]
            return sorted(out, key=lambda d: d["name"])
        except (ValueError, TypeError, KeyError):
            pass
    try:
        names = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    except OSError:
        names = []
    return [{"name": n, "description": ""} for n in names]


# ------------------------------------------------------------------ readers

def _arrow_type(t: Any) -> str:
    return str(t)


def parquet_table(files: list[Path], rel: str) -> TableInfo:
    """Rows and schema from the footers of ``files`` (parts of one table)."""
    import pyarrow.parquet as pq

    info = TableInfo(path=rel, format="parquet", parts=len(files))
    rows = 0
    for i, f in enumerate(files):
        # ParquetFile reads the footer only; .metadata.num_rows and .schema_arrow are
        # all we touch (row_group(i).column(j).statistics is never read)
        pf = pq.ParquetFile(f)
        try:
            rows += pf.metadata.num_rows
            if i == 0:
                info.columns = [Column(fld.name, _arrow_type(fld.type))
                                for fld in pf.schema_arrow]
        finally:
            pf.close()
    info.rows = rows
    return info


def csv_table(path: Path, rel: str, sep: str, light: bool = False) -> TableInfo:
    """Header, column types (names of pandas' inferred dtypes) and the record count;
    ``light``: no record count (the types still come from the first rows)."""
    import pandas as pd

    info = TableInfo(path=rel, format="tsv" if sep == "\t" else "csv")
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        rows = None if light else sum(1 for _ in reader)
    if header is None:
        info.rows = 0
        return info
    if not has_header(path, sep):
        # the first line is data: its cells are values, never shown as column names
        sample = pd.read_csv(path, sep=sep, nrows=TYPE_SAMPLE_ROWS, header=None,
                             encoding_errors="replace")
        info.columns = [Column(f"column {i + 1}", str(t))
                        for i, t in enumerate(sample.dtypes.tolist())]
        info.header = False
        info.rows = None if rows is None else rows + 1
        return info
    sample = pd.read_csv(path, sep=sep, nrows=TYPE_SAMPLE_ROWS, encoding_errors="replace")
    types = {str(k): str(v) for k, v in sample.dtypes.items()}
    info.columns = [Column(str(h), types.get(str(h), "object")) for h in header]
    info.rows = rows  # None when light
    return info


def has_header(path: Path, sep: str) -> bool:
    """Whether the first line of a delimited file names its columns (Python's
    ``csv.Sniffer``: a header whose cells differ in type or length from the columns'
    values). Unsure is *no*: a first line of data would otherwise show its values as
    column names."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        sample = fh.read(64 * 1024)
    if "\n" in sample and not sample.endswith("\n"):
        sample = sample[:sample.rfind("\n") + 1]  # whole lines only
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:
        return False


def _zarr_v2(store: Path, rel: str) -> ArrayStore:
    out = ArrayStore(path=rel, format="zarr")
    for meta in sorted(store.rglob(".zarray")):
        arr = json.loads(meta.read_text())
        attrs_file = meta.with_name(".zattrs")
        dims: list[str] = []
        if attrs_file.exists():
            dims = [str(d) for d in json.loads(attrs_file.read_text()).get(
                "_ARRAY_DIMENSIONS", [])]
        name = meta.parent.relative_to(store).as_posix()
        out.arrays.append(ArrayInfo(name=name, dims=dims,
                                    shape=[int(n) for n in arr.get("shape", [])],
                                    dtype=_zarr_dtype(arr.get("dtype"))))
    return out


def _zarr_dtype(d: Any) -> str:
    try:
        import numpy as np

        return str(np.dtype(d))
    except (TypeError, ValueError):
        return str(d)


def _zarr_v3(store: Path, rel: str) -> ArrayStore:
    out = ArrayStore(path=rel, format="zarr")
    for meta in sorted(store.rglob("zarr.json")):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") != "array":
            continue
        dims = [str(d) for d in (doc.get("dimension_names") or [])]
        out.arrays.append(ArrayInfo(name=meta.parent.relative_to(store).as_posix(),
                                    dims=dims, shape=[int(n) for n in doc.get("shape", [])],
                                    dtype=str(doc.get("data_type"))))
    return out


def zarr_store(store: Path, rel: str) -> ArrayStore:
    if (store / "zarr.json").exists():
        return _zarr_v3(store, rel)
    return _zarr_v2(store, rel)


def netcdf_store(path: Path, rel: str) -> ArrayStore:
    """Dimensions, shapes and dtypes of a netCDF file's variables (nothing loaded)."""
    import xarray as xr

    out = ArrayStore(path=rel, format="netcdf")
    with xr.open_dataset(path, decode_times=False, decode_cf=False, cache=False) as ds:
        for name, var in sorted(ds.variables.items()):
            out.arrays.append(ArrayInfo(name=str(name), dims=[str(d) for d in var.dims],
                                        shape=[int(n) for n in var.shape],
                                        dtype=str(var.dtype)))
    return out


def _is_zarr(d: Path) -> bool:
    return d.suffix == ".zarr" or any((d / m).exists() for m in (".zgroup", ".zarray",
                                                                   "zarr.json"))


def _error(kind: str, e: BaseException) -> str:
    # the exception's class only: a reader's message may quote the file's content
    return f"could not read this {kind} file ({type(e).__name__})"


# ------------------------------------------------------------------ the walk

_cache: dict[tuple[str, int, int, bool], Any] = {}


def _cached(path: Path, make: Any, light: bool = False) -> Any:
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, light)
    except OSError:
        return make()
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def describe_dataset(name: str, description: str = "", root: str = DATA_ROOT,
                     light: bool = False) -> DatasetInfo:
    """What ``root/name`` holds; ``light``: no CSV record counts (a big file's take long)."""
    base = Path(root) / name
    info = DatasetInfo(name=name, description=description, path=f"{root}/{name}")
    if not base.is_dir():
        info.error = "not mounted in this workspace"
        return info
    seen = 0

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    def walk(d: Path, depth: int) -> None:
        nonlocal seen
        try:
            entries = sorted(d.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        parquet_parts = [p for p in entries if p.is_file() and p.suffix == ".parquet"]
        others = [p for p in entries if p not in parquet_parts]
        if parquet_parts and d != base and not any(p.is_file() for p in others):
            # a folder of Parquet parts is one table
            seen += 1
            info.tables.append(_read_table(parquet_parts, rel(d)))
            parquet_parts = []
        for p in parquet_parts:
            seen += 1
            info.tables.append(_read_table([p], rel(p)))
        for p in others:
            if seen >= MAX_ENTRIES:
                info.truncated = True
                return
            if p.name.startswith("."):
                continue
            if p.is_dir():
                if _is_zarr(p):
                    seen += 1
                    info.arrays.append(_read_store(p, rel(p), "zarr"))
                elif depth < MAX_DEPTH:
                    walk(p, depth + 1)
                else:
                    info.truncated = True
            elif p.suffix.lower() in CSV_SUFFIXES:
                seen += 1
                info.tables.append(_read_table([p], rel(p), CSV_SUFFIXES[p.suffix.lower()],
                                               light))
            elif p.suffix.lower() in NETCDF_SUFFIXES:
                seen += 1
                info.arrays.append(_read_store(p, rel(p), "netcdf"))
            else:
                info.other_files += 1

    walk(base, 0)
    return info


def _read_table(files: list[Path], rel: str, sep: str | None = None,
                light: bool = False) -> TableInfo:
    kind = "parquet" if sep is None else ("tsv" if sep == "\t" else "csv")
    try:
        if sep is None:
            return _cached(files[0] if len(files) == 1 else files[0].parent,
                           lambda: parquet_table(files, rel))
        return _cached(files[0], lambda: csv_table(files[0], rel, sep, light), light)
    except Exception as e:  # noqa: BLE001 — one unreadable file must not hide the others
        return TableInfo(path=rel, format=kind, parts=len(files), error=_error(kind, e))


def _read_store(p: Path, rel: str, kind: str) -> ArrayStore:
    try:
        if kind == "zarr":
            return _cached(p, lambda: zarr_store(p, rel))
        return _cached(p, lambda: netcdf_store(p, rel))
    except Exception as e:  # noqa: BLE001
        return ArrayStore(path=rel, format=kind, error=_error(kind, e))


def catalogue(environ: dict[str, str] | None = None, root: str = DATA_ROOT) -> dict[str, Any]:
    """The catalogue as JSON-able data: ``{"datasets": [DatasetInfo...]}``."""
    return {"datasets": [asdict(describe_dataset(d["name"], d["description"], root))
                         for d in declared_datasets(environ, root)]}
