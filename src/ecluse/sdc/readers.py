"""Readers of tabular formats: CSV/TSV, Parquet, Excel, JSON / JSON Lines, HTML.

Small files are read whole. Large CSV and Parquet files are judged in two
steps so memory stays bounded: the first rows (the *head*) decide what each
column is (:func:`~ecluse.sdc.analyze.analyze_table`), then the whole file is
streamed batch by batch (``pyarrow.csv.open_csv`` / ``ParquetFile.iter_batches``)
converting only the columns the checks need: counts and statistics are checked
on every row, rows are counted, and a parse error anywhere is a finding. A CSV
file is streamed in parts of :data:`PART_BYTES` cut at line breaks, each parsed
by pyarrow's threads while the previous one is checked; a part with malformed
rows sends the file back to the single-threaded reader (a cut may have fallen
inside a quoted value holding a line break). The first part is parsed while the
head is judged, every column as text, and cast to the planned columns once the
head has said what they are (parsed again as planned when it cannot be).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .analyze import MAX_LOCATIONS, Profile
from .carriers import MAX_COLUMNS, Ctx, _json_tables, judge_json_strings, judge_value
from .report import Finding
from .rules import finding
from .sniff import Sniffed
from .table import (
    Table,
    detect_decimal_comma,
    from_frame,
    grid_to_table,
    parse_numbers,
    split_tables,
)
from .workbook import read_workbook_parts

#: files up to this size are read whole
SMALL_BYTES = 4 * 1024 * 1024
#: bytes of a large CSV read as its head
HEAD_BYTES = 1024 * 1024
#: rows of a large Parquet / JSON Lines file read as its head
HEAD_ROWS = 20_000
#: JSON documents larger than this are not parsed
MAX_JSON_BYTES = 256 * 1024 * 1024
#: rows of one Excel sheet read (more rows are counted only)
MAX_SHEET_ROWS = 200_000


# ----------------------------------------------------------------- CSV


def _decode_all(data: bytes, encoding: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252" if encoding != "latin-1" else "latin-1", errors="replace")


def read_csv(path: Path, sn: Sniffed, ctx: Ctx) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        data = fh.read(SMALL_BYTES if size <= SMALL_BYTES else HEAD_BYTES)
    partial = size > len(data)
    if partial:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut > 0 else data
    text = _decode_all(data, sn.encoding)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=sn.sep))
    width = max((len(r) for r in rows), default=0)
    if width > MAX_COLUMNS:
        ctx.add(finding("ambiguous-layout", f"{width} columns: wider than the {MAX_COLUMNS} "
                        "a table is judged with", **ctx.base))
        return
    decimal_comma = detect_decimal_comma(rows[:200], sn.sep)
    if partial and not decimal_comma and width:
        # the first part is parsed by pyarrow's threads while the head is judged
        with ThreadPoolExecutor(1, thread_name_prefix="ecluse-csv-early") as pool:
            early = pool.submit(_early_part, path, sn, width)
            try:
                _judge_head(path, sn, ctx, rows, decimal_comma, early)
            finally:
                early.cancel()
        return
    if not partial:
        tables = [grid_to_table(blk, base=dict(ctx.base), decimal_comma=decimal_comma,
                                first_row=off + 1) for off, blk in split_tables(rows)]
        tables = [t for t in tables if t is not None]
        if not tables:
            ctx.add(finding("empty-file", "no cells in this CSV file", **ctx.base))
            return
        ctx.details.update(columns=max(len(t.names) for t in tables), delimiter=sn.sep,
                           decimal_comma=decimal_comma, rows=len(rows), tables=len(tables))
        for t in tables:
            ctx.judge(t)
        return
    _judge_head(path, sn, ctx, rows, decimal_comma, None)


def _judge_head(path: Path, sn: Sniffed, ctx: Ctx, rows: list[list[str]], decimal_comma: bool,
                early: Future | None) -> None:
    t = grid_to_table(rows, base=dict(ctx.base), decimal_comma=decimal_comma)
    if t is None:
        ctx.add(finding("empty-file", "no cells in this CSV file", **ctx.base))
        return
    ctx.details.update(columns=len(t.names), delimiter=sn.sep, decimal_comma=decimal_comma)
    prof = ctx.judge(t, whole=False)
    skip = t.rownums[0] - 1 if t.rownums else 0
    if early is not None and (len(t.names) != max(len(r) for r in rows)
                              or not all(rows[:skip])):
        early = None  # columns dropped, or blank lines above the table: parse it again
    _stream_csv(path, sn, ctx, t, prof, decimal_comma, early)


def _csv_encoding(sn: Sniffed) -> str:
    return {"utf-8-sig": "utf8", "cp1252": "cp1252", "latin-1": "latin1"}.get(sn.encoding, "utf8")


def _early_part(path: Path, sn: Sniffed, width: int) -> tuple[pa.Table, int, int]:
    """The first part of a large CSV file, every column as text and no row skipped,
    parsed while the head is judged (before the columns to convert are known):
    the table, where the part ends, and how many rows were malformed."""
    import pyarrow.csv as pcsv  # deferred: pyarrow's CSV reader, only for large CSV files

    names = [f"c{j}" for j in range(width)]
    bad = [0]

    def on_bad(row: Any) -> str:
        bad[0] += 1
        return "skip"

    size = path.stat().st_size
    with pa.OSFile(str(path)) as fh:
        end = _cut(fh, 0, size)
        data = fh.read_at(end, 0)
    table = pcsv.read_csv(
        pa.py_buffer(data),
        read_options=pcsv.ReadOptions(column_names=names, encoding=_csv_encoding(sn),
                                      block_size=1024 * 1024, use_threads=True),
        parse_options=pcsv.ParseOptions(delimiter=sn.sep, invalid_row_handler=on_bad),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in names}, strings_can_be_null=True,
            quoted_strings_can_be_null=True))
    return table, end, bad[0]


def _from_early(early: Future, skip: int, cols: list[str], types: dict[str, Any]
                ) -> tuple[pa.Table, int] | None:
    """The early first part as the planned read would have given it (``None``: it
    cannot be, and the part is parsed again: malformed rows, markers in a count)."""
    try:
        table, end, nbad = early.result()
    except Exception:  # noqa: BLE001 - whatever it was, the planned read meets it again
        return None
    if nbad or table.num_rows < skip:
        return None
    table = table.slice(skip)
    arrays = []
    try:
        for c in cols:
            arr = table.column(c)
            arrays.append(arr if types[c] == pa.string() else pc.cast(arr, types[c]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError):
        return None
    return pa.table(arrays, names=cols), end


def _stream_csv(path: Path, sn: Sniffed, ctx: Ctx, t: Table, prof: Profile,
                decimal_comma: bool, early: Future | None = None) -> None:
    import pyarrow.csv as pcsv  # deferred: pyarrow's CSV reader, only for large CSV files

    skip = t.rownums[0] - 1 if t.rownums else 0
    ncols = len(t.names)
    names = [f"c{j}" for j in range(ncols)]
    need = [] if prof.blocked else sorted(set(prof.count_cols) | set(prof.stat_cols))
    text_cols = [] if prof.blocked else _text_cols(t, prof)
    enc = _csv_encoding(sn)

    bad: dict[str, Any] = {"n": 0, "first": None}

    def on_bad(row: Any) -> str:
        bad["n"] += 1
        if bad["first"] is None:
            bad["first"] = getattr(row, "number", None)
        return "skip"

    def reader(as_text: bool, newlines: bool, serial: bool) -> Any:
        cols = [names[j] for j in need] + [names[j] for j in text_cols]
        types = {names[j]: (pa.string() if as_text else pa.float64()) for j in need}
        types.update({names[j]: pa.string() for j in text_cols})
        if not cols:
            cols, types = [names[0]], {names[0]: pa.string()}
        parse = pcsv.ParseOptions(delimiter=sn.sep, newlines_in_values=newlines,
                                  invalid_row_handler=on_bad)
        convert = pcsv.ConvertOptions(
            include_columns=cols, column_types=types, decimal_point="," if decimal_comma else ".",
            strings_can_be_null=True, quoted_strings_can_be_null=True)
        if not (serial or newlines):
            first = None if early is None else _from_early(early, skip, cols, types)
            return _csv_parts(path, parse, convert, bad, skip=skip, column_names=names,
                              encoding=enc, first=first)
        return pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(skip_rows=skip, column_names=names, encoding=enc,
                                          block_size=16 * 1024 * 1024, use_threads=True),
            parse_options=parse, convert_options=convert)

    as_text = newlines = serial = False
    while True:
        bad.update(n=0, first=None)
        checker = _TailChecker(ctx, t, prof, head_rows=len(t.body))
        try:
            checker.run(_batches(reader(as_text, newlines, serial)), need, as_text=as_text,
                        text_cols=text_cols)
            break
        except _Serial:
            serial = True  # malformed rows, or a cut inside a quoted value: read in order
        except pa.ArrowInvalid as e:
            msg = str(e).lower()
            if ("conversion" in msg or "convert" in msg) and not as_text:
                as_text = True  # markers such as <10 further down: parse the cells ourselves
            elif not newlines:
                newlines = True  # quoted values holding line breaks
            else:
                raise
    checker.finish(kind="CSV")
    if bad["n"]:
        where = f" (the first near record {bad['first'] + skip})" if bad["first"] else ""
        ctx.add(finding("reader-error", f"{bad['n']} malformed rows (wrong number of fields) "
                        f"were skipped{where}", **ctx.base))


def _batches(reader: Any) -> Iterator[pa.RecordBatch]:
    yield from reader


#: bytes of a large CSV file parsed at a time, by all of pyarrow's threads
PART_BYTES = 32 * 1024 * 1024


class _Serial(Exception):
    """A part of a CSV file read in parallel had malformed rows."""


def _cut(fh: Any, start: int, size: int) -> int:
    """Where the part of a CSV file from ``start`` ends: after the first line break
    at least :data:`PART_BYTES` on."""
    end = min(start + PART_BYTES, size)
    while end < size:  # cut after the next line break
        tail = fh.read_at(64 * 1024, end)
        k = tail.find(b"\n")
        if k >= 0:
            return end + k + 1
        end += len(tail)
        if end - start > 4 * PART_BYTES:  # no line breaks (\r alone?): read in order
            raise _Serial
    return end


def _csv_parts(path: Path, parse: Any, convert: Any, bad: dict[str, Any], *, skip: int,
               column_names: list[str], encoding: str,
               first: tuple[pa.Table, int] | None = None) -> Iterator[pa.Table]:
    """The rows of a CSV file parsed in parts of about :data:`PART_BYTES` cut
    after a line break, by ``pyarrow.csv.read_csv`` (multi-threaded, unlike the
    streaming reader), the next part read while the caller checks this one.

    A line break inside a quoted value can fall on a cut: its two halves are
    malformed rows, and any malformed row raises :class:`_Serial` so the file is
    read again by the streaming reader, which keeps a quoted value whole within
    its (larger) blocks as it did before parts."""
    import pyarrow.csv as pcsv  # deferred: pyarrow's CSV reader, only for large CSV files

    size = path.stat().st_size

    def read(fh: Any, start: int, first: bool) -> tuple[Any, int]:
        end = _cut(fh, start, size)
        opts = pcsv.ReadOptions(skip_rows=skip if first else 0, column_names=column_names,
                                encoding=encoding, block_size=1024 * 1024, use_threads=True)
        part = pcsv.read_csv(pa.py_buffer(fh.read_at(end - start, start)), read_options=opts,
                             parse_options=parse, convert_options=convert)
        return part, end

    with pa.OSFile(str(path)) as fh, ThreadPoolExecutor(1, thread_name_prefix="ecluse-csv") as pool:
        if first is not None:  # parsed early, while the head was judged
            nxt: Future = Future()
            nxt.set_result(first)
        else:
            nxt = pool.submit(read, fh, 0, True)
        while True:
            part, end = nxt.result()
            if bad["n"]:
                raise _Serial
            if end < size:
                nxt = pool.submit(read, fh, end, False)
            yield part  # a table of ~1 MB chunks: checked whole (fewer calls than per chunk)
            del part
            if end >= size:
                return


class _TailChecker:
    """Checks of the rows beyond the head of a large table, batch by batch."""

    def __init__(self, ctx: Ctx, t: Table, prof: Profile, head_rows: int):
        self.ctx, self.t, self.prof, self.head_rows = ctx, t, prof, head_rows
        self.rows = 0
        self.small = self.zero = self.smalln = 0
        self.locs: dict[str, list[Finding]] = {"small-count": [], "zero-count": [],
                                                "small-n-statistic": []}
        self.not_one = {j: False for j in prof.count_cols}
        self.ids: dict[int, tuple[int, int]] = {}  # column -> (matches, first row)

    def run(self, batches: Any, need: list[int], as_text: bool,
            text_cols: list[int] | None = None) -> None:
        """Check each batch; its columns are ``need`` (numbers) then ``text_cols``
        (strings scanned for identifier-shaped values on every row)."""
        pol = self.ctx.policy
        first_row = self.t.rownums[0] if self.t.rownums else 1
        text_cols = text_cols or []
        for batch in batches:
            n = batch.num_rows
            start = self.rows
            self.rows += n
            for k, j in enumerate(text_cols):
                arr = batch.column(len(need) + k)
                if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                    continue
                # cheap filters first: every shape is 13+ characters long or holds an @
                longest = pc.max(pc.binary_length(arr)).as_py() or 0
                if longest < 13 and not _holds_byte(arr, ord("@")):
                    continue
                hit = pc.match_substring_regex(arr, ID_RE2)
                got = pc.sum(hit).as_py() or 0
                if got:
                    first = int(pc.index(hit, True).as_py())
                    prev = self.ids.get(j)
                    self.ids[j] = (got + (prev[0] if prev else 0),
                                   prev[1] if prev else first_row + start + first)
            if not need or start + n <= self.head_rows:
                continue
            lo = max(0, self.head_rows - start)
            cols = {}
            for k, j in enumerate(need):
                arr = batch.column(k)
                if as_text:
                    v = parse_numbers(pd.Series(arr.to_pandas(), dtype=object),
                                      self.t.decimal_comma).to_numpy()
                else:
                    v = arr.to_numpy(zero_copy_only=False)
                cols[j] = v[lo:]
            cnt = None
            for j in self.prof.count_cols:
                v = cols[j]
                if self.prof.blocked:
                    continue
                sm = np.flatnonzero((v > 0) & (v < pol.threshold))
                self._add("small-count", sm, j, start + lo, first_row, v,
                          f"count below the threshold {pol.threshold}")
                if pol.zeros_disclosive:
                    self._add("zero-count", np.flatnonzero(v == 0), j, start + lo, first_row, v,
                              "zero count (zeros are disclosive under this policy)")
                if not self.not_one[j] and np.any(v[~np.isnan(v)] != 1):
                    self.not_one[j] = True
                cnt = v if cnt is None else np.fmin(cnt, v)
            if cnt is not None and not self.prof.blocked:
                for j in self.prof.stat_cols:
                    has = ~np.isnan(cols[j])
                    self._add("small-n-statistic", np.flatnonzero(has & (cnt < pol.threshold)), j,
                              start + lo, first_row, cnt,
                              f"{self.t.names[j]} computed on fewer units than {pol.threshold}")

    def _add(self, rule: str, idx: np.ndarray, j: int, offset: int, first_row: int,
             v: np.ndarray, msg: str) -> None:
        if not len(idx):
            return
        lst = self.locs[rule]
        setattr(self, _COUNTER[rule], getattr(self, _COUNTER[rule]) + len(idx))
        for i in idx[: max(0, MAX_LOCATIONS - len(lst))]:
            loc = {**self.t.base, "row": int(first_row + offset + i), "column": self.t.names[j]}
            lst.append(finding(rule, f"{msg} (value {_num(v[i])})", **loc))

    def finish(self, kind: str) -> None:
        ctx, pol = self.ctx, self.ctx.policy
        ctx.details["rows"] = self.rows
        for j, (got, first) in self.ids.items():
            if j in self.prof.identifier_cols:
                continue
            ctx.add(finding("identifier-value", f"{got} value(s) of column {self.t.names[j]!r} "
                            f"look like identifiers (NIR, UUID, hash or e-mail; first at row "
                            f"{first})", **{**self.t.base, "column": self.t.names[j]}))
        for rule, lst in self.locs.items():
            ctx.add(*lst)
            total = getattr(self, _COUNTER[rule])
            if total > len(lst):
                ctx.add(finding(rule, f"… and {total - len(lst)} more cells beyond the first "
                                f"{self.head_rows} rows ({total} there in all)", **self.t.base))
        if not self.prof.count_named and self.rows > pol.max_rows_aggregate and not any(
                f.rule == "row-level" for f in ctx.findings):
            ctx.add(finding("row-level", f"{self.rows} rows and no count column: more rows than "
                            f"an aggregate may have ({pol.max_rows_aggregate})", **self.t.base))
        for j, seen in self.not_one.items():
            if not seen and len(self.prof.count_cols) == 1 and not self.prof.blocked:
                head_vals = parse_numbers(self.t.body[j], self.t.decimal_comma).dropna()
                if len(head_vals) and (head_vals == 1).all() and not any(
                        f.rule == "count-all-ones" for f in ctx.findings):
                    ctx.add(finding("count-all-ones", f"count column {self.t.names[j]!r} is 1 on "
                                    f"all {self.rows} rows", **self.t.base))
        ctx.add(finding("sampled", f"{kind} of {self.rows} rows: column roles, identifier "
                        f"columns and distinct rows judged on the first {self.head_rows} rows; "
                        "counts, statistics and identifier-shaped text checked on every row",
                        **self.t.base))


def _holds_byte(arr: pa.Array | pa.ChunkedArray, byte: int) -> bool:
    """Whether the character data of a string array holds ``byte`` anywhere (the
    whole data buffer of each chunk is searched, so a slice's neighbours count:
    a filter before the exact test, never instead of it)."""
    for chunk in arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]:
        data = chunk.buffers()[2]
        if data is not None and bool((np.frombuffer(data, dtype=np.uint8) == byte).any()):
            return True
    return False


#: identifier shapes tested on every row of a streamed text column (RE2 syntax)
ID_RE2 = (r"(^|[^0-9A-Za-z])([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
          r"[0-9a-fA-F]{12}|[1-478] ?\d{2} ?(0[1-9]|1[0-2]|[2-9]\d) ?(\d{2}|2[ABab]) ?\d{3} ?\d{3}"
          r"( ?\d{2})?)([^0-9A-Za-z]|$)"
          r"|^\s*([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})\s*$"
          r"|[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}")
#: most text columns of a large table scanned on every row
MAX_TEXT_COLS = 16

_COUNTER = {"small-count": "small", "zero-count": "zero", "small-n-statistic": "smalln"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# ----------------------------------------------------------------- Parquet


def read_parquet(path: Path, ctx: Ctx) -> None:
    import pyarrow.parquet as pq  # deferred: pyarrow's Parquet reader, only for Parquet files

    pf = pq.ParquetFile(path)
    n = pf.metadata.num_rows
    ctx.details.update(rows=n, columns=pf.metadata.num_columns, row_groups=pf.num_row_groups)
    judge_arrow_metadata(pf.schema_arrow, ctx, pf.metadata.metadata, kind="Parquet")
    if n == 0:
        ctx.add(finding("empty-file", "Parquet file without rows", **ctx.base))
        return
    head = next(pf.iter_batches(batch_size=HEAD_ROWS)).to_pandas(ignore_metadata=True)
    _judge_arrow_rows(ctx, head, n, lambda: pf.iter_batches(batch_size=262_144), "Parquet")


def read_arrow(path: Path, ctx: Ctx) -> None:
    """An Arrow IPC file (Feather v2): its schema, metadata and rows, like Parquet."""
    import pyarrow.ipc as ipc  # deferred: pyarrow's IPC reader, only for Arrow files

    with pa.memory_map(str(path)) as src:
        reader = ipc.open_file(src)
        judge_arrow_metadata(reader.schema, ctx, None, kind="Arrow")
        k = reader.num_record_batches
        n = 0
        for i in range(k):
            get = getattr(reader, "get_batch_with_custom_metadata", None)
            if get is not None:
                b, md = get(i)
                if md:
                    judge_arrow_metadata(pa.schema([], metadata=dict(md)), ctx, None,
                                         kind=f"Arrow record batch {i}")
            else:  # pragma: no cover - older pyarrow
                b = reader.get_batch(i)
            n += b.num_rows
        ctx.details.update(rows=n, columns=len(reader.schema), record_batches=k)
        if n == 0:
            ctx.add(finding("empty-file", "Arrow file without rows", **ctx.base))
            return
        head_batches, got = [], 0
        for i in range(k):
            if got >= HEAD_ROWS:
                break
            b = reader.get_batch(i)
            head_batches.append(b)
            got += b.num_rows
        head = pa.Table.from_batches(head_batches, reader.schema).slice(0, HEAD_ROWS) \
            .to_pandas(ignore_metadata=True)
        _judge_arrow_rows(ctx, head, n, lambda: (reader.get_batch(i) for i in range(k)), "Arrow")


def _judge_arrow_rows(ctx: Ctx, head: pd.DataFrame, n: int,
                      all_batches: Any, kind: str) -> None:
    t = from_frame(head, base=dict(ctx.base), declared_rows=n if n > len(head) else None)
    prof = ctx.judge(t)
    if n <= len(head):
        return
    checker = _TailChecker(ctx, t, prof, head_rows=len(head))
    if prof.blocked:
        # never releasable whatever the rest holds; the row count is in the footer
        checker.rows = n
        checker.finish(kind=kind)
        return
    need = sorted(set(prof.count_cols) | set(prof.stat_cols))
    text_cols = _text_cols(t, prof)

    def batches() -> Iterator[pa.RecordBatch]:
        # every column is read: a file may only pass once all of it was decoded
        for b in all_batches():
            arrays = [_as_float(b.column(j)) for j in need] + [b.column(j) for j in text_cols]
            yield (pa.RecordBatch.from_arrays(arrays, names=[f"c{k}" for k in range(len(arrays))])
                   if arrays else pa.RecordBatch.from_pydict({"_": pa.nulls(b.num_rows)}))

    checker.run(batches(), need, as_text=False, text_cols=text_cols)
    checker.finish(kind=kind)


#: keys of the metadata pandas writes, and of each of its column entries
_PANDAS_KEYS = {"index_columns", "column_indexes", "columns", "creator", "pandas_version",
                "attributes"}
_PANDAS_COLUMN_KEYS = {"name", "field_name", "pandas_type", "numpy_type", "metadata"}


def judge_arrow_metadata(schema: pa.Schema, ctx: Ctx, kv: dict[bytes, bytes] | None, *,
                         kind: str) -> None:
    """Judge the key-value metadata of a Parquet/Arrow file, of its schema and of
    every field: a table, a base64 file or long text hidden there is judged like
    the rows themselves (``ARROW:schema`` is the schema itself, read by pyarrow)."""
    seen: set[tuple[bytes, bytes]] = set()
    items: list[tuple[str, bytes, bytes]] = []
    for label, md in ((f"{kind} key-value metadata", kv), (f"{kind} schema metadata",
                                                              schema.metadata)):
        for k, v in (md or {}).items():
            items.append((label, k, v))
    stack: list[tuple[str, Any]] = [(f.name, f) for f in schema]
    while stack:
        name, f = stack.pop()
        if f.metadata:
            for k, v in f.metadata.items():
                items.append((f"metadata of field {name!r}", k, v))
        typ = f.type
        if pa.types.is_struct(typ):
            stack.extend((f"{name}.{typ.field(i).name}", typ.field(i)) for i in range(typ.num_fields))
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
            stack.append((f"{name}[]", typ.value_field))
        elif pa.types.is_map(typ):
            stack.extend([(f"{name}.key", typ.key_field), (f"{name}.value", typ.item_field)])
    names = [f.name for f in schema]
    if len(names) >= ctx.policy.row_level_min_rows:
        # many field names: records written as names are judged like text (only what
        # reads as row-level counts; ordinary names are the header, judged with the rows)
        sub = ctx.sub(dict(ctx.base))
        judge_value("\n".join(names), sub, f"{kind} field names", free_text=False)
        ctx.findings.extend(f for f in sub.findings if f.severity == "block")
    for label, k, v in items:
        if (k, v) in seen or k == b"ARROW:schema":
            continue
        seen.add((k, v))
        key = k.decode("utf-8", errors="replace")
        what = f"{label} {key[:60]!r}"
        if len(k) >= 64:
            judge_value(k, ctx, f"{label} (a key)")
        if k == b"pandas":
            _judge_pandas_metadata(v, ctx, what)
        else:
            judge_value(v, ctx, what)


def _judge_pandas_metadata(value: bytes, ctx: Ctx, what: str) -> None:
    try:
        doc = json.loads(value)
    except ValueError:
        judge_value(value, ctx, what)
        return
    if not isinstance(doc, dict):
        judge_value(doc, ctx, what)
        return
    rest = {k: v for k, v in doc.items() if k not in _PANDAS_KEYS}
    if doc.get("attributes"):
        judge_value(doc["attributes"], ctx, f"{what} attributes (DataFrame.attrs)")
    for group in ("columns", "column_indexes", "index_columns"):
        entries = doc.get(group)
        if not isinstance(entries, list):
            if entries is not None:
                rest[group] = entries
            continue
        for e in entries:
            if isinstance(e, str):
                if len(e) >= 64:
                    rest.setdefault(group, []).append(e)
                continue
            if not isinstance(e, dict):
                rest.setdefault(group, []).append(e)
                continue
            extra = {k: v for k, v in e.items() if k not in _PANDAS_COLUMN_KEYS
                     and not (group == "index_columns" and k in ("kind", "start", "stop", "step"))}
            md = e.get("metadata")
            if md is not None and len(json.dumps(md, default=str)) > 256:
                extra["metadata"] = md
            for k in ("name", "field_name"):
                if isinstance(e.get(k), str) and len(e[k]) >= 256:
                    extra[k] = e[k]
            if extra:
                rest.setdefault(group, []).append(extra)
    if rest:
        judge_value(rest, ctx, what)


def _text_cols(t: Table, prof: Profile) -> list[int]:
    """Text columns of a large table whose every row is scanned for identifiers."""
    out = []
    for j in prof.label_cols:
        col = t.body[j]
        if not (pd.api.types.is_numeric_dtype(col.dtype) or
                pd.api.types.is_datetime64_any_dtype(col.dtype)):
            out.append(j)
    return out[:MAX_TEXT_COLS]


def _as_float(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.array(arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    return pa.array(parse_numbers(arr.to_pandas()).to_numpy())


# ----------------------------------------------------------------- Excel


def read_excel(path: Path, ctx: Ctx) -> None:
    import openpyxl  # deferred: openpyxl, only for workbooks

    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    media = [n for n in names if n.startswith(("xl/media/", "xl/charts/", "xl/embeddings/"))]
    if media:
        ctx.add(finding("unjudgeable-format", f"workbook embeds {len(media)} images, charts or "
                        "objects that a person must look at", **ctx.base))
    # a file object: openpyxl would judge a path by its extension
    wb = openpyxl.load_workbook(io.BytesIO(path.read_bytes()), read_only=True, data_only=True)
    try:
        sheets = []
        for ws in wb.worksheets:
            state = getattr(ws, "sheet_state", "visible")
            sheets.append({"name": ws.title, "state": state})
            base = {**ctx.base, "sheet": ws.title}
            if state != "visible":
                ctx.add(finding("hidden-sheet", f"sheet {ws.title!r} is {state}; it was checked "
                                "like the others", **base))
            rows: list[list[Any]] = []
            extra = 0
            for r in ws.iter_rows(min_row=1, min_col=1, values_only=True):
                if len(rows) < MAX_SHEET_ROWS:
                    rows.append(list(r))
                else:
                    extra += 1
            if max((len(r) for r in rows[:1000]), default=0) > MAX_COLUMNS:
                ctx.add(finding("ambiguous-layout", f"sheet wider than {MAX_COLUMNS} columns",
                                **base))
                continue
            for off, blk in split_tables(rows):
                t = grid_to_table(blk, base=base, excel=True, first_row=off + 1,
                                  declared_rows=len(blk) + extra if extra else None)
                if t is not None:
                    ctx.judge(t)
        for cs in getattr(wb, "chartsheets", []):
            ctx.add(finding("unjudgeable-format", f"chart sheet {cs.title!r} must be looked at",
                            **{**ctx.base, "sheet": cs.title}))
        ctx.details["sheets"] = sheets
        n_sheets = len(wb.worksheets)
    finally:
        wb.close()
    with zipfile.ZipFile(path) as zf:
        read_workbook_parts(zf, n_sheets, ctx)
    if ctx.judged == 0 and not ctx.findings:
        ctx.add(finding("empty-file", "workbook without any filled cell", **ctx.base))


# ----------------------------------------------------------------- JSON


def read_json(path: Path, ctx: Ctx) -> None:
    if path.stat().st_size > MAX_JSON_BYTES:
        ctx.add(finding("file-too-large", f"JSON document over {MAX_JSON_BYTES} bytes is not "
                        "parsed", **ctx.base))
        return
    with open(path, "rb") as fh:
        doc = json.load(fh)

    found = 0
    for where, frame in _json_tables(doc, "$"):
        base = dict(ctx.base)
        if where != "$":
            base["table"] = where
        ctx.judge(from_frame(frame, base=base), decode_cells=False)
        found += 1
    # strings that are JSON, base64 files or delimited text are judged in turn
    judge_json_strings(doc, ctx, free_text=bool(found))
    if not found:
        ctx.add(finding("free-text", "JSON document without a table: a person must read it",
                        **ctx.base))


def read_jsonl(path: Path, ctx: Ctx) -> None:
    import pyarrow.json as pjson  # deferred: pyarrow's JSON reader, only for JSON Lines files

    try:
        tbl = pjson.read_json(path, read_options=pjson.ReadOptions(block_size=8 * 1024 * 1024))
    except pa.ArrowInvalid:
        recs = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for k, line in enumerate(fh):
                if line.strip():
                    recs.append(json.loads(line))
                if k > 5 * HEAD_ROWS:
                    raise
        tbl = pa.Table.from_pandas(pd.json_normalize(recs, max_level=1))
    n = tbl.num_rows
    ctx.details["rows"] = n
    head = tbl.slice(0, HEAD_ROWS).to_pandas()
    t = from_frame(head, base=dict(ctx.base), declared_rows=n if n > len(head) else None)
    prof = ctx.judge(t)
    if n > len(head):
        need = sorted(set(prof.count_cols) | set(prof.stat_cols))
        checker = _TailChecker(ctx, t, prof, head_rows=len(head))

        def batches() -> Iterator[pa.RecordBatch]:
            for b in tbl.to_batches(max_chunksize=262_144):
                arrays = [pa.array(parse_numbers(b.column(t.names[j]).to_pandas()).to_numpy())
                          for j in need]
                yield (pa.RecordBatch.from_arrays(arrays, names=[f"c{j}" for j in need]) if need
                       else pa.RecordBatch.from_pydict({"_": pa.nulls(b.num_rows)}))
        checker.run(batches(), need, as_text=False)
        checker.finish(kind="JSON Lines")


# ----------------------------------------------------------------- HTML


def html_tables(html: str) -> list[tuple[list[list[str]], int | None]]:
    """Raw cell grids of the ``<table>`` elements of an HTML fragment, with the row
    count announced by a pandas footer (``5000 rows × 10 columns``) when present."""
    import lxml.html  # deferred: lxml, only for HTML

    out = []
    try:
        doc = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - lxml raises many kinds; the caller reviews
        return out
    footer = re.search(r"([\d,]+)\s+rows\s+[×x]\s+(\d+)\s+columns", doc.text_content())
    declared = int(footer.group(1).replace(",", "")) if footer else None
    for table in doc.iter("table"):
        rows: list[list[str]] = []
        for tr in table.iter("tr"):
            row: list[str] = []
            for cell in tr:
                if cell.tag not in ("td", "th"):
                    continue
                txt = cell.text_content().strip()
                try:
                    span = max(1, min(int(cell.get("colspan", "1")), 1000))
                except ValueError:
                    span = 1
                row.extend([txt] * span)
            if row and not all(c in ("...", "…", "⋮", "⋯", "") for c in row):
                rows.append(row)
        if rows:
            out.append((rows, declared))
    return out


def read_html(path: Path, sn: Sniffed, ctx: Ctx) -> None:
    text = _decode_all(path.read_bytes(), sn.encoding)
    tables = html_tables(text)
    for k, (rows, declared) in enumerate(tables):
        t = grid_to_table(rows, base={**ctx.base, "table": k + 1}, declared_rows=declared)
        if t is not None:
            ctx.judge(t)
    _html_outside_tables(text, ctx, {})  # scripts, comments and text: records there block
    if _text_outside_tables(text).strip() or not tables:
        ctx.add(finding("free-text", "HTML page: text outside tables must be read by a person",
                        **ctx.base))


def _html_outside_tables(html: str, ctx: Ctx, where: dict[str, Any]) -> None:
    """Text, scripts and comments of an HTML output outside its tables."""
    import lxml.html  # deferred: lxml, only for HTML

    try:
        doc = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - not HTML: judged as text
        sub = ctx.sub({**ctx.base, **where})
        judge_value(html, sub, "HTML output", free_text=False)
        ctx.findings.extend(sub.findings)
        return
    parts = []
    for el in list(doc.iter()):
        if not isinstance(el.tag, str):  # comments, processing instructions
            if el.text and el.text.strip():
                parts.append(el.text)
    for el in list(doc.iter("script")):
        if el.text and el.text.strip():
            parts.append(el.text)
    for t in list(doc.iter("table", "script", "style")):
        t.drop_tree()
    parts.append(doc.text_content())
    sub = ctx.sub({**ctx.base, **where})
    for part in parts:
        if part.strip():
            judge_value(part.strip(), sub, "HTML output outside its tables", free_text=False)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged


def _text_outside_tables(html: str) -> str:
    import lxml.html  # deferred: lxml, only for HTML

    try:
        doc = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001
        return html
    for t in list(doc.iter("table", "script", "style")):
        t.drop_tree()
    return doc.text_content()
