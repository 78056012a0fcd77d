"""The REST API and the checker pages behind a real JupyterHub (hub-managed service)."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import pytest
import requests

from tests.airlock.conftest import Files

pytestmark = pytest.mark.timeout(180)


def _error(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()["error"]
    assert body["code"] == code and body["status"] == status
    return body["message"]


def _create(api, **kw) -> str:
    body = {"project": "cardio-los", "title": "LOS tables", "justification": "Paper 1"} | kw
    r = api.post("/requests", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith("/requests/" + r.json()["id"])
    return r.json()["id"]


# ---------------------------------------------------------------- hub wiring


def _describe(api, rid: str) -> None:
    """Context and controls for every file that needs them (to submit)."""
    for f in api.get(f"/requests/{rid}").json()["files"]:
        if f["needs_context"]:
            r = api.patch(f"/requests/{rid}/files/{f['id']}",
                          json={"context": "Cardiac LOS by sex and age band",
                                "controls": "small cells reviewed by hand"})
            assert r.status_code == 200, r.text


def test_oauth_scopes_give_the_identity_its_groups(airlock_hub):
    """What the spec asks for (OAUTH_SCOPES) makes /hub/api/user include the groups.

    Checked against the real hub: the identify scopes of any token include
    ``read:users:groups!user``, so even a token with only the access scope
    identifies the user with their groups."""
    from ecluse.airlock.hub import OAUTH_SCOPES

    token = airlock_hub.token("alice", scopes=list(OAUTH_SCOPES))
    r = requests.get(f"{airlock_hub.url}/hub/api/user",
                     headers={"Authorization": f"token {token}"}, timeout=10)
    assert r.json()["groups"] == ["cardio-los"]
    narrow = airlock_hub.token("alice", scopes=["access:services!service=airlock"])
    r = requests.get(f"{airlock_hub.url}/hub/api/user",
                     headers={"Authorization": f"token {narrow}"}, timeout=10)
    assert r.json()["groups"] == ["cardio-los"]


def test_me_with_groups_from_the_token_or_from_the_hub(airlock_hub):
    me = airlock_hub.api("carol").get("/me").json()
    assert me == {"name": "carol", "groups": ["output-checkers"], "projects": [],
                  "output_checker": True, "staff": False}
    # a workspace-like token that cannot read groups: the service asks the hub itself
    narrow = airlock_hub.api("alice", scopes=["access:services!service=airlock",
                                              "custom:ecluse:project:cardio-los"])
    assert narrow.get("/me").json()["projects"] == ["cardio-los"]


def test_authentication_errors(airlock_hub):
    base = f"{airlock_hub.airlock_url}/api/v1"
    assert "not signed in" in _error(requests.get(f"{base}/me", timeout=10), 401,
                                     "not_authenticated")
    r = requests.get(f"{base}/me", headers={"Authorization": "token not-a-token"}, timeout=10)
    _error(r, 401, "not_authenticated")
    token = airlock_hub.token("alice", scopes=["read:users:groups!user"])
    r = requests.get(f"{base}/me", headers={"Authorization": f"token {token}"}, timeout=10)
    assert "access:services!service=airlock" in _error(r, 403, "permission_denied")
    _error(airlock_hub.api("alice").get("/nope"), 404, "http_error")


# ---------------------------------------------------------------- the whole flow


def test_full_flow_create_upload_submit_review_release_download(airlock_hub):
    alice, carol, dan, sam = (airlock_hub.api(u) for u in ("alice", "carol", "dan", "sam"))
    rid = _create(alice)
    name, data = Files.fail
    r = alice.post(f"/requests/{rid}/files", params={"filename": name}, data=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["verdict"] == "fail" and f["sha256"] == hashlib.sha256(data).hexdigest()
    r = alice.post(f"/requests/{rid}/files", files={"file": ("plot.png", Files.review[1])})
    assert r.status_code == 201 and r.json()["verdict"] == "review", r.text
    r = alice.post(f"/requests/{rid}/files", data=Files.ok[1],
                   headers={"X-Filename": "r%C3%A9sultats.csv"})
    assert r.status_code == 201 and r.json()["name"] == "résultats.csv", r.text
    assert alice.delete(f"/requests/{rid}/files", params={"filename": "résultats.csv"}
                        ).status_code == 204
    msg = _error(alice.post(f"/requests/{rid}/files", params={
        "filename": "x.csv", "supporting": "maybe"}, data=data), 400, "invalid_input")
    assert msg == "supporting: expected true or false"
    # a supporting file, marked at upload: the unrounded counts behind the table
    r = alice.post(f"/requests/{rid}/files", params={"filename": "unrounded.csv",
                                                     "supporting": "true"}, data=data)
    assert r.status_code == 201 and r.json()["supporting"] is True, r.text
    sup = r.json()
    # the fail and review files say nothing yet: submission refused, precisely
    msg = _error(alice.post(f"/requests/{rid}/submit", json={}), 422, "policy_violation")
    assert f"counts_small.csv (file {f['id']}, verdict fail) has no context and no " \
           "statistical controls" in msg and "plot.png" in msg and "unrounded" not in msg
    _error(alice.patch(f"/requests/{rid}/files/{f['id']}", json={"kontext": "typo"}), 400,
           "invalid_input")
    _error(carol.patch(f"/requests/{rid}/files/{f['id']}", json={"context": "x"}), 404,
           "not_found")
    r = alice.patch(f"/requests/{rid}/files/{f['id']}",
                    json={"context": "LOS by sex and age band", "controls": "none"})
    assert r.status_code == 200 and r.json()["needs_context"] is False, r.text
    _describe(alice, rid)
    assert alice.post(f"/requests/{rid}/submit", json={"comment": "ready"}).json()[
        "state"] == "submitted"
    _error(alice.patch(f"/requests/{rid}/files/{f['id']}", json={"context": "later"}), 409,
           "invalid_state")
    seen = {x["name"]: x for x in carol.get(f"/requests/{rid}").json()["files"]}
    assert seen[name]["context"] == "LOS by sex and age band"
    assert seen["unrounded.csv"]["supporting"] and seen["unrounded.csv"]["preview"]

    queue = carol.get("/requests", params={"scope": "review"}).json()["requests"]
    assert rid in [q["id"] for q in queue]
    msg = _error(carol.post(f"/requests/{rid}/reviews", json={"decision": "approve"}), 422,
                 "policy_violation")
    assert "override reason" in msg
    ov = {"overrides": {name: "Published total", "plot.png": "A plot of rates, no cells"}}
    r = carol.post(f"/requests/{rid}/reviews", json={"decision": "approve", **ov})
    assert r.status_code == 201 and r.json()["state"] == "in_review"
    assert dan.post(f"/requests/{rid}/reviews", json={"decision": "approve", **ov}).json()[
        "state"] == "approved"
    _error(alice.get(f"/requests/{rid}/files/{f['id']}/content"), 403, "permission_denied")
    assert sam.post(f"/requests/{rid}/release", json={}).json()["state"] == "released"
    r = alice.get(f"/requests/{rid}/files/{f['id']}/content")
    assert r.status_code == 200 and r.content == data
    assert r.headers["X-Airlock-SHA256"] == f["sha256"]
    assert "attachment" in r.headers["Content-Disposition"]
    # the supporting file's bytes never leave, even to the requester after release
    msg = _error(alice.get(f"/requests/{rid}/files/{sup['id']}/content"), 403,
                 "permission_denied")
    assert "supporting file" in msg
    pkg = zipfile.ZipFile(io.BytesIO(alice.get(f"/requests/{rid}/package").content))
    assert "files/unrounded.csv" not in pkg.namelist()
    record = alice.get(f"/requests/{rid}/record").json()
    assert [x["name"] for x in record["supporting_files"]] == ["unrounded.csv"]
    mine = alice.get("/requests").json()["requests"]
    assert [m["state"] for m in mine if m["id"] == rid] == ["released"]


def test_release_record_and_package_over_http(airlock_hub):
    """GET .../record (JSON, as audited) for members, checkers and staff, 404 for an
    outsider, 409 before release; GET .../package (zip) for the requester only."""
    alice, bob, carol, dan, sam, eve = (airlock_hub.api(u) for u in (
        "alice", "bob", "carol", "dan", "sam", "eve"))
    rid = _create(alice)
    r = alice.post(f"/requests/{rid}/files", params={"filename": Files.ok[0]},
                   data=Files.ok[1], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    alice.post(f"/requests/{rid}/submit", json={})
    for c in (carol, dan):
        assert c.post(f"/requests/{rid}/reviews", json={"decision": "approve"}
                      ).status_code == 201
    assert "no release record" in _error(alice.get(f"/requests/{rid}/record"), 409,
                                         "invalid_state")
    assert sam.post(f"/requests/{rid}/release", json={}).json()["state"] == "released"
    r = alice.get(f"/requests/{rid}/record")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    record = r.json()
    assert record["request"]["released_by"] == "sam"
    assert [x["reviewer"] for x in record["reviews"]] == ["carol", "dan"]
    for who in (bob, carol, sam):
        assert who.get(f"/requests/{rid}/record").content == r.content
    _error(eve.get(f"/requests/{rid}/record"), 404, "not_found")
    _error(carol.get(f"/requests/{rid}/package"), 403, "permission_denied")
    p = alice.get(f"/requests/{rid}/package")
    assert p.status_code == 200 and "attachment" in p.headers["Content-Disposition"]
    assert p.headers["X-Airlock-Record-SHA256"] == hashlib.sha256(r.content).hexdigest()
    with zipfile.ZipFile(io.BytesIO(p.content)) as z:
        assert z.read("release-record.json") == r.content
        assert z.read("files/" + Files.ok[0]) == Files.ok[1]


# ---------------------------------------------------------------- errors


def test_errors_are_json_with_precise_messages(airlock_hub):
    alice, bob, eve, carol = (airlock_hub.api(u) for u in ("alice", "bob", "eve", "carol"))
    assert "no project" in _error(alice.post("/requests", json={
        "project": "nope", "title": "t", "justification": "j"}), 404, "not_found")
    assert "not a member" in _error(eve.post("/requests", json={
        "project": "cardio-los", "title": "t", "justification": "j"}), 403, "permission_denied")
    assert "not valid JSON" in _error(alice.post("/requests", data=b"{nope"), 400,
                                      "invalid_input")
    assert "unknown field" in _error(alice.post("/requests", json={
        "project": "cardio-los", "title": "t", "justification": "j", "state": "approved"}),
        400, "invalid_input")
    assert "title: must not be empty" in _error(alice.post("/requests", json={
        "project": "cardio-los", "title": " ", "justification": "j"}), 400, "invalid_input")
    rid = _create(alice)
    for bad, what in (("../../x", "without '/'"), ("a%00b.csv", "NUL"),
                      ("x" * 300, "at most 255 bytes")):
        r = alice.post(f"/requests/{rid}/files", headers={"X-Filename": bad}, data=b"a\n1\n")
        assert what in _error(r, 400, "invalid_input")
    r = alice.post(f"/requests/{rid}/files", files={"file": ("../../x.csv", b"a\n1\n")})
    assert "without '/'" in _error(r, 400, "invalid_input")
    assert "filename: missing" in _error(alice.post(f"/requests/{rid}/files", data=b"x"), 400,
                                         "invalid_input")
    assert "no files" in _error(alice.post(f"/requests/{rid}/submit"), 422, "policy_violation")
    assert "only the requester" in _error(
        bob.post(f"/requests/{rid}/files", params={"filename": "a.csv"}, data=b"a\n1\n"),
        403, "permission_denied")
    _error(carol.get(f"/requests/{rid}"), 404, "not_found")  # drafts stay in the project
    assert "is draft: cannot release" in _error(alice.post(f"/requests/{rid}/release"), 409,
                                                "invalid_state")
    _error(eve.get(f"/requests/{rid}"), 404, "not_found")
    assert "scope" in _error(alice.get("/requests", params={"scope": "everything"}), 400,
                             "invalid_input")


def _multipart(disposition: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body of one file part whose ``Content-Disposition``
    ends with ``disposition`` (built by hand: clients differ in how they name a file)."""
    boundary = "ecluse-boundary-7c1f"
    body = (f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; ' + disposition + b"\r\n"
            + b"Content-Type: text/csv\r\n\r\n" + data + f"\r\n--{boundary}--\r\n".encode())
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_multipart_file_name_keeps_its_accents_however_it_is_encoded(airlock_hub):
    """RFC 2231 (``filename*=UTF-8''...``, as curl and Python's email send it) and a
    quoted UTF-8 name (as browsers send it) both give résultats.csv, on the upload and on
    the dry run alike: one parser of the part's headers serves both."""
    alice = airlock_hub.api("alice")
    rid = _create(alice)
    for i, disposition in enumerate((b"filename*=UTF-8''r%C3%A9sultats-0.csv",
                                     'filename="résultats-1.csv"'.encode())):
        body, headers = _multipart(disposition, Files.ok[1])
        r = alice.post(f"/requests/{rid}/files", data=body, headers=headers)
        assert r.status_code == 201 and r.json()["name"] == f"résultats-{i}.csv", r.text
        r = alice.post("/check", params={"project": "cardio-los"}, data=body, headers=headers,
                       timeout=120)
        assert r.status_code == 200, r.text
        assert [f["name"] for f in r.json()["files"]] == [f"résultats-{i}.csv"]
    names = sorted(f["name"] for f in alice.get(f"/requests/{rid}").json()["files"])
    assert names == ["résultats-0.csv", "résultats-1.csv"]
    # a charset nobody knows is not guessed at: the name stays as sent, and is refused
    # or kept by the same rules as any other name
    body, headers = _multipart(b"filename*=x-nowhere''plain.csv", Files.ok[1])
    r = alice.post(f"/requests/{rid}/files", data=body, headers=headers)
    assert r.status_code == 201 and r.json()["name"] == "plain.csv", r.text


