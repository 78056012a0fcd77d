"""Deterministic synthetic demo warehouse (never real patient data).

* ``cardio-los`` / ``omop``: OMOP-CDM-style Parquet tables — ``person``,
  ``care_site``, ``visit_occurrence``, ``condition_occurrence``,
  ``measurement`` — each a directory of Parquet part files (Dask reads the
  parts in parallel). Lengths of stay depend on the ward, the diagnosis and
  age; diagnoses carry ICD-10 source codes, measurements LOINC codes.
* ``air-quality`` / ``exposure``: a Zarr store ``exposure.zarr`` with daily
  ``pm25`` and ``no2`` (µg/m³, float32) on ``time × lat × lon`` over the Lyon
  area; cells outside the study area are NaN.
* ``air-quality`` / ``cohort``: ``patients.parquet`` (one row per patient,
  linked to the cube by ``commune_code``) and ``communes.parquet``.

Sizes are named (:data:`SIZES`): ``small`` for tests, ``default`` for
``make up`` (under a minute on 2 cores), ``full`` for the issue's figures.
The same seed and size always give the same bytes of data.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarehouseSize:
    persons: int
    visits: int
    measurements: int
    days: int
    lat: int
    lon: int
    patients: int
    parts: int  # Parquet part files per large table


SIZES: dict[str, WarehouseSize] = {
    "small": WarehouseSize(2_000, 8_000, 40_000, 60, 40, 40, 1_500, 2),
    "default": WarehouseSize(100_000, 1_000_000, 5_000_000, 365, 200, 200, 20_000, 8),
    "full": WarehouseSize(100_000, 1_000_000, 5_000_000, 365, 200, 200, 50_000, 16),
}

# ward (care_site) -> (name, relative frequency, LOS gamma shape, scale)
WARDS = [
    (1, "Cardiology", 0.35, 2.0, 2.5),
    (2, "Cardiac surgery", 0.15, 3.0, 3.5),
    (3, "Cardiac ICU", 0.10, 2.0, 3.0),
    (4, "Internal medicine", 0.25, 1.8, 3.0),
    (5, "Emergency short-stay", 0.15, 1.2, 0.8),
]
# (condition_concept_id, ICD-10, label, frequency, LOS multiplier)
DIAGNOSES = [
    (4329847, "I21.9", "Acute myocardial infarction", 0.18, 1.3),
    (316139, "I50.9", "Heart failure", 0.20, 1.5),
    (313217, "I48.9", "Atrial fibrillation", 0.17, 0.8),
    (317576, "I25.1", "Coronary atherosclerosis", 0.15, 0.9),
    (320128, "I10", "Essential hypertension", 0.12, 0.6),
    (4110937, "I35.0", "Aortic stenosis", 0.08, 1.8),
    (201826, "E11.9", "Type 2 diabetes", 0.10, 0.7),
]
# (measurement_concept_id, LOINC, label, unit, mean, sd)
MEASUREMENTS = [
    (3000963, "718-7", "Hemoglobin", "g/dL", 13.2, 1.8),
    (3016723, "2160-0", "Creatinine", "mg/dL", 1.1, 0.4),
    (3019550, "2951-2", "Sodium", "mmol/L", 139.0, 3.5),
    (3023103, "2823-3", "Potassium", "mmol/L", 4.2, 0.5),
    (3004501, "2345-7", "Glucose", "mg/dL", 115.0, 30.0),
    (3027018, "8867-4", "Heart rate", "/min", 78.0, 14.0),
    (3004249, "8480-6", "Systolic blood pressure", "mm[Hg]", 131.0, 18.0),
    (3033745, "10839-9", "Troponin I", "ng/mL", 0.4, 0.9),
]
# communes of the Lyon area: INSEE code, name, lat, lon
COMMUNES = [
    ("69381", "Lyon 1er", 45.767, 4.834), ("69382", "Lyon 2e", 45.749, 4.826),
    ("69383", "Lyon 3e", 45.760, 4.851), ("69384", "Lyon 4e", 45.778, 4.826),
    ("69385", "Lyon 5e", 45.756, 4.803), ("69386", "Lyon 6e", 45.769, 4.850),
    ("69387", "Lyon 7e", 45.733, 4.840), ("69388", "Lyon 8e", 45.735, 4.869),
    ("69389", "Lyon 9e", 45.774, 4.806), ("69266", "Villeurbanne", 45.771, 4.890),
    ("69259", "Vénissieux", 45.697, 4.886), ("69290", "Saint-Priest", 45.696, 4.944),
    ("69034", "Caluire-et-Cuire", 45.795, 4.846), ("69123", "Lyon", 45.758, 4.835),
    ("69202", "Sainte-Foy-lès-Lyon", 45.734, 4.793), ("69149", "Oullins", 45.714, 4.807),
    ("69256", "Vaulx-en-Velin", 45.778, 4.921), ("69091", "Givors", 45.590, 4.769),
    ("69029", "Bron", 45.739, 4.913), ("69244", "Tassin-la-Demi-Lune", 45.763, 4.780),
]
LAT_RANGE = (45.55, 45.95)
LON_RANGE = (4.65, 5.05)


def _write_parts(df: pd.DataFrame, directory: Path, parts: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(df), max(1, parts) + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        table = pa.Table.from_pandas(df.iloc[a:b], preserve_index=False)
        pq.write_table(table, directory / f"part-{i:03d}.parquet", compression="zstd")


def omop_tables(size: WarehouseSize, seed: int = 20240) -> dict[str, pd.DataFrame]:
    """The OMOP-style tables of ``cardio-los`` as DataFrames."""
    rng = np.random.default_rng(seed)
    n, v, m = size.persons, size.visits, size.measurements
    person = pd.DataFrame({
        "person_id": np.arange(1, n + 1, dtype=np.int64),
        "gender_concept_id": rng.choice(np.array([8507, 8532], dtype=np.int32), n, p=[0.56, 0.44]),
        "year_of_birth": (2024 - np.clip(rng.normal(68, 13, n), 18, 101)).astype(np.int32),
        "month_of_birth": rng.integers(1, 13, n, dtype=np.int32),
        "race_concept_id": np.zeros(n, dtype=np.int32),
        "ethnicity_concept_id": np.zeros(n, dtype=np.int32),
    })
    care_site = pd.DataFrame({
        "care_site_id": np.array([w[0] for w in WARDS], dtype=np.int64),
        "care_site_name": [w[1] for w in WARDS],
        "place_of_service_concept_id": np.full(len(WARDS), 8717, dtype=np.int32),
    })
    # visits: frequent flyers (heart failure) get more stays
    visit_person = np.sort(rng.zipf(1.6, v) % n + 1).astype(np.int64)
    ward_idx = rng.choice(len(WARDS), v, p=[w[2] for w in WARDS])
    diag_idx = rng.choice(len(DIAGNOSES), v, p=[d[3] for d in DIAGNOSES])
    shape = np.array([w[3] for w in WARDS])[ward_idx]
    scale = np.array([w[4] for w in WARDS])[ward_idx]
    age = 2024 - person["year_of_birth"].to_numpy()[visit_person - 1]
    los = rng.gamma(shape, scale) * np.array([d[4] for d in DIAGNOSES])[diag_idx]
    los *= 1 + np.clip(age - 60, 0, None) / 60
    los_days = np.floor(los).astype(np.int64)
    start = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, v), unit="D")
    visit = pd.DataFrame({
        "visit_occurrence_id": np.arange(1, v + 1, dtype=np.int64),
        "person_id": visit_person,
        "visit_concept_id": rng.choice(np.array([9201, 9203, 262], dtype=np.int32), v,
                                       p=[0.8, 0.12, 0.08]),
        "visit_start_date": start.values.astype("datetime64[D]"),
        "visit_end_date": (start + pd.to_timedelta(los_days, unit="D")).values.astype(
            "datetime64[D]"),
        "care_site_id": np.array([w[0] for w in WARDS], dtype=np.int64)[ward_idx],
        "visit_type_concept_id": np.full(v, 32817, dtype=np.int32),
    })
    # conditions: a primary diagnosis per visit, plus comorbidities for ~40%
    extra = rng.random(v) < 0.4
    c_visit = np.concatenate([visit["visit_occurrence_id"].to_numpy(),
                              visit["visit_occurrence_id"].to_numpy()[extra]])
    c_diag = np.concatenate([diag_idx, rng.choice(len(DIAGNOSES), int(extra.sum()),
                                                  p=[d[3] for d in DIAGNOSES])])
    c_status = np.concatenate([np.full(v, 32902, np.int32),  # primary diagnosis
                               np.full(int(extra.sum()), 32908, np.int32)])  # secondary
    order = np.argsort(c_visit, kind="stable")
    c_visit, c_diag, c_status = c_visit[order], c_diag[order], c_status[order]
    condition = pd.DataFrame({
        "condition_occurrence_id": np.arange(1, len(c_visit) + 1, dtype=np.int64),
        "person_id": visit_person[c_visit - 1],
        "visit_occurrence_id": c_visit,
        "condition_concept_id": np.array([d[0] for d in DIAGNOSES], np.int32)[c_diag],
        "condition_source_value": np.array([d[1] for d in DIAGNOSES])[c_diag],
        "condition_start_date": visit["visit_start_date"].to_numpy()[c_visit - 1],
        "condition_status_concept_id": c_status,
        "condition_type_concept_id": np.full(len(c_visit), 32817, np.int32),
    })
    # measurements: spread over visits, at a day within the stay
    m_visit = np.sort(rng.integers(1, v + 1, m)).astype(np.int64)
    kind = rng.integers(0, len(MEASUREMENTS), m)
    means = np.array([x[4] for x in MEASUREMENTS])[kind]
    sds = np.array([x[5] for x in MEASUREMENTS])[kind]
    values = np.round(np.abs(rng.normal(means, sds)), 2).astype(np.float64)
    day = (rng.random(m) * (los_days[m_visit - 1] + 1)).astype("timedelta64[D]")
    measurement = pd.DataFrame({
        "measurement_id": np.arange(1, m + 1, dtype=np.int64),
        "person_id": visit_person[m_visit - 1],
        "visit_occurrence_id": m_visit,
        "measurement_concept_id": np.array([x[0] for x in MEASUREMENTS], np.int32)[kind],
        "measurement_source_value": np.array([x[1] for x in MEASUREMENTS])[kind],
        "measurement_date": visit["visit_start_date"].to_numpy()[m_visit - 1] + day,
        "value_as_number": values,
        "unit_source_value": np.array([x[3] for x in MEASUREMENTS])[kind],
    })
    return {"person": person, "care_site": care_site, "visit_occurrence": visit,
            "condition_occurrence": condition, "measurement": measurement}


def write_omop(directory: Path, size: WarehouseSize, seed: int = 20240) -> dict[str, int]:
    """Write the OMOP tables under ``directory/<table>/part-NNN.parquet``; rows per table."""
    rows = {}
    for name, df in omop_tables(size, seed).items():
        parts = size.parts if len(df) > 50_000 else 1
        _write_parts(df, directory / name, parts)
        rows[name] = len(df)
    (directory / "README.txt").write_text(
        "Synthetic OMOP-CDM-style tables (demo, not real patients). One directory of "
        "Parquet part files per table: person, care_site, visit_occurrence, "
        "condition_occurrence, measurement. Read with pandas.read_parquet(dir) or "
        "dask.dataframe.read_parquet(dir).\n")
    return rows


def exposure_cube(size: WarehouseSize, seed: int = 4242):
    """The daily exposure cube as an ``xarray.Dataset`` (pm25, no2; float32; NaN outside)."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    t, ny, nx = size.days, size.lat, size.lon
    lat = np.linspace(*LAT_RANGE, ny, dtype=np.float64)
    lon = np.linspace(*LON_RANGE, nx, dtype=np.float64)
    time = pd.date_range("2023-01-01", periods=t, freq="D")
    yy, xx = np.meshgrid((lat - 45.76) / 0.2, (lon - 4.84) / 0.2, indexing="ij")
    urban = np.exp(-(yy**2 + xx**2) * 2.0).astype(np.float32)  # city centre plume
    road = np.exp(-((yy - 0.3 * xx) ** 2) * 40).astype(np.float32)  # a motorway corridor
    mask = (yy**2 + xx**2) <= 1.05  # the study area: a disc; NaN outside
    doy = np.arange(t)
    season = (1 + 0.45 * np.cos(2 * np.pi * (doy - 15) / 365)).astype(np.float32)
    weather = np.convolve(rng.gamma(2.0, 0.5, t + 6), np.ones(7) / 7, "valid")[:t]
    weather = weather.astype(np.float32)
    out = {}
    for name, base, k_urban, k_road in (("pm25", 8.0, 14.0, 4.0), ("no2", 12.0, 30.0, 18.0)):
        spatial = (base + k_urban * urban + k_road * road)[None, :, :]
        cube = spatial * (season * weather)[:, None, None]
        noise = rng.standard_normal((t, ny, nx), dtype=np.float32)
        cube = cube * (1 + 0.1 * noise)
        np.maximum(cube, 0, out=cube)
        cube[:, ~mask] = np.nan
        out[name] = (("time", "lat", "lon"), cube.astype(np.float32),
                     {"units": "ug/m3", "long_name": f"daily mean {name} (synthetic)"})
    return xr.Dataset(out, coords={"time": time, "lat": lat, "lon": lon},
                      attrs={"title": "Synthetic daily pollutant exposure, Lyon area (demo)"})


