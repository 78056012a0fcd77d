"""``POST /api/v1/check``: the dry run through the real hub and proxy (issue 22 item 3).

Multipart like an upload, with a hub token acting for one project; the answer
carries each file's verdict and findings; nothing is kept (no request, no staged
object, no temporary file); refusals: a non-member, a token of another project,
files past the user's staging quota.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select

from ecluse.airlock.hub import WORKSPACE_TOKEN_SCOPES
from ecluse.airlock.models import File, LedgerEntry, Request
from ecluse.config import load_settings
from ecluse.hub.roles import project_scope
from ecluse.settings.airlock import airlock_settings
from tests.airlock.conftest import Files

pytestmark = pytest.mark.timeout(240)

MIB = 1024 * 1024


def _kept(hub) -> tuple:
    """Rows of the airlock's database and files of its staging area (objects, tmp)."""
    settings = load_settings(hub.root / "ecluse.yaml", state_dir=hub.state_dir)
    conf = airlock_settings(settings)
    engine = create_engine(conf.resolved_database_url(settings.db_dir))
    try:
        with engine.connect() as c:
            rows = tuple(c.execute(select(func.count()).select_from(m)).scalar()
                         for m in (Request, File, LedgerEntry))
    finally:
        engine.dispose()
    root = conf.resolved_storage_dir(settings.state_dir)
    return rows, sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _error(r, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()["error"]
    assert body["code"] == code and body["status"] == status
    return body["message"]


def _upload_verdicts(api, files) -> dict:
    r = api.post("/requests", json={"project": "cardio-los", "title": "t", "justification": "j"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    for name, data in files:
        r = api.post(f"/requests/{rid}/files", files={"file": (name, data)})
        assert r.status_code == 201, r.text
    out = {f["name"]: (f["verdict"], sorted(x["rule"] for x in f["findings"]))
           for f in api.get(f"/requests/{rid}").json()["files"]}
    assert api.post(f"/requests/{rid}/withdraw", json={}).status_code == 200
    return out


def test_a_dry_run_answers_verdicts_and_findings_and_keeps_nothing(airlock_hub):
    bob = airlock_hub.api("bob", scopes=[*WORKSPACE_TOKEN_SCOPES, project_scope("cardio-los")])
    files = [Files.fail, Files.ok, Files.block]
    before = _kept(airlock_hub)
    r = bob.post("/check", params={"project": "cardio-los"},
                 files=[("file", f) for f in files], timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["kept"] is False
    assert [(f["name"], f["verdict"]) for f in got["files"]] == [
        ("counts_small.csv", "fail"), ("counts_safe.csv", "pass"), ("patients.csv", "block")]
    [small] = [x for x in got["files"][0]["findings"] if x["rule"] == "small-count"]
    assert (small["location"]["row"], small["location"]["column"]) == (3, "n")
    assert _kept(airlock_hub) == before
    # a raw body, as an upload's, named in the query: the same
    r = bob.post("/check", params={"project": "cardio-los", "filename": "t.csv"},
                 data=Files.fail[1], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["files"][0]["verdict"] == "fail", r.text
    assert _kept(airlock_hub) == before
    # the verdicts of a real upload of the same files
    real = _upload_verdicts(bob, files)
    assert {f["name"]: (f["verdict"], sorted(x["rule"] for x in f["findings"]))
            for f in got["files"]} == real


def test_a_dry_run_is_refused_to_a_non_member_and_to_another_projects_token(airlock_hub):
    before = _kept(airlock_hub)
    eve = airlock_hub.api("eve")
    msg = _error(eve.post("/check", params={"project": "cardio-los"},
                          files={"file": Files.ok}), 403, "permission_denied")
    assert "not a member of project cardio-los" in msg
    # ada is in both projects; her air-quality workspace's token cannot check for cardio-los
    air = airlock_hub.api("ada", scopes=[*WORKSPACE_TOKEN_SCOPES, project_scope("air-quality")])
    msg = _error(air.post("/check", params={"project": "cardio-los"}, files={"file": Files.ok}),
                 403, "permission_denied")
    assert "acts for project air-quality, not for project cardio-los" in msg
    r = air.post("/check", params={"project": "air-quality"}, files={"file": Files.ok})
    assert r.status_code == 200 and r.json()["project"] == "air-quality", r.text
    _error(air.post("/check", files={"file": Files.ok}), 400, "invalid_input")
    _error(air.post("/check", params={"project": "air-quality"}, data=b"x"), 400,
           "invalid_input")  # no name, no multipart
    assert _kept(airlock_hub) == before


def _chunked(total: int, piece: int = 64 * 1024):
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        sent += n
        yield b"q" * n


def test_files_past_the_staging_quota_are_refused_and_leave_nothing(airlock_hub):
    # the hub's airlock has a 4 MiB staging quota (hubstack.ECLUSE_YAML)
    bob = airlock_hub.api("bob")
    before = _kept(airlock_hub)
    r = bob.post("/check", params={"project": "cardio-los", "filename": "big.csv"},
                 data=_chunked(5 * MIB), timeout=120)
    assert "staging quota" in _error(r, 413, "quota_exceeded")
    assert _kept(airlock_hub) == before


def _overlapping_dry_runs(hub, alice) -> tuple:
    """A slow dry run of alice's (its body held open) and, once its first bytes are
    sent, a few quick ones of hers, one after another, until one is refused: (the
    first quick answer that is not 200, or ``None``; the slow one's answer). A quick
    one still under way when the slow one arrives gets the slow one refused instead:
    then no quick one is refused and the slow one's answer is the 429 (the caller
    tries again)."""
    import threading

    release, sent = threading.Event(), threading.Event()
    answers: list = []

    def slow_body():
        yield Files.ok[1]
        sent.set()  # the headers and first bytes are sent: the dry run has begun
        release.wait(120)  # held open until the second dry run was answered

    first = threading.Thread(target=lambda: answers.append(alice.post(
        "/check", params={"project": "cardio-los", "filename": "slow.csv"}, data=slow_body(),
        timeout=180)))
    first.start()
    refused = None
    try:
        assert sent.wait(120), "the slow dry run's body was never sent"
        for _ in range(3):
            r = alice.post("/check", params={"project": "cardio-los"},
                           files={"file": Files.ok}, timeout=180)
            if r.status_code != 200:
                refused = r
                break
        if refused is not None and refused.status_code == 429:
            # another user is not held up
            r = hub.api("bob").post("/check", params={"project": "cardio-los"},
                                    files={"file": Files.ok}, timeout=180)
            assert r.status_code == 200, r.text
    finally:
        release.set()
        first.join(180)
    [done] = answers
    return refused, done


def test_one_dry_run_per_user_at_a_time(airlock_hub):
    # independent of the machine's speed and of earlier tests: a quick dry run under
    # way when the slow one arrives (a check sandbox takes seconds under load) gets the
    # slow one refused instead; either way one of two overlapping dry runs is refused
    alice = airlock_hub.api("alice")
    for _ in range(3):
        refused, done = _overlapping_dry_runs(airlock_hub, alice)
        if refused is not None:
            break
        # no quick one refused: the slow one was, a quick one being under way
        assert "already under way" in _error(done, 429, "busy")
    assert refused is not None, "two overlapping dry runs of one user were never refused"
    assert "already under way" in _error(refused, 429, "busy")
    assert done.status_code == 200 and done.json()["files"][0]["verdict"] == "pass", done.text
    # once the slow one is answered, the next one runs
    r = alice.post("/check", params={"project": "cardio-los"}, files={"file": Files.ok},
                   timeout=180)
    assert r.status_code == 200, r.text