# ---------------------------------------------------------------- pages


def _page_session(airlock_hub, user: str) -> requests.Session:
    s = airlock_hub.login(user)
    r = s.get(airlock_hub.airlock_url + "/", timeout=15)  # OAuth dance with the hub
    assert r.status_code == 200 and r.url.rstrip("/") == airlock_hub.airlock_url
    return s


def test_checker_pages_queue_highlight_and_xsrf(airlock_hub):
    alice = airlock_hub.api("alice")
    rid = _create(alice, title="Small counts table")
    alice.post(f"/requests/{rid}/files", params={"filename": Files.fail[0]}, data=Files.fail[1])
    _describe(alice, rid)
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    s = _page_session(airlock_hub, "carol")
    home = s.get(airlock_hub.airlock_url + "/", timeout=15).text
    assert "Awaiting your review" in home and rid in home
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15)
    assert page.status_code == 200
    # the cell with 3 is highlighted, the others are not
    flagged = re.findall(r'<td class="flagged"[^>]*>([^<]*)</td>', page.text)
    assert flagged == ["3"]
    assert "small-count" in page.text
    # a form POST without the _xsrf field is refused
    r = s.post(f"{airlock_hub.airlock_url}/requests/{rid}/review",
               data={"decision": "approve", "override:counts_small.csv": "ok"},
               allow_redirects=False, timeout=15)
    assert r.status_code in (401, 403, 302) and "recorded" not in r.headers.get("Location", "")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = s.post(f"{airlock_hub.airlock_url}/requests/{rid}/review",
               data={"decision": "approve", "_xsrf": xsrf,
                     "override:counts_small.csv": "Published figure"},
               allow_redirects=False, timeout=15)
    assert r.status_code == 302, r.text
    assert airlock_hub.api("dan").get(f"/requests/{rid}").json()["approvals"] == 1


