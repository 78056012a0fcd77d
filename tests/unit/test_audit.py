"""The audit chain detects edits, deletions, insertions and reordering."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ecluse.audit import AuditLog, record_hash
from ecluse.cli import main


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path}/audit.sqlite", tmp_path / "audit.jsonl")
    for i in range(6):
        log.record("login.success", actor=f"user{i}", project="cardio-los", n=i)
    return log


def db(tmp_path):
    return sqlite3.connect(tmp_path / "audit.sqlite")


def test_intact_chain_verifies(audit):
    result = audit.verify()
    assert result.ok, result.problems
    assert result.count == 6


def test_records_are_chained(audit):
    recs = audit.records()
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5, 6]
    for prev, rec in zip(recs, recs[1:], strict=False):
        assert rec.prev_hash == prev.hash


def test_edit_is_detected_and_named(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("UPDATE audit_events SET actor='mallory' WHERE seq=3")
    result = audit.verify()
    assert "record 3: edited (its content does not match its hash)" in result.problems


def test_deletion_is_detected_and_named(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("DELETE FROM audit_events WHERE seq=4")
    problems = audit.verify().problems
    assert "record 4: deleted (sequence jumps to 5)" in problems


def test_tail_deletion_is_caught_by_the_mirror(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("DELETE FROM audit_events WHERE seq=6")
    problems = audit.verify().problems
    assert "record 6: in the mirror but missing from the database" in problems


def test_insertion_with_a_recomputed_hash_is_detected(audit, tmp_path):
    # an attacker who knows the hash function forges a well-formed record 7
    # after record 3 by renumbering: the previous-hash link still breaks
    with db(tmp_path) as c:
        rows = c.execute("SELECT seq FROM audit_events ORDER BY seq DESC").fetchall()
        for (seq,) in rows:
            if seq > 3:
                c.execute("UPDATE audit_events SET seq=seq+1 WHERE seq=?", (seq,))
        details = json.dumps({"forged": True})
        h = record_hash(4, "2026-01-01T00:00:00+00:00", "export.release", "mallory", None,
                        "success", {"forged": True}, "f" * 64)
        c.execute(
            "INSERT INTO audit_events VALUES (4,'2026-01-01T00:00:00+00:00','export.release',"
            "'mallory',NULL,'success',?,?,?)", (details, "f" * 64, h))
    problems = audit.verify().problems
    assert any(p.startswith("record 4: inserted or reordered") for p in problems)


def test_reordering_is_detected(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("UPDATE audit_events SET seq=-1 WHERE seq=2")
        c.execute("UPDATE audit_events SET seq=2 WHERE seq=5")
        c.execute("UPDATE audit_events SET seq=5 WHERE seq=-1")
    problems = audit.verify().problems
    assert any("record 2" in p and "reordered" in p for p in problems) or any(
        "record 2: edited" in p for p in problems
    )
    assert not audit.verify().ok


def test_edited_mirror_is_detected(audit, tmp_path):
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["actor"] = "mallory"
    lines[1] = json.dumps(rec)
    (tmp_path / "audit.jsonl").write_text("\n".join(lines) + "\n")
    problems = audit.verify().problems
    assert any("mirror" in p and "record 2: edited" in p for p in problems)
    assert "record 2: database and mirror differ" in problems


def test_filters(audit):
    audit.record("spawn.start", actor="alice", project="air-quality")
    assert [r.event for r in audit.records(user="alice")] == ["spawn.start"]
    assert len(audit.records(project="cardio-los")) == 6
    assert len(audit.records(event="spawn.start")) == 1


def test_cli_verify_and_show(tmp_path, capsys, make_config):
    from ecluse.config import load_settings

    path = make_config()
    settings = load_settings(path)
    log = AuditLog.from_settings(settings)
    log.record("login.success", actor="alice")
    log.record("login.failure", actor="bob", outcome="failure", reason="wrong-password")
    assert main(["audit", "--config", str(path), "verify"]) == 0
    assert "2 records, chain intact" in capsys.readouterr().out
    assert main(["audit", "--config", str(path), "show", "--user", "bob", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "login.failure" in out and "wrong-password" in out and "alice" not in out
    with sqlite3.connect(settings.state_dir / "audit.sqlite") as c:
        c.execute("UPDATE audit_events SET outcome='success' WHERE seq=2")
    assert main(["audit", "--config", str(path), "verify"]) == 1
    assert "record 2: edited" in capsys.readouterr().out


def test_concurrent_writers_keep_the_chain(tmp_path):
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path}/audit.sqlite"
    AuditLog(url)
    procs = [mp.get_context("spawn").Process(target=_write_many, args=(url, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(url)
    result = log.verify()
    assert result.ok, result.problems
    assert result.count == 100


def _write_many(url: str, worker: int) -> None:
    log = AuditLog(url)
    for i in range(25):
        log.record("test.event", actor=f"w{worker}", i=i)
