"""Tell a file's format from its content (magic bytes, then text shape), never its name.

A CSV renamed ``.png`` is still a CSV; a PNG renamed ``.csv`` is still an image.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD_BYTES = 64 * 1024
#: a text file without a line break in this many bytes is not a table
MAX_LINE_BYTES = 1024 * 1024

_IMAGES = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"), (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"),
]
_OTHER_BINARY = [
    (b"%PDF", "pdf", "PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "office", "legacy Office document (xls/doc/ppt)"),
    (b"BZh", "archive-other", "bzip2 archive"), (b"\xfd7zXZ\x00", "archive-other", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "archive-other", "7z archive"), (b"Rar!", "archive-other", "RAR archive"),
    (b"SQLite format 3\x00", "database", "SQLite database"),
    (b"<stata_dta>", "dataset", "Stata dataset"), (b"$FL2", "dataset", "SPSS dataset"),
    (b"$FL3", "dataset", "SPSS dataset"), (b"ARROW1", "arrow", "Arrow IPC / Feather file"),
    (b"Obj\x01", "dataset", "Avro file"), (b"ORC", "dataset", "ORC file"),
    (b"\x93NUMPY", "dataset", "NumPy array"), (b"RDX2\n", "dataset", "R data file"),
    (b"RDX3\n", "dataset", "R data file"), (b"X\n", "dataset", "R serialized data"),
    (b"\x00\x00\x00\x0cjP  ", "image", "JPEG 2000 image"),
]


@dataclass
class Sniffed:
    format: str  # csv, parquet, arrow, excel, json, jsonl, notebook, netcdf, zarr, zip, gzip,
    #              html, text, image, pdf, office, archive-other, database, dataset,
    #              binary, empty, directory
    detail: str = ""
    encoding: str = "utf-8"
    sep: str = ","
    extra: dict[str, Any] = field(default_factory=dict)


def _is_zarr_dir(p: Path) -> bool:
    return any((p / m).exists() for m in (".zgroup", ".zarray", "zarr.json"))


def sniff(path: Path) -> Sniffed:
    if path.is_dir():
        return Sniffed("zarr" if _is_zarr_dir(path) else "directory")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        return Sniffed("empty")
    if head.startswith(b"PAR1"):
        return Sniffed("parquet")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Sniffed("netcdf", "netCDF-4 / HDF5")
    if head.startswith(b"CDF\x01") or head.startswith(b"CDF\x02") or head.startswith(b"CDF\x05"):
        return Sniffed("netcdf", "netCDF classic")
    if head.startswith(b"\x1f\x8b"):
        return Sniffed("gzip")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    for magic, label in _IMAGES:
        if head.startswith(magic):
            return Sniffed("image", label)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image", "WebP image")
    if head.startswith(b"BM") and len(head) > 14 and b"\x00" in head[:64]:
        return Sniffed("image", "BMP image")
    for magic, fmt, label in _OTHER_BINARY:
        if head.startswith(magic):
            return Sniffed(fmt, label)
    text, encoding = _decode(head)
    if text is None:
        if b"\x00" in head and _decode(head.replace(b"\x00", b""))[0] is not None:
            # text made to look binary by NUL bytes: the checker reads it without them
            return Sniffed("binary", "text holding NUL bytes", extra={"nul_bytes": True})
        return Sniffed("binary", "binary content of unknown format")
    return _sniff_text(path, text, encoding, len(head) == HEAD_BYTES)


def _sniff_zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        return Sniffed("zip", f"damaged zip: {e}")
    nameset = set(names)
    if "xl/workbook.xml" in nameset or "xl/workbook.bin" in nameset:
        return Sniffed("excel", "Excel workbook (xlsx/xlsm)")
    if any(n.startswith("word/") for n in names):
        return Sniffed("office", "Word document")
    if any(n.startswith("ppt/") for n in names):
        return Sniffed("office", "PowerPoint document")
    if "mimetype" in nameset and any(n == "content.xml" for n in names):
        return Sniffed("office", "OpenDocument file")
    if any(n.rsplit("/", 1)[-1] in (".zgroup", ".zarray", "zarr.json") for n in names):
        return Sniffed("zarr", "zipped Zarr store")
    return Sniffed("zip")


#: control characters other than line breaks, tabs and form feeds
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


def _decode(head: bytes) -> tuple[str | None, str]:
    if b"\x00" in head:
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            try:
                return head.decode("utf-16", errors="strict"), "utf-16"
            except UnicodeDecodeError:
                return None, ""
        return None, ""
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = head.decode(enc)
        except UnicodeDecodeError as e:
            if enc == "utf-8-sig" and e.start >= len(head) - 4:  # cut inside a character
                text = head[: e.start].decode(enc)
            else:
                continue
        controls = len(_CONTROLS_RE.findall(text))
        if controls > 0.01 * max(len(text), 1):
            return None, ""
        return text, enc
    return None, ""


_HTML_RE = re.compile(r"^\s*(?:<!doctype html|<html|<table|<body|<div)", re.I)
_SVG_RE = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<svg", re.I | re.S)


def _sniff_text(path: Path, text: str, encoding: str, truncated: bool) -> Sniffed:
    stripped = text.lstrip("\ufeff \t\r\n")
    if _SVG_RE.match(text):
        return Sniffed("image", "SVG image", encoding)
    if stripped.startswith(("{", "[")):
        if '"nbformat"' in text and '"cells"' in text or (
                stripped.startswith("{") and '"cells"' in text[:4096] and path.stat().st_size < 512 * 1024**2
                and _is_notebook(path)):
            return Sniffed("notebook", "Jupyter notebook", encoding)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) >= 2 and all(ln.lstrip().startswith("{") for ln in lines[:-1]):
            try:
                json.loads(lines[0])
                json.loads(lines[1])
                return Sniffed("jsonl", "JSON Lines", encoding)
            except ValueError:
                pass
        return Sniffed("json", "JSON", encoding)
    if _HTML_RE.match(stripped):
        return Sniffed("html", "HTML", encoding)
    if stripped.startswith("<?xml") or stripped.startswith("<"):
        return Sniffed("text", "XML / markup", encoding)
    if "\n" not in text and (truncated or path.stat().st_size > HEAD_BYTES):
        if not _has_newline(path, MAX_LINE_BYTES):
            return Sniffed("text", "text with a line longer than 1 MB", encoding,
                           extra={"long_line": True})
    sep = sniff_delimiter(text, truncated)
    if sep is not None:
        return Sniffed("csv", "CSV" if sep == "," else f"CSV ({sep!r}-separated)", encoding, sep)
    return Sniffed("text", "plain text", encoding)


def _is_notebook(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
        return isinstance(data, dict) and "cells" in data and "nbformat" in data
    except (ValueError, OSError):
        return False


def _has_newline(path: Path, limit: int) -> bool:
    with open(path, "rb") as fh:
        return b"\n" in fh.read(limit)


def sniff_delimiter(text: str, truncated: bool = False) -> str | None:
    """The delimiter that splits the first lines into the most consistent number of
    fields (2 or more), or ``","`` for a one-column list, or ``None`` for prose."""
    lines = text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]
    lines = [ln for ln in lines[:200] if ln.strip()]
    if not lines:
        return None
    best, best_score = None, 0.0
    for sep in (",", ";", "\t", "|"):
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=sep))
        except csv.Error:
            continue
        counts = [len(r) for r in rows if r]
        if not counts:
            continue
        cells = [c for r in rows[:50] for c in r if c.strip()]
        if cells and sum(1 for c in cells if len(c.split()) >= 5) > 0.3 * len(cells):
            continue  # prose that happens to hold commas
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = counts.count(mode) / len(counts)
        if score > best_score + 1e-9:
            best, best_score = sep, score
    if best is not None and best_score >= 0.6:
        return best
    # one value per line, no prose: a one-column table
    if len(lines) >= 2 and all(len(ln) <= 64 and len(ln.split()) <= 3 for ln in lines[:50]):
        return ","
    return None