def write_exposure(directory: Path, size: WarehouseSize, seed: int = 4242) -> dict[str, int]:
    """Write ``directory/exposure.zarr`` chunked (31 days × 100 × 100)."""
    ds = exposure_cube(size, seed)
    directory.mkdir(parents=True, exist_ok=True)
    chunks = {"time": min(31, size.days), "lat": min(100, size.lat), "lon": min(100, size.lon)}
    encoding = {v: {"chunks": tuple(chunks[d] for d in ds[v].dims)} for v in ds.data_vars}
    ds.to_zarr(directory / "exposure.zarr", mode="w", encoding=encoding, consolidated=False)
    return {"cells": int(ds["pm25"].size)}


def write_cohort(directory: Path, size: WarehouseSize, seed: int = 777) -> dict[str, int]:
    """Write ``patients.parquet`` and ``communes.parquet`` (linked by ``commune_code``)."""
    rng = np.random.default_rng(seed)
    n = size.patients
    communes = pd.DataFrame(COMMUNES, columns=["commune_code", "commune_name", "lat", "lon"])
    weights = rng.gamma(2.0, 1.0, len(communes))
    idx = rng.choice(len(communes), n, p=weights / weights.sum())
    admission = pd.Timestamp("2023-01-01") + pd.to_timedelta(
        rng.integers(0, size.days, n), unit="D")
    patients = pd.DataFrame({
        "patient_id": np.arange(1, n + 1, dtype=np.int64),
        "commune_code": communes["commune_code"].to_numpy()[idx],
        "sex": rng.choice(np.array(["F", "M"]), n),
        "age": np.clip(rng.normal(55, 20, n), 0, 100).astype(np.int32),
        "asthma": rng.random(n) < 0.12,
        "copd": rng.random(n) < 0.08,
        "admission_date": admission.values.astype("datetime64[D]"),
        "diagnosis_icd10": rng.choice(np.array(["J45.9", "J44.1", "J18.9", "J20.9", "I50.9"]),
                                      n, p=[0.25, 0.2, 0.25, 0.2, 0.1]),
    })
    directory.mkdir(parents=True, exist_ok=True)
    patients.to_parquet(directory / "patients.parquet", index=False)
    communes.to_parquet(directory / "communes.parquet", index=False)
    return {"patients": n, "communes": len(communes)}


