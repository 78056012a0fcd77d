"""Every carrier is read: records hidden beside an aggregate that passes on its own
block, and ordinary outputs with the same carriers still pass."""

from __future__ import annotations

import base64
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from ecluse.sdc import check_file, check_frame

from .conftest import frame_output, nir, notebook_json
from .guises import GUISES, aggregate, pdf_lines, png, records, svg_table, write_guise


def rules(rep):
    return {f.rule for f in rep.findings}


def _explain(rep):
    return [(f.rule, f.message, f.location) for f in rep.findings]


@pytest.mark.parametrize("guise", GUISES)
def test_records_in_every_carrier_block(tmp_path, guise):
    rep = check_file(write_guise(records(["ward", "los", "weight"], 60, 1), guise, tmp_path))
    assert rep.verdict == "block", _explain(rep)


@pytest.mark.parametrize("guise", ["parquet_kv", "arrow_kv", "xlsx_pivot", "xlsx_customxml",
                                   "nb_json", "nb_cell_metadata", "json_b64", "png_text"])
def test_the_location_names_the_carrier(tmp_path, guise):
    rep = check_file(write_guise(records(["ward", "los", "weight"], 60, 1), guise, tmp_path))
    blocks = [f for f in rep.findings if f.severity == "block"]
    assert blocks and any("part" in f.location or "table" in f.location for f in blocks), \
        _explain(rep)


# ------------------------------------------------------------------ aggregates still pass


def test_the_aggregate_alone_passes_in_each_container(tmp_path):
    agg = aggregate()
    agg.to_parquet(tmp_path / "a.parquet")
    agg.to_feather(tmp_path / "a.feather")
    agg.to_excel(tmp_path / "a.xlsx", index=False)
    (tmp_path / "a.json").write_text(json.dumps({"title": "Séjours par région",
                                                 "by_region": agg.to_dict("records")}))
    for name in ("a.parquet", "a.feather", "a.xlsx", "a.json"):
        rep = check_file(tmp_path / name)
        assert rep.verdict == "pass", (name, _explain(rep))
    assert check_file(tmp_path / "a.feather").format == "arrow"


def test_parquet_with_attrs_of_an_aggregate_passes(tmp_path):
    agg = aggregate()
    agg.attrs = {"title": "Table 1", "source": "PMSI 2023", "threshold": 10}
    agg.to_parquet(tmp_path / "a.parquet")
    assert check_file(tmp_path / "a.parquet").verdict == "pass"


def test_ordinary_notebook_with_a_small_aggregate_passes(tmp_path):
    out = frame_output(pd.DataFrame({"ward": ["A", "B"], "n": [40, 50]}))
    nb = json.loads(notebook_json([out], sources=["df.groupby('ward').size()"]))
    nb["metadata"] = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python", "version": "3.11.2", "mimetype": "text/x-python",
                          "codemirror_mode": {"name": "ipython", "version": 3}},
        "papermill": {"parameters": {"year": 2023}, "duration": 3.2, "exception": None,
                      "start_time": "2024-01-01T00:00:00", "end_time": "2024-01-01T00:00:03",
                      "input_path": "in.ipynb", "output_path": "out.ipynb",
                      "environment_variables": {}, "version": "2.6.0"}}
    for cell in nb["cells"]:
        cell["id"] = "f3a9c2d1"
        cell["metadata"] = {"tags": [], "execution": {
            "iopub.execute_input": "2024-01-01T00:00:01.0Z", "iopub.status.idle": "2024-01-01T00:00:02.0Z"},
            "papermill": {"duration": 0.1, "status": "completed", "exception": False}}
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps(nb))
    rep = check_file(p)
    assert rep.verdict == "pass", _explain(rep)


def test_wide_crosstabs_still_pass(tmp_path):
    rng = np.random.default_rng(0)
    ct = pd.DataFrame(rng.integers(20, 300, (5, 24)),
                      index=pd.Index([f"R{i}" for i in range(5)], name="region"),
                      columns=pd.Index(range(2000, 2024), name="year"))
    ct.to_csv(tmp_path / "years.csv")
    assert check_file(tmp_path / "years.csv").verdict == "pass"
    df = pd.DataFrame({"region": rng.choice(list("ABC"), 20_000),
                       "age": rng.choice([f"{a}-{a + 4}" for a in range(0, 100, 5)], 20_000)})
    ct = pd.crosstab(df.region, df.age, margins=True)
    ct.to_csv(tmp_path / "ages.csv")
    rep = check_file(tmp_path / "ages.csv")
    assert rep.verdict == "pass", _explain(rep)
    assert check_frame(ct).verdict == "pass"


