"""A checker signs in through the hub, opens a request, sees the flagged cell, approves.

Headless Debian Chromium driven by Playwright (``/usr/bin/chromium``; installed
with apt-get when missing and running as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.airlock.conftest import Files
from tests.airlock.hubstack import password
from tests.airlock.pgserver import TMP_PREFIX
from tests.support.browser import CHROMIUM, chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]



@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def browser_page(chromium: Path):
    with chromium_page(prefix=TMP_PREFIX, timeout_ms=20000, chromium=chromium) as page:
        yield page


def test_checker_approves_a_failing_table_with_an_override_reason(airlock_hub, browser_page):
    alice = airlock_hub.api("alice")
    rid = alice.post("/requests", json={"project": "cardio-los", "title": "Browser review",
                                        "justification": "Table 2 of the paper"}).json()["id"]
    r = alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                   data=Files.fail[1])
    assert r.json()["verdict"] == "fail"
    fid = r.json()["id"]
    alice.patch(f"/requests/{rid}/files/{fid}", json={
        "context": "Admissions by sex and age band, cardiology 2019-2023",
        "controls": "No rounding; the cell of 3 is in the published annual report"})
    sup = alice.post(f"/requests/{rid}/files", params={"filename": "unrounded.csv",
                                                       "supporting": "true"},
                     data=Files.fail[1]).json()
    assert alice.post(f"/requests/{rid}/submit").status_code == 200

    page = browser_page
    page.goto(airlock_hub.airlock_url + "/")
    # not signed in: the airlock sends us to the hub's login form
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", password("carol"))
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(airlock_hub.airlock_url + "/**")
    if not page.url.rstrip("/").endswith("/services/airlock"):
        page.goto(airlock_hub.airlock_url + "/")
    assert page.locator("#queue").is_visible()

    page.click(f"#queue a[href$='/requests/{rid}']")
    page.wait_for_selector(".preview-table")
    flagged = page.locator(f"#file-{fid} td.flagged")
    assert flagged.count() == 1
    assert flagged.first.inner_text() == "3"
    bg = flagged.first.evaluate("el => getComputedStyle(el).backgroundColor")
    plain = page.locator(".preview-table tbody td:not(.flagged):not(.rownum)").first.evaluate(
        "el => getComputedStyle(el).backgroundColor")
    assert bg != plain  # the flagged cell is highlighted by the service's own stylesheet
    assert page.locator(".verdict-fail").first.is_visible()
    # the researcher's context and controls, above the findings
    assert page.inner_text(f"#context-{fid} .context") == (
        "Admissions by sex and age band, cardiology 2019-2023")
    assert "published annual report" in page.inner_text(f"#context-{fid} .controls")
    # the supporting file: seen, its preview rendered, marked as never released, and
    # asking no override reason
    card = page.locator(f"#file-{sup['id']}")
    assert "supporting · not released" in card.locator(".supporting-badge").inner_text()
    assert card.locator(".preview-table").is_visible()
    assert page.locator("textarea[name='override:unrounded.csv']").count() == 0
    assert page.locator(f"#file-{sup['id']} a[href$='/download']").count() == 0

    # approving without a reason is refused with the precise message
    page.click("#approve")
    page.wait_for_selector(".error .message")
    assert "override reason" in page.inner_text(".error .message")
    page.go_back()
    page.reload()
    page.fill("textarea[name='override:counts_small.csv']", "Same figure as the published "
              "annual report")
    page.fill("#comment", "Fine once the override is recorded")
    page.click("#approve")
    page.wait_for_selector(".flash")
    assert "recorded: approve" in page.inner_text(".flash")
    assert page.inner_text("#state") == "in review"
    req = airlock_hub.api("dan").get(f"/requests/{rid}").json()
    assert req["approvals"] == 1
    assert req["reviews"][0]["overrides"] == {
        "counts_small.csv": "Same figure as the published annual report"}


def test_researcher_accepts_the_fixed_version_from_the_request_page(airlock_hub, browser_page):
    alice = airlock_hub.api("alice")
    rid = alice.post("/requests", json={"project": "cardio-los", "title": "Browser fix",
                                        "justification": "Table 3"}).json()["id"]
    f = alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                   data=Files.fail[1]).json()
    assert f["verdict"] == "fail"

    page = browser_page
    _sign_in(page, airlock_hub, "alice", f"/requests/{rid}")
    card = page.locator(f"#proposal-{f['id']}")
    assert "A fixed version is proposed" in card.inner_text()
    assert "sex F, age_band 41-65" in card.locator(".proposal-notes").inner_text()
    card.locator("a.button").click()
    page.wait_for_selector("#proposal-text")
    assert "F,41-65,c" in page.inner_text("#proposal-text")
    page.click(".accept-proposal button")
    page.wait_for_selector(".flash")
    assert "fixed version of counts_small.csv accepted: pass" in page.inner_text(".flash")
    assert page.locator(".file .verdict").first.inner_text().lower() == "pass"
    [now] = alice.get(f"/requests/{rid}").json()["files"]
    assert now["verdict"] == "pass" and now["sha256"] != f["sha256"]


def test_researcher_gives_context_on_the_page_before_submitting(airlock_hub, browser_page):
    alice = airlock_hub.api("alice")
    rid = alice.post("/requests", json={"project": "cardio-los", "title": "Browser context",
                                        "justification": "Table 4"}).json()["id"]
    f = alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                   data=Files.fail[1]).json()

    page = browser_page
    _sign_in(page, airlock_hub, "alice", f"/requests/{rid}")
    assert "failed the checks" in page.inner_text(f"#file-{f['id']} .needs-context")
    # submitting now is refused, saying which file lacks what
    page.click("#action-submit")
    page.wait_for_selector(".error .message")
    assert "counts_small.csv" in page.inner_text(".error .message")
    assert "has no context and no statistical controls" in page.inner_text(".error .message")
    page.goto(f"{airlock_hub.airlock_url}/requests/{rid}")
    # the form is open by itself under the file that needs it
    page.fill(f"#context-input-{f['id']}", "Admissions by sex and age band")
    page.fill(f"#controls-input-{f['id']}", "Cell of 3 checked against the published report")
    page.click(f"#describe-{f['id']} button[type=submit]")
    page.wait_for_selector(".flash")
    assert "counts_small.csv described" in page.inner_text(".flash")
    assert page.inner_text(f"#context-{f['id']} .context") == "Admissions by sex and age band"
    assert page.locator(".needs-context").count() == 0
    page.click("#action-submit")
    page.wait_for_selector(".flash")
    assert page.inner_text("#state") == "submitted"
    [now] = alice.get(f"/requests/{rid}").json()["files"]
    assert now["controls"] == "Cell of 3 checked against the published report"


def _sign_in(page, airlock_hub, user: str, path: str) -> None:
    page.goto(airlock_hub.airlock_url + path)
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password(user))
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(airlock_hub.airlock_url + "/**")
    if not page.url.split("?")[0].rstrip("/").endswith(path.rstrip("/")):
        page.goto(airlock_hub.airlock_url + path)


def test_checker_decides_file_by_file_and_releases_the_approved_file_only(
        airlock_hub, browser_page):
    alice = airlock_hub.api("alice")
    rid = alice.post("/requests", json={"project": "cardio-los", "title": "Per-file review",
                                        "justification": "Tables 1 and 2"}).json()["id"]
    ok = alice.post(f"/requests/{rid}/files", params={"filename": Files.ok[0]},
                    data=Files.ok[1]).json()
    bad = alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                     data=Files.fail[1]).json()
    # a failing table needs its context and controls to be submitted (issue 21 item 3)
    alice.patch(f"/requests/{rid}/files/{bad['id']}", json={
        "context": "Admissions by sex and age band", "controls": "No rounding yet"})
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    # dan approves the passing table through the API; the requester may not decide
    dan = airlock_hub.api("dan")
    r = dan.post(f"/requests/{rid}/files/{ok['id']}/decision", json={"decision": "approve"})
    assert r.status_code == 201, r.text
    r = dan.post(f"/requests/{rid}/files/{ok['id']}/decision", json={"decision": "approve"})
    assert r.status_code == 422 and "already decided" in r.json()["error"]["message"]
    r = alice.post(f"/requests/{rid}/files/{ok['id']}/decision", json={"decision": "approve"})
    assert r.status_code == 403

    page = browser_page
    _sign_in(page, airlock_hub, "carol", f"/requests/{rid}")
    page.wait_for_selector(f"#decisions-{ok['id']} form.file-decision")
    assert page.inner_text(f"#decisions-{ok['id']} .file-approvals") == "1"
    # no partial release while a file is undecided
    assert page.locator("#release-partial-form").count() == 0
    page.click(f"#decisions-{ok['id']} button.approve-file")
    page.wait_for_selector(".flash")
    assert "recorded: approve (one file)" in page.inner_text(".flash")
    assert page.inner_text(f"#decisions-{ok['id']} .file-approvals") == "2"
    assert page.locator(f"#decisions-{ok['id']} .releasable").is_visible()
    # the failing table: request changes with a comment
    page.fill(f"#decision-comment-{bad['id']}", "Round the counts to base 5")
    page.click(f"#decisions-{bad['id']} button.request-changes-file")
    page.wait_for_selector(".flash")
    assert "Round the counts to base 5" in page.inner_text(f"#decisions-{bad['id']}")
    assert page.locator(f"#decisions-{bad['id']} .held").is_visible()
    # release the approved file only: a comment is required
    section = page.locator("section.partial-release")
    assert "Released: counts_safe.csv" in section.inner_text()
    assert "Held back (recorded with the reasons above): counts_small.csv" in section.inner_text()
    page.fill("#release-partial-comment", "Table 1 now; table 2 once rounded")
    page.click("#action-release_partial")
    page.wait_for_selector(".flash")
    assert page.inner_text("#state") == "released"
    assert "held back, not released" in page.inner_text(f"#decisions-{bad['id']}")

    req = alice.get(f"/requests/{rid}").json()
    by = {f["name"]: f for f in req["files"]}
    assert by["counts_safe.csv"]["downloadable"] and not by["counts_small.csv"]["downloadable"]
    assert alice.get(f"/requests/{rid}/files/{bad['id']}/content").status_code == 403
    record = alice.get(f"/requests/{rid}/record").json()
    assert record["partial"] and record["released_files"] == ["counts_safe.csv"]
    assert record["held"][0]["reasons"][0]["comment"] == "Round the counts to base 5"


def test_checker_compares_a_returned_request_side_by_side(airlock_hub, browser_page):
    alice = airlock_hub.api("alice")
    rid = alice.post("/requests", json={"project": "cardio-los", "title": "Come back",
                                        "justification": "Table 4"}).json()["id"]
    f = alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                   data=Files.fail[1]).json()
    alice.patch(f"/requests/{rid}/files/{f['id']}", json={
        "context": "Admissions by sex and age band", "controls": "No rounding yet"})
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    r = airlock_hub.api("carol").post(f"/requests/{rid}/reviews", json={
        "decision": "request_changes", "comment": "Suppress the small cell"})
    assert r.status_code == 201, r.text
    fixed = Files.fail[1].replace(b"F,41-65,3", b"F,41-65,c")
    assert alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]},
                      data=fixed).status_code == 201
    assert alice.post(f"/requests/{rid}/resubmit").status_code == 200

    page = browser_page
    _sign_in(page, airlock_hub, "dan", f"/requests/{rid}")
    page.click("a.compare")
    page.wait_for_selector(".diff-table")
    assert "1 cell(s) changed, 0 added, 0 removed" in page.inner_text(".diff-summary")
    changed = page.locator(".side.new td.diff-changed")
    assert changed.count() == 1 and changed.first.inner_text() == "c"
    assert page.locator(".side.old td.diff-changed").first.inner_text() == "3"
    html = page.content()
    assert "/content" not in html and "/download" not in html
    # the API says the same, and never gives the bytes
    cmp = airlock_hub.api("dan").get(f"/requests/{rid}/compare").json()
    assert cmp["files"][0]["table"]["cells_changed"] == 1
    assert cmp["files"][0]["old"]["id"] == f["id"]
