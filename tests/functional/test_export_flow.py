"""End to end, through the real stack, in headless Chromium.

alice signs in, starts her ``cardio-los`` workspace, runs a notebook that
writes an aggregate table and a row-level extract under ``/project``, and
requests the export of both from the file browser's context menu (where the
download entries are gone). The extract is ``block``, the table ``pass``;
carol and dan approve the table, carol releases it; the Airlock panel shows
the states and verdicts; alice downloads the released table from the
airlock; the audit log verifies.
"""

from __future__ import annotations

import hashlib
import re
import time

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.dev.testing import HubClient, project_token_scopes, sign_in_page

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK_CODE = """\
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = 400
df = pd.DataFrame({"patient_id": [f"P{100000 + i}" for i in range(n)],
                   "sex": rng.choice(["F", "M"], n),
                   "age_band": rng.choice(["18-49", "50-69", "70+"], n),
                   "los_days": rng.integers(1, 30, n)})
df.to_csv("/project/extract.csv", index=False)
table = (df.groupby(["sex", "age_band"])
           .agg(n=("patient_id", "count"), mean_los=("los_days", "mean")).reset_index())
table["mean_los"] = table["mean_los"].round(1)
table.to_csv("/project/table1.csv", index=False)
print("written", len(df), len(table))
"""


def notebook() -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
                   "outputs": [], "source": NOTEBOOK_CODE}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def menu_labels(page) -> list[str]:
    page.wait_for_selector(".lm-Menu")
    return [t.strip() for t in page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts()]


def listing_item(page, name: str):
    return page.locator(".jp-DirListing-content .jp-DirListing-item", has_text=name).first


def request_export(page, name: str, title: str, about: dict | None = None) -> str:
    """``about``: the context and controls to type in the dialog under the file."""
    if not page.locator("#filebrowser").is_visible():  # the Airlock panel took its place
        page.locator('.jp-SideBar li[data-id="filebrowser"]').click()
    item = listing_item(page, name)
    item.click()
    item.click(button="right")
    labels = menu_labels(page)
    assert "Request export…" in labels, labels
    for forbidden in ("Download", "Open in New Browser Tab", "Copy Download Link"):
        assert forbidden not in labels, labels
    page.locator(".lm-Menu .lm-Menu-item", has_text="Request export…").first.click()
    dialog = page.locator(".jp-Dialog")
    assert name in dialog.locator(".ecluse-export-files").inner_text()
    page.fill("#ecluse-export-title", title)
    page.fill("#ecluse-export-justification", "Table 2 of the LOS paper")
    if about:
        row = dialog.locator(f'.ecluse-export-files li[data-path$="{name}"]')
        row.locator("summary").click()
        row.locator(".ecluse-export-context").fill(about["context"])
        row.locator(".ecluse-export-controls").fill(about["controls"])
    dialog.locator("button.jp-mod-accept").click()
    page.wait_for_selector(".jp-Dialog-header:has-text('Export requested')", timeout=60000)
    text = page.locator(".jp-Dialog-body").inner_text()
    m = re.search(r"Request (\S+) is submitted", text)
    assert m, text
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    page.wait_for_selector(".jp-Dialog", state="detached")
    return m.group(1)


def airlock(stack, user: str, password: str, project: str | None = None) -> requests.Session:
    """A token of ``user`` (acting for ``project``: a researcher's script)."""
    c = HubClient(stack.url)
    assert c.login(user, password).status_code == 302
    s = requests.Session()
    scopes = project_token_scopes(project) if project else None
    s.headers["Authorization"] = f"token {c.new_token(user, scopes)}"
    return s


