"""Server-side previews mark the cells the disclosure findings point at."""

from __future__ import annotations

import pandas as pd

from ecluse.airlock.preview import MASK, masked_columns, render_preview, table_preview
from ecluse.sdc import DisclosurePolicy, check_file


def _findings(path, name):
    return check_file(path, DisclosurePolicy(), display_name=name).to_dict()["findings"]


def test_csv_semicolon_dialect_flags_the_small_cell(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("sexe;tranche;n\nF;18-40;25\nF;41-65;3\nM;18-40;31\nM;41-65;40\n")
    pv = table_preview(p, "t.csv", "csv", _findings(p, "t.csv"), max_rows=10)
    assert pv.columns == ["sexe", "tranche", "n"]
    assert pv.flagged == {(1, 2)} and pv.rows[1][2] == "3"
    assert not pv.truncated and pv.error is None


def test_rows_are_limited(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("g,n\n" + "".join(f"g{i},{20 + i}\n" for i in range(50)))
    pv = table_preview(p, "big.csv", "csv", [], max_rows=5)
    assert len(pv.rows) == 5 and pv.truncated


def test_parquet_and_excel(tmp_path):
    df = pd.DataFrame({"sex": ["F", "F", "M", "M"], "age": ["a", "b", "a", "b"],
                       "n": [25, 2, 31, 40]})
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq)
    pv = table_preview(pq, "t.parquet", "parquet", _findings(pq, "t.parquet"))
    assert pv.columns == ["sex", "age", "n"] and pv.rows[1] == ["F", "b", "2"]
    assert (1, 2) in pv.flagged
    xl = tmp_path / "t.xlsx"
    with pd.ExcelWriter(xl) as w:
        df.to_excel(w, sheet_name="Counts", index=False)
    pv = table_preview(xl, "t.xlsx", "excel",
                       [{"location": {"sheet": "Counts", "cell": "C3"}}])
    assert pv.sheet == "Counts" and pv.flagged == {(1, 2)}


def test_identifier_column_is_flagged_as_a_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("patient_id,age\n" + "".join(f"P{i},{30 + i}\n" for i in range(30)))
    pv = table_preview(p, "p.csv", "csv", _findings(p, "p.csv"))
    assert pv.flagged_columns == {0} and pv.is_flagged(5, 0) and not pv.is_flagged(5, 1)


def test_not_a_table_or_unreadable(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG")
    assert table_preview(p, "x.png", "image", []) is None
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    pv = table_preview(bad, "bad.parquet", "parquet", [])
    assert pv.error and "cannot preview" in pv.error


def test_identifier_like_columns_are_masked(tmp_path):
    cols = ["patient_id", "nom", "email", "dob", "ward", "age", "note", "code"]
    rows = [[f"P{100000 + i}", f"Nom{i}", f"p{i}@x.fr", f"19{50 + i}-01-02", "AB"[i % 2],
             str(30 + i), f"fell at home on day {i} and was admitted", "X"] for i in range(6)]
    masked = {cols[j] for j in masked_columns(cols, rows, [])}
    assert masked == {"patient_id", "nom", "email", "dob", "note"}
    # a finding pointing at a column masks it whatever it looks like
    assert 7 in masked_columns(cols, rows, [{"location": {"column": "code"}}])


def test_block_preview_is_a_masked_sample_of_twenty_rows(tmp_path):
    p = tmp_path / "cohort.csv"
    p.write_text("ipp,ville,age\n" + "".join(f"{1000000 + i},Ville{i},{20 + i % 50}\n"
                                             for i in range(60)))
    report = check_file(p, DisclosurePolicy(), display_name="cohort.csv").to_dict()
    assert report["verdict"] == "block"
    pv = render_preview(p, "cohort.csv", report, max_rows=200)
    assert pv["kind"] == "table" and len(pv["rows"]) == 20 and pv["truncated"]
    assert pv["masked_columns"] == [0, 1]
    assert all(r[0] == MASK and r[1] == MASK for r in pv["rows"])
    assert [r[2] for r in pv["rows"]][:3] == ["20", "21", "22"]
    unreadable = render_preview(tmp_path / "missing.csv", "missing.csv",
                                {"verdict": "block", "format": "csv"}, 200)
    assert unreadable["kind"] == "withheld"


def test_a_stored_preview_stays_small(tmp_path):
    from ecluse.airlock.preview import PREVIEW_MAX_BYTES, PREVIEW_MAX_COLUMNS

    p = tmp_path / "wide.csv"
    header = ",".join(f"c{j}" for j in range(300))
    p.write_text(header + "\n" + "".join(",".join("x" * 500 for _ in range(300)) + "\n"
                                          for _ in range(200)))
    pv = render_preview(p, "wide.csv", {"verdict": "review", "format": "csv"}, max_rows=200)
    assert pv["kind"] == "table" and pv["columns_truncated"] and pv["truncated"]
    assert len(pv["columns"]) == PREVIEW_MAX_COLUMNS
    assert all(len(r) == PREVIEW_MAX_COLUMNS and len(r[0]) <= 120 for r in pv["rows"])
    import json

    assert 0 < len(pv["rows"]) < 200 and len(json.dumps(pv)) <= PREVIEW_MAX_BYTES


# ---------------------------------------------------------------- multi-row headers


def _grouped(tmp_path):
    """``df.groupby([a, b]).agg(...)`` written with ``to_csv``: two header rows for the
    MultiIndex columns and one for the index names."""
    df = pd.DataFrame({"sex": list("FFMMFFMM"), "band": ["a", "b"] * 4,
                       "los": [1, 2, 3, 4, 5, 6, 7, 8], "n": [12, 30, 3, 44, 15, 16, 17, 18]})
    p = tmp_path / "grouped.csv"
    df.groupby(["sex", "band"]).agg({"los": ["mean", "sum"], "n": ["sum"]}).to_csv(p)
    assert p.read_text().splitlines()[:3] == [",,los,los,n", ",,mean,sum,sum",
                                              "sex,band,,,"]
    return p


def test_a_pandas_multiindex_header_is_a_header_not_data(tmp_path):
    p = _grouped(tmp_path)
    out = render_preview(p, "grouped.csv", check_file(p, DisclosurePolicy()).to_dict(), 50)
    assert out["kind"] == "table"
    # the data rows start with the first group, not with the header's lines
    assert [r[:2] for r in out["rows"]] == [["F", "a"], ["F", "b"], ["M", "a"], ["M", "b"]]
    assert out["header_rows"] == 3
    # column names as the disclosure checks name them (findings point at these)
    assert out["columns"] == ["sex", "band", "los / mean", "los / sum", "n / sum"]
    # the header's rows, a label over two columns spanning them, "sum" not merged
    # across the groups above it
    assert out["header"][0] == [["", 1], ["", 1], ["los", 2], ["n", 1]]
    assert out["header"][1] == [["", 1], ["", 1], ["mean", 1], ["sum", 1], ["sum", 1]]
    assert out["header"][2][:2] == [["sex", 1], ["band", 1]]


def test_findings_on_a_multirow_header_table_flag_the_right_cells(tmp_path):
    p = _grouped(tmp_path)
    report = check_file(p, DisclosurePolicy()).to_dict()
    small = [f["location"] for f in report["findings"] if f["rule"] == "small-count"]
    assert {"row": 4, "column": "los / sum"} in [
        {k: v for k, v in loc.items() if k in ("row", "column")} for loc in small]
    out = render_preview(p, "grouped.csv", report, 50)
    # row 4 of the file is the first data row (F, a): its "los / sum" cell, 6
    assert [0, 3] in out["flagged"] and out["rows"][0][3] == "6"
    assert all(out["rows"][r][:1] != [""] for r, _ in out["flagged"])


def test_a_single_header_stays_single(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\nM,41-65,40\n")
    out = render_preview(p, "t.csv", check_file(p, DisclosurePolicy()).to_dict(), 50)
    assert out["header_rows"] == 1 and out["header"] == []
    assert out["columns"] == ["sex", "age_band", "n"] and len(out["rows"]) == 4
    assert out["flagged"] == [[1, 2]]


def test_a_blocked_multirow_table_masks_its_header_too(tmp_path):
    p = tmp_path / "rows.csv"
    lines = [",,visit,visit", "patient_id,name,date,ward"]
    lines += [f"P{100000 + i},Person {i} Name,2023-01-{1 + i % 28:02d},W{i % 3}"
              for i in range(40)]
    p.write_text("\n".join(lines) + "\n")
    report = check_file(p, DisclosurePolicy()).to_dict()
    assert report["verdict"] == "block"
    out = render_preview(p, "rows.csv", report, 50)
    assert len(out["rows"]) <= 20
    cells = [v for r in out["rows"] for v in r]
    assert not any(v.startswith("P1000") or v.startswith("Person") for v in cells)
