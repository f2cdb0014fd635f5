"""Engine and sessions: one engine per process, created lazily from the settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from fulfilment.settings import get_database_settings


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    # connect_timeout and TCP keepalives: a database host that drops packets (instead of refusing
    # connections) fails a connection attempt in seconds and a dead peer in under a minute.
    engine = create_engine(url, pool_size=10, max_overflow=10, future=True, connect_args=CONNECT_ARGS)
    _ping_when_idle(engine)
    return engine


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, paid only where it helps: a Postgres restart must only
    delay work, not break every pooled connection, so a connection that sat in the pool is
    pinged (one round trip) before use; one checked in less than PING_IDLE_SECONDS ago was
    working a moment ago and is handed out as it is (issue 8: pool_pre_ping cost a round trip
    per statement of a step, five per purchase).  A failed ping makes the pool open a new
    connection (DisconnectionError, retried by the pool); the rare connection that died in the
    last second fails its statement, and SQLAlchemy then replaces every pooled connection.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def fresh(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:  # a new one, or one just used
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        returned = record.info.get("checked_in")
        if returned is not None and time.monotonic() - returned < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {type(error).__name__}") from error


CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                "keepalives_count": 3}


def get_engine() -> Engine:
    return engine_for(get_database_settings().database_url)


@lru_cache(maxsize=4)
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: committed if the block succeeds, rolled back if it raises."""
    session = _factory(get_database_settings().database_url)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextmanager
def autocommit() -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection on which every statement is its own transaction (no BEGIN/COMMIT
    round trips), used through psycopg directly: for statements complete alone, the state
    machine's (statements.py), on the hot path, where SQLAlchemy's per-statement work cost
    more than the statement (issue 8).

    A connection that broke (the server went away) is discarded, and so is every other
    connection of the pool, as SQLAlchemy does after a disconnect: they are checked again
    (connected anew) before use.  psycopg's errors propagate as they are.
    """
    engine = get_engine()
    pooled = engine.raw_connection()
    connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        connection.autocommit = True
        yield connection
    except psycopg.Error as error:
        if connection.broken or connection.closed:
            pooled.invalidate(error)
            engine.dispose(close=False)  # the others were probably dropped too: replaced on checkout
        raise
    finally:
        try:
            if not (connection.broken or connection.closed):
                connection.autocommit = False  # the pool's other users expect transactions
        finally:
            pooled.close()
