"""The content rule: what the bytes are, never what the file is called.

Pure Python, no dependency, shared by the in-server guard
(:mod:`ecluse_workspace.guard`) and usable by the host-side filter. The
magic numbers are a minimal copy of the output checker's sniffing
(``src/ecluse/sdc/sniff.py``): the workspace extension must not import the
platform package (``ecluse``), which is not installed in workspaces.

:func:`classify` names what a byte string is:

``empty``, ``text`` (code, Markdown, prose, configuration), ``notebook``
(JSON shaped like a Jupyter notebook), ``image`` (PNG, JPEG, GIF, WebP,
BMP, SVG), ``tabular`` (delimited text, JSON records, JSON Lines), ``data``
(a known data or archive format: Parquet, Arrow/Feather, zip — so xlsx,
npz —, gzip, bzip2, xz, zstd, HDF5/netCDF-4, netCDF classic, SQLite, legacy
Excel, pickle, NumPy, Avro, ORC, Stata, SPSS, R, tar, 7z, PDF) or ``binary``
(anything else that is not UTF-8 text).

The rule (``docs/threat-model.md``): the browser may receive ``text`` and
``empty`` up to the text cap, ``notebook`` up to the notebook cap once
:func:`check_notebook` accepts it, and ``image`` up to the image cap when
the browser asked for base64 (the image viewer). ``tabular``, ``data`` and
``binary`` are refused whatever the name, the format asked for or the size;
so is text carrying a long base64 or hex run that decodes to one of them.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from dataclasses import dataclass

#: how much of a file :func:`classify` needs to decide (the start of the file)
HEAD_BYTES = 64 * 1024

_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"PAR1", "data", "Parquet file"),
    (b"ARROW1", "data", "Arrow IPC / Feather file"),
    (b"FEA1", "data", "Feather (v1) file"),
    (b"PK\x03\x04", "data", "zip archive (xlsx, ods, npz, docx…)"),
    (b"PK\x05\x06", "data", "zip archive"),
    (b"PK\x07\x08", "data", "zip archive"),
    (b"\x1f\x8b", "data", "gzip-compressed file"),
    (b"BZh", "data", "bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "data", "xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "data", "zstd-compressed file"),
    (b"\x04\x22\x4d\x18", "data", "lz4-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "data", "7z archive"),
    (b"Rar!", "data", "RAR archive"),
    (b"\x89HDF\r\n\x1a\n", "data", "HDF5 / netCDF-4 file"),
    (b"CDF\x01", "data", "netCDF classic file"),
    (b"CDF\x02", "data", "netCDF classic file"),
    (b"CDF\x05", "data", "netCDF classic file"),
    (b"SQLite format 3\x00", "data", "SQLite database"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "data", "legacy Office document (xls)"),
    (b"\x93NUMPY", "data", "NumPy array"),
    (b"Obj\x01", "data", "Avro file"),
    (b"ORC", "data", "ORC file"),
    (b"<stata_dta>", "data", "Stata dataset"),
    (b"$FL2", "data", "SPSS dataset"),
    (b"$FL3", "data", "SPSS dataset"),
    (b"RDX2\n", "data", "R data file"),
    (b"RDX3\n", "data", "R data file"),
    (b"X\n\x00", "data", "R serialized data"),
    (b"%PDF", "data", "PDF document"),
    (b"\x89PNG\r\n\x1a\n", "image", "PNG image"),
    (b"\xff\xd8\xff", "image", "JPEG image"),
    (b"GIF87a", "image", "GIF image"),
    (b"GIF89a", "image", "GIF image"),
)

#: pickle protocols 2 to 5 start with PROTO <n>
_PICKLE = re.compile(rb"\A\x80[\x02-\x05]")
#: pickle protocol 0/1 is printable: opcodes and memo puts on their own lines
_PICKLE_TEXT = re.compile(r"\A(?:\(|c[\w.]+\n|\]|\}|\(dp0|\(lp0).*\n[pg]\d+\n.*\n[pg]\d+\n", re.S)
_SVG = re.compile(r"\A\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!DOCTYPE svg[^>]*>\s*)?<svg",
                  re.I | re.S)
#: long runs of base64 or hex: encoded payloads inside text
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{1024,}={0,2}|(?:[A-Za-z0-9+/]{60,}={0,2}\r?\n){16,}")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){512,}")
_CODE_LINE = re.compile(
    r"^\s*(?:#|//|/\*|--|import\s|from\s|def\s|class\s|return\b|if\b|for\b|while\b|"
    r"elif\b|else\b|try\b|except\b|with\b|function\b|const\b|let\b|var\b|library\(|@)"
    r"|\b[A-Za-z_]\w*(?:\[[^\]]*\])?\s*[-+*/]?=[^=]|[A-Za-z_]\w*\(|[{:;]\s*$|^\s*[(\[{})\]]"
    r"|[\"']\s*:\s|^\s*(?:\"[^\"]*\"|'[^']*'),\s*$"
)


@dataclass(frozen=True)
class Kind:
    """What :func:`classify` found: ``kind`` (see the module) and a label for people."""

    kind: str
    label: str


@dataclass(frozen=True)
class Limits:
    """Size caps of what the browser may receive (bytes)."""

    max_text_bytes: int = 2 * 1024 * 1024
    max_notebook_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 4 * 1024 * 1024


class ContentRefused(Exception):
    """The bytes may not go to the browser: ``code`` for machines, ``str(e)`` for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _magic(data: bytes) -> Kind | None:
    for magic, kind, label in _MAGIC:
        if data.startswith(magic):
            return Kind(kind, label)
    if _PICKLE.match(data):
        return Kind("data", "Python pickle")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return Kind("image", "WebP image")
    if data.startswith(b"BM") and len(data) > 26 and data[6:10] == b"\0\0\0\0":
        return Kind("image", "BMP image")
    if len(data) > 262 and data[257:262] == b"ustar":
        return Kind("data", "tar archive")
    if data[8:12] == b"DUCK":
        return Kind("data", "DuckDB database")
    return None