def test_researcher_page_shows_own_requests_and_no_review_form(airlock_hub):
    alice = airlock_hub.api("alice")
    rid = _create(alice, title="Researcher view")
    s = _page_session(airlock_hub, "alice")
    home = s.get(airlock_hub.airlock_url + "/", timeout=15).text
    assert "Your export requests" in home and rid in home and "Awaiting your review" not in home
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15).text
    assert 'id="review-form"' not in page and "draft" in page
    r = _page_session(airlock_hub, "eve").get(f"{airlock_hub.airlock_url}/requests/{rid}",
                                              timeout=15)
    assert r.status_code == 404 and "no request" in r.text


def test_researcher_downloads_a_released_file_from_the_page(airlock_hub):
    alice, carol, dan = (airlock_hub.api(u) for u in ("alice", "carol", "dan"))
    rid = _create(alice, title="Download me")
    f = alice.post(f"/requests/{rid}/files", params={"filename": Files.ok[0]},
                   data=Files.ok[1]).json()
    alice.post(f"/requests/{rid}/submit")
    for checker in (carol, dan):
        checker.post(f"/requests/{rid}/reviews", json={"decision": "approve"})
    carol.post(f"/requests/{rid}/release")
    s = _page_session(airlock_hub, "alice")
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15).text
    link = f"/services/airlock/requests/{rid}/files/{f['id']}/download"
    assert link in page and "released" in page
    r = s.get(airlock_hub.url + link, timeout=15)
    assert r.status_code == 200 and r.content == Files.ok[1]
    assert "attachment" in r.headers["Content-Disposition"]
    # another project member may see the request but not download it
    r = _page_session(airlock_hub, "bob").get(airlock_hub.url + link, timeout=15)
    assert r.status_code == 403


