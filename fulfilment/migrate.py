"""Database migrations without the source tree: `fulfil migrate`, `fulfil health`, the tests.

The alembic scripts are the top-level package `migrations` (the repository's migrations/
directory, shipped in the wheel with its versions as package data). Alembic finds them as the
package resource ``migrations:`` and the configuration is built here, in code, so no alembic.ini
is needed at run time: `pip install ticket-fulfilment` (or the wheel, or the Docker image) can
migrate a database from any working directory. alembic.ini stays for the `alembic` command
run from a checkout (new revisions, history); it points at the same directory.

Two `fulfil migrate` at once (a release step on two hosts, supervisord's and a deploy script's)
are safe: migrations/env.py holds a Postgres advisory lock for the migration transaction, so the
second waits and then finds the database at head.
"""

from __future__ import annotations

from alembic.config import Config

# `package:resource` notation (alembic.util.coerce_resource_to_filename): the directory of the
# importable package `migrations`, wherever it is installed.
SCRIPT_LOCATION = "migrations:"

# The advisory lock migrations/env.py holds while it migrates: "fulfmigr" as a bigint (not the
# scheduler's leader lock, fulfilment/scheduler/leadership.py).
MIGRATION_LOCK_KEY = 0x66756C666D696772


def alembic_config(database_url: str | None = None) -> Config:
    """An alembic Config for the packaged migrations; `database_url` becomes sqlalchemy.url."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    if database_url:
        # ConfigParser interpolation: a literal % (e.g. %2F in a password) must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # migrations/env.py must not reconfigure the caller's logging.
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Apply migrations up to `revision`; return the revision the database is at afterwards."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)
    return current_revision(database_url)


def downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    """The newest revision the installed code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
