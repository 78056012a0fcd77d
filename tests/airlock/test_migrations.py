"""Alembic: empty database to head and back, schema equal to the ORM models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ecluse.airlock import db
from ecluse.airlock.models import Base


def test_upgrade_from_empty_to_head_matches_models(db_url):
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"airlock_requests", "airlock_files", "airlock_reviews",
                "airlock_history"} <= tables
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": db.VERSION_TABLE})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
        db.upgrade(engine)  # idempotent
        db.downgrade(engine, "base")
        assert "airlock_requests" not in set(inspect(engine).get_table_names())
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_0008_marks_the_files_of_earlier_releases_released(db_url):
    """Requests released before per-file decisions released every file of their last
    version: 0008 marks those released, and nothing else (earlier versions, open
    requests)."""
    from sqlalchemy import text

    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0006_release_record")
        now = "2026-01-01 00:00:00"
        with engine.begin() as c:
            for rid, state, version in (("ar-rel", "released", 2), ("ar-open", "approved", 1)):
                c.execute(text(
                    "INSERT INTO airlock_requests (id, project, requester, title, justification,"
                    " state, version, created_at, updated_at) VALUES (:id, 'p', 'alice', 't',"
                    " 'j', :state, :v, :now, :now)"), {"id": rid, "state": state, "v": version,
                                                     "now": now})
            for rid, version in (("ar-rel", 1), ("ar-rel", 2), ("ar-open", 1)):
                c.execute(text(
                    "INSERT INTO airlock_files (request_id, version, name, sha256, size, "
                    "verdict, format, report, uploaded_by, created_at) VALUES (:rid, :v, "
                    "'t.csv', 'x', 1, 'pass', 'csv', '{}', 'alice', :now)"),
                    {"rid": rid, "v": version, "now": now})
        db.upgrade(engine)
        with engine.connect() as c:
            rows = c.execute(text("SELECT request_id, version, released FROM airlock_files "
                                  "ORDER BY request_id, version")).all()
        assert [(r[0], r[1], bool(r[2])) for r in rows] == [
            ("ar-open", 1, False), ("ar-rel", 1, False), ("ar-rel", 2, True)]
    finally:
        engine.dispose()


def test_0008_never_marks_a_supporting_file_released(db_url):
    """0007 (context, supporting files) comes first: a request released under it left
    its supporting files behind, and 0008 does not mark them released."""
    from sqlalchemy import text

    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0007_file_context")
        now = "2026-01-01 00:00:00"
        with engine.begin() as c:
            c.execute(text(
                "INSERT INTO airlock_requests (id, project, requester, title, justification,"
                " state, version, created_at, updated_at) VALUES ('ar-rel', 'p', 'alice', 't',"
                " 'j', 'released', 1, :now, :now)"), {"now": now})
            for name, supporting in (("t.csv", False), ("unrounded.csv", True)):
                c.execute(text(
                    "INSERT INTO airlock_files (request_id, version, name, sha256, size, "
                    "verdict, format, report, uploaded_by, created_at, supporting) VALUES "
                    "('ar-rel', 1, :name, 'x', 1, 'pass', 'csv', '{}', 'alice', :now, :sup)"),
                    {"name": name, "now": now, "sup": supporting})
        db.upgrade(engine)
        with engine.connect() as c:
            rows = c.execute(text("SELECT name, released FROM airlock_files "
                                  "ORDER BY name")).all()
        assert [(r[0], bool(r[1])) for r in rows] == [("t.csv", True),
                                                       ("unrounded.csv", False)]
    finally:
        engine.dispose()