def test_images_and_pdfs_without_records_stay_review(tmp_path):
    (tmp_path / "a.png").write_bytes(png({"Software": "matplotlib version3.9.0, https://matplotlib.org/"}))
    (tmp_path / "a.svg").write_text(svg_table(pd.DataFrame({"ward": ["A", "B"], "n": [40, 50]})))
    (tmp_path / "a.pdf").write_bytes(pdf_lines([
        "Length of stay in the winter of 2023", "",
        "Admissions rose in every region and fell again in March, as in earlier years.",
        "The median length of stay was four days; see table 2 for the counts by ward."]))
    for name in ("a.png", "a.svg", "a.pdf"):
        rep = check_file(tmp_path / name)
        assert rep.verdict == "review", (name, _explain(rep))
    assert check_file(tmp_path / "a.pdf").details["pages"] == 1


def test_identifiers_in_image_text_block(tmp_path):
    (tmp_path / "a.png").write_bytes(png({"Comment": "patient 184127505612345 (see notes)"}))
    assert check_file(tmp_path / "a.png").verdict == "block"


# ------------------------------------------------------------------ each carrier, details


def test_constant_count_column_is_not_a_count(tmp_path):
    # 3,000 records under neutral headers with a constant column named "n"
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": [f"x{i}" for i in range(3000)], "b": rng.integers(18, 99, 3000),
                       "c": np.round(rng.normal(70, 10, 3000), 1), "n": 12})
    df.to_csv(tmp_path / "r.csv", index=False)
    rep = check_file(tmp_path / "r.csv")
    assert rep.verdict != "pass" and "constant-count" in rules(rep), _explain(rep)
    # with categories the rows are judged as the records they are
    df["a"] = rng.choice(["u", "v", "w"], 3000)
    df.to_csv(tmp_path / "r.csv", index=False)
    rep = check_file(tmp_path / "r.csv")
    assert rep.verdict == "block" and "repeated-keys" in rules(rep), _explain(rep)
    # varying counts over the same labels stay an aggregate
    df.assign(n=rng.integers(10, 500, 3000)).drop(columns="c").to_csv(tmp_path / "a.csv",
                                                                      index=False)
    rep = check_file(tmp_path / "a.csv")
    assert "constant-count" not in rules(rep)


def test_nul_byte_before_an_aggregate_is_never_pass(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"\x00" + aggregate().to_csv(index=False).encode())
    rep = check_file(p)
    assert rep.verdict == "review", _explain(rep)


def test_unknown_workbook_parts_go_to_review(tmp_path):
    p = tmp_path / "a.xlsm"
    aggregate().to_excel(p, index=False)
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("xl/vbaProject.bin", b"\xd0\xcf\x11\xe0" + bytes(500))
    rep = check_file(p)
    assert rep.verdict == "review" and "vbaProject" in str(_explain(rep))


def test_worksheet_part_not_listed_in_the_workbook_goes_to_review(tmp_path):
    p = tmp_path / "a.xlsx"
    aggregate().to_excel(p, index=False)
    with zipfile.ZipFile(p) as zf:
        sheet = zf.read("xl/worksheets/sheet1.xml")
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("xl/worksheets/sheet9.xml", sheet)
    assert check_file(p).verdict == "review"


def test_pivot_cache_of_an_aggregate_passes(tmp_path):
    from .guises import pivot_cache_parts

    p = tmp_path / "a.xlsx"
    aggregate().to_excel(p, index=False)
    with zipfile.ZipFile(p, "a") as zf:
        for name, data in pivot_cache_parts(aggregate()).items():
            zf.writestr(name, data)
    rep = check_file(p)
    assert rep.verdict == "pass", _explain(rep)


def test_pivot_cache_items_with_identifiers_block(tmp_path):
    from .guises import pivot_cache_parts

    rng = np.random.default_rng(1)
    ids = pd.DataFrame({"ref": [nir(rng) for _ in range(12)], "n": range(20, 32)})
    parts = pivot_cache_parts(ids)
    parts.pop("xl/pivotCache/pivotCacheRecords1.xml")  # saved without its records
    p = tmp_path / "a.xlsx"
    aggregate().to_excel(p, index=False)
    with zipfile.ZipFile(p, "a") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    rep = check_file(p)
    assert rep.verdict == "block" and "identifier-value" in rules(rep), _explain(rep)


def test_notebook_output_types_not_rendered_go_to_review(tmp_path):
    out = {"output_type": "display_data", "metadata": {},
           "data": {"application/javascript": "element.text('done')", "text/plain": ""}}
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([out]))
    rep = check_file(p)
    assert rep.verdict == "review" and "application/javascript" in str(_explain(rep))


