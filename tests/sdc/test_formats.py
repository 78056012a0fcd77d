"""Format-specific behaviour: sniffing, layouts, locations, containers, arrays."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from ecluse.sdc import DisclosurePolicy, check_file

from .conftest import frame_output, notebook_json, write_as


def rules(rep):
    return {f.rule for f in rep.findings}


def locs(rep, rule):
    return [f.location for f in rep.findings if f.rule == rule]


# ------------------------------------------------------------------ sniffing


def test_csv_named_png_is_read_as_csv(tmp_path):
    p = tmp_path / "chart.png"
    p.write_text("region,n\nNord,120\nSud,3\n")
    rep = check_file(p)
    assert rep.format == "csv" and rep.verdict == "fail"


def test_png_named_csv_is_an_image(tmp_path):
    p = tmp_path / "table.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    rep = check_file(p)
    assert rep.format == "image" and rep.verdict == "review"


@pytest.mark.parametrize("content,fmt", [
    (b"%PDF-1.7\n...", "pdf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "office"),
    (b"SQLite format 3\x00" + bytes(100), "database"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image"),
    (b"GIF89a" + bytes(20), "image"),
])
def test_unjudgeable_formats_go_to_review(tmp_path, content, fmt):
    p = tmp_path / "x.csv"
    p.write_bytes(content)
    rep = check_file(p)
    assert rep.format == fmt and rep.verdict == "review"
    assert "unjudgeable-format" in rules(rep)


def test_plain_text_is_review_and_identifiers_in_it_block(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("We looked at the admissions of the winter. Nothing unusual was seen here.\n")
    assert check_file(p).verdict == "review"
    p.write_text("Patient 1 84 12 75 056 123 45 was admitted twice, see the chart notes.\n")
    rep = check_file(p)
    assert rep.verdict == "block" and "identifier-value" in rules(rep)


def test_statsmodels_printout_with_low_df_fails(tmp_path):
    p = tmp_path / "model.txt"
    p.write_text("OLS Regression Results\nDep. Variable: y   R-squared: 0.4\n"
                 "No. Observations:   9   AIC: 20\nDf Residuals:   6   BIC: 21\n")
    rep = check_file(p)
    assert rep.verdict == "fail" and "low-residual-df" in rules(rep)


# ------------------------------------------------------------------ CSV layouts


def test_pandas_crosstab_with_two_header_rows_and_margins(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"region": rng.choice(["Nord", "Sud"], 400),
                       "sex": rng.choice(["F", "M"], 400),
                       "agegrp": rng.choice(["<50", ">=50"], 400, p=[0.98, 0.02])})
    ct = pd.crosstab(df.region, [df.sex, df.agegrp], margins=True)
    p = tmp_path / "ct.csv"
    ct.to_csv(p)
    rep = check_file(p)
    assert rep.verdict == "fail"
    small = locs(rep, "small-count")
    assert small and all(">=50" in loc["column"] for loc in small)
    assert all(loc["row"] >= 4 for loc in small)  # below the two header rows and the index row


def test_describe_output(tmp_path):
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"ward": rng.choice(list("ABCD"), 400), "los": rng.integers(0, 40, 400)})
    p = tmp_path / "d.csv"
    df.groupby("ward")["los"].describe().to_csv(p)
    # minima and maxima are individual values: they fail unless the policy allows them
    rep = check_file(p)
    assert rep.verdict == "fail" and rules(rep) == {"min-max"}
    assert {loc["column"] for loc in locs(rep, "min-max")} == {"min", "max"}
    lenient = DisclosurePolicy(min_max_disclosive=False)
    assert check_file(p, lenient).verdict == "pass"
    df[df.los < 2].groupby("ward")["los"].describe().to_csv(p)
    rep = check_file(p, lenient)
    assert {"small-count", "small-n-statistic"} <= rules(rep)
    assert {loc["column"] for loc in locs(rep, "small-n-statistic")} >= {"mean", "min", "max"}


def test_row_level_written_with_pandas_index_blocks(tmp_path):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"ward": rng.choice(list("ABCDEFGH"), 300), "age": rng.integers(18, 95, 300),
                       "los": rng.integers(0, 40, 300)})
    p = tmp_path / "r.csv"
    df.to_csv(p)
    assert check_file(p).verdict == "block"


def test_french_dialect_with_decimal_comma(tmp_path):
    p = tmp_path / "fr.csv"
    p.write_text("région;effectif;taux_pour_mille\nNord;1 250;12,5\nSud;8;3,1\n",
                 encoding="latin-1")
    rep = check_file(p)
    assert rep.details["delimiter"] == ";" and rep.details["decimal_comma"]
    assert locs(rep, "small-count") == [{"row": 3, "column": "effectif",
                                         "labels": {"région": "Sud"}}]
    assert "small-n-statistic" in rules(rep)


def test_location_points_at_the_cell(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("Tableau 1 : séjours par service\n\nservice,n\nA,40\nB,3\nC,50\n")
    rep = check_file(p)
    (loc,) = locs(rep, "small-count")
    assert loc["row"] == 5 and loc["column"] == "n" and loc["labels"] == {"service": "B"}


def test_zeros_follow_the_policy(tmp_path):
    p = write_as(pd.DataFrame({"ward": ["A", "B"], "n": [40, 0]}), "csv", tmp_path)
    assert check_file(p).verdict == "fail"
    assert check_file(p, DisclosurePolicy(zeros_disclosive=False)).verdict == "pass"


def test_threshold_follows_the_policy(tmp_path):
    p = write_as(pd.DataFrame({"ward": ["A", "B"], "n": [40, 10]}), "csv", tmp_path)
    assert check_file(p).verdict == "pass"
    rep = check_file(p, DisclosurePolicy(threshold=11))
    assert rep.verdict == "fail" and rep.policy["threshold"] == 11


def test_suppression_without_totals_is_not_recoverable(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("region,F,M\nNord,40,*\nSud,c,70\n")
    rep = check_file(p)
    assert rep.verdict == "pass" and "suppressed-cells" in rules(rep)


def test_recoverable_suppression_in_long_layout(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("sex,n\nF,120\nM,<10\nTotal,127\n")
    rep = check_file(p)
    assert "recoverable-suppression" in rules(rep)
    assert locs(rep, "recoverable-suppression")[0]["row"] == 3


def test_two_suppressed_cells_recovered_through_both_margins(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("region,F,M,Total\nNord,*,*,60\nSud,30,40,70\nTotal,45,85,130\n")
    rep = check_file(p)
    assert len(locs(rep, "recoverable-suppression")) == 2


def test_a_wholly_suppressed_column_is_hidden_counts_not_labels(tmp_path):
    # every cell of M suppressed, its total too: M is still Total - F on every row
    p = tmp_path / "s.csv"
    p.write_text("region,F,M,Total\nNord,40,c,43\nSud,30,c,35\nTotal,70,c,78\n")
    rep = check_file(p)
    assert rep.verdict == "fail"
    assert {(loc["row"], loc["column"]) for loc in locs(rep, "recoverable-suppression")} == {
        (2, "M"), (3, "M"), (4, "M")}
    # two such columns: the totals give only their sum, nothing is recoverable
    p.write_text("region,F,M,X,Total\nNord,40,c,c,60\nSud,30,c,c,70\nTotal,70,c,c,130\n")
    rep = check_file(p)
    assert rep.verdict == "pass" and "suppressed-cells" in rules(rep)


def test_dominance_p_percent(tmp_path):
    df = pd.DataFrame({"sector": ["A", "B"], "n": [25, 30], "total": [1000.0, 5000.0],
                       "top1": [600.0, 800.0], "top2": [380.0, 700.0]})
    rep = check_file(write_as(df, "csv", tmp_path))
    assert "dominance-p" in rules(rep) and rep.verdict == "fail"


def test_year_columns_are_a_header(tmp_path):
    p = tmp_path / "y.csv"
    p.write_text("region,2019,2020,2021\nNord,120,130,140\nSud,50,4,60\n")
    rep = check_file(p)
    assert [(x["row"], x["column"]) for x in locs(rep, "small-count")] == [(3, "2020")]


def test_many_rows_without_counts_are_row_level(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"diag": [f"C{i:04d}" for i in range(6000)],
                       "cost": np.round(rng.gamma(2, 1000, 6000), 2)})
    rep = check_file(write_as(df, "csv", tmp_path))
    assert rep.verdict == "block" and "row-level" in rules(rep)


def test_text_only_table_with_many_distinct_rows_is_row_level(tmp_path):
    df = pd.DataFrame({"nom_service": [f"S{i}" for i in range(40)],
                       "commentaire": [f"sortie le {i}" for i in range(40)]})
    rep = check_file(write_as(df, "csv", tmp_path))
    assert rep.verdict == "block" and "row-level" in rules(rep)


def test_small_text_table_is_review(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("variable,description\nage,age at admission\nlos,length of stay\n")
    assert check_file(p).verdict == "review"


def test_header_only_csv_is_review(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("region,n\n")
    assert check_file(p).verdict == "review"


# ------------------------------------------------------------------ Excel


def test_excel_very_hidden_sheet_and_cell_reference(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "visible"
    ws.append(["region", "n"])
    ws.append(["Nord", 120])
    hid = wb.create_sheet("secret")
    hid.append(["Résultats"])
    hid.append([])
    hid.append(["service", "n"])
    hid.append(["A", 40])
    hid.append(["B", 2])
    hid.sheet_state = "veryHidden"
    p = tmp_path / "book.bin"
    wb.save(p)
    rep = check_file(p)
    assert rep.format == "excel" and rep.verdict == "fail"
    (loc,) = locs(rep, "small-count")
    assert loc["sheet"] == "secret" and loc["cell"] == "B5" and loc["row"] == 5
    assert "hidden-sheet" in rules(rep)
    assert {"name": "secret", "state": "veryHidden"} in rep.details["sheets"]


def test_excel_hidden_sheet_with_identifiers_blocks(tmp_path):
    df = pd.DataFrame({"ipp": [f"{i:08d}" for i in range(20)], "age": range(20)})
    rep = check_file(write_as(df, "xlsx_hidden", tmp_path))
    assert rep.verdict == "block"
    assert locs(rep, "identifier-column")[0]["sheet"] == "detail"


# ------------------------------------------------------------------ JSON


def test_nested_json_tables_are_found(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"meta": {"title": "x"}, "results": {
        "by_ward": [{"ward": "A", "n": 40}, {"ward": "B", "n": 5}]}}))
    rep = check_file(p)
    assert rep.verdict == "fail" and locs(rep, "small-count")[0]["table"] == "$.results.by_ward"


def test_pandas_split_json(tmp_path):
    df = pd.DataFrame({"ward": ["A", "B"], "n": [40, 50]})
    p = tmp_path / "r.json"
    p.write_text(df.to_json(orient="split", index=False))
    assert check_file(p).verdict == "pass"


def test_json_without_table_is_review(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"comment": "see attached", "version": 3}))
    assert check_file(p).verdict == "review"


# ------------------------------------------------------------------ notebooks


def test_notebook_with_row_level_frame_footer_blocks(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"ward": rng.choice(["A", "B"], 8000), "los": rng.integers(0, 30, 8000)})
    out = {"output_type": "execute_result", "metadata": {}, "execution_count": 1,
           "data": {"text/html": df._repr_html_(), "text/plain": repr(df)}}
    p = tmp_path / "analysis.bin"
    p.write_text(notebook_json([out]))
    rep = check_file(p)
    assert rep.format == "notebook" and rep.verdict == "block"


def test_notebook_image_and_text_outputs_are_review(tmp_path):
    img = {"output_type": "display_data", "metadata": {},
           "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    txt = {"output_type": "stream", "name": "stdout", "text": ["mean age 54.2\n"]}
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([img, txt]))
    rep = check_file(p)
    assert rep.verdict == "review"
    assert {"unjudgeable-format", "free-text"} <= rules(rep)


def test_notebook_small_count_location(tmp_path):
    df = pd.DataFrame({"ward": ["A", "B"], "n": [40, 3]})
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([frame_output(pd.DataFrame({"ward": ["A"], "n": [50]})),
                                frame_output(df)]))
    rep = check_file(p)
    (loc,) = locs(rep, "small-count")
    assert loc["cell_index"] == 1 and loc["output"] == 0 and loc["row"] == 3


def test_notebook_code_with_nir_blocks(tmp_path):
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([{"output_type": "stream", "name": "stdout", "text": "ok"}],
                               sources=["x = df[df.nir == '184127505612345']"]))
    assert check_file(p).verdict == "block"


def test_code_only_notebook_passes(tmp_path):
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "import pandas as pd",
                                        "outputs": [], "metadata": {}, "execution_count": None}],
                             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert check_file(p).verdict == "pass"


# ------------------------------------------------------------------ netCDF / Zarr


def _dataset(person: bool):
    import xarray as xr

    if person:
        return xr.Dataset({"sbp": (("patient", "time"), np.ones((20, 3)))},
                          coords={"patient": np.arange(20), "time": np.arange(3)})
    return xr.Dataset({"n": (("region", "month"), np.array([[40, 50, 3], [20, 30, 60]])),
                       "mean_pm25": (("region", "month"), np.full((2, 3), 12.5))},
                      coords={"region": ["Nord", "Sud"], "month": [1, 2, 3]})


def test_netcdf_person_dimension_blocks(tmp_path):
    p = tmp_path / "cohort.dat"
    _dataset(True).to_netcdf(p, engine="h5netcdf")
    rep = check_file(p)
    assert rep.format == "netcdf" and rep.verdict == "block" and "person-dimension" in rules(rep)


def test_netcdf_small_count_with_index(tmp_path):
    p = tmp_path / "agg.nc"
    _dataset(False).to_netcdf(p, engine="h5netcdf")
    rep = check_file(p)
    assert rep.verdict == "fail"
    (loc,) = locs(rep, "small-count")
    assert loc == {"variable": "n", "index": {"region": "Nord", "month": 3}}
    assert "small-n-statistic" in rules(rep)


@pytest.mark.filterwarnings("ignore")
def test_zarr_directory_and_zipped(tmp_path):
    import zarr

    d = tmp_path / "store.zarr"
    _dataset(True).to_zarr(d)
    rep = check_file(d)
    assert rep.format == "zarr" and rep.verdict == "block"
    z = tmp_path / "store.zip"
    with zarr.storage.ZipStore(str(z), mode="w") as store:
        _dataset(False).to_zarr(store)
    rep = check_file(z)
    assert rep.format == "zarr" and rep.verdict == "fail"


# ------------------------------------------------------------------ archives


def test_zip_combines_member_verdicts(tmp_path):
    p = tmp_path / "out.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("safe.csv", "ward,n\nA,40\nB,50\n")
        zf.writestr("ids.csv", "patient_id,age\nP1,40\nP2,50\n")
        zf.writestr("plot.png", b"\x89PNG\r\n\x1a\n" + bytes(50))
    rep = check_file(p)
    assert rep.verdict == "block"
    assert {m["member"]: m["verdict"] for m in rep.details["member_reports"]} == {
        "safe.csv": "pass", "ids.csv": "block", "plot.png": "review"}


def test_nested_zip_depth_limit(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("t.csv", "ward,n\nA,40\nB,50\n")
    data = inner.getvalue()
    for _ in range(4):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("inner.zip", data)
        data = buf.getvalue()
    p = tmp_path / "deep.zip"
    p.write_bytes(data)
    rep = check_file(p)
    assert rep.verdict == "review" and "archive-limit" in rules(rep)
    assert check_file(p, DisclosurePolicy(archive_max_depth=6)).verdict == "pass"


def test_zip_bomb_is_stopped(tmp_path):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.csv", b"0" * (60 * 1024 * 1024))
    rep = check_file(p)
    assert rep.verdict == "review" and "archive-limit" in rules(rep)
    small = DisclosurePolicy(archive_max_member_bytes=1024 * 1024, archive_max_ratio=10_000)
    assert "archive-limit" in rules(check_file(p, small))


def test_zip_lying_about_sizes_is_stopped(tmp_path):
    p = tmp_path / "liar.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"1," * (3 * 1024 * 1024))
    raw = bytearray(p.read_bytes())
    # rewrite the declared uncompressed size (central directory and local header) to 100
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    raw[22:26] = (100).to_bytes(4, "little")
    p.write_bytes(bytes(raw))
    rep = check_file(p, DisclosurePolicy(archive_max_member_bytes=1024 * 1024))
    assert rep.verdict != "pass"


def test_too_many_members(tmp_path):
    p = tmp_path / "many.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for i in range(30):
            zf.writestr(f"{i}.csv", "ward,n\nA,40\n")
    assert check_file(p, DisclosurePolicy(archive_max_members=10)).verdict == "review"


def test_gzip_member_is_checked(tmp_path):
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(b"patient_id,age\nP1,40\nP2,50\n"))
    assert check_file(p).verdict == "block"


# ------------------------------------------------------------------ large files (streaming path)


def _keys(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({"dept": [f"D{k:02d}" for k in i % 100], "day": i // 100})


def _counts(n: int, base: int = 25) -> np.ndarray:
    """Counts that vary from row to row (a constant "count" counts nothing)."""
    return base + np.arange(n) % 37


@pytest.fixture
def small_head(monkeypatch):
    """Make the streaming path start at small sizes so tests stay quick."""
    from ecluse.sdc import readers

    monkeypatch.setattr(readers, "SMALL_BYTES", 256 * 1024)
    monkeypatch.setattr(readers, "HEAD_BYTES", 64 * 1024)
    monkeypatch.setattr(readers, "HEAD_ROWS", 5_000)


def test_large_csv_streams_and_locates_small_counts_beyond_the_head(tmp_path, small_head):
    n = 100_000
    p = tmp_path / "big.csv"
    counts = _counts(n)
    counts[n - 10] = 3
    _keys(n).assign(n=counts).to_csv(p, index=False)
    assert p.stat().st_size > 1024 * 1024
    rep = check_file(p)
    assert rep.verdict == "fail" and rep.details["rows"] == n
    (loc,) = locs(rep, "small-count")
    assert loc["row"] == n - 10 + 2 and loc["column"] == "n"
    assert "sampled" in rules(rep)


def test_large_csv_with_markers_falls_back_to_text(tmp_path, small_head):
    n = 100_000
    p = tmp_path / "big.csv"
    counts = _counts(n).astype(str).astype(object)
    counts[n - 5] = "<10"
    counts[n - 3] = "4"
    _keys(n).assign(n=counts).to_csv(p, index=False)
    rep = check_file(p)
    assert [x["row"] for x in locs(rep, "small-count")] == [n - 3 + 2]


def test_large_parquet_reads_every_row(tmp_path, small_head):
    n = 60_000
    counts = _counts(n, 30)
    counts[-1] = 2
    p = tmp_path / "big.parquet"
    _keys(n).assign(n=counts).to_parquet(p)
    rep = check_file(p)
    assert rep.verdict == "fail"
    assert locs(rep, "small-count")[0]["row"] == n


def _summary_output(df_resid: int) -> dict:
    coef = pd.DataFrame({"": ["const", "age"], "coef": [1.2, 0.03], "std err": [0.3, 0.01],
                         "P>|t|": [0.001, 0.02]})
    text = f"OLS Regression Results\nNo. Observations: 60\nDf Residuals: {df_resid}\n"
    return {"output_type": "execute_result", "metadata": {}, "execution_count": 1,
            "data": {"text/html": coef.to_html(index=False), "text/plain": text}}


def test_notebook_regression_summary(tmp_path):
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([_summary_output(58)]))
    assert check_file(p).verdict == "pass"
    p.write_text(notebook_json([_summary_output(4)]))
    rep = check_file(p)
    assert rep.verdict == "fail" and "low-residual-df" in rules(rep)


def test_large_csv_with_ragged_rows_is_reviewed(tmp_path, small_head):
    n = 60_000
    p = tmp_path / "r.csv"
    _keys(n).assign(n=_counts(n)).to_csv(p, index=False)
    with open(p, "a") as fh:
        fh.write("D01,999,25,extra,fields\n")
    rep = check_file(p)
    assert rep.verdict == "review" and "reader-error" in rules(rep)


def test_large_csv_with_quoted_line_breaks(tmp_path, small_head):
    n = 60_000
    df = _keys(n).assign(n=_counts(n))
    df["note"] = "ok"
    df.loc[n - 3, "note"] = "two\nlines"
    df.loc[n - 2, "n"] = 4
    p = tmp_path / "q.csv"
    df.to_csv(p, index=False)
    rep = check_file(p)
    assert [x["row"] for x in locs(rep, "small-count")] == [n]
    assert "reader-error" not in rules(rep)


def test_very_wide_csv_is_reviewed(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text(",".join(f"c{i}" for i in range(6000)) + "\n" + ",".join("1" * 6000) + "\n")
    assert check_file(p).verdict == "review"


@pytest.mark.parametrize("orient", ["index", "columns", "records", "split", "table", "values"])
def test_every_pandas_json_orient(tmp_path, orient):
    p = tmp_path / "x.json"
    p.write_text(pd.DataFrame({"ward": ["A", "B"], "n": [40, 5]}).to_json(orient=orient))
    rep = check_file(p)
    assert rep.verdict == "fail" and locs(rep, "small-count")[0]["row"] == 2


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_identifiers_hidden_beyond_the_head_are_found(tmp_path, small_head, fmt):
    n = 60_000
    df = _keys(n).assign(note="ok", n=_counts(n))
    df.loc[n - 7, "note"] = "rappeler jean.dupont@chu-exemple.fr"
    p = tmp_path / f"h.{fmt}"
    df.to_csv(p, index=False) if fmt == "csv" else df.to_parquet(p)
    rep = check_file(p)
    assert rep.verdict == "block"
    (f,) = [f for f in rep.findings if f.rule == "identifier-value"]
    assert f.location["column"] == "note" and str(n - 7 + (2 if fmt == "csv" else 1)) in f.message


def test_stacked_tables_in_one_csv_are_judged_apart(tmp_path):
    rng = np.random.default_rng(9)
    regions = [f"R{i}" for i in range(25)]
    t1 = pd.DataFrame({"region": regions, "n": rng.integers(20, 90, 25)})
    t2 = pd.DataFrame({"region": regions, "n_deces": rng.integers(20, 90, 25)})
    t2.loc[24, "n_deces"] = 3
    p = tmp_path / "stack.csv"
    p.write_text("Tableau 1\n" + t1.to_csv(index=False) + "\nTableau 2\n" + t2.to_csv(index=False))
    rep = check_file(p)
    assert rep.verdict == "fail", [(f.rule, f.message) for f in rep.findings]
    (loc,) = locs(rep, "small-count")
    assert loc["column"] == "n_deces" and loc["row"] == 2 + 26 + 2 + 25


def test_stacked_tables_in_an_excel_sheet(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    for block in (("ward", "n", [("A", 40), ("B", 50)]), ("site", "n", [("X", 30), ("Y", 4)])):
        ws.append([block[0], block[1]])
        for r in block[2]:
            ws.append(list(r))
        ws.append([])
    p = tmp_path / "s.xlsx"
    wb.save(p)
    rep = check_file(p)
    (loc,) = locs(rep, "small-count")
    assert loc["cell"] == "B7" and loc["row"] == 7


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_3_reads_both_store_formats(tmp_path, zarr_format):
    import zarr

    assert int(zarr.__version__.split(".")[0]) >= 3
    d = tmp_path / "store.zarr"
    _dataset(False).to_zarr(d, zarr_format=zarr_format)
    assert (d / ("zarr.json" if zarr_format == 3 else ".zgroup")).exists()
    rep = check_file(d)
    assert rep.format == "zarr" and rep.verdict == "fail"
    assert [x["index"] for x in locs(rep, "small-count")] == [{"region": "Nord", "month": 3}]


def test_first_row_all_suppressed_under_two_label_columns_is_a_data_row(tmp_path):
    """``R0, D00, c`` under ``outer, inner, n`` is a table cell hidden by suppression,
    not a second header row: the labels and the recomputation from the subtotal are
    read as written."""
    p = tmp_path / "t.csv"
    p.write_text("outer,inner,n\nR0,D00,c\nR0,D01,20\nR0,Total,35\nR1,D10,15\n"
                 "R1,D11,20\nR1,Total,35\nTotal,Total,70\n")
    rep = check_file(p)
    (f,) = [f for f in rep.findings if f.rule == "recoverable-suppression"]
    assert f.location["row"] == 2 and f.location["column"] == "n"
    assert f.location["labels"] == {"outer": "R0", "inner": "D00"}
    assert rep.verdict == "fail"
