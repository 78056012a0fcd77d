"""The export dialog's progress, in headless Chromium through the real stack (issue 22
item 6; issue 21 item 1): per file, the bytes the workspace server sent to the
airlock out of the file's size, then "checking…" while the airlock checks the file
in the background, then its verdict — and the request is submitted only once
every file has its verdict."""

from __future__ import annotations

import re

import pytest

from ecluse.dev.testing import sign_in_page

from .test_export_flow import airlock, listing_item, menu_labels

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(300)]

#: a table of a few MiB: several chunks (1 MiB each) on the way
ROWS = 400_000

#: records every change of a progress row (its state, bytes sent, what it says); the
#: value each change replaced too, as changes in one task reach the observer together
OBSERVE = """() => {
  window.__progress = [];
  const seen = li => window.__progress.push({
    path: li.dataset.path, status: li.dataset.status, sent: Number(li.dataset.sent),
    size: Number(li.dataset.size),
    text: li.querySelector('.ecluse-progress-status')?.textContent || '',
    bytes: li.querySelector('.ecluse-progress-bytes')?.textContent || ''});
  new MutationObserver(changes => {
    for (const c of changes) {
      if (c.type === 'attributes' && c.target.matches('.ecluse-progress-file')) {
        window.__progress.push({path: c.target.dataset.path, attr: c.attributeName,
                                old: c.oldValue});
        seen(c.target);
      }
      for (const n of c.addedNodes || []) {
        if (n.nodeType === 1) n.querySelectorAll?.('.ecluse-progress-file').forEach(seen);
        if (n.nodeType === 1 && n.matches('.ecluse-progress-file')) seen(n);
      }
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             attributeOldValue: true, attributeFilter: ['data-sent', 'data-status']});
}"""


def test_export_dialog_shows_bytes_sent_then_checking_per_file(
        workspace_hub, ldap_passwords, browser_page):
    stack, page = workspace_hub, browser_page
    sign_in_page(page, stack.url, "alice", ldap_passwords["alice"])
    page.goto(f"{stack.url}/hub/spawn/alice/cardio-los")
    page.check("#project-cardio-los")
    page.click("form input[type=submit], form button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/alice/cardio-los/lab.*"), timeout=120000)
    base = f"{stack.url}/user/alice/cardio-los/"

    table = "region,sex,n\n" + "".join(
        f"R{i:06d},{'FM'[i % 2]},{20 + i % 400}\n" for i in range(ROWS))
    alice = airlock(stack, "alice", ldap_passwords["alice"], "cardio-los")
    r = alice.put(base + "api/contents/project/counts_by_region.csv", timeout=60,
                  json={"type": "file", "format": "text", "content": table})
    assert r.status_code in (200, 201), r.text
    size = len(table.encode())

    page.goto(base + "lab/tree/project")
    item = listing_item(page, "counts_by_region.csv")
    item.wait_for()
    page.evaluate(OBSERVE)
    item.click()
    item.click(button="right")
    assert "Request export…" in menu_labels(page)
    page.locator(".lm-Menu .lm-Menu-item", has_text="Request export…").first.click()
    page.fill("#ecluse-export-title", "Counts by region")
    page.fill("#ecluse-export-justification", "Table 3 of the paper")
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    page.wait_for_selector(".jp-Dialog-header:has-text('Export requested')", timeout=120000)
    text = page.locator(".jp-Dialog-body").inner_text()
    assert re.search(r"Request \S+ is submitted", text), text
    # its verdict (whatever the checks make of so many regions), never "checking"
    verdict = re.search(r"counts_by_region\.csv: (\w+)", text).group(1)
    assert verdict in ("pass", "review", "fail", "block"), text

    seen = page.evaluate("window.__progress")
    mine = [e for e in seen if e["path"].endswith("counts_by_region.csv")]
    rows = [e for e in mine if "attr" not in e]
    replaced = {(e["attr"], e["old"]) for e in mine if "attr" in e}
    assert rows, seen
    assert {e["size"] for e in rows} == {size}
    sending = [e for e in rows if e["status"] == "sending"]
    # bytes sent, chunk by chunk, up to the whole file, said in words beside the bar
    every_sent = {e["sent"] for e in sending} | {
        int(old) for attr, old in replaced if attr == "data-sent" and old is not None}
    assert len(every_sent) >= 4 and max(every_sent) == size, sorted(every_sent)
    assert [e["sent"] for e in sending] == sorted(e["sent"] for e in sending)
    assert f"{size} of {size} bytes sent" in [e["bytes"] for e in sending]
    # then the airlock's background check, then the verdict; never a verdict first
    statuses = [e["status"] for e in rows]
    assert statuses[-1] == "checked", statuses
    assert "checking" in statuses or ("data-status", "checking") in replaced, (statuses,
                                                                             replaced)
    assert statuses.count("checked") == 1 or set(statuses[statuses.index("checked"):]) == {
        "checked"}
    assert any(e["text"] == "checking…" for e in rows)
    assert rows[-1]["text"] == f"verdict: {verdict}"
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    page.wait_for_selector(".jp-Dialog", state="detached")
