"""The ingress checks (``ecluse.airlock.ingress_checks``): type by content, archive limits,
executable content. Attack cases: zip slip, a symlink out, zip and tar bombs, a binary in a
data import."""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
import zipfile

from ecluse.airlock.ingress_checks import Limits, check_file, sniff

ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 120


def check(data: bytes, name: str, *, code: bool = False, limits: Limits | None = None):
    return check_file(io.BytesIO(data), name, len(data), code=code, limits=limits)


def zip_of(entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None,
           compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
        for n, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(n)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def tar_of(members: list[tarfile.TarInfo], data: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.USTAR_FORMAT) as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def test_type_is_found_by_content_not_by_name():
    assert sniff(ELF) == "elf"
    assert sniff(b"MZ\x90\x00") == "pe"
    assert sniff(b"#!/bin/sh\necho hi\n") == "script"
    assert sniff(b"a,b\n1,2\n") == "text"
    v = check(ELF, "table.csv")  # an ELF binary renamed as a CSV
    assert not v.accepted and v.kind == "elf"
    assert "executable content (elf)" in v.reasons[0]
    assert check(b"#!/usr/bin/env python3\nprint(1)\n", "notes.txt").kind == "script"
    assert not check(b"#!/usr/bin/env python3\nprint(1)\n", "notes.txt").accepted
    assert check(b"a,b\n1,2\n", "table.csv").accepted


def test_a_binary_in_a_data_import_is_refused_and_taken_in_a_code_import():
    for data, name in ((ELF, "tool"), (b"MZ" + b"\x00" * 200, "setup.dat"),
                       (b"#!/bin/bash\nrm -rf ~\n", "run"), (b"print('x')\n", "analysis.py")):
        assert not check(data, name).accepted, name
        assert check(data, name, code=True).accepted, name


def test_unknown_binary_content_is_refused_even_in_a_code_import():
    v = check(bytes(range(256)) * 4, "blob.bin.data", code=True)
    assert not v.accepted and "cannot be told from its content" in v.reasons[0]


def test_notebooks_with_code_cells_are_executable():
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "source": ["# notes"], "metadata": {}},
        {"cell_type": "code", "source": ["import os\n", "os.system('id')"], "metadata": {},
         "outputs": [], "execution_count": None}]}
    data = json.dumps(nb).encode()
    assert not check(data, "notes.json").accepted  # by content, whatever the name
    assert check(data, "notes.json", code=True).accepted
    nb["cells"] = nb["cells"][:1]
    assert check(json.dumps(nb).encode(), "notes.json").accepted


def test_office_files_with_macros_are_refused_in_a_data_import():
    plain = zip_of({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    macro = zip_of({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>",
                    "xl/vbaProject.bin": b"\xd0\xcf\x11\xe0"})
    assert check(plain, "book.xlsx").accepted
    v = check(macro, "book.xlsx")
    assert not v.accepted and "office-macro" in v.reasons[0]
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "_VBA_PROJECT".encode(
        "utf-16-le")
    assert not check(ole, "old.xls").accepted


def test_zip_slip_and_absolute_paths_are_refused():
    for bad in ("../../etc/cron.d/x", "data/../../x", "/etc/passwd", "C:/Windows/x",
                "..\\..\\x"):
        v = check(zip_of({bad: b"a,b\n"}), "data.zip")
        assert not v.accepted, bad
        assert "absolute path" in v.reasons[0] or "climbs out" in v.reasons[0], v.reasons
    tar = tar_of([tarfile.TarInfo("../outside.csv")], {"../outside.csv": b"a\n"})
    assert "climbs out" in check(tar, "data.tar").reasons[0]


def test_symlinks_and_hard_links_out_of_an_archive_are_refused():
    v = check(zip_of({"a.csv": b"a\n"}, symlinks={"link": "/etc/shadow"}), "data.zip")
    assert not v.accepted and "symbolic link" in v.reasons[0]
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        m = tarfile.TarInfo("link")
        m.type, m.linkname = kind, "/etc/shadow"
        v = check(tar_of([m], {}), "data.tar")
        assert not v.accepted and "is a link" in v.reasons[0], kind
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    assert "special file" in check(tar_of([dev], {}), "data.tar").reasons[0]


def test_zip_and_tar_bombs_are_refused_while_decompressing():
    limits = Limits(max_unpacked_bytes=64 * 1024 * 1024, max_ratio=100)
    bomb = zip_of({"zeros.csv": b"0" * (200 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    v = check(bomb, "data.zip", limits=limits)
    assert not v.accepted and ("bomb" in v.reasons[0] or "unpacks" in v.reasons[0]), v.reasons
    tgz = gzip.compress(tar_of([tarfile.TarInfo("zeros.csv")],
                               {"zeros.csv": b"0" * (50 * 1024 * 1024)}))
    v = check(tgz, "data.tgz", limits=limits)
    assert not v.accepted and "bomb" in v.reasons[0], v.reasons
    gz = gzip.compress(b"0" * (50 * 1024 * 1024))
    assert not check(gz, "data.csv.gz", limits=limits).accepted


def test_member_count_and_nesting_are_bounded():
    many = zip_of({f"f{i}.csv": b"a\n" for i in range(30)})
    v = check(many, "data.zip", limits=Limits(max_members=10))
    assert not v.accepted and "more than 10 archive members" in v.reasons[0]
    inner = zip_of({"a.csv": b"a,b\n"})
    nested = zip_of({"inner.zip": zip_of({"inner2.zip": inner})})
    assert check(zip_of({"inner.zip": inner}), "data.zip").accepted
    v = check(nested, "data.zip", limits=Limits(max_nesting=2))
    assert not v.accepted and "nested" in v.reasons[0]


def test_executable_content_inside_an_archive_is_found():
    v = check(zip_of({"docs/readme.txt": b"hello\n", "bin/tool": ELF}), "bundle.zip")
    assert not v.accepted and "elf" in v.reasons[0]
    tgz = gzip.compress(tar_of([tarfile.TarInfo("run.sh")], {"run.sh": b"#!/bin/sh\nid\n"}))
    assert not check(tgz, "data.tar.gz").accepted
    assert check(tgz, "repo.tar.gz", code=True).accepted


def test_a_truncated_archive_is_refused_not_passed():
    data = zip_of({"a.csv": b"a,b\n" * 1000})
    v = check(data[: len(data) // 2], "data.zip")
    assert not v.accepted


def test_an_archive_member_of_unknown_type_is_refused_and_office_parts_are_looked_into():
    blob = bytes(range(256)) * 8
    v = check(zip_of({"a.csv": b"a\n", "blob.dat": blob}), "data.zip")
    assert not v.accepted and "members whose type cannot be told" in v.reasons[0]
    assert "blob.dat" in v.reasons[0]
    # an Office file's own binary parts are not data, but a program hidden in it is found
    book = {"[Content_Types].xml": b"<Types/>", "xl/printerSettings/p1.bin": blob}
    assert check(zip_of(book), "book.xlsx").accepted
    v = check(zip_of({**book, "xl/media/tool": ELF}), "book.xlsx")
    assert not v.accepted and "elf" in v.reasons[0]


def test_known_data_formats_pass_in_an_archive():
    sas = b"\x00" * 12 + bytes.fromhex("c2ea8160b31411cfbd92080009c7318c181f1011") + b"\x00" * 64
    parquet = b"PAR1" + b"\x00" * 64 + b"PAR1"
    v = check(zip_of({"a.sas7bdat": sas, "b.parquet": parquet, "c.csv": b"x,y\n"}), "d.zip")
    assert v.accepted, v.reasons
