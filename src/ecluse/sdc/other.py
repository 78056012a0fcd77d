"""Readers of the other formats: free text, notebooks, netCDF / Zarr arrays."""

from __future__ import annotations

import ast
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analyze import MAX_LOCATIONS
from .carriers import (
    Ctx,
    _b64,
    _runs,
    check_bytes,
    judge_image_text,
    judge_json,
    judge_text_tables,
    judge_value,
    text_checks,
)
from .detect import (
    ENTITY,
    ENTITY_PLURAL,
    name_kind,
    text_residual_df,
    tokens,
    value_identifier_kind,
)
from .readers import _html_outside_tables, html_tables
from .rules import finding
from .table import from_frame, grid_to_table

#: bytes of a plain-text file scanned for identifiers
TEXT_SCAN_BYTES = 16 * 1024 * 1024
#: array elements of one netCDF/Zarr variable checked cell by cell
MAX_ARRAY_CELLS = 200_000_000

_PERSON_DIMS = (ENTITY | ENTITY_PLURAL) - {"deaths", "deces", "events", "evenements", "births",
                                            "naissances", "obs", "observations", "nobs"}


# ----------------------------------------------------------------- text


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
            sub = ctx.sub(ctx.base)
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


#: notebook metadata every Jupyter front end writes; the rest is judged
_NB_METADATA_KNOWN = {"kernelspec", "language_info", "jupytext", "vscode", "toc", "colab",
                      "orig_nbformat", "title", "authors", "interpreter"}
_CELL_KEYS = {"cell_type", "source", "outputs", "metadata", "attachments", "execution_count",
              "id"}
_OUTPUT_KEYS = {"output_type", "data", "metadata", "execution_count", "text", "name", "ename",
                "evalue", "traceback", "transient"}
#: output MIME types read as text or tables
_TEXT_MIMES = {"text/plain", "text/html", "text/markdown", "text/latex", "application/json",
               "application/vnd.dataresource+json"}


def read_notebook(path: Path, ctx: Ctx) -> None:
    with open(path, "rb") as fh:
        nb = json.load(fh)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a Jupyter notebook: no list of cells")
    n_out = n_text = n_img = 0
    others: set[str] = set()
    md = nb.get("metadata")
    if isinstance(md, dict):
        rest = {k: v for k, v in md.items() if k not in _NB_METADATA_KNOWN}
        if rest:
            judge_value(rest, ctx, "notebook metadata")
    extra = {k: v for k, v in nb.items() if k not in ("cells", "metadata", "nbformat",
                                                      "nbformat_minor")}
    if extra:
        judge_value(extra, ctx, "notebook fields outside the format")
    for k, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            continue
        ctype = cell.get("cell_type")
        src = _src(cell.get("source"))
        cell_ctx = ctx.sub({**ctx.base, "cell_index": k})
        if ctype == "markdown" and re.search(r"\d", src):
            n_text += 1
            text_checks(src, ctx, cell_index=k)
            judge_value(src, cell_ctx, "Markdown", free_text=False)  # tables typed in
        elif ctype == "code":
            text_checks(src, ctx, cell_index=k)
            _code_literals(src, cell_ctx)
        elif src.strip():  # raw cells, and cell types outside the format
            n_text += 1
            text_checks(src, ctx, cell_index=k)
            judge_value(src, cell_ctx, f"{str(ctype)[:20]} cell", free_text=False)
        if cell.get("metadata"):
            judge_value(cell["metadata"], cell_ctx, "cell metadata")
        extra = {key: v for key, v in cell.items() if key not in _CELL_KEYS}
        if extra:
            judge_value(extra, cell_ctx, "cell fields outside the format")
        atts = cell.get("attachments")
        if isinstance(atts, dict):
            for name, bundle in atts.items():
                for mime, value in (bundle.items() if isinstance(bundle, dict) else [("", bundle)]):
                    sub = ctx.sub({**cell_ctx.base, "part": f"attachment {name!s:.60} ({mime})"})
                    data = _attachment_bytes(mime, value)
                    if data is None:
                        judge_value(value, sub, "value")
                    else:
                        check_bytes(data, sub)
                    cell_ctx.findings.extend(sub.findings)
                    cell_ctx.judged += sub.judged
        elif atts:
            judge_value(atts, cell_ctx, "attachments")
        for o, out in enumerate(cell.get("outputs") or []):
            if not isinstance(out, dict):
                continue
            n_out += 1
            where = {"cell_index": k, "output": o}
            out_ctx = ctx.sub({**ctx.base, **where})
            if out.get("metadata"):
                judge_value(out["metadata"], out_ctx, "output metadata")
            extra = {key: v for key, v in out.items() if key not in _OUTPUT_KEYS}
            if extra:
                judge_value(extra, out_ctx, "output fields outside the format")
            cell_ctx.findings.extend(out_ctx.findings)
            cell_ctx.judged += out_ctx.judged
            otype = out.get("output_type")
            if otype == "stream":
                text = _src(out.get("text"))
                text_checks(text, ctx, **where)
                _printed_tables(text, ctx, where)
                if text.strip():
                    n_text += 1
                continue
            if otype == "error":
                text_checks("\n".join([str(out.get("evalue") or "")]
                                       + [str(t) for t in out.get("traceback") or []]), ctx, **where)
                n_text += 1
                continue
            data = out.get("data") or {}
            if not isinstance(data, dict):
                judge_value(data, cell_ctx, "output data")
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
            if html.strip():
                _html_outside_tables(html, ctx, where)
            res = data.get("application/vnd.dataresource+json")
            if isinstance(res, dict) and isinstance(res.get("data"), list):
                # judged even beside an HTML table: the two need not hold the same rows
                ctx.judge(from_frame(pd.json_normalize(res["data"], max_level=1),
                                     base={**ctx.base, **where, "part": "dataresource"}))
                rest = {key: v for key, v in res.items() if key not in ("data", "schema")}
                if rest:
                    judge_value(rest, cell_ctx, "dataresource fields")
                tables = tables or [([], None)]
            elif res is not None:
                judge_value(res, cell_ctx, "dataresource")
            plain = _src(data.get("text/plain"))
            text_checks(plain, ctx, **where)
            if text_residual_df(plain + html):
                # a printed model summary states its residual df next to its coefficient table
                ctx.findings[mark:] = [f for f in ctx.findings[mark:]
                                       if f.rule != "regression-without-df"]
            judged = ctx.judged
            for mime, value in data.items():
                if mime in ("text/plain", "text/html", "application/vnd.dataresource+json"):
                    continue
                n_text += _other_output(mime, value, ctx, where, others)
            if ctx.judged > judged:
                tables = tables or [([], None)]  # a Markdown, LaTeX or JSON table was judged
            if not tables:
                _printed_tables(plain, ctx, where)
            if not tables and plain.strip() and not any(m.startswith("image/") for m in data):
                n_text += 1
        ctx.findings.extend(cell_ctx.findings)
        ctx.judged += cell_ctx.judged
    ctx.details.update(cells=len(nb["cells"]), outputs=n_out)
    if n_img:
        ctx.add(finding("unjudgeable-format", f"{n_img} plots or images in cell outputs must be "
                        "looked at", **ctx.base))
    if others:
        ctx.add(finding("unjudgeable-format", "cell outputs of types the checker does not render "
                        f"({', '.join(sorted(others)[:8])}) must be looked at", **ctx.base))
    if n_text:
        ctx.add(finding("free-text", f"{n_text} text outputs or Markdown cells with numbers must "
                        "be read", **ctx.base))
    if n_out == 0 and not ctx.findings:
        ctx.judged += 1  # code only: nothing computed is shown


