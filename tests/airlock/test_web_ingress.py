"""Import requests over HTTP on the real hub and airlock service (``airlock_hub``): a
member opens one from their browser (never with a token, which is what a workspace holds),
the page shows each file's verdict, the requester cannot approve, staff can."""

from __future__ import annotations

import re

from tests.airlock.test_web import _page_session

CSV = b"code,label\nI21,infarction\n"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 120


def _xsrf(html: str) -> str:
    return re.search(r'name="_xsrf" value="([^"]+)"', html).group(1)


def test_an_import_from_the_browser_checked_refused_then_approved_by_staff(airlock_hub):
    alice, sam = airlock_hub.api("alice"), airlock_hub.api("sam")
    # a token (a workspace's) may not open an import for a member
    r = alice.post("/imports", json={"project": "cardio-los", "title": "t",
                                     "justification": "j"})
    assert r.status_code == 403 and "from outside the workspace" in r.json()["error"][
        "message"], r.text
    s = _page_session(airlock_hub, "alice")
    page = s.get(f"{airlock_hub.airlock_url}/imports", timeout=15)
    assert page.status_code == 200 and "New import" in page.text
    r = s.post(f"{airlock_hub.airlock_url}/imports", timeout=60, allow_redirects=False,
               data={"_xsrf": _xsrf(page.text), "project": "cardio-los",
                     "title": "ICD-10 labels", "justification": "public WHO table"},
               files=[("file", ("icd10.csv", CSV)), ("file", ("labels.csv", ELF))])
    assert r.status_code == 302, r.text
    iid = r.headers["Location"].rsplit("/", 1)[1]
    page = s.get(f"{airlock_hub.airlock_url}/imports/{iid}", timeout=15).text
    assert "accepted" in page and "refused" in page and "executable content (elf)" in page
    detail = alice.get(f"/imports/{iid}").json()
    refused = [f for f in detail["files"] if f["verdict"] == "refused"]
    assert [f["name"] for f in refused] == ["labels.csv"] and refused[0]["kind"] == "elf"
    r = alice.post(f"/imports/{iid}/submit")
    assert r.status_code == 422 and "holds refused files" in r.text, r.text
    assert alice.delete(f"/imports/{iid}/file-ids/{refused[0]['id']}").status_code == 204
    r = s.post(f"{airlock_hub.airlock_url}/imports/{iid}/submit", timeout=30,
               data={"_xsrf": _xsrf(page)}, allow_redirects=False)
    assert r.status_code == 302, r.text
    # the requester never approves; staff do
    r = alice.post(f"/imports/{iid}/approve", json={})
    assert r.status_code == 403 and "you made import request" in r.text, r.text
    r = sam.post(f"/imports/{iid}/approve", json={"comment": "agreed with the data owner"})
    assert r.status_code == 200, r.text
    # the test stack's projects have no gidNumber: the delivery waits for
    # `ecluse airlock import deliver` (audited as a delivery failure), the approval stands
    assert r.json()["state"] == "approved" and r.json()["decided_by"] == "sam"
    doc = alice.get("/openapi.json").json()
    assert {"/imports", "/imports/{import_id}", "/imports/{import_id}/{action}"} <= set(
        doc["paths"])
