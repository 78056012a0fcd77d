"""Fixtures for the output-checker tests: a corpus of files generated on the fly.

``write_as(df, fmt, dir)`` writes one table in any supported format; ``CASES``
lists the tables of the corpus with the verdict and rule each must produce.
No file is checked in: every input is generated into pytest's ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecluse.sdc import DisclosurePolicy

FORMATS = ["csv", "csv_index", "csv_fr", "tsv", "parquet", "feather", "xlsx", "xlsx_hidden", "json", "jsonl",
           "notebook", "html", "zip", "gzip"]


def nir(rng: np.random.Generator) -> str:
    return (f"{rng.integers(1, 3)}{rng.integers(40, 99):02d}{rng.integers(1, 13):02d}"
            f"{rng.integers(1, 96):02d}{rng.integers(1, 999):03d}{rng.integers(1, 999):03d}"
            f"{rng.integers(1, 97):02d}")


def notebook_json(outputs: list[dict], sources: list[str] | None = None,
                  markdown: list[str] | None = None) -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": m} for m in markdown or []]
    for k, out in enumerate(outputs):
        cells.append({"cell_type": "code", "execution_count": k + 1, "metadata": {},
                      "source": (sources or [])[k] if sources and k < len(sources) else "df",
                      "outputs": [out]})
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def frame_output(df: pd.DataFrame) -> dict:
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/html": df.to_html(index=False), "text/plain": df.to_string()}}


def write_as(df: pd.DataFrame, fmt: str, d: Path, name: str = "out") -> Path:
    """Write ``df`` in format ``fmt``; names get a misleading extension on purpose."""
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.{fmt}.data"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "csv_index":
        df.to_csv(p)  # pandas' default: the row number is written as a first column
    elif fmt == "csv_fr":
        df.to_csv(p, index=False, sep=";", decimal=",")
    elif fmt == "tsv":
        df.to_csv(p, index=False, sep="\t")
    elif fmt == "parquet":
        df.to_parquet(p, index=False)
    elif fmt == "feather":
        df.to_feather(p)
    elif fmt == "xlsx":
        df.to_excel(p, index=False, engine="openpyxl")
    elif fmt == "xlsx_hidden":
        with pd.ExcelWriter(p, engine="openpyxl") as w:
            pd.DataFrame({"region": ["A", "B"], "n": [40, 50]}).to_excel(w, sheet_name="summary", index=False)
            df.to_excel(w, sheet_name="detail", index=False)
            w.book["detail"].sheet_state = "hidden"
    elif fmt == "json":
        p.write_text(df.to_json(orient="records", date_format="iso"))
    elif fmt == "jsonl":
        p.write_text(df.to_json(orient="records", lines=True, date_format="iso"))
    elif fmt == "notebook":
        p.write_text(notebook_json([frame_output(df)]))
    elif fmt == "html":
        p.write_text("<html><body>" + df.to_html(index=False) + "</body></html>")
    elif fmt == "zip":
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("results/table.csv", df.to_csv(index=False))
    elif fmt == "gzip":
        import gzip

        p.write_bytes(gzip.compress(df.to_csv(index=False).encode()))
    else:  # pragma: no cover
        raise ValueError(fmt)
    return p


# ------------------------------------------------------------------ corpus tables


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def safe_long() -> pd.DataFrame:
    return pd.DataFrame({"region": ["Nord", "Sud", "Est", "Ouest"], "n": [120, 45, 33, 80],
                         "mean_los": [4.2, 5.1, 3.9, 6.0]})


def small_long() -> pd.DataFrame:
    return pd.DataFrame({"region": ["Nord", "Sud", "Est"], "n_patients": [120, 4, 33]})


def zero_long() -> pd.DataFrame:
    return pd.DataFrame({"ward": ["A", "B", "C"], "effectif": [50, 0, 33]})


def safe_crosstab() -> pd.DataFrame:
    return pd.DataFrame({"agegrp": ["<50", "50-70", ">70"], "F": [40, 55, 61], "M": [38, 70, 52]})


def small_crosstab() -> pd.DataFrame:
    return pd.DataFrame({"agegrp": ["<50", "50-70", ">70"], "F": [40, 55, 61], "M": [38, 7, 52]})


def stat_small_n() -> pd.DataFrame:
    return pd.DataFrame({"hospital": ["H1", "H2", "H3"], "n": [150, 12, 60],
                         "median_los": [4.0, 5.5, 3.0], "n_deaths": [15, 3, 11]})


def stat_without_n() -> pd.DataFrame:
    return pd.DataFrame({"hospital": ["H1", "H2", "H3"], "mean_los": [4.1, 5.2, 3.3]})


def recoverable() -> pd.DataFrame:
    return pd.DataFrame({"region": ["Nord", "Sud", "Total"], "F": ["40", "<10", "47"],
                         "M": ["38", "70", "108"], "Total": ["78", "77", "155"]})


def identifier_named() -> pd.DataFrame:
    rng = _rng()
    return pd.DataFrame({"patient_id": [f"P{i:06d}" for i in range(30)],
                         "los": rng.integers(1, 20, 30)})


def identifier_nir() -> pd.DataFrame:
    rng = _rng()
    return pd.DataFrame({"x": [nir(rng) for _ in range(25)], "y": rng.integers(10, 90, 25)})


def identifier_uuid() -> pd.DataFrame:
    return pd.DataFrame({"ref_a": [str(uuid.UUID(int=i + 1)) for i in range(12)],
                         "val": list(range(20, 32))})


def quasi_ids() -> pd.DataFrame:
    rng = _rng()
    return pd.DataFrame({
        "date_naissance": pd.date_range("1950-01-01", periods=15, freq="37D").strftime("%Y-%m-%d"),
        "sexe": rng.choice(["F", "M"], 15), "code_postal": rng.choice(["75011", "69003"], 15),
        "gir": rng.integers(1, 6, 15)})


def row_level_plain() -> pd.DataFrame:
    rng = _rng()
    n = 300
    return pd.DataFrame({"ward": rng.choice(["CARDIO", "NEURO", "ICU"], n),
                         "age": rng.integers(18, 95, n), "weight": np.round(rng.normal(72, 12, n), 1),
                         "los": rng.integers(0, 40, n)})


def count_all_ones() -> pd.DataFrame:
    return pd.DataFrame({"diag": [f"I{i:02d}" for i in range(30)], "n": [1] * 30})


def regression_small_df() -> pd.DataFrame:
    return pd.DataFrame({"term": ["const", "age", "sex", "Df Residuals"],
                         "coef": [1.2, 0.03, -0.4, 6], "std err": [0.3, 0.01, 0.2, None],
                         "P>|t|": [0.01, 0.02, 0.04, None]})


def regression_no_df() -> pd.DataFrame:
    return pd.DataFrame({"term": ["const", "age"], "coef": [1.2, 0.03], "std err": [0.3, 0.01]})


def dominance() -> pd.DataFrame:
    return pd.DataFrame({"sector": ["A", "B"], "n": [25, 30], "total": [1000.0, 5000.0],
                         "top1": [950.0, 800.0], "top2": [20.0, 700.0]})


#: name -> (table factory, expected verdict, a rule that must be found)
CASES: dict[str, tuple[Callable[[], pd.DataFrame], str, str | None]] = {
    "safe_long": (safe_long, "pass", None),
    "safe_crosstab": (safe_crosstab, "pass", None),
    "small_long": (small_long, "fail", "small-count"),
    "small_crosstab": (small_crosstab, "fail", "small-count"),
    "zero_long": (zero_long, "fail", "zero-count"),
    "stat_small_n": (stat_small_n, "fail", "small-n-statistic"),
    "stat_without_n": (stat_without_n, "review", "statistic-without-n"),
    "recoverable": (recoverable, "fail", "recoverable-suppression"),
    "identifier_named": (identifier_named, "block", "identifier-column"),
    "identifier_nir": (identifier_nir, "block", "identifier-value"),
    "identifier_uuid": (identifier_uuid, "block", "identifier-value"),
    "quasi_ids": (quasi_ids, "block", "quasi-identifiers"),
    "row_level_plain": (row_level_plain, "block", "repeated-keys"),
    "count_all_ones": (count_all_ones, "block", "count-all-ones"),
    "regression_small_df": (regression_small_df, "fail", "low-residual-df"),
    "regression_no_df": (regression_no_df, "review", "regression-without-df"),
    "dominance": (dominance, "fail", "dominance-nk"),
}


@pytest.fixture
def policy() -> DisclosurePolicy:
    return DisclosurePolicy()


@pytest.fixture
def csv_bytes() -> Callable[[pd.DataFrame], bytes]:
    def make(df: pd.DataFrame) -> bytes:
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue().encode()
    return make
