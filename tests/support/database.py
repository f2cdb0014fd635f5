"""Database faults for tests, on the real Postgres (never a mock)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import text

from fulfilment.db import get_engine
from fulfilment.state_machine import State
from tests.support.factories import reload


def wait_for_state(purchase_id: uuid.UUID, state: State, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (_exists(purchase_id) and reload(purchase_id).state == state):
        assert time.monotonic() < deadline, f"never reached {state}"
        time.sleep(0.05)


def cut_the_write_of(purchase_id: uuid.UUID, *, timeout: float = 60) -> None:
    """Hold the purchase's row until a worker's write of it waits on the lock, then terminate that
    very connection (a reset, a failover mid-write) and let go of the row."""
    deadline = time.monotonic() + timeout
    with get_engine().connect() as locker:
        locker.execute(text("SELECT 1 FROM purchases WHERE id = :id FOR UPDATE"), {"id": purchase_id})
        waiting = None
        while waiting is None:
            assert time.monotonic() < deadline, "no write of the purchase came"
            waiting = locker.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()")).scalar()
            time.sleep(0.02)
        locker.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})
        locker.rollback()


def _exists(purchase_id: uuid.UUID) -> bool:
    with get_engine().connect() as connection:
        return connection.execute(text("SELECT 1 FROM purchases WHERE id = :id"), {"id": purchase_id}).first() is not None
