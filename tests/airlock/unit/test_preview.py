"""Server-side previews mark the cells the disclosure findings point at."""

from __future__ import annotations

import pandas as pd

from ecluse.airlock.preview import table_preview
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
