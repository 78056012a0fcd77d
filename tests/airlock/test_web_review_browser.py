"""The review page in headless Chromium, as a researcher, a checker and staff.

Signs in through the hub as :mod:`tests.airlock.test_web_browser` does (its
``_sign_in`` and browser fixtures) and writes the screenshots the airlock's
documentation shows (``docs/images/airlock-*.png``, embedded in
``docs/airlock.md``) when ``ECLUSE_SCREENSHOTS=1``; otherwise they go to a
temporary folder, so a test run leaves the working tree as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from tests.airlock import test_web_browser as _browser
from tests.airlock.conftest import Files
from tests.airlock.test_imagepreview import SECRET
from tests.airlock.test_web import _create, _describe
from tests.airlock.test_web_browser import _sign_in
from tests.airlock.test_web_review import _grouped_csv

# the browser fixtures of test_web_browser (Debian Chromium, a throw-away profile)
chromium = _browser.chromium
browser_page = _browser.browser_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _shot(page, name: str) -> None:
    """``airlock-<name>.png``, the whole page: in ``docs/images`` with
    ``ECLUSE_SCREENSHOTS=1``, else in a temporary folder (the shot is still taken)."""
    if os.environ.get("ECLUSE_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS_IMAGES / f"airlock-{name}.png"), full_page=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"airlock-{name}.png"
        page.screenshot(path=str(out), full_page=True)
        assert out.stat().st_size > 0


def chart_png(path: Path) -> bytes:
    """A bar chart, with a PNG text chunk the preview must not carry."""
    im = Image.new("RGB", (480, 260), "white")
    d = ImageDraw.Draw(im)
    d.line([(40, 230), (460, 230)], fill="black", width=2)
    d.line([(40, 20), (40, 230)], fill="black", width=2)
    for i, h in enumerate([120, 180, 90, 150, 60]):
        d.rectangle([70 + i * 78, 230 - h, 120 + i * 78, 229], fill=(31, 95, 139))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET)
    im.save(path, format="PNG", pnginfo=info)
    return path.read_bytes()


def _request(airlock_hub, tmp_path, title: str) -> tuple[str, dict[str, dict]]:
    alice = airlock_hub.api("alice")
    rid = _create(alice, title=title, justification="Tables 1-3 and figure 2 of the paper")
    out = {}
    for name, data in [("grouped_los.csv", _grouped_csv()), Files.fail, Files.ok,
                       ("figure2.png", chart_png(tmp_path / "figure2.png"))]:
        out[name] = alice.post(f"/requests/{rid}/files", params={"filename": name},
                               data=data).json()
    _describe(alice, rid)
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    return rid, out


def test_researcher_sees_badges_and_the_image_preview(airlock_hub, browser_page, tmp_path):
    rid, files = _request(airlock_hub, tmp_path, "Length of stay, paper 1")
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, airlock_hub, "alice", f"/requests/{rid}")
    page.wait_for_selector("figure.image-preview img")
    img = page.locator("figure.image-preview img").first
    assert img.evaluate("el => el.complete && el.naturalWidth") > 0  # the browser decodes it
    # verdicts are small badges; the cards themselves are not painted
    badge = page.locator(f"#file-{files['counts_small.csv']['id']} h3 .badge.verdict-fail")
    assert badge.is_visible()
    card_bg = page.locator(f"#file-{files['counts_small.csv']['id']}").evaluate(
        "el => getComputedStyle(el).backgroundColor")
    assert card_bg in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)")
    # the researcher has no review form and no queue
    assert page.locator("#review-form").count() == 0
    _shot(page, "researcher-request")


def test_checker_navigates_files_by_keyboard_and_jumps_to_flagged_cells(
        airlock_hub, browser_page, tmp_path):
    rid, files = _request(airlock_hub, tmp_path, "Grouped length of stay")
    # more of a queue: another project's row-level file, a passing table under way
    gus = airlock_hub.api("ada", project="air-quality")
    for title, f in (("Station exposures", Files.block), ("Yearly means", Files.ok)):
        other = gus.post("/requests", json={"project": "air-quality", "title": title,
                                             "justification": "Figure 1"}).json()["id"]
        added = gus.post(f"/requests/{other}/files", params={"filename": f[0]},
                         data=f[1]).json()
        _describe(gus, other)
        assert gus.post(f"/requests/{other}/submit").status_code == 200
    r = airlock_hub.api("dan").post(f"/requests/{other}/files/{added['id']}/decision",
                                    json={"decision": "approve"})
    assert r.status_code in (200, 201), r.text
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, airlock_hub, "carol", "/?sort=risk")
    page.wait_for_selector("#queue-table")
    risks = page.locator("#queue-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.risk)")
    rank = {"pass": 0, "review": 1, "fail": 2, "block": 3}
    assert [rank[r] for r in risks] == sorted((rank[r] for r in risks), reverse=True)
    # a filter applies when chosen
    page.select_option("#queue-verdict", "fail")
    page.wait_for_url("**verdict=fail**")
    assert set(page.locator("#queue-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.risk)")) == {"fail"}
    assert page.locator("#pending-work").is_visible()
    page.select_option("#queue-verdict", "")
    page.wait_for_selector("#queue-table")
    _shot(page, "queue")

    page.click(f"#queue a[href$='/requests/{rid}']")
    page.wait_for_selector(".preview-table")
    gid = files["grouped_los.csv"]["id"]
    # the two-row header is shown as the table's header
    assert page.locator(f"#file-{gid} thead tr").count() == 3
    assert page.locator(f"#file-{gid} thead th.group").first.inner_text() == "los"
    # a finding's link brings its cell into view and rings it
    link = page.locator(f"#file-{gid} ul.findings a.jump").first
    target = link.get_attribute("href")[1:]
    link.click()
    cell = page.locator(f"#{target}")
    assert "target-cell" in cell.get_attribute("class")
    assert "flagged" in cell.get_attribute("class")
    assert page.evaluate("id => { const r = document.getElementById(id)"
                         ".getBoundingClientRect(); return r.top >= 0 && r.bottom <= "
                         "window.innerHeight; }", target)
    # j / k move between the files, in order, and the help says so
    assert "j" in page.locator("#keyboard-help").inner_text()
    order = page.locator("section.files > article.file").evaluate_all(
        "els => els.map(e => e.id)")
    page.locator("h1").first.click()
    page.evaluate("window.scrollTo(0, 0)")
    seen = []
    for _ in order:
        page.keyboard.press("j")
        seen.append(page.evaluate("document.querySelector('article.file.current').id"))
    assert seen == order
    page.keyboard.press("k")
    assert page.evaluate("document.querySelector('article.file.current').id") == order[-2]
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.querySelector('article.file.current').id") == order[-3]
    # f rings the flagged cells of the current file, one after the other
    page.evaluate(f"document.getElementById('file-{gid}').scrollIntoView()")
    page.locator(f"#file-{gid} h3").click()
    page.keyboard.press("k")  # the file above the one in view: back to this one
    page.keyboard.press("j")
    current = page.evaluate("document.querySelector('article.file.current').id")
    page.keyboard.press("f")
    ringed = page.locator(f"#{current} .target-cell")
    assert ringed.count() == 1 and "flagged" in ringed.get_attribute("class")
    # keys typed in a comment are text, not navigation
    page.focus(f"#decision-comment-{gid}")
    page.keyboard.type("jk")
    assert page.input_value(f"#decision-comment-{gid}") == "jk"
    page.evaluate(f"document.getElementById('decision-comment-{gid}').value = ''")
    page.locator(f"#file-{gid}").scroll_into_view_if_needed()
    page.evaluate(f"document.getElementById('file-{gid}').scrollIntoView()")
    _shot(page, "review")


def test_staff_read_the_turnaround_and_a_checker_may_not(airlock_hub, browser_page,
                                                         tmp_path):
    alice = airlock_hub.api("alice")
    rid = _create(alice, title="Decided quickly")
    alice.post(f"/requests/{rid}/files", params={"filename": Files.ok[0]}, data=Files.ok[1])
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    r = airlock_hub.api("dan").post(f"/requests/{rid}/reviews", json={
        "decision": "request_changes", "comment": "please add the denominators"})
    assert r.status_code == 201, r.text
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, airlock_hub, "sam", "/")
    page.click("#turnaround-link")
    page.wait_for_selector("#turnaround")
    assert page.locator("#per-project td.project", has_text="cardio-los").count() == 1
    median = page.locator("#per-project tr", has_text="cardio-los").locator("td.median")
    assert float(median.inner_text()) >= 0
    _shot(page, "turnaround")


def test_a_checker_who_is_not_staff_gets_403_on_the_turnaround(airlock_hub, browser_page):
    page = browser_page
    _sign_in(page, airlock_hub, "carol", "/")
    assert page.locator("#turnaround-link").count() == 0
    response = page.goto(airlock_hub.airlock_url + "/turnaround")
    assert response.status == 403
    assert "staff" in page.content()
