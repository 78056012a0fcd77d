"""Check before export (issue 22 item 3), in headless Chromium through the real stack.

alice right-clicks a table with a small cell in her workspace's file browser,
chooses *Check for export*, and the panel shows ``fail`` with the small cell
highlighted; a safe aggregate, checked from the command palette, shows
``pass``. The airlock judged both in its check sandbox and kept nothing: no
request, no staged object, no temporary file; the dry run is in the audit log.
"""

from __future__ import annotations

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.dev.testing import sign_in_page
from ecluse.settings.airlock import airlock_settings
from tests.workspace.helpers import start_workspace_now

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(420)]

SMALL = "sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\nM,41-65,40\n"
SAFE = "sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n"


def _listing_item(page, name: str):
    return page.locator(".jp-DirListing-content .jp-DirListing-item", has_text=name).first


def _staged(stack) -> list[str]:
    conf = airlock_settings(stack.settings)
    root = conf.resolved_storage_dir(stack.settings.state_dir)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_check_for_export_shows_verdicts_and_cells_and_keeps_nothing(
        workspace_hub, ldap_passwords, browser_page):
    stack, page = workspace_hub, browser_page
    ws = start_workspace_now(stack, ldap_passwords, "alice", "cardio-los")
    for name, text in (("small.csv", SMALL), ("safe.csv", SAFE)):
        r = ws.request("PUT", f"api/contents/project/{name}",
                       json={"type": "file", "format": "text", "content": text})
        assert r.status_code in (200, 201), r.text
    airlock = f"{stack.url}/services/airlock/api/v1"

    def mine() -> list:
        r = requests.get(f"{airlock}/requests?scope=mine", timeout=30,
                         headers={"Authorization": f"token {ws.token}"})
        assert r.status_code == 200, r.text
        return r.json()["requests"]

    before_requests, before_staged = mine(), _staged(stack)

    sign_in_page(page, stack.url, "alice", ldap_passwords["alice"])
    page.goto(ws.url + "lab/tree/project")
    item = _listing_item(page, "small.csv")
    item.wait_for(timeout=120000)
    # the file browser's context menu
    item.click()
    item.click(button="right")
    page.wait_for_selector(".lm-Menu")
    labels = [t.strip() for t in page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts()]
    assert "Check for export" in labels and "Request export…" in labels, labels
    page.locator(".lm-Menu .lm-Menu-item", has_text="Check for export").first.click()
    panel = page.locator("#ecluse-check-panel")
    small = panel.locator('.ecluse-check-file[data-path$="small.csv"]')
    small.locator('.ecluse-verdict[data-verdict="fail"]').wait_for(timeout=180000)
    flagged = small.locator("td.ecluse-flagged")
    assert flagged.all_inner_texts() == ["3"], small.inner_text()
    # its line in the file (the header is line 1) beside it, and the finding says where
    row = small.locator("tr", has=page.locator("td.ecluse-flagged"))
    assert row.locator("th").inner_text().strip() == "3"
    assert "line 3, column n" in small.locator(".ecluse-check-findings").inner_text()

    # the command palette, on the safe table
    if not page.locator("#filebrowser").is_visible():
        page.locator('.jp-SideBar li[data-id="filebrowser"]').click()
    safe = _listing_item(page, "safe.csv")
    safe.click()
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Check for export")
    page.locator(".lm-CommandPalette-item", has_text="Check for export").first.click()
    panel.locator('.ecluse-check-file[data-path$="safe.csv"] '
                  '.ecluse-verdict[data-verdict="pass"]').wait_for(timeout=180000)
    assert panel.locator('.ecluse-check-file[data-path$="small.csv"]').count() == 0
    assert panel.locator("td.ecluse-flagged").count() == 0

    # what the browser can get from the route: never a file outside the export folders,
    # and of a long disclosive table only the small window around its first findings
    for path in ("/etc/passwd", "../../etc/passwd", "project"):
        r = ws.request("POST", "ecluse/check", json={"paths": [path]})
        assert r.status_code in (400, 403, 404), (path, r.status_code, r.text)
        assert "error" in r.json() and "root:" not in r.text
    rows = "".join(f"G{i:04d},{i % 5},{'z' * 80}\n" for i in range(2000))
    r = ws.request("PUT", "api/contents/project/long.csv",
                   json={"type": "file", "format": "text", "content": "g,n,note\n" + rows})
    assert r.status_code in (200, 201), r.text
    r = ws.request("POST", "ecluse/check", json={"paths": ["project/long.csv"]})
    assert r.status_code == 200, r.text
    [long] = r.json()["files"]
    assert long["verdict"] in ("fail", "block"), long["verdict"]
    if long["preview"] is not None:
        assert len(long["preview"]["rows"]) <= 12
        assert all(len(c) <= 40 for row in long["preview"]["rows"] for c in row)
    assert len(long["findings"]) <= 50 and long["findings"][0]["location"]
    assert "z" * 41 not in r.text and len(r.content) < 50_000

    # nothing appears in the airlock: no request, no staged object, no temporary file
    assert mine() == before_requests
    assert _staged(stack) == before_staged
    audit = AuditLog.from_settings(stack.settings)
    try:
        runs = [r for r in audit.records(event="airlock.check.dry_run") if r.actor == "alice"]
    finally:
        audit.engine.dispose()
    assert [[f["verdict"] for f in r.details["files"]] for r in runs][-3:-1] == [["fail"],
                                                                                 ["pass"]]
