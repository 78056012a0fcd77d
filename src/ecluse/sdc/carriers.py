"""Data carried outside a file's main table: metadata, embedded parts, strings
that decode to tables or files, and text inside images and PDFs.

Every such value goes through :func:`judge_value`:

* a string that parses as JSON is walked: tables found in it are judged, long
  strings in it are judged in turn (a JSON string inside a JSON string, base64…);
* a string that reads as base64 is decoded and the bytes are checked as a file
  of their own (a CSV, a Parquet file or a zip hidden in a base64 field is
  judged like one handed in directly);
* text with lines of delimited fields (CSV, TSV, aligned columns) becomes a
  table and is judged: records there block like anywhere else;
* identifier-shaped strings are searched for;
* long text that holds no table goes to ``review`` (``free-text``).

Images and PDFs stay ``review``; :func:`judge_image_text` reads the text they
carry (PNG text chunks, SVG text, the PDF text layer) and judges the tables
laid out in it, so text that reads as records blocks.

Every reader writes into a :class:`Ctx`, defined here because judging a table
decodes its cells with :func:`judge_value`. A value that decodes to a file is
checked like one handed in, by the context's ``check`` (the dispatcher of
:mod:`ecluse.sdc.check`, which the context carries so that this module needs
none of the readers above it).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .analyze import Profile, analyze_table
from .detect import text_identifiers, text_residual_df
from .differencing import extract
from .policy import DisclosurePolicy
from .report import FileReport, Finding, format_location
from .rules import finding
from .sniff import sniff_delimiter
from .table import (
    Table,
    _plain_dtype,
    from_frame,
    grid_to_table,
    parse_numbers,
    split_tables,
)
from .table import _strings as _column_strings

#: check one file (or a part extracted from one) into a context; returns its format
#: name (:func:`ecluse.sdc.check._dispatch`)
CheckFn = Callable[[Path, "Ctx"], str]

#: characters of one embedded value read at most
MAX_VALUE_CHARS = 16 * 1024 * 1024
#: embedded text longer than this that holds no table must be read by a person
FREE_TEXT_CHARS = 2000
#: strings inside embedded JSON shorter than this are not decoded further
MIN_DECODE_CHARS = 64
#: decoding depth (base64 in JSON in metadata …)
MAX_VALUE_DEPTH = 4
#: strings of one JSON document decoded further, at most
MAX_STRINGS = 10_000

_B64_RE = re.compile(r"^[A-Za-z0-9+/_\-\r\n]+={0,2}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


@dataclass
class Ctx:
    """What a reader needs and produces while checking one file."""

    policy: DisclosurePolicy
    #: checks a file found inside this one (an archive member, a decoded value)
    check: CheckFn
    depth: int = 0
    base: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    judged: int = 0  # tables / arrays actually judged
    #: the count tables judged, for differencing (:mod:`ecluse.sdc.differencing`)
    count_tables: list[Any] = field(default_factory=list)

    def add(self, *fs: Finding) -> None:
        self.findings.extend(fs)

    def sub(self, base: dict[str, Any], depth: int | None = None) -> Ctx:
        """A context for a part of this file, at ``base`` (the caller merges its findings)."""
        return Ctx(policy=self.policy, check=self.check,
                   depth=self.depth if depth is None else depth, base=base)

    def judge(self, t: Table, decode_cells: bool = True, whole: bool = True) -> Profile:
        t.base = {**self.base, **t.base}
        fs, prof = analyze_table(t, self.policy)
        self.findings.extend(fs)
        self.judged += 1
        if whole and not prof.blocked:
            ct = extract(t, prof.label_cols, prof.count_cols, format_location(t.base))
            if ct is not None:
                self.count_tables.append(ct)
        if not prof.blocked and _transposed_records(t, self.policy, self.findings):
            prof.blocked = True
        if decode_cells and not prof.blocked:
            _judge_cells(t, self)
        return prof


#: tables wider than this are not judged
MAX_COLUMNS = 5000
#: cells of one table decoded (JSON, base64, bytes), at most
MAX_DECODED_CELLS = 200


def _judge_cells(t: Table, ctx: Ctx) -> None:
    """Cells that hold JSON, base64 or bytes (a file per cell) are decoded and judged."""
    done = 0
    known = (t.pre or {}).get("strings") or {}
    for j in range(t.body.shape[1]):
        col = t.body[j]
        if _plain_dtype(col):
            continue
        strs = known.get(j)
        strs = _column_strings(col) if strs is None else strs
        lengths = pc.fill_null(pc.utf8_length(strs), 0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(lengths >= MIN_DECODE_CHARS):
            v = col.iat[int(i)]
            if isinstance(v, bytes | bytearray | dict | list):
                pass
            elif not (isinstance(v, str) and (v.lstrip()[:1] in ("{", "[") or "\n" in v.strip()
                                              or looks_base64(v.strip()))):
                continue
            if done >= MAX_DECODED_CELLS:
                ctx.add(finding("unjudgeable-format", f"more than {MAX_DECODED_CELLS} cells hold "
                                "encoded values: the rest is not decoded", **t.base))
                return
            done += 1
            sub = ctx.sub({**t.base})
            judge_value(v, sub, f"cell {t.names[j][:40]!r} row {t.rownums[int(i)]}",
                        free_text=False)
            ctx.findings.extend(sub.findings)


def _transposed_records(t: Table, policy: DisclosurePolicy, out: list[Finding]) -> bool:
    """Judge a wide table column by column: records laid out as columns (``df.T``)
    are row-level like records laid out as rows. Only row-level findings of the
    turned table count (its other findings are the table's own, read the other way)."""
    n, m = t.body.shape
    if m < policy.row_level_min_rows or m <= n or n == 0 or n > MAX_COLUMNS:
        return False
    first = parse_numbers(t.body[0], t.decimal_comma)
    named_rows = first.notna().mean() < 0.5  # the first column names the fields
    if named_rows:
        header = [t.names[0]] + [_cell(v) for v in t.body[0]]
        cols = range(1, m)
    else:
        header = [""] + [f"row {r}" for r in t.rownums]
        cols = range(m)
    # the header of the wide table, as written (before names were made unique)
    heads = [" / ".join(p for p in t.levels[j] if p) if j < len(t.levels) else t.names[j]
             for j in range(m)]
    if all(not h for h in heads[1:]):  # no header row: the columns had no names
        header = header[1:]
        grid = [header] + [[_cell(v) for v in t.body[j]] for j in cols]
    else:
        grid = [header] + [[heads[j]] + [_cell(v) for v in t.body[j]] for j in cols]
    turned = grid_to_table(grid, base={**t.base}, decimal_comma=t.decimal_comma)
    if turned is None or len(turned.body) < policy.row_level_min_rows:
        return False
    fs, _ = analyze_table(turned, policy)
    blocks = [f for f in fs if f.severity == "block"]
    if not blocks:
        return False
    out.append(finding("transposed-records", f"{m} columns over {n} rows, read column by column: "
                       f"{blocks[0].message}", **t.base))
    return True


def _cell(v: Any) -> Any:
    return "" if v is None or (isinstance(v, float) and v != v) else v


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


def looks_base64(s: str) -> bool:
    """Long enough, only base64 characters (line breaks allowed), not a hex digest."""
    return (len(s) >= MIN_DECODE_CHARS and bool(_B64_RE.match(s)) and not _HEX_RE.match(s)
            and any(c.isdigit() for c in s[:4096]) and any(c.isalpha() for c in s[:4096]))


def _where(ctx: Ctx, what: str) -> dict[str, Any]:
    part = ctx.base.get("part")
    return {**ctx.base, "part": f"{part} > {what}" if part else what}


def judge_value(value: Any, ctx: Ctx, what: str, *, depth: int = 0,
                free_text: bool = True) -> None:
    """Judge one embedded value (text, bytes or parsed JSON) found at ``what``."""
    sub = ctx.sub(_where(ctx, what))
    _judge(value, sub, depth, free_text)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged


def _judge(value: Any, ctx: Ctx, depth: int, free_text: bool) -> None:
    if depth > MAX_VALUE_DEPTH:
        ctx.add(finding("unjudgeable-format", "value nested too deeply to decode", **ctx.base))
        return
    if isinstance(value, dict | list):
        judge_json(value, ctx, depth, free_text)
        return
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        text = _as_text(data)
        if text is None:
            check_bytes(data, ctx, depth)
            return
        value = text
    if not isinstance(value, str):
        return
    if len(value) > MAX_VALUE_CHARS:
        ctx.add(finding("file-too-large", f"embedded value of {len(value)} characters: only "
                        f"the first {MAX_VALUE_CHARS} were read", **ctx.base))
    text = value[:MAX_VALUE_CHARS]
    s = text.strip()
    if not s:
        return
    if s[0] in "{[":
        try:
            doc = json.loads(s)
        except ValueError:
            doc = None
        if isinstance(doc, dict | list):
            judge_json(doc, ctx, depth, free_text)
            return
    if looks_base64(s):
        data = _b64(s)
        if data is not None:
            check_bytes(data, ctx, depth + 1)
            return
    text_checks(text, ctx)
    if judge_text_tables(text, ctx):
        return
    if free_text and len(s) > FREE_TEXT_CHARS:
        ctx.add(finding("free-text", f"{len(s)} characters of text that the checker cannot "
                        "read as a table: a person must read them", **ctx.base))


def _as_text(data: bytes) -> str | None:
    if b"\x00" in data[:4096]:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    controls = sum(1 for c in text[:65536] if ord(c) < 32 and c not in "\r\n\t\f")
    return None if controls > 0.01 * max(len(text[:65536]), 1) else text


def _b64(s: str) -> bytes | None:
    compact = re.sub(r"\s+", "", s)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_bytes(data: bytes, ctx: Ctx, depth: int = 0) -> None:
    """Check decoded bytes as a file of their own (sniffed by content)."""
    if ctx.depth >= ctx.policy.archive_max_depth:
        ctx.add(finding("archive-limit", "embedded file nested too deep to open", **ctx.base))
        return
    if len(data) > ctx.policy.archive_max_member_bytes:
        ctx.add(finding("archive-limit", f"embedded value of {len(data)} bytes, more than "
                        f"{ctx.policy.archive_max_member_bytes}", **ctx.base))
        return
    with tempfile.TemporaryDirectory(prefix="ecluse-value-") as tmp:
        dest = Path(tmp) / "value"
        dest.write_bytes(data)
        sub = ctx.sub(dict(ctx.base))
        _check_member(dest, sub, ctx.check, "decoded value")
        ctx.findings.extend(sub.findings)
        ctx.judged += sub.judged


def _check_member(dest: Path, ctx: Ctx, check: CheckFn, member: str) -> None:
    sub = ctx.sub({**ctx.base, "member": member}, depth=ctx.depth + 1)
    fmt = check(dest, sub)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged
    ctx.details.setdefault("member_reports", []).append(
        {"member": member, "format": fmt,
         "verdict": str(FileReport.verdict_of(sub.findings))})


#: JSON nested deeper than this is not walked (and not passed)
MAX_JSON_DEPTH = 64
#: values in a JSON carrier without any table above which a person must look
MAX_UNREAD_VALUES = 500


def _strings(doc: Any, path: str, depth: int = 0) -> Iterator[tuple[str, str | None]]:
    """Strings of a JSON value with their paths; ``(path, None)`` where nesting is too deep."""
    if depth > MAX_JSON_DEPTH:
        yield path, None
        return
    if isinstance(doc, str):
        yield path, doc
    elif isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(k, str) and len(k) >= MIN_DECODE_CHARS:
                yield f"{path} (key)", k
            yield from _strings(v, f"{path}.{k}", depth + 1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _strings(v, f"{path}[{i}]", depth + 1)


def _json_tables(doc: Any, where: str, depth: int = 0) -> Iterator[tuple[str, pd.DataFrame]]:
    if depth > 32:
        return
    if isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc):
        yield where, pd.json_normalize(doc, max_level=1)
        return
    if isinstance(doc, list) and doc and all(isinstance(r, list) for r in doc):
        width = max(len(r) for r in doc)
        if width and all(not isinstance(c, dict | list) for r in doc for c in r):
            yield where, pd.DataFrame([r + [None] * (width - len(r)) for r in doc])
            return
    if isinstance(doc, dict):
        counts = _json_numbers(doc)
        if counts is not None:
            yield where, counts
            return
        if "columns" in doc and "data" in doc and isinstance(doc["data"], list):
            try:
                yield where, pd.DataFrame(doc["data"], columns=doc["columns"],
                                          index=doc.get("index"))
                return
            except (ValueError, TypeError):
                pass
        if "schema" in doc and "data" in doc and isinstance(doc["data"], list):
            yield where, pd.json_normalize(doc["data"], max_level=1)
            return
        vals = list(doc.values())
        if vals and all(isinstance(v, list) for v in vals) and len({len(v) for v in vals}) == 1 \
                and all(not isinstance(c, dict | list) for v in vals for c in v):
            yield where, pd.DataFrame(doc)
            return
        if len(vals) >= 1 and all(isinstance(v, dict) for v in vals) and all(
                not isinstance(c, dict | list) for v in vals for c in v.values()) and len(vals) > 1:
            if all(str(k).lstrip("-").isdigit() for k in doc):  # pandas orient="index"
                yield where, pd.DataFrame.from_dict(doc, orient="index").reset_index(
                    names="index")
            else:  # pandas orient="columns": its row keys are categories
                yield where, pd.DataFrame(doc).reset_index(names="category")
            return
        for k, v in doc.items():
            yield from _json_tables(v, f"{where}.{k}", depth + 1)
    elif isinstance(doc, list):
        for k, v in enumerate(doc):
            yield from _json_tables(v, f"{where}[{k}]", depth + 1)


#: deepest nesting of a JSON document of numbers read as one long table
MAX_JSON_LEVELS = 6


def _json_numbers(doc: dict) -> pd.DataFrame | None:
    """A dict of numbers keyed by category (``value_counts().to_json()``), or nested
    dicts of them all at the same depth other than two (``{"F": {"<50": {"N": 12}}}``),
    as a long table: one label column per level, then ``value``. Depth two is a
    crosstab and stays wide; anything else is ``None``."""
    rows: list[list[Any]] = []

    def walk(d: Any, path: list[str]) -> bool:
        if isinstance(d, dict):
            if not d or len(path) >= MAX_JSON_LEVELS:
                return False
            return all(walk(v, [*path, str(k)]) for k, v in d.items())
        if isinstance(d, int | float) and not isinstance(d, bool):
            rows.append([*path, d])
            return True
        return False

    if not walk(doc, []) or len({len(r) for r in rows}) != 1 or len(rows[0]) == 3:
        return None
    levels = len(rows[0]) - 1
    names = ["category"] if levels == 1 else [f"category {k + 1}" for k in range(levels)]
    return pd.DataFrame(rows, columns=[*names, "value"])


def judge_json(doc: Any, ctx: Ctx, depth: int = 0, free_text: bool = True) -> int:
    """Judge the tables of a parsed JSON value and decode its long strings.

    Returns the number of tables judged."""
    found = 0
    for where, frame in _json_tables(doc, "$"):
        base = dict(ctx.base)
        if where != "$":
            base["table"] = where
        ctx.judge(from_frame(frame, base=base), decode_cells=False)  # strings: below
        found += 1
    judge_json_strings(doc, ctx, depth, free_text=free_text and not found)
    if free_text and not found:
        n = _count_values(doc, MAX_UNREAD_VALUES + 1)
        if n > MAX_UNREAD_VALUES:
            ctx.add(finding("ambiguous-layout", f"more than {MAX_UNREAD_VALUES} values that the "
                            "checker cannot read as a table: a person must look", **ctx.base))
    return found


def _count_values(doc: Any, cap: int) -> int:
    n, stack = 0, [doc]
    while stack and n < cap:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        else:
            n += 1
    return n


def judge_json_strings(doc: Any, ctx: Ctx, depth: int = 0, free_text: bool = True) -> None:
    """Decode and judge the long strings (or those with line breaks) of a parsed JSON value."""
    unread = decoded = 0
    for path, s in _strings(doc, "$"):
        if s is None:
            ctx.add(finding("unjudgeable-format", f"JSON nested deeper than {MAX_JSON_DEPTH} "
                            f"levels at {path[:80]}: not read", **ctx.base))
            break
        if len(s) < MIN_DECODE_CHARS and "\n" not in s:
            continue  # a cell or a name: judged with its table, if any
        decoded += 1
        if decoded > MAX_STRINGS:
            ctx.add(finding("unjudgeable-format", f"more than {MAX_STRINGS} long strings: the "
                            "rest is not decoded", **ctx.base))
            break
        sub = ctx.sub({**ctx.base, "table": path})
        _judge(s, sub, depth + 1, free_text=False)
        ctx.findings.extend(sub.findings)
        ctx.judged += sub.judged
        if not sub.judged and not sub.findings:
            unread += len(s)
    if free_text and unread > FREE_TEXT_CHARS:
        ctx.add(finding("free-text", f"{unread} characters of text in strings that hold no "
                        "table: a person must read them", **ctx.base))


# ----------------------------------------------------------------- tables laid out in text

_RULE_LINE = re.compile(r"^[\s\-=+|:_*.]*$")


def text_grid_blocks(text: str, min_rows: int = 3) -> list[list[list[str]]]:
    """Blocks of at least ``min_rows`` consecutive lines split into the same number
    (2 or more) of fields: by a delimiter, by runs of two or more spaces, or by
    single spaces. A header with one field fewer (a printed pandas frame, whose
    index has no name) is kept with its block."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip() and not _RULE_LINE.match(ln)]
    if len(lines) < min_rows:
        return []
    sep = sniff_delimiter("\n".join(lines[:200]))
    if sep is not None and sep != ",":
        splitter = lambda ln: [c.strip() for c in next(csv.reader([ln], delimiter=sep))]  # noqa: E731
    elif sep == ",":
        rows = [r for r in csv.reader(io.StringIO("\n".join(lines))) if r]
        if len({len(r) for r in rows[:200]}) <= 2 and max(len(r) for r in rows[:200]) >= 2:
            return _runs(rows, min_rows)
        splitter = _ws_split
    else:
        splitter = _ws_split
    return _runs([splitter(ln) for ln in lines], min_rows)


def _ws_split(line: str) -> list[str]:
    s = line.strip().strip("|").strip()
    if "|" in s:
        return [c.strip() for c in s.split("|")]
    wide = [c for c in re.split(r"\s{2,}|\t", s) if c]
    return wide if len(wide) >= 2 else s.split()


def _runs(rows: list[list[str]], min_rows: int) -> list[list[list[str]]]:
    out: list[list[list[str]]] = []
    i = 0
    while i < len(rows):
        w = len(rows[i])
        j = i
        while j + 1 < len(rows) and len(rows[j + 1]) == w:
            j += 1
        if w >= 2 and j - i + 1 >= min_rows:
            block = rows[i:j + 1]
            if i > 0 and len(rows[i - 1]) == w - 1:
                block = [["", *rows[i - 1]], *block]  # a header over an unnamed index
            out.append(block)
        i = j + 1
    return out


def judge_text_tables(text: str, ctx: Ctx, min_rows: int = 3) -> int:
    """Judge the tables laid out in ``text``; returns how many were judged."""
    found = 0
    for k, block in enumerate(text_grid_blocks(text, min_rows)):
        for off, blk in split_tables(block):
            t = grid_to_table(blk, base={**ctx.base, "table": k + 1}, first_row=off + 1)
            if t is not None and len(t.body):
                ctx.judge(t)
                found += 1
    return found


# ----------------------------------------------------------------- images and PDF


def png_text_chunks(data: bytes) -> list[tuple[str, str]]:
    """(keyword, text) of the tEXt, zTXt and iTXt chunks of a PNG file."""
    out: list[tuple[str, str]] = []
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        try:
            if ctype == b"tEXt":
                key, _, txt = body.partition(b"\x00")
                out.append((key.decode("latin-1"), txt.decode("latin-1")))
            elif ctype == b"zTXt":
                key, _, rest = body.partition(b"\x00")
                out.append((key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")))
            elif ctype == b"iTXt":
                key, _, rest = body.partition(b"\x00")
                flag, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\x00")
                _tr, _, txt = rest.partition(b"\x00")
                out.append((key.decode("latin-1"),
                            (_inflate(txt) if flag else txt).decode("utf-8", errors="replace")))
        except (IndexError, zlib.error):
            out.append((ctype.decode("latin-1"), "<damaged text chunk>"))
        if ctype == b"IEND":
            break
    return out


def _inflate(data: bytes, limit: int = MAX_VALUE_CHARS) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, limit)
    return out


def svg_text(data: bytes) -> str:
    """Text of an SVG image, one line per row of text elements (grouped by their
    ``y``, ordered by ``x``), then titles, descriptions, metadata and comments."""
    from lxml import etree  # deferred: lxml, only for SVG images

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                             load_dtd=False)
    root = etree.fromstring(data, parser)
    rows: dict[float, list[tuple[float, str]]] = {}
    loose: list[str] = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            if isinstance(el, etree._Comment) and el.text and el.text.strip():
                loose.append(el.text.strip())
            continue
        tag = etree.QName(el).localname
        if tag == "text":
            x, y = _coord(el.get("x")), _coord(el.get("y"))
            if y is None:
                m = re.search(r"translate\(\s*([-\d.eE]+)[\s,]+([-\d.eE]+)", el.get("transform", ""))
                if m:
                    x, y = float(m.group(1)), float(m.group(2))
            # each positioned <tspan> is a cell of its own (a row drawn as one <text>)
            spans = [t for t in el.iter() if isinstance(t.tag, str)
                     and etree.QName(t).localname == "tspan" and (t.get("x") or t.get("y"))]
            cells = [(_coord(t.get("x")) if t.get("x") else x,
                      _coord(t.get("y")) if t.get("y") else y,
                      "".join(t.itertext()).strip()) for t in spans] or \
                [(x, y, "".join(el.itertext()).strip())]
            for cx, cy, txt in cells:
                if not txt:
                    continue
                if cy is None:
                    loose.append(txt)
                else:
                    rows.setdefault(round(cy, 1), []).append((cx or 0.0, txt))
        elif tag in ("title", "desc", "metadata", "script", "style") and tag != "style":
            txt = "".join(el.itertext()).strip()
            if txt:
                loose.append(txt)
    lines = ["\t".join(t for _, t in sorted(cells)) for _, cells in sorted(rows.items())]
    return "\n".join(lines + [""] + loose)


def _coord(v: str | None) -> float | None:
    if not v:
        return None
    m = re.match(r"\s*([-\d.eE]+)", v)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def pdf_text(path: Path, max_pages: int = 500) -> tuple[str, int]:
    """The text layer of a PDF (columns kept apart by runs of spaces) and its page count."""
    from pypdf import PdfReader  # deferred: pypdf, only for PDF files

    reader = PdfReader(str(path))
    pages = []
    for k, page in enumerate(reader.pages):
        if k >= max_pages:
            break
        try:
            pages.append(page.extract_text(extraction_mode="layout") or "")
        except Exception:  # noqa: BLE001 - fall back to the plain extraction
            pages.append(page.extract_text() or "")
    return "\n".join(pages), len(reader.pages)


def judge_image_text(path: Path, kind: str, ctx: Ctx) -> None:
    """Judge the text an image or a PDF carries; the file itself stays ``review``."""
    if kind == "PNG image":
        with open(path, "rb") as fh:
            data = fh.read(256 * 1024 * 1024)
        for key, txt in png_text_chunks(data):
            _image_text(txt, ctx, f"PNG text chunk {key!r}", text_checks)
    elif kind == "SVG image":
        _image_text(svg_text(path.read_bytes()), ctx, "SVG text", text_checks)
    elif kind == "pdf":
        text, pages = pdf_text(path)
        ctx.details["pages"] = pages
        _image_text(text, ctx, "PDF text layer", text_checks)


def _image_text(text: str, ctx: Ctx, what: str, text_checks: Any) -> None:
    if not text.strip():
        return
    sub = ctx.sub(_where(ctx, what))
    text_checks(text, sub)
    s = text.strip()
    if s[0] in "{[" or looks_base64(s):
        _judge(s, sub, 0, free_text=False)  # JSON or base64 hidden in a text chunk
    else:
        judge_text_tables(text, sub)
    ctx.findings.extend(sub.findings)