def test_researcher_submits_and_withdraws_from_the_page(airlock_hub):
    alice = airlock_hub.api("alice")
    rid = _create(alice, title="Page actions")
    alice.post(f"/requests/{rid}/files", params={"filename": Files.ok[0]}, data=Files.ok[1])
    s = _page_session(airlock_hub, "alice")
    url = f"{airlock_hub.airlock_url}/requests/{rid}"
    page = s.get(url, timeout=15).text
    assert 'id="action-submit"' in page and 'id="action-release"' not in page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    r = s.post(f"{url}/submit", data={"_xsrf": xsrf}, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and "done" in r.headers["Location"]
    r = s.post(f"{url}/withdraw", data={"_xsrf": xsrf, "comment": "wrong table"},
               allow_redirects=True, timeout=15)
    assert r.status_code == 200 and 'id="state">withdrawn' in r.text
    r = s.post(f"{url}/submit", data={"_xsrf": xsrf}, timeout=15)
    assert r.status_code == 409 and "is withdrawn: cannot submit" in r.text


# ---------------------------------------------------------------- two-person rule on bytes


def test_checker_never_gets_the_bytes_of_a_block_file_even_after_withdraw(airlock_hub):
    """Attack: an output checker (not a member) GETs .../content of a block file."""
    from tests.airlock.test_service_file_access import CANARY_LATE, CANARY_NAME, canary_block

    alice, carol = airlock_hub.api("alice"), airlock_hub.api("carol")
    rules = carol.get("/rules").json()
    assert [r for r in rules["file_access"] if r["view"] == "content"] == [
        {"view": "content", "states": ["released"], "actors": ["requester"],
         "current_version_only": True}]
    assert rules["verdicts"]["review"] == {"approvable": True, "needs_override_reason": True}
    rid = _create(alice, title="Cohort extract")
    name, data = canary_block()
    f = alice.post(f"/requests/{rid}/files", params={"filename": name}, data=data).json()
    assert f["verdict"] == "block"
    assert alice.post(f"/requests/{rid}/submit").status_code == 200
    url = f"/requests/{rid}/files/{f['id']}/content"
    msg = _error(carol.get(url), 403, "permission_denied")
    assert "only to the requester" in msg and "preview" in msg
    detail = carol.get(f"/requests/{rid}")
    assert detail.status_code == 200 and detail.json()["files"][0]["preview"]["kind"] == "table"
    assert CANARY_NAME not in detail.text and CANARY_LATE not in detail.text
    # the checker's page: findings and a masked sample, never the rows
    s = _page_session(airlock_hub, "carol")
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15)
    assert page.status_code == 200 and 'class="masked"' in page.text
    assert "identifier-column" in page.text
    assert CANARY_NAME not in page.text and CANARY_LATE not in page.text
    assert "P100000" not in page.text and "/download" not in page.text
    r = s.get(f"{airlock_hub.airlock_url}/requests/{rid}/files/{f['id']}/download", timeout=15)
    assert r.status_code == 403 and CANARY_NAME.encode() not in r.content

    assert alice.post(f"/requests/{rid}/withdraw", json={}).json()["state"] == "withdrawn"
    _error(carol.get(url), 403, "permission_denied")
    _error(alice.get(url), 403, "permission_denied")
    closed = carol.get(f"/requests/{rid}").json()["files"][0]
    assert "preview" not in closed and "findings" not in closed
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", timeout=15).text
    assert "no longer shown" in page and 'class="preview-table"' not in page
    assert "identifier-column" not in page