#: literal lists and dicts in code with at least this many elements are judged as data
MIN_LITERAL_ITEMS = 20


def _code_literals(src: str, ctx: Ctx) -> None:
    """Data written into code: string literals (CSV, JSON, base64) and long literal
    lists or dicts of records. Row-level findings count; a literal table of
    ``MIN_LITERAL_ITEMS`` items or more goes to review; the rest is code."""
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        # IPython magics and shell escapes: judge the lines that are Python alone
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return
    sub = ctx.sub({**ctx.base, "part": "code literal"})
    skip: set[int] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            v = node.value
            if len(v) >= 64 and (isinstance(v, bytes) or "\n" in v.strip() or v.lstrip()[:1] in "{["
                                 or len(v) >= 256):
                judge_value(v, sub, f"line {node.lineno}", free_text=False)
        elif isinstance(node, ast.List | ast.Tuple | ast.Dict):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            if len(items) < MIN_LITERAL_ITEMS and not (
                    isinstance(node, ast.Dict) and any(
                        isinstance(v, ast.List | ast.Tuple) and len(v.elts) >= MIN_LITERAL_ITEMS
                        for v in node.values)):
                continue
            try:
                value = ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            skip.update(id(n) for n in ast.walk(node))
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, list):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            if isinstance(value, dict):
                value = {str(k): list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            tmp = ctx.sub({**sub.base, "part": f"code literal line {node.lineno}"})
            if judge_json(value, tmp, 0, free_text=False):
                # a literal table: numbers alone (colours, bands) are not taken for records,
                # but a person looks at any table written into code
                sub.findings.extend(f for f in tmp.findings if f.severity == "block"
                                    and "without any label" not in f.message)
                ctx.add(finding("ambiguous-layout", f"code writes a literal table of "
                                f"{len(items)} items: a person must look", **tmp.base))
            else:
                sub.findings.extend(f for f in tmp.findings if f.severity == "block")
    ctx.findings.extend(f for f in sub.findings if f.severity == "block")


def _attachment_bytes(mime: str, value: Any) -> bytes | None:
    if isinstance(value, list):
        value = "".join(str(v) for v in value)
    if not isinstance(value, str):
        return None
    data = _b64(value.strip())  # nbformat stores attachments in base64
    if data is None and (mime.startswith("text/") or "json" in mime or mime.endswith("+xml")):
        return value.encode("utf-8")
    return data


def _printed_tables(text: str, ctx: Ctx, where: dict[str, Any]) -> None:
    """Tables printed as text (``print(df)``): records there block."""
    if text.count("\n") < 2:
        return
    sub = ctx.sub({**ctx.base, **where, "part": "printed table"})
    judge_text_tables(text, sub)
    # the text itself is reviewed anyway; what counts here is records or identifiers
    ctx.findings.extend(f for f in sub.findings if f.severity in ("block", "fail"))


def _other_output(mime: str, value: Any, ctx: Ctx, where: dict[str, Any],
                  others: set[str]) -> int:
    """Judge one output of a MIME type other than text/plain and text/html; returns 1
    when it is text a person must read."""
    sub = ctx.sub({**ctx.base, **where, "part": mime[:80]})
    text = _src(value) if isinstance(value, str | list) and not (
        isinstance(value, list) and any(not isinstance(v, str) for v in value)) else None
    is_text = 0
    if mime.startswith("image/") or mime == "application/pdf":
        if text is not None:
            kind = {"image/png": "PNG image", "image/svg+xml": "SVG image",
                    "application/pdf": "pdf"}.get(mime)
            data = text.encode() if mime == "image/svg+xml" else _b64(text)
            if kind and data:
                with tempfile.TemporaryDirectory(prefix="ecluse-out-") as tmp:
                    p = Path(tmp) / "image"
                    p.write_bytes(data)
                    try:
                        judge_image_text(p, kind, sub)
                    except Exception as e:  # noqa: BLE001 - the image is reviewed anyway
                        sub.add(finding("reader-error", f"cannot read the text of {mime}: "
                                        f"{type(e).__name__}", **sub.base))
    elif mime == "text/markdown" and text is not None:
        text_checks(text, sub)
        judge_text_tables(text, sub)
        is_text = int(not _only_table_lines(text, "|"))
    elif mime == "text/latex" and text is not None:
        text_checks(text, sub)
        rows = _latex_rows(text)
        if rows:
            for blk in _runs(rows, 1):
                t = grid_to_table(blk, base=dict(sub.base))
                if t is not None and len(t.body):
                    sub.judge(t)
        is_text = int(not rows or bool(re.sub(r"\\begin\{tabular\}.*?\\end\{tabular\}", "",
                                              text, flags=re.S).strip(" \n$")))
    elif mime == "application/json" or mime.endswith("+json") or mime.endswith("/json"):
        doc = value
        if isinstance(value, str | list) and text is not None:
            try:
                doc = json.loads(text)
            except ValueError:
                doc = text
        if mime not in ("application/json",):
            others.add(mime)
        found = judge_json(doc, sub, free_text=False) if isinstance(doc, dict | list) else 0
        if not isinstance(doc, dict | list):
            judge_value(doc, sub, "value", free_text=False)
        is_text = int(mime == "application/json" and not found)
    else:
        others.add(mime)
        judge_value(text if text is not None else value, sub, "value", free_text=False)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged
    return is_text


def _only_table_lines(text: str, mark: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and all(mark in ln for ln in lines)


def _latex_rows(text: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for body in re.findall(r"\\begin\{tabular\*?\}(?:\{[^}]*\})+(.*?)\\end\{tabular\*?\}",
                           text, flags=re.S):
        for line in re.split(r"\\\\", body):
            line = re.sub(r"\\(?:hline|toprule|midrule|bottomrule|cline\{[^}]*\})", "", line)
            line = re.sub(r"\\(?:textbf|textit|emph|multicolumn\{[^}]*\}\{[^}]*\})\{([^}]*)\}",
                          r"\1", line)
            if not line.strip():
                continue
            rows.append([c.strip().replace("\\_", "_").replace("\\%", "%") for c in line.split("&")])
    return rows


# ----------------------------------------------------------------- netCDF / Zarr


def read_xarray(path: Path, fmt: str, detail: str, ctx: Ctx) -> None:
    import xarray as xr  # deferred: xarray, only for netCDF and Zarr

    if fmt == "zarr" and path.is_dir():
        ds = xr.open_zarr(str(path), consolidated=None, chunks=None)
    elif fmt == "zarr":
        import zarr  # deferred: zarr, only for zipped Zarr stores

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
    # attributes of the dataset and of each variable: tables, base64 files and
    # identifiers hidden there are judged (ordinary text such as "history" is not)
    for owner, attrs in [("dataset", ds.attrs)] + [(str(v), ds[v].attrs) for v in ds.variables]:
        for key, value in attrs.items():
            if isinstance(value, np.ndarray):
                if value.dtype.kind not in "OSU" and value.size < 1000:
                    continue
                value = value.tolist()
            if isinstance(value, str | bytes | list | dict):
                judge_value(value, ctx, f"attribute {key!s:.60} of {owner}", free_text=False)
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
