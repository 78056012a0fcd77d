"""Previews for output checkers, rendered once when a file is checked.

Checkers never read a staged file's bytes: they review through the preview
:func:`render_preview` returns (a JSON-able dict stored with the file). A
``block`` file gets its findings and a *masked sample* only — at most
:data:`~ecluse.airlock.rules.BLOCK_SAMPLE_ROWS` rows with every
identifier-like column masked (:func:`masked_columns`) — and a ``block`` file
that is not a table gets no sample at all.

Reads at most ``max_rows`` rows of a CSV (``,`` ``;`` or tab, sniffed),
Parquet or Excel file, and marks the cells that the ``ecluse.sdc`` findings
point at. Locations are dicts (``{"row": 4, "column": "n", "cell": "B4",
"sheet": "S"}``) in spreadsheet terms: the header is row 1, the first data row
is row 2 (Parquet: the first data row is row 1), columns are names, 0-based
positions or letters. Never raises:
an unreadable file gives a preview with an ``error``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .imagepreview import ImagePreviewError, image_preview, is_image
from .rules import BLOCK_SAMPLE_ROWS

_A1 = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d{1,7})$")
TABLE_FORMATS = {"csv", "tsv", "parquet", "excel", "xlsx", "xls"}


@dataclass
class Preview:
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    flagged: set[tuple[int, int]] = field(default_factory=set)  # (data row 0-based, col 0-based)
    flagged_columns: set[int] = field(default_factory=set)
    sheet: str | None = None
    truncated: bool = False
    error: str | None = None
    #: the header's rows when it has more than one (``columns`` joins their parts)
    header: list[list[str]] = field(default_factory=list)
    #: lines of the file above the first data row (Parquet: 0)
    depth: int = 1

    def is_flagged(self, r: int, c: int) -> bool:
        return (r, c) in self.flagged or c in self.flagged_columns


def _letters_to_index(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def kind_of(name: str, fmt: str = "") -> str | None:
    fmt = (fmt or "").lower()
    suffix = Path(name).suffix.lower().lstrip(".")
    if fmt in ("csv", "tsv") or suffix in ("csv", "tsv", "txt") and fmt in ("", "csv"):
        return "csv"
    if fmt == "parquet" or suffix in ("parquet", "pq"):
        return "parquet"
    if fmt in ("excel", "xlsx") or suffix in ("xlsx", "xlsm"):
        return "excel"
    return None


def _read_csv(path: Path, max_rows: int) -> tuple[list[str], list[list[str]], bool]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        sample = fh.read(64 * 1024)
        fh.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(fh, dialect)
        header = next(reader, [])
        rows = []
        truncated = False
        for i, row in enumerate(reader):
            if i >= max_rows:
                truncated = True
                break
            rows.append(row)
    return [str(h) for h in header], rows, truncated


def _read_parquet(path: Path, max_rows: int) -> tuple[list[str], list[list[str]], bool]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    batch = next(pf.iter_batches(batch_size=max_rows + 1), None)
    if batch is None:
        return [str(n) for n in pf.schema_arrow.names], [], False
    table = batch.to_pydict()
    cols = list(table)
    n = min(batch.num_rows, max_rows)
    rows = [[_fmt(table[c][i]) for c in cols] for i in range(n)]
    return [str(c) for c in cols], rows, batch.num_rows > max_rows or pf.metadata.num_rows > n


def _read_excel(
    path: Path, max_rows: int, sheet: str | None
) -> tuple[list[str], list[list[str]], bool, str]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb[sheet] if sheet and sheet in wb.sheetnames else wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header = [_fmt(v) for v in next(it, ())]
        rows, truncated = [], False
        for i, row in enumerate(it):
            if i >= max_rows:
                truncated = True
                break
            rows.append([_fmt(v) for v in row])
        return header, rows, truncated, ws.title
    finally:
        wb.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _column_index(col: Any, columns: list[str]) -> int | None:
    if isinstance(col, bool):
        return None
    if isinstance(col, int):
        return col if 0 <= col < len(columns) else None
    if isinstance(col, str):
        if col in columns:
            return columns.index(col)
        if re.fullmatch(r"[A-Za-z]{1,3}", col) and col.upper() == col:
            idx = _letters_to_index(col)
            return idx if idx < len(columns) else None
    return None


def _mark(preview: Preview, findings: list[dict[str, Any]], header_rows: int = 1) -> None:
    """Mark flagged cells. ``row`` counts lines of the file as ``ecluse.sdc`` does:
    the header is row 1 in CSV and Excel; Parquet has no header row."""
    for f in findings:
        loc = f.get("location") or {}
        if not isinstance(loc, dict):
            continue
        if preview.sheet and loc.get("sheet") not in (None, preview.sheet):
            continue
        row = col = None
        m = _A1.match(str(loc.get("cell") or ""))
        if m:
            col = _letters_to_index(m.group(1))
            # A1 notation: the header is spreadsheet rows 1 to header_rows
            row = int(m.group(2)) - 1 - max(header_rows, 1)
        else:
            if isinstance(loc.get("row"), int):
                row = loc["row"] - 1 - header_rows
            if "column" in loc:
                col = _column_index(loc["column"], preview.columns)
        if col is not None and row is not None and row >= 0:
            preview.flagged.add((row, col))
        elif col is not None and row is None:
            preview.flagged_columns.add(col)


def table_preview(
    path: Path, name: str, fmt: str, findings: list[dict[str, Any]], max_rows: int = 200
) -> Preview | None:
    """A preview of a table file, or None for formats that are not tables."""
    kind = kind_of(name, fmt)
    if kind is None:
        return None
    preview = Preview()
    try:
        if kind == "csv":
            preview.columns, preview.rows, preview.truncated = _read_csv(path, max_rows)
        elif kind == "parquet":
            preview.columns, preview.rows, preview.truncated = _read_parquet(path, max_rows)
        else:
            sheets = [
                (f.get("location") or {}).get("sheet")
                for f in findings
                if isinstance(f.get("location"), dict)
            ]
            sheet = next((s for s in sheets if s), None)
            cols, rows, trunc, title = _read_excel(path, max_rows, sheet)
            preview.columns, preview.rows, preview.truncated, preview.sheet = cols, rows, trunc, title
    except Exception as e:  # never let a preview break the review page
        preview.error = f"cannot preview this file ({type(e).__name__})"
        return preview
    preview.depth = 0 if kind == "parquet" else _split_header(preview)
    _mark(preview, findings, header_rows=preview.depth)
    return preview


#: header rows recognised at most (as ``ecluse.sdc.table`` does)
MAX_HEADER_ROWS = 5


def header_depth(columns: list[str], rows: list[list[str]]) -> int:
    """How many leading lines of a table label its columns, as the disclosure checks
    read them (:func:`ecluse.sdc.table.grid_to_table`): 2 or more for a pandas table
    with MultiIndex columns (``df.groupby([a, b]).agg(...)`` written with ``to_csv``),
    1 otherwise."""
    from ..sdc.table import grid_to_table  # deferred: pandas, loaded with previews

    grid = [list(columns), *[list(r) for r in rows[:60]]]
    if len(grid) < 3:
        return 1
    try:
        t = grid_to_table(grid)
    except Exception:  # noqa: BLE001 - a plain header then
        return 1
    if t is None or not t.rownums:
        return 1
    return max(1, min(t.rownums[0] - 1, MAX_HEADER_ROWS, len(grid) - 1))


def _split_header(pv: Preview) -> int:
    """Move the header's further rows out of the data rows (``pv.header``); ``columns``
    become the parts of each column's label joined (a spanning label carried right)."""
    depth = header_depth(pv.columns, pv.rows)
    if depth <= 1:
        return 1
    width = max([len(pv.columns), *(len(r) for r in pv.rows[:depth - 1])])
    header = [list(pv.columns) + [""] * (width - len(pv.columns))]
    header += [list(r) + [""] * (width - len(r)) for r in pv.rows[:depth - 1]]
    pv.header = header
    pv.rows = pv.rows[depth - 1:]
    names = []
    for j in range(width):
        parts = []
        for r, line in enumerate(header):
            v = str(line[j]).strip()
            if not v and r < depth - 1 and j > 0:
                # a blank cell right of a label in an upper row: that label spans it
                k = j - 1
                while k > 0 and not str(line[k]).strip():
                    k -= 1
                v = str(line[k]).strip() if any(str(x[j]).strip() for x in header[r + 1:]) \
                    else ""
            if v and v not in parts:
                parts.append(v)
        names.append(" / ".join(parts) if parts else f"column {j + 1}")
    pv.columns = names
    return depth