# ---------------------------------------------------------------- fixed versions proposed


def test_a_failing_table_is_fixed_by_accepting_the_proposal_then_released(airlock_hub):
    """fail -> proposal -> accept into the new version -> passes -> review -> release; a
    checker never gets the proposal's bytes."""
    alice, carol, dan = (airlock_hub.api(u) for u in ("alice", "carol", "dan"))
    rid = _create(alice, title="Fix me")
    name, data = Files.fail
    f = alice.post(f"/requests/{rid}/files", params={"filename": name}, data=data).json()
    assert f["verdict"] == "fail" and f["proposal"]["available"] is True
    _describe(alice, rid)
    assert alice.post(f"/requests/{rid}/submit").json()["state"] == "submitted"
    [seen] = carol.get(f"/requests/{rid}").json()["files"]
    assert seen["proposal"] == {"available": True, "method": "suppress"}
    msg = _error(carol.get(f"/requests/{rid}/files/{f['id']}/proposal"), 403,
                 "permission_denied")
    assert "you may not see the proposal of this file" in msg
    _error(carol.post(f"/requests/{rid}/files/{f['id']}/proposal/accept"), 403,
           "permission_denied")
    _error(alice.post(f"/requests/{rid}/files/{f['id']}/proposal/accept"), 409, "invalid_state")
    carol.post(f"/requests/{rid}/reviews", json={"decision": "request_changes",
                                                 "comment": "Suppress the small cell"})
    [f2] = alice.get(f"/requests/{rid}").json()["files"]
    proposal = alice.get(f"/requests/{rid}/files/{f2['id']}/proposal").json()
    assert "F,41-65,c" in proposal["text"] and proposal["verdict"] == "pass"
    r = alice.post(f"/requests/{rid}/files/{f2['id']}/proposal/accept")
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["verdict"] == "pass" and new["version"] == 2
    alice.post(f"/requests/{rid}/resubmit", json={"comment": "suppressed"})
    for checker in (carol, dan):
        r = checker.post(f"/requests/{rid}/reviews", json={"decision": "approve"})
        assert r.status_code == 201, r.text
    assert carol.post(f"/requests/{rid}/release").json()["state"] == "released"
    r = alice.get(f"/requests/{rid}/files/{new['id']}/content")
    assert r.status_code == 200 and r.content == proposal["text"].encode()
