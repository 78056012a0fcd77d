"""The *Data* panel and the starter notebooks in a real workspace (issue 22 item 4).

A canary is planted in the ``air-quality`` project's dataset before its
workspace starts: Parquet (with its column statistics), CSV and a Zarr cube
whose every value and attribute is a marker. Through the hub, the proxy and
the host's route filter, ``GET ecluse/datasets`` answers with columns, types
and row counts, and none of the markers; Chromium opens the panel and sees
the same. The workspace's first start wrote the starter notebooks into the
user's home.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecluse.dev.testing import sign_in_page
from tests.workspace.helpers import start_workspace_now

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(600)]

MARKERS = ["CANARYzK9-first", "CANARYzK9-last", "CANARYzK9-attr", "CANARYzK9-csv"]
NUMBERS = ["424242.125", "868686.875", "5551234", "13579.5"]


@pytest.fixture(scope="module")
def canary_hub(workspace_hub):
    import xarray as xr

    ds = workspace_hub.settings.projects["air-quality"].datasets[0]
    root = ds.path
    pq.write_table(pa.table({
        "visit_ref": ["CANARYzK9-first", "CANARYzK9-last", "CANARYzK9-first"],
        "amount": [424242.125, 868686.875, 1.0],
        "code": pa.array([5551234, 2, 3], pa.int64())}), root / "visits.parquet")
    (root / "counts.csv").write_text("label,n\nCANARYzK9-csv,5551234\nCANARYzK9-csv,7\n")
    cube = xr.Dataset({"pm": (("time", "x"), np.full((3, 2), 13579.5, dtype="float32"))},
                      attrs={"note": "CANARYzK9-attr"})
    cube.to_zarr(root / "cube.zarr", consolidated=False)
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return workspace_hub


def _assert_no_canary(text: str) -> None:
    for marker in ["CANARYzK9", *MARKERS, *NUMBERS]:
        assert marker not in text, marker


def test_catalogue_route_has_structure_and_no_value(canary_hub, ldap_passwords):
    ws = start_workspace_now(canary_hub, ldap_passwords, "alice", "air-quality")
    r = ws.get("ecluse/datasets", timeout=120)
    assert r.status_code == 200, r.text
    _assert_no_canary(r.text)
    doc = r.json()
    assert doc["project"] == "air-quality"
    (admissions,) = doc["datasets"]
    assert admissions["name"] == "admissions" and admissions["path"] == "/data/admissions"
    tables = {t["path"]: t for t in admissions["tables"]}
    visits = tables["admissions/visits.parquet"]
    assert visits["rows"] == 3
    assert [(c["name"], c["type"]) for c in visits["columns"]] == [
        ("visit_ref", "string"), ("amount", "double"), ("code", "int64")]
    counts = tables["admissions/counts.csv"]
    assert counts["rows"] == 2 and [c["name"] for c in counts["columns"]] == ["label", "n"]
    assert tables["admissions/admissions.csv"]["rows"] == 1
    (cube,) = admissions["arrays"]
    pm = {a["name"]: a for a in cube["arrays"]}["pm"]
    assert (pm["dims"], pm["shape"], pm["dtype"]) == (["time", "x"], [3, 2], "float32")
    # the starter notebooks of the first start, in the user's home (written by the
    # server in a thread of its own: the server does not wait for them)
    for _ in range(600):
        r = ws.get("api/contents/home/alice/starter-notebooks?content=1")
        if r.status_code != 404 and len(r.json().get("content") or []) == 4:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    names = sorted(item["name"] for item in r.json()["content"])
    assert names == ["01-pandas.ipynb", "02-dask.ipynb", "03-xarray.ipynb", "04-export.ipynb"]


def test_data_panel_in_chromium(canary_hub, ldap_passwords, browser_page):
    stack, page = canary_hub, browser_page
    start_workspace_now(stack, ldap_passwords, "alice", "air-quality")
    sign_in_page(page, stack.url, "alice", ldap_passwords["alice"])
    page.goto(f"{stack.url}/user/alice/air-quality/lab")
    page.wait_for_selector("#jp-main-dock-panel", timeout=180000)
    tab = page.locator('.jp-SideBar li[data-id="ecluse-data-panel"]')
    tab.wait_for(timeout=120000)
    tab.click()
    dataset = page.locator('#ecluse-data-panel .ecluse-dataset[data-dataset="admissions"]')
    dataset.wait_for(timeout=120000)
    visits = dataset.locator('.ecluse-table[data-path="admissions/visits.parquet"]')
    visits.locator("summary").click()
    assert "3 rows" in visits.inner_text()
    assert "visit_ref" in visits.inner_text() and "double" in visits.inner_text()
    cube = dataset.locator('.ecluse-store[data-path="admissions/cube.zarr"]')
    cube.locator("summary").click()
    assert "time: 3 × x: 2" in cube.inner_text() and "float32" in cube.inner_text()
    panel_text = page.locator("#ecluse-data-panel").inner_text()
    _assert_no_canary(panel_text)
    assert "no value of the data is shown here" in panel_text
    assert not page.locator("#ecluse-data-panel .ecluse-error").count()
