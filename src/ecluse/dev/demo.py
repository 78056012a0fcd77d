"""Synthetic demo datasets for the embedded stack (never real patient data)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..hub.mfa import new_secret
from .warehouse import seed_warehouse

log = logging.getLogger(__name__)


def read_demo_users(path: Path, *, migrate: bool = False) -> dict[str, dict[str, str]]:
    """The demo users' file: ``{"alice": {"password": …, "totp": …}, …}``.

    With ``migrate``, a file from an earlier version (passwords only) gets a
    TOTP secret for each user, rewritten in place (0600, atomically)."""
    users = json.loads(path.read_text())
    if not isinstance(users, dict):
        raise ValueError(f"{path}: expected an object of users, got {type(users).__name__}")
    old = [name for name, v in users.items() if isinstance(v, str)]
    if old and not migrate:
        raise ValueError(f"{path}: {', '.join(old)} have no TOTP secret yet: run `make up` "
                         "once to add them")
    if old:
        users = {name: v if isinstance(v, dict) else {"password": v, "totp": new_secret()}
                 for name, v in users.items()}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(users, fh, indent=2)
        os.replace(tmp, path)
        log.warning("%s: added TOTP secrets for %s (second factor at sign-in)", path,
                    ", ".join(old))
    return users


def _stays(n: int = 5000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    admission = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 730, n), unit="D")
    return pd.DataFrame(
        {
            "patient_id": [f"P{100000 + i}" for i in rng.permutation(n)],
            "age": rng.integers(35, 95, n),
            "sex": rng.choice(["F", "M"], n),
            "procedure": rng.choice(["CABG", "valve", "PCI", "other"], n, p=[0.3, 0.2, 0.4, 0.1]),
            "hospital": rng.choice(["Lyon", "Paris", "Lille", "Nantes"], n),
            "admission_date": admission.strftime("%Y-%m-%d"),
            "los_days": rng.gamma(2.0, 4.0, n).round(1),
        }
    )


def _admissions(days: int = 730, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-01", periods=days, freq="D")
    pm25 = rng.gamma(3.0, 4.0, days).round(1)
    return pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "city": "Lyon",
            "pm25": pm25,
            "no2": rng.gamma(4.0, 6.0, days).round(1),
            "respiratory_admissions": rng.poisson(20 + pm25 / 2),
        }
    )


GENERATORS = {"cardio-los": ("stays", _stays), "air-quality": ("admissions", _admissions)}


def seed_demo_data(settings: Settings) -> list[Path]:
    """Write the demo datasets of the demo projects when their folders are missing."""
    written = []
    for slug, (dataset_name, make) in GENERATORS.items():
        project = settings.projects.get(slug)
        if not project:
            continue
        for ds in project.datasets:
            if ds.name != dataset_name or ds.path.exists():
                continue
            ds.path.mkdir(parents=True, mode=0o755)
            df = make()
            df.to_csv(ds.path / f"{dataset_name}.csv", index=False)
            df.to_parquet(ds.path / f"{dataset_name}.parquet", index=False)
            log.info("wrote demo dataset %s/%s (%d rows)", slug, ds.name, len(df))
            written.append(ds.path)
    # the demo warehouse (OMOP tables, exposure cube, cohort) of datasets named
    # omop / exposure / cohort; size from $ECLUSE_DEMO_SIZE (small | default | full)

    written.extend(seed_warehouse(settings))
    return written
