"""Starter notebooks: on a user's first start of a project's workspace, examples for the
project's datasets appear in their home (``~/starter-notebooks``).

Generated (nbformat) from what ``/data`` holds (:mod:`.catalogue`, structure only):

* ``01-pandas.ipynb`` — each table read with pandas (Parquet, CSV);
* ``02-dask.ipynb`` — the largest table with ``dask.dataframe`` on a cluster of the
  project's dask-gateway, as the workspace has it (a ``LocalCluster`` sized from
  the quota where there is no gateway), the workers' progress shown
  (:mod:`.daskcluster`);
* ``03-xarray.ipynb`` — only where the project has Zarr or netCDF data;
* ``04-export.ipynb`` — an aggregate written to ``/project/outputs``, the
  threshold applied, then how to take it out: *Check for export* and
  *Request export…* (the airlock).

Seeded **by the workspace server as the user** (:func:`seed_home`, from the
server extension's start), so every file is the user's own on every sandbox
backend, and nothing running as root writes into a folder the user controls.
A user's file is never overwritten (``O_CREAT | O_EXCL``, no symlink
followed), and a notebook is offered once: the names already offered are kept
in ``~/.local/share/ecluse/starter.json``, so a second start leaves edits —
and deletions — alone; a dataset added to the project later gets its
notebooks at the next start.

This module imports no Écluse platform code (the extension must not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .catalogue import DATA_ROOT, DatasetInfo, TableInfo, declared_datasets, describe_dataset

FOLDER = "starter-notebooks"
MARKER = ".local/share/ecluse/starter.json"
#: tables shown per notebook
MAX_TABLES = 6


def _nb(cells: list[Any]) -> Any:
    import nbformat.v4 as v4

    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _md(text: str) -> Any:
    import nbformat.v4 as v4

    return v4.new_markdown_cell(text)


def _code(text: str, parameters: bool = False) -> Any:
    import nbformat.v4 as v4

    cell = v4.new_code_cell(text)
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


def _table_path(t: TableInfo, root: str) -> str:
    return f"{root}/{t.path}"


def _reader(t: TableInfo, root: str, lib: str = "pd") -> str:
    path = _table_path(t, root)
    if t.format == "parquet":
        return f"{lib}.read_parquet({path!r})"
    sep = "\\t" if t.format == "tsv" else ","
    return f"{lib}.read_csv({path!r}, sep={sep!r})"


def _tables(datasets: list[DatasetInfo]) -> list[TableInfo]:
    return [t for d in datasets for t in d.tables if not t.error][:MAX_TABLES]


def _header(title: str, project: str, datasets: list[DatasetInfo]) -> Any:
    lines = [f"# {title}", "", f"Project **{project}**. Its datasets, read-only under "
             f"`{DATA_ROOT}` (the *Data* panel on the left lists their columns and sizes):", ""]
    for d in datasets:
        lines.append(f"* `{d.path}` — {d.description or d.name}")
    lines += ["", "This notebook was generated for you at your first start; edit it freely "
              "(it is yours, it will not be replaced)."]
    return _md("\n".join(lines))


def pandas_notebook(project: str, datasets: list[DatasetInfo], root: str) -> Any:
    cells = [_header("Reading the project's tables with pandas", project, datasets),
             _code("import pandas as pd\n\npd.set_option(\"display.max_columns\", 30)")]
    for t in _tables(datasets):
        var = "df"
        cells.append(_md(f"## `{t.path}`\n\n{t.format.upper()}"
                         + (f", {t.parts} parts (one table)" if t.parts > 1 else "")
                         + ". Read only the columns you need on big tables: "
                         + ("`columns=[...]`" if t.format == "parquet" else "`usecols=[...]`")
                         + "."))
        cells.append(_code(f"{var} = {_reader(t, root)}\n"
                           f"print({var}.shape)\n{var}.dtypes"))
        cells.append(_code(f"{var}.head()"))
    if not _tables(datasets):
        cells.append(_md("No table (Parquet, CSV) was found in the datasets."))
    return _nb(cells)


def dask_notebook(project: str, datasets: list[DatasetInfo], root: str) -> Any:
    tables = _tables(datasets)
    cells = [
        _header("Dask on the project's cluster", project, datasets),
        _md("A Dask cluster of the project's **dask-gateway** runs in a sandbox of this "
            "project, next to your workspace, with the project's quota of workers "
            "(without a gateway, a local cluster sized from the quota). Workers take a "
            "few seconds each to start: the line below shows how many are ready."),
        _code("workers = None     # None: the project's quota of workers\n"
              "timeout = 300      # seconds to wait for them", parameters=True),
        _code("from ecluse_workspace.daskcluster import start_cluster\n\n"
              "client, cluster = start_cluster(workers, timeout=timeout)\n"
              "print(type(cluster).__name__, \"with\", len(client.nthreads()), \"workers\")\n"
              "client"),
    ]
    if tables:
        t = max(tables, key=lambda t: (t.format == "parquet", t.parts))
        cells += [
            _md(f"## `{t.path}` with dask.dataframe\n\nLazy: nothing is read until "
                "`.compute()` (or `len`, `.head()`)."),
            _code("import dask.dataframe as dd\n\n"
                  f"ddf = {_reader(t, root, 'dd')}\nddf"),
            _code("print(\"rows:\", len(ddf))\nddf.dtypes"),
        ]
    else:
        cells += [_code("import dask.array as da\n\n"
                        "x = da.ones((2000, 2000), chunks=500)\nfloat(x.sum().compute())")]
    cells += [_md("## Close the cluster\n\nIt holds the project's workers until closed "
                  "(or until it has been idle for a while)."),
              _code("client.close()\ncluster.close()")]
    return _nb(cells)


def xarray_notebook(project: str, datasets: list[DatasetInfo], root: str) -> Any | None:
    stores = [s for d in datasets for s in d.arrays if not s.error and s.arrays]
    if not stores:
        return None
    cells = [_header("Arrays with xarray (Zarr, netCDF)", project, datasets),
             _code("import xarray as xr")]
    for s in stores[:MAX_TABLES]:
        path = f"{root}/{s.path}"
        if s.format == "zarr":
            opener = f"xr.open_zarr({path!r}, consolidated=False)"
        else:
            opener = f"xr.open_dataset({path!r}, chunks={{}})"
        cells.append(_md(f"## `{s.path}`\n\nOpened lazily (Dask arrays): nothing is read "
                         "until you compute."))
        cells.append(_code(f"ds = {opener}\nds"))
        data_vars = [a for a in s.arrays if len(a.dims) >= 2] or s.arrays
        var = data_vars[0].name.split("/")[-1]
        cells.append(_code(f"ds[{var!r}].mean().compute()"))
    return _nb(cells)


def _group_column(t: TableInfo) -> str | None:
    for c in t.columns:
        low = c.name.lower()
        if any(k in low for k in ("id", "date", "time", "name", "birth")):
            continue
        if c.type in ("object", "str", "string", "large_string", "category", "bool") or \
                c.type.startswith("dictionary"):
            return c.name
    return None


def export_notebook(project: str, datasets: list[DatasetInfo], root: str) -> Any:
    tables = _tables(datasets)
    cells = [
        _header("Taking a result out: the airlock", project, datasets),
        _md("Nothing leaves the workspace except through the **airlock**: you request the "
            "export of a file, automatic disclosure checks run, and two output checkers "
            "review it. Export **aggregates** (counts, means over groups), never rows.\n\n"
            "1. write the result under `/project/outputs` (or your home);\n"
            "2. in the file browser, right-click it → **Check for export**: the same "
            "checks as the airlock, nothing is kept;\n"
            "3. right-click → **Request export…**, with a title and a justification "
            "(what the file is, how it was suppressed). The *Airlock* panel follows "
            "your requests."),
        _code("output_dir = \"/project/outputs\"\n"
              "threshold = 11    # the project's smallest publishable count",
              parameters=True),
        _code("import os\n\nimport pandas as pd\n\nos.makedirs(output_dir, exist_ok=True)"),
    ]
    group = None
    t = None
    for cand in tables:
        group = _group_column(cand)
        if group:
            t = cand
            break
    if t is not None and group is not None:
        read = (f"pd.read_parquet({_table_path(t, root)!r}, columns=[{group!r}])"
                if t.format == "parquet" else
                f"{_reader(t, root)[:-1]}, usecols=[{group!r}])")
        cells += [
            _md(f"## Counts of `{t.path}` by `{group}`, small cells suppressed"),
            _code(f"df = {read}\n"
                  f"table = df.groupby({group!r}, observed=True).size()"
                  ".rename(\"n\").reset_index()\n"
                  "table = table[table.n >= threshold]       # suppress small counts\n"
                  "path = os.path.join(output_dir, \"starter_counts.csv\")\n"
                  "table.to_csv(path, index=False)\ntable"),
        ]
    else:
        cells += [_md("## A count per table"),
                  _code("rows = {\n" + "".join(
                      f"    {x.path!r}: len({_reader(x, root)}),\n" for x in tables)
                      + "}\ntable = pd.DataFrame({\"table\": list(rows), \"n\": list("
                      "rows.values())})\ntable = table[table.n >= threshold]\n"
                      "path = os.path.join(output_dir, \"starter_counts.csv\")\n"
                      "table.to_csv(path, index=False)\ntable")]
    cells += [_md("Now right-click `starter_counts.csv` in `/project/outputs` → "
                  "**Check for export**, then **Request export…**.")]
    return _nb(cells)


def starter_notebooks(project: str, datasets: list[DatasetInfo],
                      root: str = DATA_ROOT) -> dict[str, Any]:
    """The project's starter notebooks by file name (``03-xarray`` only with arrays)."""
    out = {"01-pandas.ipynb": pandas_notebook(project, datasets, root),
           "02-dask.ipynb": dask_notebook(project, datasets, root)}
    xr_nb = xarray_notebook(project, datasets, root)
    if xr_nb is not None:
        out["03-xarray.ipynb"] = xr_nb
    out["04-export.ipynb"] = export_notebook(project, datasets, root)
    return out


def _write_new(path: Path, text: str) -> bool:
    """Create ``path`` with ``text``; False (and nothing written) when it exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def seed_home(home: str | os.PathLike[str], project: str = "",
              environ: dict[str, str] | None = None, root: str = DATA_ROOT) -> list[str]:
    """Write the starter notebooks not yet offered to this user; the names written."""
    import nbformat

    home = Path(home)
    env = os.environ if environ is None else environ
    project = project or env.get("ECLUSE_PROJECT", "")
    marker = home / MARKER
    try:
        offered = set(json.loads(marker.read_text()).get("offered", []))
    except (OSError, ValueError, AttributeError):
        offered = set()
    datasets = [describe_dataset(d["name"], d["description"], root, light=True)
                for d in declared_datasets(env, root)]
    notebooks = starter_notebooks(project, datasets, root)
    todo = {name: nb for name, nb in notebooks.items() if name not in offered}
    if not todo:
        return []
    folder = home / FOLDER
    folder.mkdir(mode=0o755, exist_ok=True)
    written = []
    for name, nb in todo.items():
        if _write_new(folder / name, nbformat.writes(nb)):
            written.append(name)
        offered.add(name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"offered": sorted(offered)}) + "\n")
    os.replace(tmp, marker)
    return written
