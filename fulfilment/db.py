"""Engine and sessions: one engine per process, created lazily from the settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from fulfilment.outages import DATABASE
from fulfilment.settings import get_database_settings


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    # connect_timeout and TCP keepalives: a database host that drops packets (instead of refusing
    # connections) fails a connection attempt in seconds and a dead peer in under a minute.
    engine = create_engine(url, pool_size=10, max_overflow=10, future=True, connect_args=CONNECT_ARGS)
    _ping_when_idle(engine)
    _replace_when_not_primary(engine)
    return engine


def _replace_when_not_primary(engine: Engine) -> None:
    """A server that answers "read-only transaction" was demoted (a failover): treat it as a lost
    connection, so the pool replaces its connections and the next ones find the new primary."""

    @event.listens_for(engine, "handle_error")
    def not_primary(context: Any) -> None:
        if not_primary_error(context.original_exception):
            context.is_disconnect = True


def not_primary_error(error: BaseException | None) -> bool:
    from fulfilment.dependencies import NOT_PRIMARY_SQLSTATES

    return isinstance(error, psycopg.Error) and error.sqlstate in NOT_PRIMARY_SQLSTATES


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
    def connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        DATABASE.recovered()  # the "back" line of a database outage (fulfilment/outages.py)

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def fresh(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:  # a new one, or one just used
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        try:
            _ping_if_idle(engine, dbapi_connection, record.info.get("checked_in"))
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {type(error).__name__}") from error


def _ping_if_idle(engine: Engine, dbapi_connection: Any, last_used: float | None) -> None:
    """Ping a connection unused for PING_IDLE_SECONDS (or never used); raises if it does not answer."""
    if last_used is not None and time.monotonic() - last_used < PING_IDLE_SECONDS:
        return
    engine.dialect.do_ping(dbapi_connection)


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


# The steps' connections: one per worker thread (db.autocommit()).
_thread = threading.local()


@contextmanager
def autocommit() -> Iterator[psycopg.Connection[Any]]:
    """This thread's own connection, on which every statement is its own transaction (no
    BEGIN/COMMIT round trips), used through psycopg directly: for statements complete alone,
    the state machine's (statements.py) on the steps' hot path, where SQLAlchemy's work per
    statement and a pool checkout cost more than the statement (issue 8).

    One connection per thread that uses it (a dramatiq worker thread), opened by the engine
    (same URL and connect arguments), kept out of the pool, pinged when it sat idle for
    PING_IDLE_SECONDS like the pool's.  A connection that broke (the server went away) is
    closed and replaced on next use, and the pool's connections are replaced too, as
    SQLAlchemy does after a disconnect.  psycopg's errors propagate as they are.
    """
    connection = _thread_connection()
    try:
        yield connection
    except psycopg.Error as error:
        if connection.broken or connection.closed or not_primary_error(error):
            _drop_thread_connection()
            get_engine().dispose(close=False)  # the pooled ones were probably dropped too
        raise
    finally:
        _thread.used = time.monotonic()


def _thread_connection() -> psycopg.Connection[Any]:
    url = get_database_settings().database_url
    held: tuple[str, PoolProxiedConnection, psycopg.Connection[Any]] | None = getattr(_thread, "held", None)
    if held is not None:
        held_url, _, connection = held
        if held_url == url and not (connection.broken or connection.closed) and _alive(url, connection):
            return connection
        _drop_thread_connection()
    opened = engine_for(url).raw_connection()
    connection = opened.driver_connection  # type: ignore[assignment]
    opened.detach()  # this thread's, not the pool's: closed when dropped
    connection.autocommit = True
    _thread.held = (url, opened, connection)
    return connection


def _alive(url: str, connection: psycopg.Connection[Any]) -> bool:
    """This thread's connection answers, or was used less than PING_IDLE_SECONDS ago (the pool's rule)."""
    try:
        _ping_if_idle(engine_for(url), connection, getattr(_thread, "used", 0.0))
    except psycopg.Error:
        return False
    return True


def _drop_thread_connection() -> None:
    held = getattr(_thread, "held", None)
    _thread.held = None
    if held is not None:
        try:
            held[1].close()
        except psycopg.Error:
            pass
