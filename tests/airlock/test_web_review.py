"""The review page, the queue and the turnaround page behind a real JupyterHub."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime

import pytest
from PIL import Image

from tests.airlock.conftest import Files
from tests.airlock.test_imagepreview import SECRET, jpeg_with_exif, png_with_text
from tests.airlock.test_web import _create, _describe, _page_session

pytestmark = pytest.mark.timeout(240)


def _submitted(airlock_hub, files, title="Review page") -> tuple[str, dict[str, dict]]:
    alice = airlock_hub.api("alice")
    rid = _create(alice, title=title)
    out = {}
    for name, data in files:
        r = alice.post(f"/requests/{rid}/files", params={"filename": name}, data=data)
        assert r.status_code == 201, r.text
        out[name] = r.json()
    _describe(alice, rid)
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    return rid, out


def _grouped_csv() -> bytes:
    return (b",,los,los,n\n,,mean,sum,sum\nsex,band,,,\n"
            b"F,a,3.0,6,27\nF,b,4.0,8,46\nM,a,5.0,10,20\nM,b,6.0,12,62\n")


def test_the_served_image_preview_carries_no_metadata(airlock_hub, tmp_path):
    png = png_with_text(tmp_path / "figure.png").read_bytes()
    jpg = jpeg_with_exif(tmp_path / "photo.jpg").read_bytes()
    broken = png[:60]  # a PNG cut short
    rid, files = _submitted(airlock_hub, [("figure.png", png), ("photo.jpg", jpg),
                                          ("broken.png", broken)], title="Figures")
    for f in files.values():
        assert f["verdict"] != "pass"
    page = _page_session(airlock_hub, "carol").get(
        f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15).text
    assert SECRET not in page
    images = re.findall(r'<img src="data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2, images[:1]
    for _mime, data in images:
        raw = base64.b64decode(data)
        assert SECRET.encode() not in raw
        with Image.open(io.BytesIO(raw)) as im:
            assert not im.getexif() and "icc_profile" not in im.info
            assert not getattr(im, "text", {})
    # the API serves the same preview to the checker, and nothing for the broken image
    detail = airlock_hub.api("carol").get(f"/requests/{rid}").json()
    by_name = {f["name"]: f for f in detail["files"]}
    assert by_name["figure.png"]["preview"]["kind"] == "image"
    bad = by_name["broken.png"]
    assert bad["preview"]["kind"] == "none" and bad["verdict"] != "pass"
    assert any(fd["rule"] == "reader-error" and "image" in fd["message"]
               for fd in bad["findings"])
    # the broken image's finding is on the page, beside no image
    card = page[page.index(f'id="file-{bad["id"]}"'):]
    card = card[:card.index("</article>")]
    assert "reader-error" in card and "<img" not in card


def test_badges_multirow_header_and_findings_that_jump_to_their_cells(airlock_hub):
    rid, files = _submitted(airlock_hub, [("grouped.csv", _grouped_csv()), Files.fail],
                            title="Grouped table")
    page = _page_session(airlock_hub, "carol").get(
        f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15).text
    # verdicts are badges; no card is painted with a verdict's class
    assert 'class="badge verdict verdict-fail"' in page
    assert not re.search(r'<article class="file verdict-', page)
    # the two-row header (and the index names' row) are header rows, not data
    gid = files["grouped.csv"]["id"]
    card = page[page.index(f'id="file-{gid}"'):]
    card = card[:card.index("</article>")]
    thead = card[card.index("<thead"):card.index("</thead>")]
    assert thead.count("<tr>") == 3
    assert '<th colspan="2" class="group">los</th>' in thead
    body = card[card.index("<tbody>"):]
    assert "mean" not in body and ">sex<" not in body
    # each finding links to the cell it points at, which exists and is flagged
    links = re.findall(r'<a class="jump" href="#(cell-\d+-\d+-\d+)">', card)
    assert links
    for target in links:
        assert re.search(rf'<td class="flagged"[^>]* id="{target}">', card), target
    assert f'href="#cell-{gid}-0-3"' in card  # F, a: los / sum = 6
    # keyboard navigation is documented on the page, its script served by the airlock
    assert 'id="keyboard-help"' in page and "<kbd>j</kbd>" in page
    js = re.search(r'<script src="([^"]+airlock\.js[^"]*)"', page).group(1)
    s = _page_session(airlock_hub, "carol")
    assert "ArrowDown" in s.get(airlock_hub.url + js, timeout=15).text


def _queue(s, url: str) -> str:
    """The queue's section of the home page (the page lists recent requests too)."""
    page = s.get(url, timeout=15).text
    section = page[page.index('<section id="queue">'):]
    return section[:section.index("</section>")]


def test_the_queue_sorts_filters_and_counts(airlock_hub):
    rid_fail, _ = _submitted(airlock_hub, [Files.fail], title="Queue fail")
    rid_ok, _ = _submitted(airlock_hub, [Files.ok], title="Queue ok")
    s = _page_session(airlock_hub, "dan")
    by_risk = _queue(s, airlock_hub.airlock_url + "/?sort=risk")
    order = re.findall(r'<tr data-risk="(\w+)"', by_risk)
    ranks = {"pass": 0, "review": 1, "fail": 2, "block": 3}
    assert order and [ranks[v] for v in order] == sorted((ranks[v] for v in order),
                                                         reverse=True)
    assert by_risk.index(rid_fail) < by_risk.index(rid_ok)
    by_age = _queue(s, airlock_hub.airlock_url + "/?sort=age")
    ages = [int(a) for a in re.findall(r'<tr data-risk="\w+" data-age="(\d+)"', by_age)]
    assert ages == sorted(ages, reverse=True)
    only = _queue(s, airlock_hub.airlock_url + "/?verdict=fail")
    assert rid_fail in only and rid_ok not in only
    assert set(re.findall(r'<tr data-risk="(\w+)"', only)) == {"fail"}
    total = int(re.search(r'id="queue-total">(\d+)<', only).group(1))
    assert total >= 2 and "cardio-los (" in only
    assert 'id="pending-work"' in only and "dan (you)" in only
    bad = s.get(airlock_hub.airlock_url + "/?sort=name", timeout=15)
    assert bad.status_code == 400


def test_turnaround_page_is_for_staff_only(airlock_hub):
    rid, _ = _submitted(airlock_hub, [Files.ok], title="Turnaround")
    r = airlock_hub.api("dan").post(f"/requests/{rid}/reviews",
                                    json={"decision": "request_changes", "comment": "why?"})
    assert r.status_code == 201, r.text
    url = airlock_hub.airlock_url + "/turnaround"
    page = _page_session(airlock_hub, "sam").get(url, timeout=15)
    assert page.status_code == 200
    month = datetime.now(UTC).strftime("%Y-%m")
    assert re.search(r'<td class="project">cardio-los</td><td class="month">' + month, page.text)
    assert 'id="turnaround-overall"' in page.text
    for who in ("carol", "alice"):  # a checker who is not staff, a researcher
        r = _page_session(airlock_hub, who).get(url, timeout=15)
        assert r.status_code == 403 and "staff" in r.text
