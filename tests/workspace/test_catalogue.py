"""The data catalogue (``ecluse_workspace.catalogue``) on real files: structure, never values.

Tables (Parquet files and folders of parts, CSV, TSV), Zarr stores and netCDF files
written with the real libraries; a *canary* dataset whose every value, Parquet
statistic (min/max, null count) and array attribute is a marker string or an
unusual number, none of which may appear in the catalogue's JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ecluse_workspace.catalogue import (
    ENV_DATASETS,
    catalogue,
    declared_datasets,
    describe_dataset,
)

#: values of the canary dataset: none may leave through the catalogue
CANARY_STRINGS = ["CANARYxQ7-alpha", "CANARYxQ7-omega", "CANARYxQ7-attr", "CANARYxQ7-tsv"]
CANARY_NUMBERS = [31337.625, 73313.375, 271828, 161803, 5551212]


def _canary_dataset(root: Path) -> Path:
    d = root / "canary"
    d.mkdir(parents=True)
    table = pa.table({
        "patient_ref": ["CANARYxQ7-alpha", "CANARYxQ7-omega", "CANARYxQ7-alpha"],
        "weight": [31337.625, 73313.375, 50000.5],
        "code": pa.array([271828, 161803, 271828], pa.int64()),
    })
    # statistics written (pyarrow's default), and checked to be there: the catalogue
    # must not copy them
    pq.write_table(table, d / "visits.parquet", write_statistics=True)
    stats = pq.ParquetFile(d / "visits.parquet").metadata.row_group(0).column(1).statistics
    assert stats is not None and stats.max == 73313.375
    (d / "parts").mkdir()
    for i in range(3):
        pq.write_table(table, d / "parts" / f"part-{i}.parquet")
    pd.DataFrame({"label": ["CANARYxQ7-omega"] * 4, "n": [5551212] * 4}).to_csv(
        d / "counts.csv", index=False)
    pd.DataFrame({"label": ["CANARYxQ7-tsv"], "n": [5551212]}).to_csv(
        d / "counts.tsv", sep="\t", index=False)
    import xarray as xr

    cube = xr.Dataset(
        {"pm25": (("time", "lat"), np.full((4, 3), 31337.625, dtype="float32"))},
        coords={"time": np.arange(4), "lat": np.array([161803.0, 2.0, 3.0])},
        attrs={"note": "CANARYxQ7-attr"})
    cube["pm25"].attrs["source"] = "CANARYxQ7-attr"
    cube.to_zarr(d / "cube.zarr", consolidated=False)
    cube.to_netcdf(d / "cube.nc")
    (d / "README.txt").write_text("CANARYxQ7-alpha is described here\n")
    return root


@pytest.fixture
def data_root(tmp_path) -> Path:
    return _canary_dataset(tmp_path / "data")


def test_tables_have_columns_types_and_row_counts(data_root):
    info = describe_dataset("canary", "A canary", str(data_root))
    tables = {t.path: t for t in info.tables}
    assert set(tables) == {"canary/visits.parquet", "canary/parts", "canary/counts.csv",
                           "canary/counts.tsv"}
    visits = tables["canary/visits.parquet"]
    assert visits.rows == 3 and visits.format == "parquet"
    assert [(c.name, c.type) for c in visits.columns] == [
        ("patient_ref", "string"), ("weight", "double"), ("code", "int64")]
    parts = tables["canary/parts"]
    assert (parts.rows, parts.parts) == (9, 3)
    counts = tables["canary/counts.csv"]
    assert counts.rows == 4 and [c.name for c in counts.columns] == ["label", "n"]
    assert counts.columns[0].type in ("object", "str") and counts.columns[1].type == "int64"
    assert tables["canary/counts.tsv"].format == "tsv" and tables["canary/counts.tsv"].rows == 1
    assert info.other_files == 1  # the README, not read


def test_arrays_have_dims_shapes_and_dtypes(data_root):
    info = describe_dataset("canary", "", str(data_root))
    stores = {s.path: s for s in info.arrays}
    zarr = stores["canary/cube.zarr"]
    assert zarr.format == "zarr" and zarr.error is None
    pm25 = {a.name: a for a in zarr.arrays}["pm25"]
    assert (pm25.dims, pm25.shape, pm25.dtype) == (["time", "lat"], [4, 3], "float32")
    nc = stores["canary/cube.nc"]
    assert nc.format == "netcdf" and nc.error is None, nc.error
    pm25 = {a.name: a for a in nc.arrays}["pm25"]
    assert (pm25.dims, pm25.shape, pm25.dtype) == (["time", "lat"], [4, 3], "float32")


def test_no_value_statistic_or_attribute_leaves(data_root):
    """The attack: every value, Parquet min/max and attribute of the canary is absent."""
    doc = json.dumps(catalogue({ENV_DATASETS: json.dumps(
        [{"name": "canary", "description": "d"}])}, str(data_root)))
    for marker in ["CANARYxQ7", *CANARY_STRINGS]:
        assert marker not in doc
    for number in CANARY_NUMBERS:
        for text in {str(number), repr(number), f"{number:g}", str(int(number))}:
            assert text not in doc, text
    # nothing named like a statistic either
    for key in ("min", "max", "null_count", "distinct", "statistics", "mean", "attrs"):
        assert f'"{key}"' not in doc


def test_unreadable_file_is_an_error_without_its_content(data_root):
    bad = data_root / "canary" / "broken.parquet"
    bad.write_bytes(b"CANARYxQ7-alpha not a parquet file")
    info = describe_dataset("canary", "", str(data_root))
    broken = {t.path: t for t in info.tables}["canary/broken.parquet"]
    assert broken.error and "CANARYxQ7" not in broken.error and broken.rows is None


def test_declared_datasets_from_the_environment_or_the_folders(data_root):
    env = {ENV_DATASETS: json.dumps([{"name": "canary", "description": "Descr é"},
                                     {"name": "absent", "description": ""}])}
    assert declared_datasets(env, str(data_root)) == [
        {"name": "absent", "description": ""}, {"name": "canary", "description": "Descr é"}]
    assert declared_datasets({}, str(data_root)) == [{"name": "canary", "description": ""}]
    doc = catalogue(env, str(data_root))
    absent = doc["datasets"][0]
    assert absent["error"] == "not mounted in this workspace" and not absent["tables"]


def test_the_content_rule_bounds_what_the_route_may_carry(data_root):
    """A workspace server replaced by the user's own could answer ``ecluse/datasets``
    with anything: the host's route filter (and the in-server guard) pass only a JSON
    document of short strings and bounded size."""
    from ecluse_workspace.content import ContentRefused, Limits
    from ecluse_workspace.datapanel import MAX_CATALOGUE_BYTES, MAX_CATALOGUE_STRING
    from ecluse_workspace.guard import judge_response

    real = json.dumps(catalogue({}, str(data_root))).encode()
    assert judge_response("ecluse-datasets", real, True, Limits()) is None
    long_string = json.dumps({"datasets": [{"description": "x" * (MAX_CATALOGUE_STRING + 1)}]})
    many = json.dumps({"datasets": [{"name": "y" * 1000} for _ in
                                    range(MAX_CATALOGUE_BYTES // 1000 + 10)]})
    for body in (long_string.encode(), many.encode(), b"name,value\nalice,42\n"):
        with pytest.raises(ContentRefused):
            judge_response("ecluse-datasets", body, True, Limits())
    with pytest.raises(ContentRefused):
        judge_response("ecluse-datasets", real, False, Limits())  # streamed: not whole


def test_a_csv_without_header_shows_no_value_as_column_name(tmp_path):
    d = tmp_path / "data" / "raw"
    d.mkdir(parents=True)
    (d / "noheader.csv").write_text("P7350011,1987,73.5\nP7350012,1990,81.25\n"
                                    "P7350013,1979,66.0\n")
    (d / "header.csv").write_text("patient,year,weight\nP7350021,1987,73.5\n"
                                  "P7350022,1990,81.25\n")
    info = describe_dataset("raw", "", str(tmp_path / "data"))
    tables = {t.path: t for t in info.tables}
    raw = tables["raw/noheader.csv"]
    assert not raw.header and raw.rows == 3
    assert [c.name for c in raw.columns] == ["column 1", "column 2", "column 3"]
    assert [c.type for c in raw.columns][1:] == ["int64", "float64"]
    assert "P735" not in json.dumps(catalogue({}, str(tmp_path / "data")))
    named = tables["raw/header.csv"]
    assert named.header and [c.name for c in named.columns] == ["patient", "year", "weight"]
