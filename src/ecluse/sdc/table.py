"""A table to judge, whatever file it came from, and how raw grids become one.

Readers of typed formats (Parquet, JSON, netCDF) build a :class:`Table`
directly. Readers of cell grids (CSV, Excel sheets, HTML tables) hand the raw
grid to :func:`grid_to_table`, which finds the header rows (one or several, as
in a crosstab written by pandas), the label columns and the value columns,
and keeps each body cell's original row and column so findings point at it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SUPPRESSED_RE = re.compile(
    r"^(?:[<≤]=?\s*\d+(?:[.,]\d+)?|\*+|c|x|\[c\]|\[x\]|\[z\]|s|suppr(?:essed|ime|imee)?|"
    r"redacted|secret|masque|n\s*<\s*\d+)$",
    re.I,
)
_SPACES = r"[\s\u00a0\u202f]"
_THOUSANDS_EN = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?"
_THOUSANDS_FR = r"-?\d{1,3}(?:\.\d{3})+(?:,\d+)?"


def col_letter(j: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    s = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        s = chr(65 + r) + s
    return s


@dataclass
class Table:
    """Body cells of one table plus what is needed to locate each cell."""

    body: pd.DataFrame  # positional columns 0..m-1
    names: list[str]
    levels: list[list[str]]  # header parts per column (one per header row)
    rownums: list[int]  # original 1-based row (record) number of each body row
    colnums: list[int] = field(default_factory=list)  # original 0-based column index
    base: dict[str, Any] = field(default_factory=dict)
    excel: bool = False
    decimal_comma: bool = False
    declared_rows: int | None = None  # true number of rows when body is a part of it
    #: per-column arrays aligned with body rows, computed once: "num", "empty", "marker"
    pre: dict[str, dict[int, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.colnums:
            self.colnums = list(range(len(self.names)))

    @property
    def n_rows(self) -> int:
        return max(len(self.body), self.declared_rows or 0)

    def loc(self, i: int | None, j: int | None, labels: dict[str, Any] | None = None) -> dict:
        out: dict[str, Any] = dict(self.base)
        if i is not None:
            out["row"] = int(self.rownums[i])
        if j is not None:
            out["column"] = self.names[j]
            if self.excel and i is not None:
                out["cell"] = f"{col_letter(self.colnums[j])}{self.rownums[i]}"
        if labels:
            out["labels"] = labels
        return out


def from_frame(df: pd.DataFrame, *, base: dict | None = None, first_row: int = 1,
               declared_rows: int | None = None) -> Table:
    """A table from a typed DataFrame (column names are the header)."""
    df = flatten_columns(df)
    names = [str(c) for c in df.columns]
    body = df.reset_index(drop=True)
    body.columns = range(len(names))
    for j in range(len(names)):
        col = body[j]
        if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) in ("bytes", "mixed"):
            # binary cells (a Parquet binary column) as base64 text: judged, and decoded
            # as files of their own when long (see readers._judge_cells)
            body[j] = col.map(lambda v: base64.b64encode(bytes(v)).decode()
                              if isinstance(v, bytes | bytearray) else v)
    return Table(body=body, names=names, levels=[[n] for n in names],
                 rownums=list(range(first_row, first_row + len(body))),
                 base=dict(base or {}), declared_rows=declared_rows)


def flatten_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Turn a MultiIndex header or a named index into plain columns."""
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = [" / ".join(str(p) for p in c if str(p) != "") for c in df.columns]
    if not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names):
        df = df.reset_index()
    return df


# ----------------------------------------------------------------- numbers


def _strings(s: pd.Series) -> pa.Array:
    """The cells of ``s`` as an Arrow string array (nulls kept), whitespace trimmed."""
    if isinstance(s.dtype, pd.StringDtype) or isinstance(s.dtype, pd.ArrowDtype):
        try:
            arr = pa.array(s)  # Arrow-backed strings: no Python objects
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type):
                return pc.utf8_trim_whitespace(arr.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            pass
    vals = s.to_numpy(dtype=object, na_value=None)
    try:
        arr = pa.array(vals, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):  # bytes that are not text
        arr = pa.array([None if _isna(v) else str(v) for v in vals], type=pa.string())
    return pc.utf8_trim_whitespace(arr)


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def _plain_dtype(s: pd.Series) -> bool:
    return (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype)
            or isinstance(s.dtype, pd.PeriodDtype) or pd.api.types.is_timedelta64_dtype(s.dtype))


