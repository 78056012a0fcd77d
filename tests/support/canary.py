"""Canary data for the workspace's ways out (issue 12, item 4).

Row-level canary data, written in every format the guard knows and a few it
does not, under its own name and under others (renamed, compressed, hidden
in JSON5 comments of a JupyterLab settings file, in a workspace layout), and
a check that none of its bytes — raw, base64 at any alignment, hex — comes
back in an HTTP answer.

Independent of how the workspace is reached, so that the same plan runs
against the in-server guard and against a host-side filter alone:

* :func:`canary_files` — ``{relative path: bytes}`` to plant (paths relative
  to the user's home; ``.jupyter/…`` ones are JupyterLab state);
* :func:`plant` — plants them in a running workspace through the contents
  API (``PUT``, base64) and one terminal command that moves the hidden ones
  into place;
* :func:`probes` — ``(method, path)`` of every allowed route that reads files
  without running code (``ecluse_workspace.routes.ROUTES`` with
  ``reads_files``, plus the static routes), for each planted file;
* :func:`leaks` — which needles of the canary appear in a body.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import pickle
import sqlite3
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

#: in every row: what a leak check looks for first
TOKEN = "ECLCANARY"
N_ROWS = 400


def rows() -> list[tuple[str, str, str, int]]:
    return [(f"{TOKEN}{i:05d}", f"19{40 + i % 50}-0{1 + i % 9}-1{i % 9}",
             f"E{10 + i % 80}.{i % 10}", 40 + i % 50) for i in range(N_ROWS)]


COLUMNS = ("patient_id", "birth_date", "icd10", "length_of_stay")


def csv_text(sep: str = ",") -> str:
    lines = [sep.join(COLUMNS)] + [sep.join(str(v) for v in r) for r in rows()]
    return "\n".join(lines) + "\n"


def _frame():
    import pandas as pd

    return pd.DataFrame(rows(), columns=list(COLUMNS))


def _bytes_of(write: Callable[[str], None], suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = str(Path(d) / f"x{suffix}")
        write(p)
        return Path(p).read_bytes()


def data_files() -> dict[str, bytes]:
    """The canary in every data format the guard knows, under its usual name."""
    import numpy as np

    df = _frame()
    csv = csv_text().encode()
    out: dict[str, bytes] = {
        "canary.csv": csv,
        "canary.tsv": csv_text("\t").encode(),
        "canary.json": df.to_json(orient="records").encode(),
        "canary.jsonl": df.to_json(orient="records", lines=True).encode(),
        "canary.parquet": _bytes_of(lambda p: df.to_parquet(p, compression=None), ".parquet"),
        "canary.feather": _bytes_of(lambda p: df.to_feather(p, compression="uncompressed"),
                                    ".feather"),
        "canary.arrow": _arrow_file(df),
        "canary.xlsx": _bytes_of(lambda p: df.to_excel(p, index=False), ".xlsx"),
        "canary.h5": _hdf5(),
        "canary.nc": _bytes_of(lambda p: df.to_xarray().to_netcdf(p, engine="h5netcdf"), ".nc"),
        "canary.sqlite": _sqlite(),
        "canary.pkl": pickle.dumps(df.values.tolist(), protocol=4),
        "canary.npy": _npy(np.array(df.values.tolist(), dtype="U16")),
        "canary.zip": _zip({"canary.csv": csv}),
        "canary.csv.gz": gzip.compress(csv),
        "canary.csv.bz2": bz2.compress(csv),
        "canary.csv.xz": lzma.compress(csv),
        "canary.dta": _bytes_of(lambda p: df.to_stata(p, write_index=False), ".dta"),
    }
    return out


def _arrow_file(df) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(df)
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _hdf5() -> bytes:
    import h5py

    def write(p: str) -> None:
        with h5py.File(p, "w") as f:
            f["rows"] = [",".join(str(v) for v in r).encode() for r in rows()]

    return _bytes_of(write, ".h5")


def _sqlite() -> bytes:
    def write(p: str) -> None:
        con = sqlite3.connect(p)
        con.execute(f"create table t ({', '.join(COLUMNS)})")
        con.executemany("insert into t values (?, ?, ?, ?)", rows())
        con.commit()
        con.close()

    return _bytes_of(write, ".sqlite")


def _npy(a) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


#: names a browser opens without a second thought
DISGUISES = ("notes.ipynb", "analysis.py", "README.md", "figure.png", "logo.svg",
             "report.txt", "settings.yaml", "Makefile", "page.html", "style.css")


def canary_files() -> dict[str, bytes]:
    """``{path relative to the home folder: bytes}``: everything the canary plan plants."""
    data = data_files()
    out = {f"canary/known/{name}": b for name, b in data.items()}
    # renamed: every data format under every innocent name would be 180 files;
    # each format under one disguise, each disguise over several formats
    for i, (name, b) in enumerate(sorted(data.items())):
        disguise = DISGUISES[i % len(DISGUISES)]
        out[f"canary/renamed/{name.replace('.', '_')}_{disguise}"] = b
    for disguise in DISGUISES:
        out[f"canary/csv-as/{disguise}"] = data["canary.csv"]
        out[f"canary/parquet-as/{disguise}"] = data["canary.parquet"]
    csv = data["canary.csv"]
    out["canary/encoded/csv-base64.txt"] = base64.encodebytes(csv)
    out["canary/encoded/csv-base64-oneline.md"] = base64.b64encode(csv)
    out["canary/encoded/csv-hex.txt"] = csv.hex().encode()
    out["canary/encoded/parquet-base64.py"] = (
        b"DATA = '" + base64.b64encode(data["canary.parquet"]) + b"'\n")
    out["canary/encoded/no-extension"] = csv
    out["canary/compressed/archive.tar.gz.txt"] = gzip.compress(csv)
    out["canary/compressed/notes.ipynb"] = gzip.compress(csv)
    out["canary/notebook-with-attachment.ipynb"] = json.dumps(_notebook_hiding_parquet(
        data["canary.parquet"])).encode()
    # JupyterLab state kept in the home folder (user-writable)
    out[".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings"] = (
        _json5_with_comments(csv.decode()).encode())
    out[".jupyter/lab/user-settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"] = (
        json.dumps({"codeCellConfig": {"lineNumbers": True},
                    "canaryRows": csv.decode()}).encode())
    out[".jupyter/lab/workspaces/default-37a8.jupyterlab-workspace"] = json.dumps(
        _layout({"canary:rows": {"data": csv.decode()}}, "default")).encode()
    out[".jupyter/lab/workspaces/split-9f1e.jupyterlab-workspace"] = json.dumps(
        _layout({"canary:rows": [list(map(str, r)) for r in rows()]}, "split")).encode()
    out[".jupyter/lab/workspaces/b64-0c2d.jupyterlab-workspace"] = json.dumps(
        _layout({"canary:b64": base64.b64encode(data["canary.parquet"]).decode()}, "b64")
    ).encode()
    # a user data folder, if Jupyter ever read one (kernelspecs, lab extensions, themes)
    share = ".local/share/jupyter"
    out[f"{share}/kernels/canary/kernel.json"] = json.dumps(
        {"argv": ["python3"], "display_name": "c", "language": "python"}).encode()
    out[f"{share}/kernels/canary/logo-64x64.png"] = csv
    out[f"{share}/kernels/canary/logo-32x32.svg"] = data["canary.parquet"]
    out[f"{share}/labextensions/canary/package.json"] = json.dumps({"name": "canary"}).encode()
    out[f"{share}/labextensions/canary/static/remoteEntry.js"] = csv
    out[f"{share}/labextensions/canary/themes/canary/index.css"] = csv
    return out


def _json5_with_comments(csv: str) -> str:
    lines = "\n".join(f"// {ln}" for ln in csv.splitlines())
    return f"{{\n{lines}\n  /* {csv} */\n  \"theme\": \"JupyterLab Light\"\n}}\n"


def _layout(extra: dict, name: str) -> dict:
    data = {
        "layout-restorer:data": {"main": {"dock": {"type": "tab-area", "currentIndex": 0,
                                                   "widgets": []}},
                                 "left": {"collapsed": False, "visible": True,
                                          "current": "filebrowser",
                                          "widgets": ["filebrowser", "running-sessions"]}},
        "file-browser-filebrowser:cwd": {"path": ""},
    }
    data.update(extra)
    return {"data": data, "metadata": {"id": name}}


def _notebook_hiding_parquet(parquet: bytes) -> dict:
    return {
        "cells": [{"cell_type": "markdown", "id": "m1", "metadata": {},
                   "source": "![x](attachment:x.png)",
                   "attachments": {"x.png": {"image/png": base64.b64encode(parquet).decode()}}}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }


# --------------------------------------------------------------------------- leaks


def _b64_needles(chunk: bytes) -> list[bytes]:
    """base64 of ``chunk`` at the three alignments, trimmed to the stable middle."""
    out = []
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + chunk)
        start = 4 * ((shift + 2) // 3) if shift else 0
        end = 4 * ((shift + len(chunk)) // 3)
        if end - start >= 16:
            out.append(enc[start:end])
    return out


def needles(files: dict[str, bytes] | None = None) -> dict[bytes, str]:
    """``{needle: what it is}``: the token and slices of every planted file, raw and encoded."""
    found: dict[bytes, str] = {}
    token = TOKEN.encode()
    found[token] = "canary token"
    for n in _b64_needles(token + b"00"):
        found[n] = "canary token (base64)"
    found[token.hex().encode()] = "canary token (hex)"
    found[token.hex().upper().encode()] = "canary token (HEX)"
    for path, data in (files or canary_files()).items():
        if len(data) < 96:
            continue
        for pos in range(48, min(len(data), 4096) - 48, 997):
            chunk = data[pos:pos + 32]
            if len(set(chunk)) < 8:  # padding, zeros: not distinctive
                continue
            found.setdefault(chunk, f"bytes of {path}")
            for n in _b64_needles(chunk):
                found.setdefault(n, f"bytes of {path} (base64)")
            found.setdefault(chunk.hex().encode(), f"bytes of {path} (hex)")
    return found


def leaks(body: bytes, needle_map: dict[bytes, str]) -> list[str]:
    """What of the canary appears in ``body`` (empty: nothing)."""
    low = body.lower()
    return sorted({what for n, what in needle_map.items()
                   if n in body or ("hex" in what and n.lower() in low)})


# --------------------------------------------------------------------------- probing


SETTINGS_PLUGINS = ("@jupyterlab/apputils-extension:themes",
                    "@jupyterlab/notebook-extension:tracker")
WORKSPACES = ("default", "split", "b64")


def probes(home: str, files: Iterable[str]) -> list[tuple[str, str]]:
    """``(method, path relative to the server's base URL)`` to try, for the planted files.

    ``home`` is the home folder as a contents path (``home/alice``).
    """
    out: list[tuple[str, str]] = []
    for f in files:
        if f.startswith("."):
            continue
        p = f"api/contents/{home}/{f}"
        for q in ("", "?content=1", "?type=file&format=text", "?type=file&format=base64",
                  "?type=file", "?format=base64", "?type=notebook", "?type=notebook&format=json"):
            out.append(("GET", p + q))
        out.append(("GET", p + "/checkpoints"))
    out.append(("GET", f"api/contents/{home}/canary/known"))
    out.append(("GET", "lab/api/settings"))
    out.append(("GET", "lab/api/settings/"))
    for plugin in SETTINGS_PLUGINS:
        out.append(("GET", f"lab/api/settings/{plugin}"))
    out.append(("GET", "lab/api/workspaces"))
    out.append(("GET", "lab/api/workspaces/"))
    for ws in WORKSPACES:
        out.append(("GET", f"lab/api/workspaces/{ws}"))
        out.append(("GET", f"lab/workspaces/{ws}"))
    out += [("GET", "kernelspecs/canary/logo-64x64.png"), ("GET", "kernelspecs/canary/logo-32x32.svg"),
            ("GET", "api/kernelspecs"), ("GET", "api/kernelspecs/canary"),
            ("GET", "lab/extensions/canary/static/remoteEntry.js"),
            ("GET", "lab/api/themes/canary/index.css"), ("GET", "lab"), ("GET", "lab/tree/x")]
    return out


def plant(ws, home: str, files: dict[str, bytes] | None = None) -> None:
    """Plant the canary in a running workspace (``tests.workspace.helpers.Workspace``).

    Visible files through the contents API; hidden ones (``.jupyter``,
    ``.local``) are written under ``canary-hidden/`` then moved by one
    terminal command (the contents API does not write hidden paths).
    """
    import asyncio

    from ecluse.dev.testing import run_in_terminal

    files = canary_files() if files is None else files
    moves = []
    made: set[str] = set()
    for rel, data in files.items():
        target = rel
        if rel.startswith("."):
            target = "canary-hidden/" + rel.lstrip(".").replace("/", "__")
            moves.append((target, rel))
        parts = target.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                ws.request("PUT", f"api/contents/{home}/{d}", json={"type": "directory"})
                made.add(d)
        r = ws.request("PUT", f"api/contents/{home}/{target}",
                       json={"type": "file", "format": "base64",
                             "content": base64.b64encode(data).decode()})
        assert r.status_code in (200, 201), (target, r.status_code, r.text[:300])
    cmd = " && ".join(
        [f"mkdir -p \"$(dirname ~/{dst})\" && mv ~/{src} ~/{dst}" for src, dst in moves]
        + ["echo plant-ok"])
    out = asyncio.run(run_in_terminal(ws.url, ws.token, cmd, timeout=120))
    assert "plant-ok" in out.replace("echo plant-ok", ""), out[-2000:]
