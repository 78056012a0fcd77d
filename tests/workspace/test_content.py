"""The content rule (``ecluse_workspace.content``): what the bytes are, not the name.

Real files, written by the libraries researchers use (pandas, pyarrow,
openpyxl, h5py, sqlite3, numpy), classified from their bytes; code,
Markdown, notebooks and small text stay editable.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.support import canary


@pytest.fixture(scope="module")
def content(workspace_extension):
    from ecluse_workspace import content

    return content


@pytest.fixture(scope="module")
def data_files():
    return canary.data_files()


LIMITS_KW = {"max_text_bytes": 2 * 2**20, "max_notebook_bytes": 32 * 2**20,
             "max_image_bytes": 4 * 2**20}


@pytest.mark.parametrize("name", [
    "canary.csv", "canary.tsv", "canary.json", "canary.jsonl", "canary.parquet",
    "canary.feather", "canary.arrow", "canary.xlsx", "canary.h5", "canary.nc",
    "canary.sqlite", "canary.pkl", "canary.npy", "canary.zip", "canary.csv.gz",
    "canary.csv.bz2", "canary.csv.xz", "canary.dta",
])
@pytest.mark.parametrize("disguise", ["notes.ipynb", "analysis.py", "figure.png", "README.md"])
def test_data_is_refused_under_any_name(content, data_files, name, disguise):
    data = data_files[name]
    limits = content.Limits(**LIMITS_KW)
    kind = content.classify(data)
    assert kind.kind in ("tabular", "data", "binary"), (name, kind)
    with pytest.raises(content.ContentRefused) as e:
        content.check_bytes(data, disguise, limits)
    assert e.value.code in ("tabular_data", "data_file", "binary_file")
    assert disguise in e.value.message
    # the start of the file is enough (what the guard reads before answering)
    with pytest.raises(content.ContentRefused):
        content.check_bytes(data[:content.HEAD_BYTES], disguise, limits,
                            complete=len(data) <= content.HEAD_BYTES, size=len(data))


def test_encoded_data_inside_text_is_refused(content, data_files):
    limits = content.Limits(**LIMITS_KW)
    csv = data_files["canary.csv"]
    for text in (base64.encodebytes(csv), base64.b64encode(csv), csv.hex().encode(),
                 b"DATA = '" + base64.b64encode(data_files["canary.parquet"]) + b"'\n"):
        with pytest.raises(content.ContentRefused):
            content.check_bytes(text, "innocent.py", limits)


def test_a_table_after_a_page_of_prose_is_a_table(content):
    prose = "This is a perfectly ordinary sentence about the study.\n" * 500
    assert content.classify((prose + canary.csv_text()).encode()).kind == "tabular"


CODE = {
    "a.py": b"import pandas as pd\n\ndf = pd.read_parquet('/data/x')\nprint(df.head())\n",
    "b.R": b"library(arrow)\ndf <- read_parquet('/data/x')\nsummary(df)\n",
    "c.md": "# Résultats\n\nLa durée de séjour, en jours, dépend du service.\n".encode(),
    "d.sql": b"select ward, avg(los) from stays group by ward;\n",
    "e.yaml": b"name: study\nchannels:\n  - conda-forge\n",
    "f.txt": b"plain notes\n",
    "g.json": json.dumps({"a": 1, "b": [1, 2, 3]}).encode(),
    "empty.py": b"",
}


@pytest.mark.parametrize("name", sorted(CODE))
def test_code_and_text_stay_editable(content, name):
    kind = content.check_bytes(CODE[name], name, content.Limits(**LIMITS_KW))
    assert kind.kind in ("text", "empty")


def test_the_repositorys_own_sources_are_not_tables(content):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [*root.glob("src/ecluse/**/*.py"), *root.glob("tests/**/*.py"),
             *root.glob("extensions/ecluse-workspace/ecluse_workspace/*.py"),
             *root.glob("examples/**/*.ipynb")]
    wrong = [str(f) for f in files
             if content.classify(f.read_bytes()).kind not in ("text", "empty", "notebook")]
    assert not wrong, wrong


def test_notebooks_are_checked_as_notebooks(content, data_files):
    limits = content.Limits(**LIMITS_KW)
    nb = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "execution_count": 1,
                     "source": "df.describe()",
                     "outputs": [{"output_type": "display_data", "metadata": {},
                                  "data": {"image/png": base64.b64encode(
                                      b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode(),
                                           "text/plain": "<Figure>"}}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert content.check_bytes(json.dumps(nb).encode(), "nb.ipynb", limits).kind == "notebook"
    # a Parquet file dressed as a PNG output
    nb["cells"][0]["outputs"][0]["data"]["image/png"] = base64.b64encode(
        data_files["canary.parquet"]).decode()
    with pytest.raises(content.ContentRefused):
        content.check_bytes(json.dumps(nb).encode(), "nb.ipynb", limits)
    with pytest.raises(content.ContentRefused) as e:
        content.check_notebook({"cells": "x", "nbformat": 4}, "nb.ipynb")
    assert e.value.code == "not_a_notebook"


def test_size_caps(content):
    small = content.Limits(max_text_bytes=100, max_notebook_bytes=200, max_image_bytes=50)
    with pytest.raises(content.ContentRefused) as e:
        content.check_bytes(b"x" * 101, "a.txt", small)
    assert e.value.code == "too_large"
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    with pytest.raises(content.ContentRefused):
        content.check_bytes(png, "a.png", small)
    assert content.check_bytes(png[:40], "a.png", content.Limits()).kind == "image"


def test_settings_and_layout_values(content):
    rows = [list(map(str, r)) for r in canary.rows()]
    ok = {"data": {"layout-restorer:data": {"main": {"dock": {
        "widgets": ["notebook:home/alice/a.ipynb", "editor:home/alice/b.py"]}}},
        "file-browser-filebrowser:cwd": {"path": "home/alice"}}, "metadata": {"id": "default"}}
    content.check_json_strings(ok, "layout", max_string=2048, max_total=256 * 1024)
    for bad in ({"x": canary.csv_text()}, {"x": rows}, {"x": [",".join(r) for r in rows]},
                {"x": {r[0]: r[1:] for r in rows}}, {"x": "A" * 5000}):
        with pytest.raises(content.ContentRefused):
            content.check_json_strings(dict(ok, **bad), "layout", max_string=2048,
                                       max_total=256 * 1024)


def test_content_module_is_dependency_free(content):
    import re
    from pathlib import Path

    src = Path(content.__file__).read_text()
    imports = set(re.findall(r"^(?:from|import) ([\w.]+)", src, re.M))
    assert imports <= {"__future__", "base64", "binascii", "csv", "io", "json", "re",
                       "dataclasses"}, imports


def test_answers_are_judged_on_what_they_carry(content, data_files):
    """The check on the answer itself (the second pass: a file swapped after the first
    check, or a handler that reads more than the guard looked at)."""
    from ecluse_workspace.guard import judge_response

    limits = content.Limits(**LIMITS_KW)
    parquet = base64.b64encode(data_files["canary.parquet"]).decode()

    def model(**kw):
        return json.dumps({"name": "notes.ipynb", "path": "home/alice/notes.ipynb",
                           "type": "file", "format": "text", "content": ""} | kw).encode()

    for body in (model(format="base64", content=parquet),
                 model(format="text", content=canary.csv_text()),
                 model(type="notebook", format="json",
                       content={"cells": [], "nbformat": 4, "nbformat_minor": 5,
                                "metadata": {"x": canary.csv_text()}}),
                 model(type="notebook", format="json", content={"rows": 1})):
        with pytest.raises(content.ContentRefused):
            judge_response("api-contents", body, True, limits, "/api/contents/notes.ipynb")
    assert judge_response("api-contents", model(content="print(1)\n"), True, limits) is None
    listing = json.dumps({"type": "directory", "name": "", "content": [
        {"name": "a.csv", "type": "file", "content": None}]}).encode()
    assert judge_response("api-contents", listing, True, limits) is None
    with pytest.raises(content.ContentRefused):  # an answer that streams is not judged
        judge_response("api-contents", model(content="x"), False, limits)
    # settings: the user's raw JSON5 goes back without its comments
    raw = "{\n// " + canary.TOKEN + "\n\"theme\": \"JupyterLab Light\"}"
    settings = json.dumps({"id": "@jupyterlab/apputils-extension:themes", "raw": raw,
                           "settings": {"theme": "JupyterLab Light"}, "schema": {}}).encode()
    out = json.loads(judge_response("lab-settings", settings, True, limits))
    assert canary.TOKEN not in out["raw"] and json.loads(out["raw"]) == out["settings"]
    listing = json.dumps({"settings": [json.loads(settings)]}).encode()
    assert canary.TOKEN not in judge_response("lab-settings", listing, True, limits).decode()
    with pytest.raises(content.ContentRefused):
        judge_response("kernelspec-logo", canary.csv_text().encode(), True, limits)
    with pytest.raises(content.ContentRefused):
        judge_response("api-status", b"{}", True, limits)  # no rule: refused
