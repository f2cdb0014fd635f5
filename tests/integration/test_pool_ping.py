"""The pool pings a connection that sat idle, and only such a one (fulfilment/db.py, issue 8).

A backend killed while its connection waits in the pool (a Postgres restart, a failover, an
idle timeout) must cost nothing: the ping fails and the pool opens a fresh connection.  A
connection used a moment ago is handed out without a round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from fulfilment import db
from tests.support import servers


@pytest.fixture
def engine(database: servers.TestDatabase) -> Iterator[Engine]:
    engine = db.engine_for.__wrapped__(database.url)  # the product's engine, not the cached one
    try:
        yield engine
    finally:
        engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    with psycopg.connect(servers.pg_admin_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    time.sleep(0.2)  # the backend is gone once the signal is handled


def test_a_connection_whose_backend_died_in_the_pool_is_replaced(engine: Engine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.1)
    first = backend_pid(engine)
    terminate(first)
    time.sleep(0.2)  # idle for longer than PING_IDLE_SECONDS: pinged, found dead, replaced
    second = backend_pid(engine)
    assert second != first


def test_a_connection_used_a_moment_ago_is_not_pinged(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 60.0)
    pings: list[object] = []
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(connection) or True)
    backend_pid(engine)  # a new connection: nothing to ping
    backend_pid(engine)  # checked in a moment ago: handed out as it is
    assert pings == []

    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)
    backend_pid(engine)
    assert len(pings) == 1


def test_a_backend_that_died_a_moment_ago_fails_one_statement_and_the_pool_recovers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 60.0)
    terminate(backend_pid(engine))
    with pytest.raises(Exception) as failed, engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert getattr(failed.value, "connection_invalidated", False)
    assert backend_pid(engine) > 0  # the invalidated pool opened a fresh connection


def test_a_threads_autocommit_connection_whose_server_went_away_is_replaced(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps' connections (db.autocommit(): one per thread, psycopg directly): one that sat
    idle is pinged and replaced if dead; one used a moment ago fails its statement with psycopg's
    error (the message is retried) and is replaced on next use."""
    with db.autocommit() as connection:
        pid = connection.info.backend_pid
        assert connection.autocommit
    with db.autocommit() as again:
        assert again is connection  # the thread's own, kept

    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 60.0)
    terminate(pid)
    with pytest.raises(psycopg.OperationalError), db.autocommit() as connection:  # used a moment ago: no ping
        connection.execute("SELECT 1")
    with db.autocommit() as connection:
        assert connection.info.backend_pid != pid
        assert connection.execute("SELECT 1").fetchone() == (1,)
        pid = connection.info.backend_pid

    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)
    terminate(pid)
    with db.autocommit() as connection:  # idle: pinged, found dead, replaced before use
        assert connection.execute("SELECT 1").fetchone() == (1,)
        assert connection.info.backend_pid != pid
    with db.session_scope() as session:  # the pool's connections still run transactions
        assert session.execute(text("SELECT 1")).scalar_one() == 1
        assert not session.connection().connection.driver_connection.autocommit


def test_a_connection_to_a_server_that_became_read_only_is_replaced(engine: Engine) -> None:
    """A failover demotes the old primary: its connections answer 25006 (read-only transaction).
    That is an outage (the step waits and retries), and the pool replaces its connections, so the
    next write goes wherever libpq's target_session_attrs=read-write finds the primary."""
    from sqlalchemy import exc

    from fulfilment.dependencies import is_database_unavailable

    with engine.connect() as connection:
        demoted = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        connection.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
        connection.commit()
    with pytest.raises(exc.DBAPIError) as refused, engine.connect() as connection:
        assert int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one()) == demoted
        connection.execute(text("CREATE TEMPORARY TABLE written (x int)"))
    assert refused.value.connection_invalidated and is_database_unavailable(refused.value)
    assert backend_pid(engine) != demoted
