"""Engine and sessions: one engine per process, created lazily from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from fulfilment.settings import get_database_settings


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    # pool_pre_ping: a Postgres restart must only delay work, not break every pooled connection.
    # connect_timeout and TCP keepalives: a database host that drops packets (instead of refusing
    # connections) fails a connection attempt in seconds and a dead peer in under a minute.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, future=True,
                         connect_args=CONNECT_ARGS)


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
