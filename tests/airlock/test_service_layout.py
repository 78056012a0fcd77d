"""The airlock's files live in its own folder: a database of the earlier layout moves there."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ecluse.airlock.service import AirlockService
from ecluse.settings.airlock import move_legacy_database


def _legacy_db(path: Path) -> sqlite3.Connection:
    """A WAL database whose last rows are in the -wal file only (no checkpoint yet)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(50)])
    conn.commit()
    return conn


def test_the_legacy_database_moves_with_its_wal_and_loses_nothing(tmp_path):
    old, new = tmp_path / "state" / "airlock.sqlite", tmp_path / "state" / "airlock" / "a.sqlite"
    old.parent.mkdir()
    keep = _legacy_db(old)  # held open: the wal is not folded back on close
    assert Path(f"{old}-wal").stat().st_size > 0
    import shutil

    snapshot = tmp_path / "snap"  # the files as a stopped service left them
    snapshot.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy2(f"{old}{suffix}", snapshot / f"airlock.sqlite{suffix}")
    keep.close()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy2(snapshot / f"airlock.sqlite{suffix}", f"{old}{suffix}")
    move_legacy_database(old, new)
    assert not old.exists() and not Path(f"{old}-wal").exists()
    assert sqlite3.connect(new).execute("SELECT count(*) FROM t").fetchone() == (50,)
    # once moved, a new legacy file (e.g. restored by mistake) never overwrites it
    old.write_text("stale")
    move_legacy_database(old, new)
    assert old.read_text() == "stale"
    assert sqlite3.connect(new).execute("SELECT count(*) FROM t").fetchone() == (50,)


def test_the_service_moves_its_database_into_its_folder(tmp_path):
    import yaml

    from ecluse.config import load_settings
    from tests.airlock.hubstack import ECLUSE_YAML, PROJECTS

    (tmp_path / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = tmp_path / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
    settings = load_settings(str(cfg))
    service = AirlockService.from_settings(settings)
    alice = service.identity("alice", ["cardio-los"])
    rid = service.create_request(alice, project="cardio-los", title="t", justification="j")["id"]
    service.close()
    state, folder = settings.state_dir, settings.state_dir / "airlock"
    (folder / "airlock.sqlite").rename(state / "airlock.sqlite")  # the earlier layout
    service = AirlockService.from_settings(settings)
    try:
        assert (folder / "airlock.sqlite").exists() and not (state / "airlock.sqlite").exists()
        assert service.get_request(alice, rid)["title"] == "t"
    finally:
        service.close()
