"""The audit log detects tampering by someone who can write the state directory.

Attacker model: they can rewrite the audit database and its JSON Lines mirror
(and know the hash function), but hold neither the audit HMAC key nor the
checkpoint sink. Each attack below is what such an attacker would do, and each
passed `verify` on the plain sha256 chain of earlier versions (the ``legacy``
tests show it).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading

import pytest

from ecluse.audit import (
    KEYED_EVENT,
    AuditError,
    AuditLog,
    record_hash,
    record_mac,
)
from ecluse.auditevents import AuditEvent
from ecluse.auditkeys import (
    CHECKPOINT_TAG,
    AuditKeyError,
    Checkpoint,
    CheckpointSinkError,
    FileCheckpointSink,
    SyslogCheckpointSink,
    ensure_keys,
    load_keys,
)
from ecluse.cli import main
from ecluse.config import ConfigError, load_settings

# ------------------------------------------------------------------ helpers


def keyed_log(tmp_path, **kw) -> AuditLog:
    keys = ensure_keys(tmp_path / "keys")
    sink = kw.pop("sink", None) or FileCheckpointSink(tmp_path / "sink" / "checkpoints.log")
    return AuditLog(f"sqlite:///{tmp_path}/state/audit.sqlite", tmp_path / "state/audit.jsonl",
                    keys=keys, sink=sink, checkpoint_path=tmp_path / "sink/checkpoints.log", **kw)


@pytest.fixture
def audit(tmp_path):
    (tmp_path / "state").mkdir()
    log = keyed_log(tmp_path)
    for i in range(6):
        log.record("login.success", actor=f"user{i}", project="cardio-los", n=i)
    return log


@pytest.fixture
def legacy(tmp_path):
    """An unkeyed log, as earlier versions wrote it."""
    (tmp_path / "state").mkdir(exist_ok=True)
    log = AuditLog(f"sqlite:///{tmp_path}/state/audit.sqlite", tmp_path / "state/audit.jsonl")
    for i in range(6):
        log.record("login.success", actor=f"user{i}", project="cardio-los", n=i)
    return log


def rows(tmp_path) -> list[dict]:
    with sqlite3.connect(tmp_path / "state/audit.sqlite") as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT * FROM audit_events ORDER BY seq")]


def rewrite(tmp_path, records: list[dict]) -> None:
    """What the attacker does: replace the table and the mirror with ``records``,
    renumbered and re-hashed with the plain sha256 chain (all one can compute
    without the key)."""
    prev = "0" * 64
    out = []
    for seq, r in enumerate(records, 1):
        details = json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]
        h = record_hash(seq, r["ts"], r["event"], r["actor"], r["project"], r["outcome"],
                        details, prev)
        out.append({**r, "seq": seq, "details": details, "prev_hash": prev, "hash": h})
        prev = h
    with sqlite3.connect(tmp_path / "state/audit.sqlite") as c:
        c.execute("DELETE FROM audit_events")
        for r in out:
            c.execute("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?)",
                      (r["seq"], r["ts"], r["event"], r["actor"], r["project"], r["outcome"],
                       json.dumps(r["details"], sort_keys=True), r["prev_hash"], r["hash"]))
    (tmp_path / "state/audit.jsonl").write_text(
        "".join(json.dumps({k: r[k] for k in ("seq", "ts", "event", "actor", "project",
                                               "outcome", "details", "prev_hash", "hash")}) + "\n"
                for r in out))


def truncate(tmp_path, keep: int) -> None:
    with sqlite3.connect(tmp_path / "state/audit.sqlite") as c:
        c.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
    lines = (tmp_path / "state/audit.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "state/audit.jsonl").write_text("".join(lines[:keep]))


def db(tmp_path):
    return sqlite3.connect(tmp_path / "state/audit.sqlite")


# ------------------------------------------------------------------ the keyed chain


def test_intact_keyed_log_verifies(audit):
    result = audit.verify()
    assert result.ok, result.problems
    assert result.count == 7  # the audit.keyed record, then six events
    assert "HMAC-chained from record 1" in result.notes
    assert any("last checkpoint: record 7" in n for n in result.notes)


def test_records_carry_an_hmac_not_a_plain_hash(audit):
    recs = audit.records()
    assert recs[0].event == KEYED_EVENT and recs[0].details["legacy_records"] == 0
    for prev, rec in zip(recs, recs[1:], strict=False):
        assert rec.prev_hash == prev.hash
        assert rec.hash == record_mac(audit.keys, rec)
        assert rec.hash != record_hash(rec.seq, rec.ts, rec.event, rec.actor, rec.project,
                                       rec.outcome, rec.details, rec.prev_hash)


def test_every_record_gets_a_signed_checkpoint(audit, tmp_path):
    lines = (tmp_path / "sink/checkpoints.log").read_text().splitlines()
    assert len(lines) == 7 and all(line.startswith(CHECKPOINT_TAG + " ") for line in lines)
    last = json.loads(lines[-1].split(" ", 1)[1])
    assert last["count"] == 7 and last["head"] == audit.records()[-1].hash


# ------------------------------------------------------------------ attacks


def test_deletion_with_recomputed_plain_hashes_passed_the_legacy_chain(legacy, tmp_path):
    # the weakness this fixes: delete record 4, renumber, recompute -> "intact"
    recs = rows(tmp_path)
    rewrite(tmp_path, [r for r in recs if r["seq"] != 4])
    assert legacy.verify().ok


def test_deletion_with_recomputed_plain_hashes_is_detected(audit, tmp_path):
    recs = rows(tmp_path)
    rewrite(tmp_path, [r for r in recs if r["seq"] != 4])
    problems = audit.verify().problems
    assert "record 1: edited (its content does not match its hash)" in problems
    assert any("are missing" in p and "truncated" in p for p in problems), problems
    assert any(p.startswith("records 1-6: hash differs from their signed checkpoint")
               for p in problems), problems


def test_deletion_in_place_is_detected(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("DELETE FROM audit_events WHERE seq=4")
    problems = audit.verify().problems
    assert "record 4: deleted (sequence jumps to 5)" in problems


def test_insertion_is_detected(audit, tmp_path):
    recs = rows(tmp_path)
    forged = {**recs[2], "event": "export.release", "actor": "mallory", "details": "{}"}
    rewrite(tmp_path, recs[:3] + [forged] + recs[3:])
    problems = audit.verify().problems  # recomputed plain hashes no longer pass
    assert "record 1: edited (its content does not match its hash)" in problems
    assert any(p.startswith("records 1-7: hash differs") for p in problems), problems


def test_insertion_keeping_the_real_hashes_is_detected(audit, tmp_path):
    # renumber 4.. to 5.. and slot a forged record 4 in between, keeping the
    # real records (and their HMACs) untouched
    with db(tmp_path) as c:
        for (seq,) in c.execute("SELECT seq FROM audit_events ORDER BY seq DESC").fetchall():
            if seq > 3:
                c.execute("UPDATE audit_events SET seq=seq+1 WHERE seq=?", (seq,))
        prev = c.execute("SELECT hash FROM audit_events WHERE seq=3").fetchone()[0]
        h = record_hash(4, "2026-01-01T00:00:00+00:00", "export.release", "mallory", None,
                        "success", {"forged": True}, prev)
        c.execute("INSERT INTO audit_events VALUES (4,'2026-01-01T00:00:00+00:00',"
                  "'export.release','mallory',NULL,'success',?,?,?)",
                  (json.dumps({"forged": True}), prev, h))
    problems = audit.verify().problems
    assert "record 4: edited (its content does not match its hash)" in problems
    assert any(p.startswith("record 5: edited") for p in problems)
    assert any("hash differs from their signed checkpoint" in p for p in problems)


def test_reordering_is_detected(audit, tmp_path):
    recs = rows(tmp_path)
    recs[2], recs[4] = recs[4], recs[2]
    rewrite(tmp_path, recs)
    problems = audit.verify().problems
    assert any("edited" in p for p in problems)
    assert any("hash differs from their signed checkpoint" in p for p in problems)


def test_reordering_rows_in_place_is_detected(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("UPDATE audit_events SET seq=-1 WHERE seq=3")
        c.execute("UPDATE audit_events SET seq=3 WHERE seq=6")
        c.execute("UPDATE audit_events SET seq=6 WHERE seq=-1")
    problems = audit.verify().problems
    assert "record 3: edited (its content does not match its hash)" in problems
    assert "records 3, 6: hash differs from their signed checkpoint (rewritten, or records " \
           "before them deleted, inserted or reordered)" in problems


def test_rewrite_with_recomputed_plain_hashes_is_detected(audit, tmp_path):
    recs = rows(tmp_path)
    recs[3]["actor"] = "mallory"
    rewrite(tmp_path, recs)
    problems = audit.verify().problems
    assert any(p.endswith("edited (its content does not match its hash)") for p in problems)
    assert any(p.startswith("records 1-7: hash differs") for p in problems), problems


def test_rewrite_in_place_is_detected_and_named(audit, tmp_path):
    with db(tmp_path) as c:
        c.execute("UPDATE audit_events SET actor='mallory' WHERE seq=3")
    problems = audit.verify().problems
    assert "record 3: edited (its content does not match its hash)" in problems
    assert "record 3: database and mirror differ" in problems


@pytest.mark.parametrize("dropped", [1, 3])
def test_truncation_of_the_last_records_is_detected(audit, tmp_path, dropped):
    truncate(tmp_path, 7 - dropped)
    # the chain and the mirror alone are intact: only the checkpoints know
    plain = AuditLog(audit.database_url, audit.jsonl_path, keys=audit.keys)
    assert not [p for p in plain.verify().problems if "checkpoint" not in p]
    problems = audit.verify().problems
    missing = "7" if dropped == 1 else "5-7"
    assert (f"records {missing} are missing: the checkpoint of "
            in " ".join(problems)), problems
    assert any("vouches for 7 records, the log ends at " f"{7 - dropped} (truncated)" in p
               for p in problems)


def test_truncation_passed_the_legacy_chain(legacy, tmp_path):
    truncate(tmp_path, 4)
    assert legacy.verify().ok


def test_a_forged_checkpoint_is_refused(audit, tmp_path):
    other = ensure_keys(tmp_path / "attacker-keys")
    cp = Checkpoint(log=audit.records()[0].details["log"], count=3, head="0" * 64, legacy=0,
                    ts="2026-01-01T00:00:00+00:00")
    with open(tmp_path / "sink/checkpoints.log", "a") as fh:
        fh.write(cp.signed_line(other.signing_key) + "\n")
    truncate(tmp_path, 3)
    problems = audit.verify().problems
    assert any("bad signature (forged or altered)" in p for p in problems)
    assert any("truncated" in p for p in problems)


def test_no_checkpoints_fails_closed(audit, tmp_path):
    (tmp_path / "sink/checkpoints.log").unlink()
    problems = audit.verify().problems
    assert any("not found" in p for p in problems)
    assert any("no signed checkpoint of this log" in p for p in problems)


def test_removing_the_keyed_part_is_detected(audit, tmp_path):
    # drop the marker and every keyed record: a plain, "valid" sha256 chain remains
    rewrite(tmp_path, [])
    problems = audit.verify().problems
    assert "no audit.keyed record: the log was never keyed, or its keyed part was removed" \
        in problems


# ------------------------------------------------------------------ writers


def test_a_writer_without_the_key_is_refused(audit):
    keyless = AuditLog(audit.database_url, audit.jsonl_path)
    with pytest.raises(AuditError, match="is keyed: writing needs its key"):
        keyless.record("login.success", actor="mallory")
    assert audit.verify().ok


def test_another_key_is_refused(audit, tmp_path):
    with pytest.raises(AuditKeyError, match="not the key this log was keyed with"):
        AuditLog(audit.database_url, keys=ensure_keys(tmp_path / "other"),
                 sink=audit.sink)


def test_a_checkpoint_that_cannot_be_written_rolls_the_record_back(audit, tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    broken = AuditLog(audit.database_url, audit.jsonl_path, keys=audit.keys,
                      sink=FileCheckpointSink(tmp_path / "not-a-dir" / "checkpoints.log"))
    with pytest.raises(CheckpointSinkError, match="cannot write the audit checkpoint"):
        broken.record("login.success", actor="alice")
    assert [r.actor for r in audit.records()][-1] == "user5"


def test_keys_are_created_once_owner_only(tmp_path):
    a = ensure_keys(tmp_path / "k")
    b = ensure_keys(tmp_path / "k")
    assert a.hmac_key == b.hmac_key and a.key_id == b.key_id
    for name in ("audit-hmac.key", "audit-checkpoint.key"):
        assert (tmp_path / "k" / name).stat().st_mode & 0o077 == 0
    reader = load_keys(tmp_path / "k", signing=False)
    assert reader.signing_key is None and reader.hmac_key == a.hmac_key


def test_missing_key_is_named(tmp_path):
    with pytest.raises(AuditKeyError, match="audit HMAC key not found: .*audit-hmac.key"):
        load_keys(tmp_path / "nothing")


# ------------------------------------------------------------------ migration


def test_legacy_log_is_keyed_at_first_start(legacy, tmp_path):
    keyed = keyed_log(tmp_path)
    recs = keyed.records()
    marker = recs[6]
    assert marker.event == KEYED_EVENT and marker.seq == 7
    assert marker.details["legacy_records"] == 6 and marker.details["legacy_head"] == recs[5].hash
    # legacy records keep their plain hashes; new ones are HMAC-chained
    assert recs[2].hash == record_hash(recs[2].seq, recs[2].ts, recs[2].event, recs[2].actor,
                                       recs[2].project, recs[2].outcome, recs[2].details,
                                       recs[2].prev_hash)
    new = keyed.record("login.success", actor="alice")
    assert new.hash == record_mac(keyed.keys, new)
    result = keyed.verify()
    assert result.ok, result.problems
    assert "records 1-6 are the legacy sha256 chain, HMAC-chained from record 7 on" \
        in result.notes
    # opening it again does not key it twice
    assert len(keyed_log(tmp_path).records(event=KEYED_EVENT)) == 1


def test_legacy_records_are_pinned_after_keying(legacy, tmp_path):
    keyed = keyed_log(tmp_path)
    keyed.record("login.success", actor="alice")
    recs = rows(tmp_path)
    recs[1]["actor"] = "mallory"
    # recompute the legacy part only, keep the keyed records as they are
    prev = "0" * 64
    with db(tmp_path) as c:
        for r in recs[:6]:
            details = json.loads(r["details"])
            h = record_hash(r["seq"], r["ts"], r["event"], r["actor"], r["project"],
                            r["outcome"], details, prev)
            c.execute("UPDATE audit_events SET actor=?, prev_hash=?, hash=? WHERE seq=?",
                      (r["actor"], prev, h, r["seq"]))
            prev = h
    problems = keyed.verify().problems
    assert "record 7: inserted or reordered (previous-hash link is broken)" in problems


def test_moving_the_keyed_marker_is_detected(legacy, tmp_path):
    keyed_log(tmp_path).record("login.success", actor="alice")  # marker = 7, then 8
    recs = rows(tmp_path)
    # rename the real marker, and pretend records 1-8 are all legacy
    recs[6]["event"] = "login.success"
    rewrite(tmp_path, recs)
    keyed = AuditLog(f"sqlite:///{tmp_path}/state/audit.sqlite", tmp_path / "state/audit.jsonl",
                     keys=load_keys(tmp_path / "keys", signing=False),
                     checkpoint_path=tmp_path / "sink/checkpoints.log")
    problems = keyed.verify().problems
    assert any("never keyed" in p for p in problems)


# ------------------------------------------------------------------ syslog sink


@pytest.fixture
def unix_syslog(tmp_path):
    """A /dev/log-style receiver: a Unix datagram socket in a temp dir."""
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield str(path), sock
    sock.close()


@pytest.fixture
def udp_syslog():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}", sock
    sock.close()


def _receive(sock, n: int) -> list[str]:
    sock.settimeout(5)
    return [sock.recv(65536).decode() for _ in range(n)]


@pytest.mark.parametrize("receiver", ["unix_syslog", "udp_syslog"])
def test_syslog_sink_delivers_verifiable_checkpoints(receiver, request, tmp_path):
    address, sock = request.getfixturevalue(receiver)
    (tmp_path / "state").mkdir()
    sink = SyslogCheckpointSink(address, "authpriv")
    log = keyed_log(tmp_path, sink=sink)
    for i in range(4):
        log.record("login.success", actor=f"user{i}")
    messages = _receive(sock, 5)
    sink.close()
    # <authpriv.notice>ecluse-audit[pid]: ecluse-audit-checkpoint {...}
    assert all(m.startswith("<85>ecluse-audit[") for m in messages), messages[0]
    # what rsyslog writes to a file: a timestamp and host in front, other messages between
    syslog_file = tmp_path / "syslog.log"
    syslog_file.write_text("".join(
        f"Dec  3 10:00:0{i} hub sshd[1]: unrelated\nDec  3 10:00:0{i} hub {m.split('>', 1)[1]}\n"
        for i, m in enumerate(messages)))
    result = log.verify(checkpoints=syslog_file)
    assert result.ok, result.problems
    truncate(tmp_path, 4)
    assert any("truncated" in p for p in log.verify(checkpoints=syslog_file).problems)


def test_syslog_sink_fails_closed_without_a_receiver(tmp_path):
    (tmp_path / "state").mkdir()
    with pytest.raises(CheckpointSinkError, match="cannot send the audit checkpoint to syslog"):
        keyed_log(tmp_path, sink=SyslogCheckpointSink(str(tmp_path / "no-such.sock")))
    assert rows(tmp_path) == []  # the marker was rolled back with its checkpoint


# ------------------------------------------------------------------ legacy API, settings, CLI


def test_unkeyed_log_still_works(legacy, tmp_path):
    assert legacy.verify().ok
    with db(tmp_path) as c:
        c.execute("UPDATE audit_events SET actor='mallory' WHERE seq=3")
    assert "record 3: edited (its content does not match its hash)" in legacy.verify().problems


def test_filters(audit):
    audit.record(AuditEvent.WORKSPACE_START, actor="alice", project="air-quality")
    assert [r.event for r in audit.records(user="alice")] == ["workspace.start"]
    assert len(audit.records(project="cardio-los")) == 6
    assert len(audit.records(event="workspace.start")) == 1


def test_a_name_that_is_not_an_audit_event_is_refused_and_nothing_written(audit):
    not_an_event = "spawn.start"
    with pytest.raises(ValueError, match="'spawn.start' is not an audit event: add it to "
                                         "ecluse.auditevents.AuditEvent"):
        audit.record(not_an_event, actor="alice")
    assert len(audit.records()) == 7  # the keyed marker and the six sign-ins
    # a member and its plain value are the same event, stored as the plain string
    rec = audit.record(AuditEvent.LOGIN_FAILURE, actor="alice")
    assert type(rec.event) is str and rec.event == "login.failure"
    assert audit.record("login.failure", actor="alice").event == "login.failure"
    assert audit.verify().ok


def test_keys_and_checkpoints_default_outside_the_state_dir(make_config):
    settings = load_settings(make_config())
    state = settings.state_dir
    assert settings.audit.key_dir == state.with_name(state.name + "-keys")
    assert state not in settings.audit.checkpoint_file.parents


@pytest.mark.parametrize("key", ["key_dir", "checkpoint_file"])
def test_keys_inside_the_state_dir_are_refused(make_config, key, tmp_path):
    state = tmp_path / "state"
    path = make_config(**{"state_dir": str(state), f"audit.{key}": str(state / "sub")})
    with pytest.raises(ConfigError, match=f"audit.{key}: must be outside the state directory"):
        load_settings(path)


def test_cli_verify_and_show(tmp_path, capsys, make_config):
    path = make_config()
    settings = load_settings(path)
    log = AuditLog.from_settings(settings)
    log.record("login.success", actor="alice")
    log.record("login.failure", actor="bob", outcome="failure", reason="wrong-password")
    assert main(["audit", "--config", str(path), "verify"]) == 0
    out = capsys.readouterr().out
    assert "3 records, chain intact" in out and "last checkpoint: record 3" in out
    assert main(["audit", "--config", str(path), "show", "--user", "bob", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "login.failure" in out and "wrong-password" in out and "alice" not in out
    with sqlite3.connect(settings.state_dir / "audit.sqlite") as c:
        c.execute("UPDATE audit_events SET outcome='success' WHERE seq=3")
    assert main(["audit", "--config", str(path), "verify"]) == 1
    assert "record 3: edited" in capsys.readouterr().out
    # off-host: the public key alone checks the checkpoints, and cannot sign one
    pub = settings.audit.key_dir / "audit-checkpoint.pub"
    assert main(["audit", "checkpoints", str(settings.audit.checkpoint_file),
                 "--public-key", str(pub)]) == 0
    assert "3 valid checkpoint(s), last: 3 records" in capsys.readouterr().out


def test_cli_verify_without_the_key_fails(tmp_path, capsys, make_config):
    path = make_config()
    settings = load_settings(path)
    AuditLog.from_settings(settings).record("login.success", actor="alice")
    (settings.audit.key_dir / "audit-hmac.key").unlink()
    assert main(["audit", "--config", str(path), "verify"]) == 2
    assert "no audit key in" in capsys.readouterr().out


def test_concurrent_writers_keep_the_chain(tmp_path):
    import multiprocessing as mp

    (tmp_path / "state").mkdir()
    keyed_log(tmp_path)
    procs = [mp.get_context("spawn").Process(target=_write_many, args=(str(tmp_path), i))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = keyed_log(tmp_path)
    result = log.verify()
    assert result.ok, result.problems
    assert result.count == 101
    assert any("last checkpoint: record 101" in n for n in result.notes)


def _write_many(root: str, worker: int) -> None:
    from pathlib import Path

    log = keyed_log(Path(root))
    for i in range(25):
        log.record(AuditEvent.LOGIN_SUCCESS, actor=f"w{worker}", i=i)


def test_writers_key_a_log_once_when_starting_together(tmp_path):
    # a fresh deployment: no keys, no database; the hub and its services start at once
    (tmp_path / "state").mkdir()
    errors: list[BaseException] = []

    def open_log():
        try:
            keyed_log(tmp_path)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_log) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(keyed_log(tmp_path).records(event=KEYED_EVENT)) == 1