def test_notebook_latex_and_markdown_aggregates_pass(tmp_path):
    agg = aggregate()
    md = "| region | n |\n|---|---|\n" + "".join(f"| {r} | {n} |\n" for r, n in agg.values)
    outs = [{"output_type": "display_data", "metadata": {},
             "data": {"text/markdown": md, "text/plain": "<Markdown>"}},
            {"output_type": "display_data", "metadata": {},
             "data": {"text/latex": agg.to_latex(index=False), "text/plain": "<Latex>"}}]
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json(outs))
    rep = check_file(p)
    assert rep.verdict == "pass", _explain(rep)
    small = agg.assign(n=[120, 4, 33, 80])
    outs[1]["data"]["text/latex"] = small.to_latex(index=False)
    p.write_text(notebook_json(outs))
    assert "small-count" in rules(check_file(p))


def test_base64_parquet_inside_json_is_read(tmp_path):
    import io

    buf = io.BytesIO()
    aggregate().assign(n=[120, 4, 33, 80]).to_parquet(buf)
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"summary": aggregate().to_dict("records"),
                             "payload": base64.b64encode(buf.getvalue()).decode()}))
    rep = check_file(p)
    assert rep.verdict == "fail" and "small-count" in rules(rep), _explain(rep)


def test_hex_digest_in_json_is_not_decoded_as_base64(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"by_region": aggregate().to_dict("records"),
                             "sha256_of_code": "ab" * 32 + "0" * 0}))
    rep = check_file(p)
    assert "unjudgeable-format" not in rules(rep)


def test_workbook_with_shared_strings_all_used_passes(tmp_path):
    from .guises import xlsx_shared_strings

    p = tmp_path / "a.xlsx"
    p.write_bytes(xlsx_shared_strings([["ward", "n"], ["A", 40], ["B", 50]]))
    assert check_file(p).verdict == "pass"
    p.write_bytes(xlsx_shared_strings([["ward", "n"], ["A", 40], ["B", 50]],
                                      ["184127505612345"]))
    assert check_file(p).verdict == "block"


def test_code_with_literal_mappings_passes_and_literal_tables_are_looked_at(tmp_path):
    labels = {f"I{20 + i}": f"cardiopathie {i}" for i in range(25)}
    src = f"LABELS = {labels!r}\nlabels = df.code.map(LABELS)\n%matplotlib inline"
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([frame_output(aggregate())], sources=[src]))
    rep = check_file(p)
    assert rep.verdict == "pass", _explain(rep)
    bands = [(a, a + 5) for a in range(0, 110, 5)]
    p.write_text(notebook_json([frame_output(aggregate())], sources=[f"BANDS = {bands!r}"]))
    rep = check_file(p)
    assert rep.verdict == "review" and "ambiguous-layout" in rules(rep), _explain(rep)


def test_dataresource_beside_an_html_table_is_judged(tmp_path):
    out = frame_output(aggregate())
    out["data"]["application/vnd.dataresource+json"] = {
        "schema": {"fields": [{"name": "region"}, {"name": "n"}]},
        "data": aggregate().assign(n=[120, 4, 33, 80]).to_dict("records")}
    p = tmp_path / "nb.ipynb"
    p.write_text(notebook_json([out]))
    assert "small-count" in rules(check_file(p))


def test_metadata_nested_too_deep_or_without_a_table_is_never_pass(tmp_path):
    p = tmp_path / "nb.ipynb"
    nb = json.loads(notebook_json([frame_output(aggregate())]))
    value: object = "x" * 100
    for k in range(80):
        value = {f"k{k}": value}
    nb["metadata"]["deep"] = value
    p.write_text(json.dumps(nb))
    rep = check_file(p)
    assert rep.verdict == "review" and "unjudgeable-format" in rules(rep), _explain(rep)
    nb["metadata"] = {"values": list(range(2000)), "note": "not a table"}
    p.write_text(json.dumps(nb))
    rep = check_file(p)
    assert rep.verdict == "review" and "ambiguous-layout" in rules(rep), _explain(rep)


def test_decimals_under_a_label_like_name_are_not_labels(tmp_path):
    # "p8zCP" reads as a postcode column by its name; 70.2 is no postcode
    rep = check_file(write_guise(records(["n3gh59", "b", "p8zCP"], 57, 9482, 2), "zip_comment",
                                 tmp_path))
    assert rep.verdict == "block", _explain(rep)
    rep = check_frame(records(["n3gh59", "b", "p8zCP"], 57, 9482, 2))
    assert rep.verdict == "block", _explain(rep)
