"""Migrations build the schema from nothing, and agree with the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from models import Base
from tests.support import servers


def test_models_and_migrations_agree(database: servers.TestDatabase) -> None:
    engine = create_engine(database.url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_upgrade_on_an_empty_database_then_downgrade_and_upgrade_again() -> None:
    database = servers.create_database("fulfil_migr")
    try:
        servers.migrate(database)
        engine = create_engine(database.url)
        tables = set(inspect(engine).get_table_names())
        assert {"purchases", "partner_quotes", "purchase_transitions", "outbox_events", "rejected_requests"} <= tables
        engine.dispose()

        from alembic import command
        from alembic.config import Config

        config = Config(str(servers.REPO / "alembic.ini"))
        config.set_main_option("script_location", str(servers.REPO / "migrations"))
        config.set_main_option("sqlalchemy.url", database.url)
        config.attributes["configure_logging"] = False
        command.downgrade(config, "base")
        engine = create_engine(database.url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        command.upgrade(config, "head")
    finally:
        servers.drop_database(database)
