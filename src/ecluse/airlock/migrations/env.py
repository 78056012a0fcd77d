"""Alembic environment of the airlock: runs on the engine the caller passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ecluse.airlock.db import VERSION_TABLE
from ecluse.airlock.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:  # pragma: no cover - plain `alembic` command line
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()


if context.is_offline_mode():  # pragma: no cover
    raise SystemExit("offline migrations are not supported")
run_migrations_online()
