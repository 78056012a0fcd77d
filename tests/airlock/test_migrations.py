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
