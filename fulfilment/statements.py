"""The state machine's hot statements, written out: one round trip each (issue 8).

A step used to cost ~31 statements and ~10 transactions per purchase through the ORM (a
claim, a re-read, the guarded update, another re-read, the history insert, the outbox
insert, each its own round trip, plus BEGIN and COMMIT).  Here every change a step makes
is one statement: the guarded UPDATE and, in data-modifying CTEs hanging off its
RETURNING, the history row, the outbox event and any row that belongs with it (the quote
taken).  If the guard finds nothing (another owner, another state, another quote) the
CTEs insert nothing and no row comes back: all or nothing, in one statement, so the steps
run them on autocommit connections (`db.autocommit()`), without BEGIN/COMMIT.

The SQL is built once per shape (which columns change, whether the lease is kept) and
cached; psycopg prepares a statement after it ran five times on a connection.  Column
names come from the mapped `Purchase`, so the ORM model stays the one description of the
table.  The event's `occurred_at` is the history row's `created_at`, formatted by
Postgres exactly as `state_machine.utc_text` formats a timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy.orm import configure_mappers

from models import Purchase
from models.base import Base

configure_mappers()  # purchase_from() builds instances without the constructor, which would do it

# ORM attribute -> column (they differ for `request_metadata`, stored as `metadata`).
COLUMNS: dict[str, str] = {attr.key: attr.columns[0].name for attr in Purchase.__mapper__.column_attrs}
_RETURNING = ", ".join(f"{column} AS {key}" if key != column else column for key, column in COLUMNS.items())

# `to_char` pattern of state_machine.utc_text: 2026-11-30T02:52:46.123456Z.
UTC_TEXT = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

# The caller's view of the purchase: every change under a claim is conditional on it (fencing).
FENCE = """id = %(f_id)s AND state = %(f_state)s
       AND claim_token IS NOT DISTINCT FROM CAST(%(f_token)s AS uuid)
       AND quote_id IS NOT DISTINCT FROM CAST(%(f_quote)s AS varchar)"""


def fence_params(purchase: Purchase) -> dict[str, Any]:
    return {"f_id": purchase.id, "f_state": str(purchase.state), "f_token": purchase.claim_token,
            "f_quote": purchase.quote_id}


def _column(key: str) -> str:
    try:
        return COLUMNS[key]
    except KeyError:
        raise ValueError(f"purchases has no column {key!r}") from None


def change_params(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of the changed columns (JSON columns' values wrapped for psycopg)."""
    return {f"c_{key}": Jsonb(value) if isinstance(value, (dict, list)) else value for key, value in changes.items()}


def _sets(changes: tuple[str, ...]) -> str:
    return "".join(f", {_column(key)} = %(c_{key})s" for key in changes)


def _seconds(param: str) -> str:
    """now() + the parameter's seconds; NULL if the parameter is NULL."""
    return f"now() + CAST(%({param})s AS float8) * interval '1 second'"


@dataclass(frozen=True, slots=True)
class Row:
    """A row inserted with a transition, only if the transition happens (its `purchase_id`
    is the purchase's)."""

    table: str
    values: Mapping[str, Any]

    def signature(self) -> tuple[str, tuple[str, ...]]:
        return self.table, tuple(self.values)

    def params(self) -> dict[str, Any]:
        return {f"r_{key}": value for key, value in self.values.items()}


@lru_cache(maxsize=256)
def transition_sql(changes: tuple[str, ...], *, hold_claim: bool,
                   insert_with: tuple[str, tuple[str, ...]] | None) -> str:
    """The guarded update, its history row and outbox event (and `insert_with`) in one statement."""
    lease = (f"claimed_until = {_seconds('hold')}" if hold_claim
             else "claimed_until = NULL, claim_token = NULL")
    extra = ""
    if insert_with is not None:
        table, keys = insert_with
        known = Base.metadata.tables.get(table)
        if known is None or "purchase_id" not in known.c or not set(keys) <= set(known.c.keys()):
            raise ValueError(f"cannot insert {keys} into {table!r} with a transition")
        names = ", ".join(keys)
        values = ", ".join(f"%(r_{key})s" for key in keys)
        extra = f"""
    , extra AS (
        INSERT INTO {table} (purchase_id, {names})
        SELECT id, {values} FROM moved
    )"""
    return f"""
    WITH moved AS (
        UPDATE purchases
           SET state = %(to_state)s, state_changed_at = now(), updated_at = now(), attempts = 0,
               next_action_at = {_seconds('next_in')}, nudged_at = NULL, {lease}{_sets(changes)}
         WHERE {FENCE}
        RETURNING *
    ), {_recorded('moved')}{extra}
    SELECT {_RETURNING} FROM moved
    """


