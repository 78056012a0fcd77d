"""Malformed inputs never crash the checker and never pass."""

from __future__ import annotations

import os
import zipfile

import pandas as pd
import pytest

from ecluse.sdc import check_file


def _never_pass(path, **kw):
    rep = check_file(path, **kw)
    assert rep.verdict != "pass", [(f.rule, f.message) for f in rep.findings]
    return rep


def test_truncated_parquet(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"ward": ["A", "B"] * 500, "n": range(1000)}).to_parquet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    rep = _never_pass(p)
    assert rep.verdict == "review" and rep.findings[0].rule == "reader-error"


def test_parquet_with_corrupt_page(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"ward": ["A", "B"] * 500, "n": range(10, 1010)}).to_parquet(p)
    data = bytearray(p.read_bytes())
    for k in range(8, 200):
        data[k] ^= 0xFF
    p.write_bytes(bytes(data))
    _never_pass(p)


def test_broken_zip(tmp_path):
    p = tmp_path / "b.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("t.csv", "ward,n\nA,40\nB,50\n" * 200)
    data = p.read_bytes()
    p.write_bytes(data[:40] + b"\x00" * 30 + data[70:])
    _never_pass(p)
    p.write_bytes(data[: len(data) - 30])  # central directory cut
    _never_pass(p)


def test_binary_junk_with_csv_name(tmp_path):
    p = tmp_path / "results.csv"
    p.write_bytes(os.urandom(50_000))
    rep = _never_pass(p)
    assert rep.verdict == "review"


def test_huge_single_line_file(tmp_path):
    p = tmp_path / "line.csv"
    chunk = b"12," * (1024 * 1024)
    with open(p, "wb") as fh:
        for _ in range(67):  # ~200 MB, one line
            fh.write(chunk)
    rep = _never_pass(p)
    assert rep.verdict == "review"
    p.unlink()


def test_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(b"")
    assert _never_pass(p).verdict == "review"


def test_missing_file(tmp_path):
    assert _never_pass(tmp_path / "nope.csv").verdict == "review"


@pytest.mark.parametrize("content", [
    b"{not json at all",
    b'{"cells": [1, 2], "nbformat": 4',
    b"PK\x03\x04" + b"\x00" * 100,
    b"\x89HDF\r\n\x1a\n" + b"\x00" * 100,
    b"PAR1" + b"\x00" * 100,
    b"CDF\x01" + b"\x00" * 50,
    b"\x1f\x8b" + b"\x00" * 50,
    "région;n\nNord;12\n".encode("utf-16"),
    b"a,b\n1,2,3,4\n5\n\"unterminated,6\n",
])
def test_garbage_never_passes(tmp_path, content):
    p = tmp_path / "x.csv"
    p.write_bytes(content)
    _never_pass(p)


def test_excel_file_with_bad_xml(tmp_path):
    p = tmp_path / "b.xlsx"
    pd.DataFrame({"ward": ["A"], "n": [40]}).to_excel(p, index=False)
    src = zipfile.ZipFile(p)
    items = {n: src.read(n) for n in src.namelist()}
    src.close()
    items["xl/worksheets/sheet1.xml"] = b"<worksheet><sheetData><row><c"
    with zipfile.ZipFile(p, "w") as zf:
        for n, d in items.items():
            zf.writestr(n, d)
    _never_pass(p)