#: (project slug, dataset name) -> writer
WRITERS = {
    ("cardio-los", "omop"): write_omop,
    ("air-quality", "exposure"): write_exposure,
    ("air-quality", "cohort"): write_cohort,
}


def generate(project: str, dataset: str, directory: Path, size: str | WarehouseSize = "default",
             *, force: bool = False) -> dict[str, int] | None:
    """Write one warehouse dataset into ``directory`` (atomically); ``None`` if unknown or
    already there (unless ``force``)."""
    writer = WRITERS.get((project, dataset))
    if writer is None:
        return None
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not force:
        return None
    sz = SIZES[size] if isinstance(size, str) else size
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = writer(tmp, sz)
    for p in [tmp, *tmp.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    log.info("wrote demo warehouse %s/%s (%s)", project, dataset, rows)
    return rows


def seed_warehouse(settings, size: str | None = None) -> list[Path]:
    """Generate every warehouse dataset of the configured projects that is missing.

    ``size``: ``small`` | ``default`` | ``full`` (default: ``$ECLUSE_DEMO_SIZE`` or
    ``default``).
    """
    import os

    size = size or os.environ.get("ECLUSE_DEMO_SIZE") or "default"
    written = []
    for slug, project in settings.projects.items():
        for ds in project.datasets:
            if generate(slug, ds.name, Path(ds.path), size) is not None:
                written.append(Path(ds.path))
    return written