def _recorded(source: str) -> str:
    """The history row and the outbox event (CTEs `entry` and `event`) of the purchase row the
    CTE `source` returns; nothing if it returns none.  Parameters: from_state, reason, attempt,
    message_id, event_id, event_type and payload (the event without occurred_at)."""
    return f"""entry AS (
        INSERT INTO purchase_transitions (purchase_id, kind, from_state, to_state, reason, attempt, message_id)
        SELECT id, 'transition', CAST(%(from_state)s AS varchar), state, CAST(%(reason)s AS text),
               CAST(%(attempt)s AS integer), CAST(%(message_id)s AS varchar)
          FROM {source}
        RETURNING id, purchase_id, created_at
    ), event AS (
        INSERT INTO outbox_events (id, transition_id, purchase_id, routing_key, payload)
        SELECT CAST(%(event_id)s AS uuid), entry.id, entry.purchase_id, CAST(%(event_type)s AS varchar),
               CAST(%(payload)s AS jsonb) || jsonb_build_object('occurred_at', {UTC_TEXT.format('entry.created_at')})
          FROM entry
    )"""


@lru_cache(maxsize=16)
def create_sql(keys: tuple[str, ...], *, claimed: bool = False) -> str:
    """A new purchase (RECEIVED), its history row and event; nothing if its request_id exists.
    Returns every column.  `claimed`: born under a claim (lease `lease`, token `token`), as if
    the quote step had claimed it at once."""
    names = ", ".join(_column(key) for key in keys)
    values = ", ".join(f"%(c_{key})s" for key in keys)
    claim_names = ", claimed_until, claim_token, attempts" if claimed else ""
    claim_values = f", {_seconds('lease')}, %(token)s, 1" if claimed else ""
    return f"""
    WITH born AS (
        INSERT INTO purchases ({names}, state, next_action_at{claim_names})
        VALUES ({values}, 'received', {_seconds('next_in')}{claim_values})
        ON CONFLICT (request_id) DO NOTHING
        RETURNING *
    ), {_recorded('born')}
    SELECT {_RETURNING} FROM born
    """


@lru_cache(maxsize=4)
def claim_sql(*, only_if_due: bool) -> str:
    due = " AND next_action_at <= now()" if only_if_due else ""
    return f"""
    UPDATE purchases
       SET claimed_until = {_seconds('lease')}, claim_token = %(token)s, attempts = attempts + 1, updated_at = now()
     WHERE id = %(id)s AND state = ANY(CAST(%(states)s AS text[]))
       AND (claimed_until IS NULL OR claimed_until < now()){due}
    RETURNING {_RETURNING}
    """


@lru_cache(maxsize=64)
def release_sql(changes: tuple[str, ...]) -> str:
    """Give the lease back and set the next action time (fenced); other columns may change too."""
    return f"""
    UPDATE purchases
       SET claimed_until = NULL, claim_token = NULL, nudged_at = NULL, next_action_at = {_seconds('next_in')},
           updated_at = now(){_sets(changes)}
     WHERE {FENCE}
    """


@lru_cache(maxsize=16)
def save_sql(changes: tuple[str, ...]) -> str:
    """Change columns of a claimed purchase and keep the lease (fenced): progress a step must not
    lose if it dies before its transition (e.g. a cart made at the partner)."""
    return f"""
    UPDATE purchases SET updated_at = now(){_sets(changes)}
     WHERE {FENCE}
    RETURNING {_RETURNING}
    """


_NEW_PURCHASE = Purchase.__mapper__.class_manager.new_instance


def purchase_from(row: Mapping[str, Any]) -> Purchase:
    """A detached Purchase from a RETURNING row of this module's statements (every column).

    Built as the ORM builds a loaded row (a new instance, its dict filled), not through the
    constructor, which costs 20 times as much (~35 µs, several times per purchase)."""
    purchase = _NEW_PURCHASE()
    purchase.__dict__.update(row)
    return purchase

