"""Server-side table previews for output checkers, with flagged cells marked.

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
            row = int(m.group(2)) - 2  # A1 notation: the header is spreadsheet row 1
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
    _mark(preview, findings, header_rows=0 if kind == "parquet" else 1)
    return preview


def text_excerpt(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit)
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").read()
