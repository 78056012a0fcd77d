"""Readers of the other formats: free text, notebooks, netCDF / Zarr arrays."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analyze import MAX_LOCATIONS
from .detect import ENTITY, ENTITY_PLURAL, name_kind, text_identifiers, text_residual_df, tokens
from .readers import Ctx, html_tables
from .rules import finding
from .table import from_frame, grid_to_table

#: bytes of a plain-text file scanned for identifiers
TEXT_SCAN_BYTES = 16 * 1024 * 1024
#: array elements of one netCDF/Zarr variable checked cell by cell
MAX_ARRAY_CELLS = 200_000_000

_PERSON_DIMS = (ENTITY | ENTITY_PLURAL) - {"deaths", "deces", "events", "evenements", "births",
                                            "naissances", "obs", "observations", "nobs"}


# ----------------------------------------------------------------- text


def text_checks(text: str, ctx: Ctx, **where: Any) -> None:
    """Identifiers and regression degrees of freedom quoted in free text."""
    loc = {**ctx.base, **where}
    ids = text_identifiers(text)
    if ids:
        what = ", ".join(f"{n} {label}" for label, n in ids.items())
        ctx.add(finding("identifier-value", f"text quotes identifier-shaped values: {what}", **loc))
    for df in text_residual_df(text):
        if df < ctx.policy.min_residual_df:
            ctx.add(finding("low-residual-df", f"regression printout with {df} residual degrees "
                            f"of freedom (minimum {ctx.policy.min_residual_df})", **loc))
    m = re.search(r"\[([\d,]+) rows x (\d+) columns\]", text)
    if m:
        rows = int(m.group(1).replace(",", ""))
        if rows > ctx.policy.max_rows_aggregate:
            ctx.add(finding("row-level", f"printed data frame of {rows} rows: more rows than an "
                            f"aggregate may have ({ctx.policy.max_rows_aggregate})", **loc))


def read_text(path: Path, encoding: str, ctx: Ctx, detail: str = "plain text") -> None:
    size = path.stat().st_size
    enc = encoding if encoding in ("utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16") else "utf-8"
    scanned = 0
    carry = ""
    with open(path, encoding=enc, errors="replace") as fh:
        while scanned < TEXT_SCAN_BYTES:
            chunk = fh.read(4 * 1024 * 1024)
            if not chunk:
                break
            scanned += len(chunk)
            text = carry + chunk
            sub = Ctx(policy=ctx.policy, base=ctx.base)
            text_checks(text, sub)
            for f in sub.findings:
                if not any(g.rule == f.rule for g in ctx.findings):
                    ctx.add(f)
            carry = chunk[-200:]
    ctx.add(finding("free-text", f"{detail}: a person must read it", **ctx.base))
    if size > TEXT_SCAN_BYTES:
        ctx.add(finding("sampled", f"only the first {TEXT_SCAN_BYTES} bytes of {size} were "
                        "scanned for identifiers", **ctx.base))


# ----------------------------------------------------------------- notebooks


def _src(v: Any) -> str:
    return "".join(v) if isinstance(v, list) else str(v or "")


def read_notebook(path: Path, ctx: Ctx) -> None:
    with open(path, "rb") as fh:
        nb = json.load(fh)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a Jupyter notebook: no list of cells")
    n_out = n_text = n_img = 0
    for k, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            continue
        ctype = cell.get("cell_type")
        src = _src(cell.get("source"))
        if ctype == "markdown" and re.search(r"\d", src):
            n_text += 1
            text_checks(src, ctx, cell_index=k)
        elif ctype == "code":
            text_checks(src, ctx, cell_index=k)
        for o, out in enumerate(cell.get("outputs") or []):
            if not isinstance(out, dict):
                continue
            n_out += 1
            where = {"cell_index": k, "output": o}
            otype = out.get("output_type")
            if otype == "stream":
                text = _src(out.get("text"))
                text_checks(text, ctx, **where)
                if text.strip():
                    n_text += 1
                continue
            if otype == "error":
                text_checks("\n".join(out.get("traceback") or []), ctx, **where)
                n_text += 1
                continue
            data = out.get("data") or {}
            if not isinstance(data, dict):
                continue
            if any(m.startswith("image/") or m in ("application/pdf",) for m in data):
                n_img += 1
            html = _src(data.get("text/html"))
            tables = html_tables(html) if "<table" in html.lower() else []
            mark = len(ctx.findings)
            for t_i, (rows, declared) in enumerate(tables):
                t = grid_to_table(rows, base={**ctx.base, **where, "table": t_i + 1},
                                  declared_rows=declared)
                if t is not None:
                    ctx.judge(t)
            res = data.get("application/vnd.dataresource+json")
            if isinstance(res, dict) and isinstance(res.get("data"), list) and not tables:
                ctx.judge(from_frame(pd.json_normalize(res["data"], max_level=1),
                                     base={**ctx.base, **where}))
                tables = [([], None)]
            plain = _src(data.get("text/plain"))
            text_checks(plain, ctx, **where)
            if text_residual_df(plain + html):
                # a printed model summary states its residual df next to its coefficient table
                ctx.findings[mark:] = [f for f in ctx.findings[mark:]
                                       if f.rule != "regression-without-df"]
            if not tables and plain.strip() and not any(m.startswith("image/") for m in data):
                n_text += 1
    ctx.details.update(cells=len(nb["cells"]), outputs=n_out)
    if n_img:
        ctx.add(finding("unjudgeable-format", f"{n_img} plots or images in cell outputs must be "
                        "looked at", **ctx.base))
    if n_text:
        ctx.add(finding("free-text", f"{n_text} text outputs or Markdown cells with numbers must "
                        "be read", **ctx.base))
    if n_out == 0 and not ctx.findings:
        ctx.judged += 1  # code only: nothing computed is shown


# ----------------------------------------------------------------- netCDF / Zarr


def read_xarray(path: Path, fmt: str, detail: str, ctx: Ctx) -> None:
    import xarray as xr

    if fmt == "zarr" and path.is_dir():
        ds = xr.open_zarr(str(path), consolidated=None, chunks=None)
    elif fmt == "zarr":
        import zarr

        ds = xr.open_zarr(zarr.storage.ZipStore(str(path), mode="r"), consolidated=None,
                          chunks=None)
    else:
        if "classic" in detail:
            ds = xr.open_dataset(path)  # needs scipy or netCDF4; a missing one is a reader error
        else:
            ds = xr.open_dataset(path, engine="h5netcdf")
    try:
        _check_dataset(ds, ctx)
    finally:
        ds.close()


def _person_dim(dim: str) -> bool:
    toks = tokens(dim)
    return any(t in _PERSON_DIMS for t in toks) or name_kind(dim) == "identifier"


def _check_dataset(ds: Any, ctx: Ctx) -> None:
    pol = ctx.policy
    ctx.details.update(dims={str(k): int(v) for k, v in ds.sizes.items()},
                       variables=[str(v) for v in ds.data_vars])
    for name in list(ds.variables):
        kind = name_kind(name)
        if kind == "identifier":
            ctx.add(finding("identifier-column", f"variable {name!r} is named like an identifier",
                            **{**ctx.base, "variable": str(name)}))
    for dim in ds.dims:
        if _person_dim(str(dim)):
            users = [str(v) for v in ds.data_vars if dim in ds[v].dims]
            ctx.add(finding("person-dimension", f"dimension {dim!r} ({ds.sizes[dim]} long) is per "
                            f"person; used by {', '.join(users[:5]) or 'coordinates only'}",
                            **{**ctx.base, "variable": ", ".join(users[:5]), "dimension": str(dim)}))
        if dim in ds.coords:
            vals = ds.coords[dim].values
            if vals.dtype.kind in "OUSi" and vals.size:
                from .detect import value_identifier_kind
                kind = value_identifier_kind(vals.ravel()[:2000].tolist())
                if kind:
                    ctx.add(finding("identifier-value", f"coordinate {dim!r} holds {kind}s",
                                    **{**ctx.base, "variable": str(dim)}))
    if any(f.severity == "block" for f in ctx.findings):
        ctx.judged += 1
        return
    counts = {}
    stats = []
    for v in ds.data_vars:
        da = ds[v]
        if da.size > MAX_ARRAY_CELLS:
            ctx.add(finding("file-too-large", f"variable {v!r} has {da.size} cells; not checked",
                            **{**ctx.base, "variable": str(v)}))
            continue
        k = name_kind(v)
        if da.dtype.kind in "iu" and k != "stat" or k == "count":
            counts[v] = da
        elif da.dtype.kind in "f":
            stats.append(v)
        else:
            ctx.add(finding("free-text", f"variable {v!r} of type {da.dtype} must be read",
                            **{**ctx.base, "variable": str(v)}))
    for v, da in counts.items():
        arr = np.asarray(da.values, dtype=float)
        _cells(ctx, "small-count", v, da, (arr > 0) & (arr < pol.threshold),
               f"count below the threshold {pol.threshold}", arr)
        if pol.zeros_disclosive:
            _cells(ctx, "zero-count", v, da, arr == 0, "zero count", arr)
        ctx.judged += 1
    for v in stats:
        da = ds[v]
        same = [c for c, cda in counts.items() if cda.dims == da.dims]
        if not same:
            ctx.add(finding("statistic-without-n", f"variable {v!r} has no count variable on the "
                            "same dimensions", **{**ctx.base, "variable": str(v)}))
            continue
        n = np.fmin.reduce([np.asarray(counts[c].values, dtype=float) for c in same])
        arr = np.asarray(da.values, dtype=float)
        _cells(ctx, "small-n-statistic", v, da, ~np.isnan(arr) & (n < pol.threshold),
               f"statistic on fewer units than {pol.threshold}", n)
        ctx.judged += 1


def _cells(ctx: Ctx, rule: str, name: Any, da: Any, mask: np.ndarray, msg: str,
           arr: np.ndarray) -> None:
    idx = np.argwhere(mask)
    for pos in idx[:MAX_LOCATIONS]:
        index = {}
        for d, p in zip(da.dims, pos, strict=False):
            coord = da[d].values[p] if d in da.coords else p
            index[str(d)] = coord.item() if hasattr(coord, "item") else coord
            if not isinstance(index[str(d)], int | float | str):
                index[str(d)] = str(index[str(d)])
        val = arr[tuple(pos)]
        ctx.add(finding(rule, f"{msg} (value {val:g})",
                        **{**ctx.base, "variable": str(name), "index": index}))
    if len(idx) > MAX_LOCATIONS:
        ctx.add(finding(rule, f"… and {len(idx) - MAX_LOCATIONS} more cells of {name!r}",
                        **{**ctx.base, "variable": str(name)}))