def header_spans(header: list[list[str]]) -> list[list[list[Any]]]:
    """The header rows as ``[text, colspan]`` cells: in every row but the last, a label
    repeated in adjacent columns (pandas) is one cell spanning them."""
    out = []
    for r, line in enumerate(header):
        cells: list[list[Any]] = []
        prev: tuple[str, ...] | None = None
        for j, v in enumerate(line):
            v = _cell(str(v))
            # the labels above and here: a span never crosses a group of an upper row
            key = tuple(str(up[j]) if j < len(up) else "" for up in header[:r + 1])
            if r < len(header) - 1 and cells and v and key == prev:
                cells[-1][1] += 1
            else:
                cells.append([v, 1])
            prev = key
        out.append(cells)
    return out


def text_excerpt(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit)
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").read()


# ---------------------------------------------------------------- stored previews

MASK = "\u25a0\u25a0\u25a0"  # what a masked cell shows
TEXT_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".log", ".tex")
#: rows read to decide which columns of a blocked table look like identifiers
MASK_SCAN_ROWS = 500
_ID_NAME_KINDS = {"identifier", "weak-id", "birth", "postcode"}
_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)?(?:[eE][+-]?\d+)?$")
_LONG_DIGITS = re.compile(r"\d{6,}")


def _value_looks_identifying(v: str) -> bool:
    """One cell: an identifier shape (NIR, UUID, hash, e-mail, hospital number,
    date, 6+ digits) or free text."""
    from ..sdc import detect  # deferred: pandas, loaded when a preview is rendered

    v = v.strip()
    if not v:
        return False
    if len(v) > 40 or len(v.split()) > 3:
        return True
    compact = v.replace(" ", "")
    for rx in (detect.UUID_RE, detect.HASH_RE, detect.EMAIL_RE, detect.NIR_RE,
               detect.HOSPNUM_RE, detect.DATE_RE, detect.UK_POSTCODE_RE):
        if rx.match(compact) or rx.match(v):
            return True
    return bool(_LONG_DIGITS.search(compact))


