"""`ecluse audit verify` as an operator runs it, on the log a real hub wrote.

The hub (``hub_stack``: slapd, JupyterHub, proxy) keys the log at its first
start and records sign-ins; the CLI, a separate process, verifies the HMAC
chain and the signed checkpoints. Tampering is done on a copy of the state
directory (the attacker's reach), with the hub's keys and checkpoint file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from ecluse.audit import record_hash


def ecluse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecluse", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_verifies_what_the_hub_wrote(hub_stack, hub_client, ldap_passwords):
    hub_client.login("bob", "wrong")
    assert hub_client.login("bob", ldap_passwords["bob"]).status_code == 302
    config = str(hub_stack.settings.config_file)
    run = ecluse("audit", "--config", config, "verify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "chain intact" in run.stdout and "HMAC-chained from record 1" in run.stdout
    assert "last checkpoint: record" in run.stdout
    shown = ecluse("audit", "--config", config, "show", "--user", "bob")
    assert "login.failure" in shown.stdout and "login.success" in shown.stdout
    # the keys and the checkpoints are outside the state directory
    state = hub_stack.settings.state_dir
    assert not list(state.rglob("audit-hmac.key")) and not list(state.rglob("*checkpoint*"))


def _copy_of_the_state(hub_stack, make_config, tmp_path) -> tuple[str, Path]:
    """The attacker's copy: the state dir's audit files, the hub's keys and sink."""
    copy = tmp_path / "state-copy"
    copy.mkdir()
    src = hub_stack.settings.state_dir
    with sqlite3.connect(src / "audit.sqlite") as a, sqlite3.connect(copy / "audit.sqlite") as b:
        a.backup(b)
    (copy / "audit.jsonl").write_bytes((src / "audit.jsonl").read_bytes())
    audit = hub_stack.settings.audit
    config = make_config(**{"state_dir": str(copy), "audit.key_dir": str(audit.key_dir),
                            "audit.checkpoint_file": str(audit.checkpoint_file)})
    return str(config), copy


def test_cli_detects_a_dropped_last_record(hub_stack, hub_client, ldap_passwords, make_config,
                                           tmp_path):
    assert hub_client.login("alice", ldap_passwords["alice"]).status_code == 302
    config, copy = _copy_of_the_state(hub_stack, make_config, tmp_path)
    assert ecluse("audit", "--config", config, "verify").returncode == 0
    with sqlite3.connect(copy / "audit.sqlite") as c:
        last = c.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
        c.execute("DELETE FROM audit_events WHERE seq=?", (last,))
    lines = (copy / "audit.jsonl").read_text().splitlines(keepends=True)
    (copy / "audit.jsonl").write_text("".join(lines[:-1]))
    run = ecluse("audit", "--config", config, "verify")
    assert run.returncode == 1
    assert f"records {last} are missing" in run.stdout and "(truncated)" in run.stdout


def test_cli_detects_a_deletion_with_recomputed_hashes(hub_stack, hub_client, ldap_passwords,
                                                       make_config, tmp_path):
    hub_client.login("bob", "wrong")
    config, copy = _copy_of_the_state(hub_stack, make_config, tmp_path)
    with sqlite3.connect(copy / "audit.sqlite") as c:
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM audit_events ORDER BY seq")]
        failure = max(r["seq"] for r in rows if r["event"] == "login.failure")
        kept = [r for r in rows if r["seq"] != failure]
        c.execute("DELETE FROM audit_events")
        prev = "0" * 64
        for seq, r in enumerate(kept, 1):
            details = json.loads(r["details"])
            h = record_hash(seq, r["ts"], r["event"], r["actor"], r["project"], r["outcome"],
                            details, prev)
            c.execute("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?)",
                      (seq, r["ts"], r["event"], r["actor"], r["project"], r["outcome"],
                       r["details"], prev, h))
            prev = h
    (copy / "audit.jsonl").unlink()  # the attacker removes the mirror as well
    run = ecluse("audit", "--config", config, "verify")
    assert run.returncode == 1, run.stdout
    assert "edited (its content does not match its hash)" in run.stdout
    assert "hash differs from their signed checkpoint" in run.stdout