def test_researcher_exports_through_the_airlock(workspace_hub, ldap_passwords, browser_page):
    stack, page = workspace_hub, browser_page
    api = f"{stack.url}/services/airlock/api/v1"

    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    # what the workspace server refused to JupyterLab itself (the route allow-list
    # and the content rule must not break the researcher's normal work)
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.request.method} {r.url}")
            if r.status == 403 and "/user/alice/cardio-los/" in r.url else None)
    # alice signs in and starts her project workspace from the spawn form
    sign_in_page(page, stack.url, "alice", ldap_passwords["alice"])  # password and code
    page.goto(f"{stack.url}/hub/spawn/alice/cardio-los")
    page.check("#project-cardio-los")
    page.click("form input[type=submit], form button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/alice/cardio-los/lab.*"), timeout=120000)
    base = f"{stack.url}/user/alice/cardio-los/"

    # the notebook (put with her token, as the file browser's "New" would)
    alice = airlock(stack, "alice", ldap_passwords["alice"], "cardio-los")
    r = alice.put(base + "api/contents/home/alice/analysis.ipynb",
                  json={"type": "notebook", "content": notebook()}, timeout=30)
    assert r.status_code in (200, 201), r.text

    page.goto(base + "lab/tree/home/alice/analysis.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                           "#jp-main-statusbar :text('Idle')", timeout=60000)

    # the File menu has neither Download nor Export
    page.click('.lm-MenuBar-itemLabel:text-is("File")')
    labels = menu_labels(page)
    assert not [x for x in labels if x.startswith(("Download", "Save and Export"))], labels
    page.keyboard.press("Escape")

    output = page.locator(".jp-OutputArea-output:has-text('written 400 6')")
    for _attempt in range(6):  # the kernel may still be connecting: run again
        page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Control+Enter")
        try:
            output.wait_for(timeout=20000)
            break
        except Exception:  # noqa: BLE001
            continue
    else:
        page.screenshot(path="/tmp/ecluse-run.png")
        print("OUTPUTS:", page.locator(".jp-OutputArea").all_inner_texts())
        print("CONSOLE:", "\n".join(console[-60:]))
        raise AssertionError("the notebook did not run")

    # to /project in the file browser, then "Request export…" on each file
    page.goto(base + "lab/tree/project")
    listing_item(page, "table1.csv").wait_for()
    about = {"context": "Admissions and mean LOS by sex and age band",
             "controls": "groups under 11 merged; mean LOS rounded to 0.1 day"}
    table_id = request_export(page, "table1.csv", "Table 2: LOS by sex and age", about)
    extract_id = request_export(page, "extract.csv", "Extract")

    # the Airlock panel shows both, with each file's verdict
    panel = page.locator("#ecluse-airlock-panel")
    if not panel.is_visible():
        page.locator('.jp-SideBar li[data-id="ecluse-airlock-panel"]').click()
    panel.locator(f'.ecluse-request[data-id="{table_id}"] '
                  f'.ecluse-verdict[data-verdict="pass"]').wait_for()
    panel.locator(f'.ecluse-request[data-id="{extract_id}"] '
                  f'.ecluse-verdict[data-verdict="block"]').wait_for()

    # carol and dan review: the extract cannot be approved, the table can
    carol = airlock(stack, "carol", ldap_passwords["carol"])
    dan = airlock(stack, "dan", ldap_passwords["dan"])
    r = carol.post(f"{api}/requests/{extract_id}/reviews", timeout=30,
                   json={"decision": "approve", "comment": "ok"})
    assert r.status_code == 422, r.text
    r = carol.post(f"{api}/requests/{extract_id}/reviews", timeout=30,
                   json={"decision": "reject", "comment": "row-level data never leaves"})
    assert r.status_code == 201, r.text
    for checker in (carol, dan):
        r = checker.post(f"{api}/requests/{table_id}/reviews", timeout=30,
                         json={"decision": "approve", "comment": "counts ≥ 11"})
        assert r.status_code == 201, r.text
    r = carol.post(f"{api}/requests/{table_id}/release", json={}, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "released", r.text

    # the panel (refreshed while open) follows, with the reviewers' comments
    released = panel.locator(f'.ecluse-request[data-id="{table_id}"][data-state="released"]')
    released.wait_for(timeout=30000)
    assert "Download from the airlock" in released.inner_text()
    rejected = panel.locator(f'.ecluse-request[data-id="{extract_id}"][data-state="rejected"]')
    rejected.wait_for(timeout=30000)
    assert "row-level data never leaves" in rejected.inner_text()
    href = released.locator("a.ecluse-link").get_attribute("href")
    assert href.endswith(f"/services/airlock/requests/{table_id}")

    # alice downloads the released table from the airlock, outside the workspace
    page.goto(stack.url + href)
    link = page.locator("a[href$='/download']").first
    with page.expect_download() as info:
        link.click()
    data = open(info.value.path(), "rb").read()
    detail = alice.get(f"{api}/requests/{table_id}", timeout=30).json()
    (staged,) = detail["files"]
    assert staged["name"] == "table1.csv"
    # what she typed in the export dialog went with the file
    assert (staged["context"], staged["controls"]) == (about["context"], about["controls"])
    assert hashlib.sha256(data).hexdigest() == staged["sha256"]
    assert data.startswith(b"sex,age_band,n,mean_los")

    # JupyterLab hit the guard only where a feature is off by design: the language
    # server (disabled), jupyter-server-proxy's launcher entries, the export menu
    off_by_design = re.compile(r"/user/alice/cardio-los/(lsp/|server-proxy/|api/nbconvert)")
    assert all(off_by_design.search(u) for u in refused), refused

    # ...while the workspace itself still refuses to hand the file over
    r = alice.get(base + "files/project/table1.csv?download=1", timeout=30,
                  allow_redirects=False)
    assert r.status_code == 403 and b"mean_los" not in r.content

    # every step is in the audit log, and the chain verifies
    log = AuditLog.from_settings(stack.settings)
    deadline = time.monotonic() + 10
    events: set[str] = set()
    while time.monotonic() < deadline:
        events = {e.event for e in log.records()}
        if "airlock.file.downloaded" in events:
            break
        time.sleep(0.5)
    assert {"workspace.start", "airlock.request.created", "airlock.file.uploaded",
            "airlock.request.submitted", "airlock.request.approved",
            "airlock.request.released", "airlock.request.rejected",
            "airlock.file.downloaded"} <= events, events
    result = log.verify()
    assert result.ok, result.problems