def masked_columns(columns: list[str], rows: list[list[str]],
                   findings: list[dict[str, Any]]) -> set[int]:
    """Columns of a blocked table to mask: named or shaped like identifiers,
    pointed at by a finding, or text whose values are all distinct (names, notes).

    Errs on masking: a column is shown only when nothing about it looks like
    it could single out a person.
    """
    from ..sdc import detect  # deferred: pandas, loaded when a preview is rendered

    out: set[int] = set()
    probe = Preview(columns=columns)
    _mark(probe, findings)
    out |= probe.flagged_columns | {c for _, c in probe.flagged}
    width = max([len(columns), *(len(r) for r in rows)], default=0)
    for j in range(width):
        name = columns[j] if j < len(columns) else ""
        if detect.name_kind(name) in _ID_NAME_KINDS:
            out.add(j)
            continue
        values = [r[j] for r in rows if j < len(r) and str(r[j]).strip()]
        if any(_value_looks_identifying(str(v)) for v in values):
            out.add(j)
            continue
        text = [v for v in values if not _NUMBER.match(str(v).strip())]
        if len(text) >= 2 and len(set(text)) == len(text):
            out.add(j)  # distinct words on every row: names, places, notes
    return out


#: a stored preview stays small: columns and characters per cell kept, and a
#: budget for the whole preview (rows are dropped from the end to fit)
PREVIEW_MAX_COLUMNS = 60
PREVIEW_MAX_CELL = 120
PREVIEW_MAX_BYTES = 512 * 1024


def _cell(v: str) -> str:
    return v if len(v) <= PREVIEW_MAX_CELL else v[:PREVIEW_MAX_CELL - 1] + "\u2026"


def _table_dict(pv: Preview) -> dict[str, Any]:
    return {
        "kind": "table",
        "columns": pv.columns,
        "rows": pv.rows,
        "flagged": sorted([r, c] for r, c in pv.flagged),
        "flagged_columns": sorted(pv.flagged_columns),
        "masked_columns": [],
        "sheet": pv.sheet,
        "truncated": pv.truncated,
        "header_rows": pv.depth,
        "header": header_spans([r[:PREVIEW_MAX_COLUMNS] for r in pv.header]),
    }