def decode_text(data: bytes, *, complete: bool) -> str | None:
    """``data`` as UTF-8 text, or ``None`` when it is not text (NUL, other controls)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if complete or e.start < len(data) - 4:
            return None
        text = data[: e.start].decode("utf-8")
    if "\0" in text:
        return None
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    if controls > 0.001 * max(len(text), 1) + 1:
        return None
    return text.removeprefix("\ufeff")


def classify(data: bytes, *, complete: bool = True) -> Kind:
    """What ``data`` is. ``complete=False``: ``data`` is only the start of a file."""
    if not data:
        return Kind("empty", "empty file")
    found = _magic(data)
    if found is not None:
        return found
    text = decode_text(data, complete=complete)
    if text is None:
        return Kind("binary", "binary content of unknown format")
    return classify_text(text, complete=complete)


def classify_text(text: str, *, complete: bool = True) -> Kind:
    stripped = text.lstrip(" \t\r\n")
    if _SVG.match(text):
        return Kind("image", "SVG image")
    if _PICKLE_TEXT.match(text):
        return Kind("data", "Python pickle (text protocol)")
    if stripped.startswith(("{", "[")):
        kind = _classify_json(stripped, complete=complete)
        if kind is not None:
            return kind
    if is_tabular_text(text, complete=complete):
        return Kind("tabular", "delimited text (a table)")
    return Kind("text", "text")


def _classify_json(text: str, *, complete: bool) -> Kind | None:
    doc = None
    if complete:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    if doc is not None:
        if isinstance(doc, dict) and "cells" in doc and "nbformat" in doc:
            return Kind("notebook", "Jupyter notebook")
        if _has_records(doc):
            return Kind("tabular", "JSON records (a table)")
        return Kind("text", "JSON")
    head = text[:4096]
    if text.startswith("{") and '"nbformat"' in text and '"cells"' in head:
        return Kind("notebook", "Jupyter notebook")
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    if len(lines) >= 2:
        parsed = 0
        for ln in lines:
            try:
                if isinstance(json.loads(ln), (dict, list)):
                    parsed += 1
            except ValueError:
                break
        if parsed == len(lines):
            return Kind("tabular", "JSON Lines (a table)")
    if text.startswith("[") and re.match(r"\[\s*[\[{]", text):
        return Kind("tabular", "JSON array of records (a table)")
    return None


def _has_records(doc: object, depth: int = 0) -> bool:
    """A table in JSON: 10+ flat records of the same shape (3+ fields), as a list
    (``orient="records"``, ``"values"``) or as 3+ columns (``orient="columns"``)."""
    if depth > 20:
        return False
    if isinstance(doc, list):
        if _flat_records(doc):
            return True
        return any(_has_records(x, depth + 1) for x in doc if isinstance(x, (dict, list)))
    if isinstance(doc, dict):
        cols = list(doc.values())
        if len(cols) >= 3 and all(isinstance(c, (dict, list)) for c in cols) and \
                len({len(c) for c in cols}) == 1 and len(cols[0]) >= 10 and \
                all(_scalars(c.values() if isinstance(c, dict) else c) for c in cols):
            return True
        return any(_has_records(v, depth + 1) for v in doc.values() if isinstance(v, (dict, list)))
    return False


def _scalars(values: object) -> bool:
    return all(v is None or isinstance(v, (str, int, float, bool)) for v in values)  # type: ignore[attr-defined]


def _flat_records(items: list) -> bool:
    if len(items) < 10:
        return False
    if all(isinstance(x, dict) for x in items):
        keys = {tuple(sorted(x)) for x in items}
        return len(keys) == 1 and len(items[0]) >= 3 and all(_scalars(x.values()) for x in items)
    if all(isinstance(x, list) for x in items):
        return len({len(x) for x in items}) == 1 and len(items[0]) >= 3 and \
            all(_scalars(x) for x in items)
    return False


def is_tabular_text(text: str, *, complete: bool = True, block: int = 20) -> bool:
    """Delimited text: the same number (2+) of fields on (nearly) every line.

    Two ways to be a table: the first 300 lines split consistently (80 %),
    or, anywhere in the text, ``block`` consecutive lines do (a table after
    a page of prose is a table). Code is not a table: lines that look like
    code (assignments, calls, keywords, comments) break a block, and text
    where many lines look like code is not one. A table re-written as code
    is text (``docs/threat-model.md``: the screen channel, within the text cap).
    """
    lines = text.splitlines()
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < 2:
        return False
    head = lines[:300]
    codey = sum(1 for ln in head if _CODE_LINE.search(ln))
    if codey <= 0.3 * len(head) and _consistent(head):
        return True
    return _has_block(lines, block)


def _consistent(lines: list[str]) -> bool:
    for sep in (",", ";", "\t", "|"):
        # a trailing separator ends a list item (``name,``): it adds no field
        sample = "\n".join(ln.rstrip().rstrip(sep) for ln in lines)
        if sep not in sample:
            continue
        try:
            rows = list(csv.reader(io.StringIO(sample), delimiter=sep))
        except csv.Error:
            continue
        counts = [len(r) for r in rows if r]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        cells = [c for r in rows[:50] for c in r if c.strip()]
        if cells and sum(1 for c in cells if len(c.split()) >= 6) > 0.3 * len(cells):
            continue  # prose that happens to hold commas
        if counts.count(mode) >= 0.8 * len(counts):
            return True
    return False


def _has_block(lines: list[str], block: int) -> bool:
    for sep in (",", ";", "\t", "|"):
        run, prev = 0, 0
        for ln in lines:
            n = ln.rstrip().rstrip(sep).count(sep) + 1
            if n >= 2 and n == prev and len(ln.split()) < 4 * n and not _CODE_LINE.search(ln):
                run += 1
                if run >= block:
                    return True
            else:
                run = 1 if n >= 2 and not _CODE_LINE.search(ln) else 0
            prev = n
    return False


def encoded_payload(text: str) -> Kind | None:
    """A long base64 or hex run in ``text`` that decodes to a table, data or binary."""
    for m in _B64_RUN.finditer(text):
        run = re.sub(r"\s", "", m.group(0))
        run = run[: len(run) - len(run) % 4]
        try:
            raw = base64.b64decode(run, validate=True)
        except (binascii.Error, ValueError):
            continue
        kind = classify(raw[:HEAD_BYTES], complete=len(raw) <= HEAD_BYTES)
        if kind.kind in ("tabular", "data", "binary", "notebook"):
            return Kind(kind.kind, f"base64-encoded {kind.label}")
    for m in _HEX_RUN.finditer(text):
        raw = bytes.fromhex(m.group(0)[: HEAD_BYTES * 2])
        kind = classify(raw, complete=len(m.group(0)) <= HEAD_BYTES * 2)
        if kind.kind in ("tabular", "data", "binary", "notebook"):
            return Kind(kind.kind, f"hex-encoded {kind.label}")
    return None


_REFUSED_KINDS = {
    "tabular": ("tabular_data", "is a table"),
    "data": ("data_file", "is a data file"),
    "binary": ("binary_file", "is a binary file"),
}


def _refuse(name: str, kind: Kind) -> ContentRefused:
    code, what = _REFUSED_KINDS.get(kind.kind, ("binary_file", "cannot be shown"))
    return ContentRefused(
        code, f"{name} {what} ({kind.label}): it cannot be opened or downloaded in the browser. "
              f"Analyse it in a notebook.")


def check_bytes(data: bytes, name: str, limits: Limits, *, complete: bool = True,
                size: int | None = None, allow_image: bool = True) -> Kind:
    """Raise :class:`ContentRefused` unless the browser may receive ``data``.

    ``size`` is the whole file's size when ``data`` is only its start.
    """
    size = len(data) if size is None else size
    kind = classify(data, complete=complete)
    if kind.kind in _REFUSED_KINDS:
        raise _refuse(name, kind)
    if kind.kind == "image":
        if not allow_image:
            raise _refuse(name, Kind("binary", kind.label))
        cap = limits.max_image_bytes
    elif kind.kind == "notebook":
        cap = limits.max_notebook_bytes
    else:
        cap = limits.max_text_bytes
    if size > cap:
        raise ContentRefused(
            "too_large", f"{name} is larger than {cap // 1024} KiB ({kind.label}): it cannot "
                         f"be opened in the browser.")
    if kind.kind in ("text", "notebook") or (kind.kind == "image" and kind.label == "SVG image"):
        text = decode_text(data, complete=complete) or ""
        hidden = encoded_payload(text)
        if hidden is not None:
            raise _refuse(name, hidden)
        if complete and kind.kind == "notebook":
            try:
                check_notebook(json.loads(text), name)
            except ValueError:
                raise _refuse(name, Kind("binary", "damaged notebook JSON")) from None
    return kind


_CELL_TYPES = frozenset({"code", "markdown", "raw"})
_IMAGE_MIMES = {"image/png": "PNG image", "image/jpeg": "JPEG image", "image/gif": "GIF image",
                "image/webp": "WebP image", "image/bmp": "BMP image"}


def check_notebook(nb: object, name: str) -> None:
    """A real notebook (nbformat 4 shape); images in outputs and attachments are images."""
    def bad(why: str) -> ContentRefused:
        return ContentRefused("not_a_notebook",
                              f"{name} is not a valid notebook ({why}): it cannot be opened in "
                              f"the browser.")

    if not isinstance(nb, dict):
        raise bad("not a JSON object")
    if nb.get("nbformat") != 4 or not isinstance(nb.get("nbformat_minor", 0), int):
        raise bad("nbformat is not 4")
    if not isinstance(nb.get("metadata", {}), dict) or not isinstance(nb.get("cells"), list):
        raise bad("no list of cells")
    # what the researcher wrote (sources, metadata) is text, not a table; outputs are
    # what kernels printed (the screen channel): only their images are checked
    _check_no_table(nb.get("metadata", {}), name)
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") not in _CELL_TYPES:
            raise bad("a cell of unknown type")
        src = cell.get("source", "")
        if not (isinstance(src, str) or (isinstance(src, list)
                                          and all(isinstance(s, str) for s in src))):
            raise bad("a cell source that is not text")
        text = src if isinstance(src, str) else "".join(src)
        if is_tabular_text(text):
            raise _refuse(name, Kind("tabular", "a table in a cell"))
        _check_no_table(cell.get("metadata", {}), name)
        bundles = [o.get("data") for o in cell.get("outputs", []) or []
                   if isinstance(o, dict) and isinstance(o.get("data"), dict)]
        attachments = cell.get("attachments") or {}
        if isinstance(attachments, dict):
            bundles += [b for b in attachments.values() if isinstance(b, dict)]
        for bundle in bundles:
            for mime, value in bundle.items():
                if mime in _IMAGE_MIMES and isinstance(value, (str, list)):
                    raw = "".join(value) if isinstance(value, list) else value
                    try:
                        head = base64.b64decode(re.sub(r"\s", "", raw)[:8192], validate=False)
                    except (binascii.Error, ValueError):
                        raise bad(f"{mime} output that is not base64") from None
                    got = _magic(head)
                    if got is None or got.kind != "image":
                        raise ContentRefused(
                            "data_file", f"{name} carries a file disguised as an image "
                                         f"({mime}): it cannot be opened in the browser.")


def _check_no_table(doc: object, name: str) -> None:
    leaves, rows = _leaves(doc)
    for x in leaves:
        if "\n" in x and is_tabular_text(x):
            raise _refuse(name, Kind("tabular", "a table in the notebook's metadata"))
    if _has_block([v for v in leaves if "\n" not in v], 10) or _has_block(rows, 10):
        raise _refuse(name, Kind("tabular", "a table in the notebook's metadata"))


def check_text(text: str, name: str, limits: Limits) -> Kind:
    """:func:`check_bytes` for text the server already decoded."""
    return check_bytes(text.encode("utf-8", "surrogatepass"), name, limits)


def _leaves(doc: object) -> tuple[list[str], list[str]]:
    """String and number leaves in document order, and each list of scalars as a row."""
    leaves: list[str] = []
    rows: list[str] = []
    stack: list[object] = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in reversed(list(x.items())):
                stack.append(v)
                stack.append(k)
        elif isinstance(x, list):
            scalars = [str(v) for v in x if isinstance(v, (str, int, float)) and
                       not isinstance(v, bool)]
            if len(scalars) >= 2:
                rows.append(",".join(s.replace(",", " ") for s in scalars))
            stack.extend(reversed(x))
        elif isinstance(x, str):
            leaves.append(x)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            leaves.append(str(x))
    return leaves, rows


def check_json_strings(doc: object, name: str, *, max_string: int, max_total: int) -> None:
    """User state kept as JSON (settings, layouts): short values, no table, bounded.

    A table is looked for in each string, in all the values read in order
    (one per line: a table split over many values) and in the lists of
    values (each list a row).
    """
    total = len(json.dumps(doc, ensure_ascii=False))
    if total > max_total:
        raise ContentRefused("too_large", f"{name} is larger than {max_total // 1024} KiB: "
                                          f"it cannot be sent to the browser.")
    leaves, rows = _leaves(doc)
    for x in leaves:
        if len(x) > max_string:
            raise ContentRefused(
                "too_large", f"{name} holds a value longer than {max_string} characters: "
                             f"it cannot be sent to the browser.")
        if "\n" in x and is_tabular_text(x):
            raise _refuse(name, Kind("tabular", "a table inside a value"))
        hidden = encoded_payload(x)
        if hidden is not None:
            raise _refuse(name, hidden)
    joined = [v for v in leaves if "\n" not in v]
    if _has_block(joined, 10) or _has_block(rows, 10):
        raise _refuse(name, Kind("tabular", "a table spread over many values"))
