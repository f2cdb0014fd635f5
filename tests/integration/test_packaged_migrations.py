"""fulfilment/migrate.py: the packaged migrations are the repository's, and two at once are safe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from fulfilment import migrate
from tests.support import servers


def test_the_packaged_migrations_are_the_checkouts() -> None:
    packaged = ScriptDirectory.from_config(migrate.alembic_config())
    from_ini = ScriptDirectory.from_config(Config(str(servers.REPO / "alembic.ini")))
    assert Path(packaged.dir).resolve() == Path(from_ini.dir).resolve() == servers.REPO / "migrations"
    assert migrate.head_revision() == from_ini.get_current_head()
    assert [r.revision for r in packaged.walk_revisions()] == [r.revision for r in from_ini.walk_revisions()]


def test_migrate_waits_for_the_migration_lock(tmp_path: Path) -> None:
    """migrations/env.py takes the advisory lock before it reads the database's revision."""
    database = servers.create_database("fulfil_migrlock")
    try:
        with psycopg.connect(database.dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
            run = subprocess.Popen([sys.executable, "-m", "fulfilment.cli", "migrate"], cwd=tmp_path,
                                   env={**os.environ, "DATABASE_URL": database.url}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(4)
                assert run.poll() is None, run.communicate()
                assert migrate.current_revision(database.url) is None
            finally:
                holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert migrate.current_revision(database.url) == migrate.head_revision()
    finally:
        servers.drop_database(database)


def test_two_migrations_at_once_on_a_fresh_database(tmp_path: Path) -> None:
    """Two release steps racing (two hosts, or supervisord's fulfil-migrate and a deploy script):
    the advisory lock in migrations/env.py makes the second wait, then find the database at head.
    (Processes, not threads: alembic's `context` is process-global.)"""
    database = servers.create_database("fulfil_migr2")
    env = {**os.environ, "DATABASE_URL": database.url}
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "fulfilment.cli", "migrate"], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
        head = migrate.head_revision()
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, err
            assert f"database at head ({head})" in out
        assert migrate.current_revision(database.url) == head
        # And down and up again through the same packaged configuration.
        migrate.downgrade(database.url, "base")
        assert migrate.current_revision(database.url) is None
        assert migrate.upgrade(database.url) == head
    finally:
        servers.drop_database(database)
