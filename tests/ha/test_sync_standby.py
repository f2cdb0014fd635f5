"""Why the order intent must be on a synchronous standby (design invariants 1 and 11), shown on
the real Patroni pair.

The order step commits QUOTED -> ORDERING (the intent) before it calls the partner.  The test
keeps that commit from the standby, commits the intent through the state machine, kills the
primary (kill -9) and lets Patroni promote the standby:

- asynchronous replication (the standby's replication connection is cut and its role refused,
  as a standby lagging behind a network fault): the commit returns at once, the promoted standby
  never saw it, and the new primary says `quoted` -- the purchase a worker would quote and order
  again, although the partner call may have gone out: two orders.
- synchronous replication (Patroni `synchronous_mode: true`, the stack's setting; the standby's
  WAL receiver frozen with SIGSTOP): the commit does not return while the standby cannot confirm
  it, so the partner call cannot start; once the standby confirms, the promoted standby says
  `ordering`, and the step resolves the order by asking the partner (invariant 1), never by
  ordering again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from fulfilment.db import get_engine, session_scope
from fulfilment.state_machine import State, transition
from tests.conftest import environment
from tests.ha.conftest import ha
from tests.support import factories

SUPER = "postgresql://postgres:ha-super@127.0.0.1:{port}/postgres"


def port_of(node: str) -> int:
    return 31430 + int(node)


def wait(what: str, check, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001  servers come and go during a failover
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def primary() -> str:
    return ha("primary").strip()


def synchronous(on: bool) -> None:
    ha("patronictl", "edit-config", "--force", "-s", f"synchronous_mode={'true' if on else 'false'}")

    def settled() -> bool:
        with psycopg.connect(SUPER.format(port=port_of(primary())), autocommit=True) as connection:
            names = connection.execute("SHOW synchronous_standby_names").fetchone()
            states = connection.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
        return bool(names and names[0]) == on and bool(states) and all(
            (state == "sync") == on for (state,) in states)

    wait(f"synchronous_mode={on} to apply", settled)


def admin(node: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(SUPER.format(port=port_of(node)), autocommit=True) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def cut_replication(old: str) -> None:
    """The standby stops receiving: its role may no longer log in, its walsender is ended."""
    admin(old, "ALTER ROLE replicator NOLOGIN")
    time.sleep(1)  # that change itself reaches the standby
    admin(old, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    wait("the standby to be cut off", lambda: admin(old, "SELECT count(*) FROM pg_stat_replication") == [(0,)], 30)


def wal_receiver_pid(standby: str) -> int:
    with psycopg.connect(SUPER.format(port=port_of(standby)), autocommit=True) as connection:
        row = connection.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone()
    assert row is not None, "the standby has no WAL receiver"
    return int(row[0])


@pytest.fixture
def ha_db(ha_stack: dict[str, str], ha_database: str) -> Iterator[str]:
    from fulfilment.db import engine_for

    with environment({"DATABASE_URL": ha_database, "BROKER_URL": ha_stack["BROKER_URL"],
                      "TBB_BASE_URL": "http://127.0.0.1:1", "TBB_CLIENT_ID": "a", "TBB_CLIENT_SECRET": "b"}):
        yield ha_database
    engine_for(ha_database).dispose()
    wait("a primary", lambda: primary() != "", 90)
    admin(primary(), "ALTER ROLE replicator LOGIN")
    ha("start-pg", "1")
    ha("start-pg", "2")
    wait("the pair to be whole again", lambda: "replica" in ha("status") and "primary" in ha("status"), 180)
    synchronous(True)


def quoted_purchase() -> uuid.UUID:
    purchase_id = factories.stored_purchase()
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET state = 'quoted', quote_id = 'Q-HA', "
                             "quote_expires_at = now() + interval '1 hour' WHERE id = :id"), {"id": purchase_id})
    return purchase_id


def commit_intent(purchase_id: uuid.UUID) -> None:
    """What the order step commits before its partner call."""
    with session_scope() as session:
        purchase = factories.reload(purchase_id)
        transition(session, purchase, State.ORDERING, reason="ordering with quote Q-HA", next_action_in=60)


def state_after_failover(purchase_id: uuid.UUID, old: str) -> str:
    ha("failover")
    wait("Patroni to promote the standby", lambda: primary() not in ("", old))
    states: list[str] = []

    def read() -> bool:  # Patroni names the new primary a moment before it accepts connections
        get_engine().dispose()
        with session_scope() as session:
            states.append(str(session.execute(text("SELECT state FROM purchases WHERE id = :id"),
                                              {"id": purchase_id}).scalar_one()))
        return True

    wait("the promoted standby to answer", read, 60)
    return states[-1]


def test_asynchronous_standby_loses_the_order_intent_and_the_purchase_would_be_ordered_again(ha_db: str) -> None:
    synchronous(False)
    purchase_id = quoted_purchase()
    old = primary()
    time.sleep(2)  # the quoted purchase reaches the standby
    cut_replication(old)
    started = time.monotonic()
    commit_intent(purchase_id)
    assert time.monotonic() - started < 2, "an asynchronous commit does not wait for the standby"
    assert factories.reload(purchase_id).state == "ordering"
    assert state_after_failover(purchase_id, old) == "quoted", \
        "the promoted asynchronous standby was expected to have lost the intent"


def test_synchronous_standby_holds_the_commit_until_confirmed_and_keeps_the_intent(ha_db: str) -> None:
    synchronous(True)
    purchase_id = quoted_purchase()
    old = primary()
    standby = "2" if old == "1" else "1"
    receiver = wal_receiver_pid(standby)
    os.kill(receiver, signal.SIGSTOP)
    committed = threading.Event()
    worker = threading.Thread(target=lambda: (commit_intent(purchase_id), committed.set()), daemon=True)
    try:
        worker.start()
        assert not committed.wait(5), "a synchronous commit must wait for the standby's confirmation"
    finally:
        os.kill(receiver, signal.SIGCONT)
    assert committed.wait(30), "the commit returns once the standby confirms it"
    assert state_after_failover(purchase_id, old) == "ordering"