def _bounded(out: dict[str, Any]) -> dict[str, Any]:
    """Cut a table preview to :data:`PREVIEW_MAX_COLUMNS` columns, short cells and
    :data:`PREVIEW_MAX_BYTES` in all (it is stored, and crosses a pipe from the
    check sandbox)."""
    import json

    width = len(out["columns"])
    if width > PREVIEW_MAX_COLUMNS or any(len(r) > PREVIEW_MAX_COLUMNS for r in out["rows"]):
        out["columns_truncated"] = True
    out["columns"] = [_cell(str(c)) for c in out["columns"][:PREVIEW_MAX_COLUMNS]]
    out["rows"] = [[_cell(str(v)) for v in r[:PREVIEW_MAX_COLUMNS]] for r in out["rows"]]
    for key in ("masked_columns", "flagged_columns"):
        out[key] = [c for c in out[key] if c < PREVIEW_MAX_COLUMNS]
    out["flagged"] = [x for x in out["flagged"] if x[1] < PREVIEW_MAX_COLUMNS]
    while out["rows"] and len(json.dumps(out)) > PREVIEW_MAX_BYTES:
        keep = len(out["rows"]) // 2
        out["rows"] = out["rows"][:keep]
        out["flagged"] = [x for x in out["flagged"] if x[0] < keep]
        out["truncated"] = True
    return out


def render_preview(path: Path, name: str, report: dict[str, Any], max_rows: int) -> dict[str, Any]:
    """The preview of a checked file, as stored with it (never raises).

    ``kind`` is ``table`` (columns, rows, flagged cells, masked columns),
    ``text`` (an excerpt of a text file), ``withheld`` (a blocked file that is
    not a table: findings only) or ``none`` (nothing to show, e.g. an image).
    """
    verdict = str(report.get("verdict") or "review")
    findings = [f for f in report.get("findings") or [] if isinstance(f, dict)]
    fmt = str(report.get("format") or "")
    blocked = verdict == "block"
    try:
        if blocked:
            pv = table_preview(path, name, fmt, findings, max_rows=MASK_SCAN_ROWS)
            if pv is None or pv.error:
                return {"kind": "withheld",
                        "note": "blocked: row-level or identifying content is never shown"}
            mask = masked_columns(pv.columns, pv.rows, findings)
            rows = [[MASK if j in mask else v for j, v in enumerate(r)]
                    for r in pv.rows[:BLOCK_SAMPLE_ROWS]]
            columns = [MASK if _value_looks_identifying(c) else c for c in pv.columns]
            pv.header = [[MASK if _value_looks_identifying(str(c)) else c for c in line]
                         for line in pv.header]
            out = _table_dict(pv)
            out.update(
                rows=rows, columns=columns, masked_columns=sorted(mask),
                flagged=[x for x in out["flagged"] if x[0] < BLOCK_SAMPLE_ROWS],
                truncated=pv.truncated or len(pv.rows) > BLOCK_SAMPLE_ROWS,
                note=f"blocked: a masked sample of at most {BLOCK_SAMPLE_ROWS} rows, "
                     "identifier-like columns masked",
            )
            return _bounded(out)
        pv = table_preview(path, name, fmt, findings, max_rows=max_rows)
        if pv is not None:
            if pv.error:
                return {"kind": "none", "error": pv.error}
            return _bounded(_table_dict(pv))
        if name.lower().endswith(TEXT_SUFFIXES):
            return {"kind": "text", "text": text_excerpt(path)}
        if is_image(name, fmt):
            return _image(path, report)
        return {"kind": "none"}
    except Exception as e:  # never let a preview break a check; fail closed
        if blocked:
            return {"kind": "withheld",
                    "note": "blocked: row-level or identifying content is never shown"}
        return {"kind": "none", "error": f"cannot preview this file ({type(e).__name__})"}


def _image(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """An image re-encoded without its metadata (:mod:`.imagepreview`). One that cannot
    be decoded gets no preview, and a ``reader-error`` finding is added to ``report``
    (which is then never ``pass``)."""
    try:
        return image_preview(path)
    except ImagePreviewError as e:
        from ..sdc.rules import finding  # deferred: the sdc rule table

        message = f"image not previewed: {e}; a person must look at it"
        report.setdefault("findings", []).append(finding("reader-error", message).to_dict())
        if report.get("verdict") in (None, "pass"):
            report["verdict"] = "review"
        return {"kind": "none", "error": message}