def is_empty(s: pd.Series, *, strings: pa.Array | None = None) -> pd.Series:
    """Cells without a value. ``strings``: ``_strings(s)`` when the caller has it."""
    if _plain_dtype(s):
        return s.isna()
    arr = _strings(s) if strings is None else strings
    out = pc.fill_null(pc.equal(arr, ""), True)
    return pd.Series(out.to_numpy(zero_copy_only=False), index=s.index)


_MARKER_RE2 = (r"(?i)^([<≤]=?\s*\d+([.,]\d+)?|\*+|c|x|\[c\]|\[x\]|\[z\]|s|"
               r"suppr(essed|ime|imee)?|redacted|secret|masque|n\s*<\s*\d+)$")


def is_marker(s: pd.Series, *, strings: pa.Array | None = None) -> pd.Series:
    """Cells holding a suppression marker such as ``<10``, ``*`` or ``c``."""
    if _plain_dtype(s):
        return pd.Series(False, index=s.index)
    arr = _strings(s) if strings is None else strings
    out = pc.fill_null(pc.match_substring_regex(arr, _MARKER_RE2), False)
    return pd.Series(out.to_numpy(zero_copy_only=False), index=s.index)


_PLAIN_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def parse_numbers(s: pd.Series, decimal_comma: bool = False, *,
                  strings: pa.Array | None = None) -> pd.Series:
    """Cell values as floats (NaN where not a number); understands ``1 234,5``,
    ``1,234.5``, ``12.5%``. Plain numbers are parsed in Arrow; only the other
    cells take the slow path. ``strings``: ``_strings(s)`` when the caller has it."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return pd.Series(np.nan, index=s.index, dtype=float)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype(float)
    if _plain_dtype(s):
        return pd.Series(np.nan, index=s.index, dtype=float)
    direct = None
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
        # mixed cells (Excel): numbers stay numbers, booleans are not numbers
        isnum = s.map(lambda v: isinstance(v, int | float | np.number) and not isinstance(v, bool))
        if isnum.any():
            direct = pd.to_numeric(s.where(isnum, None), errors="coerce").astype(float)
            if isnum.all():
                return direct
            s = s.where(~isnum, None)
            strings = None  # some cells were numbers: not the strings given
    arr = _strings(s) if strings is None else strings
    if decimal_comma:
        arr = pc.replace_substring_regex(arr, r"^([-+]?\d+),(\d+)$", r"\1.\2")
    ok = pc.fill_null(pc.match_substring_regex(arr, _PLAIN_NUMBER), False)
    out = pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.float64())
    res = out.to_numpy(zero_copy_only=False).astype(float)
    rest = pc.and_(pc.invert(ok), pc.fill_null(
        pc.match_substring_regex(arr, r"^[-+]?[\d\s\x{a0}\x{202f}.,]*\d[\d\s\x{a0}\x{202f}.,]*%?$"),
        False))
    rest_np = rest.to_numpy(zero_copy_only=False)
    if rest_np.any():
        idx = np.flatnonzero(rest_np)
        res[idx] = _parse_slow(pd.Series(arr.take(pa.array(idx)).to_pylist(), dtype=object),
                               decimal_comma).to_numpy()
    res[np.isinf(res)] = np.nan
    out_s = pd.Series(res, index=s.index)
    if direct is not None:
        out_s = direct.where(direct.notna(), out_s)
    return out_s


def _parse_slow(s: pd.Series, decimal_comma: bool) -> pd.Series:
    st = s.astype("string").str.replace(_SPACES, "", regex=True)
    st = st.str.rstrip("%")
    if decimal_comma:
        th = st.str.fullmatch(_THOUSANDS_FR).fillna(False).astype(bool)
        st = st.where(~th, st.str.replace(".", "", regex=False))
        st = st.str.replace(",", ".", regex=False)
    else:
        th = st.str.fullmatch(_THOUSANDS_EN).fillna(False).astype(bool)
        st = st.where(~th, st.str.replace(",", "", regex=False))
    return pd.to_numeric(st.astype(object).where(st.notna(), None),
                         errors="coerce").astype(float)


def detect_decimal_comma(sample: list[list[str]], sep: str) -> bool:
    if sep == ",":
        return False
    rx = re.compile(r"^-?\d+,\d+%?$")
    hits = sum(1 for row in sample for c in row if rx.match(c.strip()))
    dots = sum(1 for row in sample for c in row if re.match(r"^-?\d+\.\d+%?$", c.strip()))
    return hits > 0 and hits >= dots


# ----------------------------------------------------------------- grids


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def split_tables(rows: list[list[Any]]) -> list[tuple[int, list[list[Any]]]]:
    """Split a sheet holding several tables one under the other, separated by blank
    rows, into ``(offset, rows)`` blocks. A block that starts with numbers only
    (the rest of a table after a blank line) stays with the block above."""
    blocks: list[tuple[int, list[list[Any]]]] = []
    start, cur = 0, []
    for i, r in enumerate(rows):
        if all(_blank(c) for c in r):
            if cur:
                blocks.append((start, cur))
                cur = []
            continue
        if not cur:
            start = i
        cur.append(r)
    if cur:
        blocks.append((start, cur))
    if len(blocks) <= 1:
        return [(0, rows)]
    merged: list[tuple[int, list[list[Any]]]] = []
    for off, blk in blocks:
        first = [c for c in blk[0] if not _blank(c)]
        starts_table = len(blk) >= 2 and any(_texty(c) or not isinstance(c, str | int | float)
                                              for c in first[1:] or first)
        if merged and not starts_table:
            prev_off, prev = merged[-1]
            gap = off - (prev_off + len(prev))
            merged[-1] = (prev_off, prev + [[None]] * gap + blk)
        else:
            merged.append((off, blk))
    return merged


def grid_to_table(rows: list[list[Any]], *, base: dict | None = None, first_row: int = 1,
                  excel: bool = False, decimal_comma: bool = False, first_col: int = 0,
                  declared_rows: int | None = None) -> Table | None:
    """Infer header rows, label and value columns of a raw cell grid.

    ``rows`` are lists of raw cells (strings from CSV, typed values from Excel).
    Returns ``None`` for a grid without any non-empty cell.
    """
    width = max((len(r) for r in rows), default=0)
    if width == 0:
        return None
    grid = pd.DataFrame([list(r) + [None] * (width - len(r)) for r in rows], dtype=object)
    rownums = np.arange(first_row, first_row + len(grid))
    # each column's cells as Arrow strings, once (for emptiness, numbers and markers)
    strs = {j: _strings(grid[j]) for j in grid.columns}
    filled = pd.DataFrame({j: ~is_empty(grid[j], strings=strs[j]) for j in grid.columns})
    keep_rows = filled.any(axis=1).to_numpy()
    keep_cols = filled.any(axis=0).to_numpy()
    if not keep_rows.any():
        return None
    grid, filled = grid.loc[keep_rows, keep_cols], filled.loc[keep_rows, keep_cols]
    rownums = rownums[keep_rows]
    colnums = [first_col + j for j, k in enumerate(keep_cols) if k]
    grid.columns = range(grid.shape[1])
    filled.columns = grid.columns
    grid = grid.reset_index(drop=True)
    filled = filled.reset_index(drop=True)
    m = grid.shape[1]
    # title rows above and note rows below a table of several columns: one text cell only
    if m >= 2:
        counts = filled.sum(axis=1).to_numpy()
        top = 0
        while top < len(grid) - 1 and counts[top] <= 1 and _texty(grid.iat[top, int(filled.iloc[top].to_numpy().argmax())]):
            top += 1
        bottom = len(grid)
        while bottom - 1 > top and counts[bottom - 1] <= 1 and filled.iat[bottom - 1, 0] and _texty(grid.iat[bottom - 1, 0]) and len(str(grid.iat[bottom - 1, 0])) > 12:
            bottom -= 1
        grid, filled, rownums = grid.iloc[top:bottom], filled.iloc[top:bottom], rownums[top:bottom]
        grid = grid.reset_index(drop=True)
        filled = filled.reset_index(drop=True)
    else:
        top, bottom = 0, len(grid)
    n = len(grid)
    # the kept rows and columns of the strings computed above
    rows_kept = pa.array(np.flatnonzero(keep_rows)[top:bottom])
    old_cols = np.flatnonzero(keep_cols)
    strs = {j: strs[int(old_cols[j])].take(rows_kept) for j in grid.columns}
    num = pd.DataFrame({j: parse_numbers(grid[j], decimal_comma, strings=strs[j])
                        for j in grid.columns})
    marker = pd.DataFrame({j: is_marker(grid[j], strings=strs[j]) for j in grid.columns})
    isnum = num.notna()
    h = _header_rows(grid, filled, isnum, marker, n)
    # value columns: (nearly) all non-empty non-marker body cells are numbers
    value_cols = _value_cols(filled, isnum, marker, max(h, 1) if n > 1 else 0)
    if h == 0 and n > 1 and value_cols and _year_header(grid, value_cols):
        h = 1
    header = grid.iloc[:h]
    levels: list[list[str]] = []
    for j in grid.columns:
        parts = []
        for r in range(h):
            v = header.iat[r, j]
            if _blank(v) and j in value_cols and j > 0:
                # merged or repeated header cells: carry the left neighbour's label
                k = j - 1
                while k >= 0 and _blank(header.iat[r, k]) and k in value_cols:
                    k -= 1
                v = header.iat[r, k] if k >= 0 and k in value_cols else v
            parts.append("" if _blank(v) else _cell_str(v))
        levels.append(parts)
    names = []
    for j, parts in enumerate(levels):
        nonempty = [p for p in parts if p]
        names.append(" / ".join(nonempty) if nonempty else f"column {j + 1}")
    body = grid.iloc[h:].reset_index(drop=True)
    body_filled = filled.iloc[h:].reset_index(drop=True)
    keep = body_filled.any(axis=1).to_numpy()
    body = body.loc[keep].reset_index(drop=True)
    pre = {
        "num": {j: pd.Series(num[j].to_numpy()[h:][keep]) for j in grid.columns},
        "empty": {j: pd.Series(~filled[j].to_numpy()[h:][keep]) for j in grid.columns},
        "marker": {j: pd.Series(marker[j].to_numpy()[h:][keep]) for j in grid.columns},
        "strings": {j: strs[j].slice(h).filter(pa.array(keep)) for j in grid.columns},
    }
    return Table(body=body, names=_dedupe(names), levels=levels,
                 rownums=[int(x) for x in rownums[h:][keep]], colnums=colnums,
                 base=dict(base or {}), excel=excel, decimal_comma=decimal_comma,
                 declared_rows=declared_rows, pre=pre)


def _texty(v: Any) -> bool:
    return isinstance(v, str) and not re.fullmatch(r"\s*-?[\d.,\s%]+\s*", v)


def _cell_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        if nm in seen:
            seen[nm] += 1
            out.append(f"{nm}.{seen[nm]}")
        else:
            seen[nm] = 0
            out.append(nm)
    return out


def _value_cols(filled: pd.DataFrame, isnum: pd.DataFrame, marker: pd.DataFrame,
                start: int) -> list[int]:
    out = []
    for j in filled.columns:
        cand = filled[j].iloc[start:] & ~marker[j].iloc[start:]
        nn = isnum[j].iloc[start:][cand]
        if len(nn) and nn.mean() >= 0.8:
            out.append(j)
    return out


def _header_rows(grid: pd.DataFrame, filled: pd.DataFrame, isnum: pd.DataFrame,
                 marker: pd.DataFrame, n: int) -> int:
    """Leading rows (at most 5) that label the columns: rows without any number, or
    rows with text over a column of numbers (``count, mean, 25%`` over figures)."""
    if n <= 1:
        return 0 if isnum.to_numpy().any() else n
    f = filled.to_numpy() & ~marker.to_numpy()
    num = isnum.to_numpy() & f
    # share of numbers among the cells below each row, per column
    below_num = np.cumsum(num[::-1], axis=0)[::-1]
    below_all = np.cumsum(f[::-1], axis=0)[::-1]
    h = 0
    while h < min(5, n - 1):
        row_num = num[h].any()
        if row_num:
            share = np.divide(below_num[h + 1], below_all[h + 1],
                              out=np.zeros(f.shape[1]), where=below_all[h + 1] > 0)
            text_over_numbers = f[h] & ~num[h] & (share >= 0.8)
            if not text_over_numbers.any():
                break
        elif h > 0:
            rest = [j for j in grid.columns[1:] if filled.iat[h, j]]
            if rest and all(marker.iat[h, j] for j in rest):
                break  # a data row whose cells are all suppressed
            # a data row of several label columns whose counts are all suppressed: its
            # cells over columns of numbers are all markers (``R0, D00, c``)
            share = np.divide(below_num[h + 1], below_all[h + 1],
                              out=np.zeros(f.shape[1]), where=below_all[h + 1] > 0)
            over = [j for j in grid.columns if filled.iat[h, j] and share[j] >= 0.8]
            if over and all(marker.iat[h, j] for j in over):
                break
        h += 1
    if h == min(5, n - 1) and not isnum.iloc[h:].to_numpy().any():
        return 1  # a table without numbers: the first row is its header
    return h


def _year_header(grid: pd.DataFrame, value_cols: list[int]) -> bool:
    """First row's value cells are distinct years (or small labels) above counts."""
    vals = []
    for j in value_cols:
        v = grid.iat[0, j]
        try:
            vals.append(float(str(v).strip()))
        except ValueError:
            return False
    if len(set(vals)) != len(vals):
        return False
    if all(1800 <= v <= 2200 and float(v).is_integer() for v in vals):
        below = []
        for j in value_cols:
            col = pd.to_numeric(grid[j].iloc[1:].astype(str), errors="coerce").dropna()
            below.extend(col.tolist())
        return not below or not all(1800 <= v <= 2200 for v in below)
    return False
