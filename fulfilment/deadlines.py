"""Near-deadline warnings: ordered purchases whose delivery deadline is close.

A purchase is watched once its order exists and until it is delivered: awaiting a
transfer (TBB) or awaiting its tickets (Ticketmaster: not fetched yet, or held back until
their delivery delay date), `state_machine.ORDERED`.  Each warning window
(DEADLINE_WARNING_HOURS, e.g. 24 and 2) is raised once per purchase: a history entry and
a `purchase.deadline_near` event, so the requesting service can nudge its customer to
accept the transfer, or learn that the tickets are not there yet.

A window is kept to hundredths of an hour everywhere: `deadline_flags.window_hours`
is numeric(8,2), so 0.333 is rounded to 0.33 (half up, as Postgres rounds) before it
is matched, flagged and reported.  Matching the unrounded value against the stored
one never succeeds: the purchase would come back every tick, taking a place in the
batch (and a row lock) from purchases still to be flagged.

A batch costs two statements whatever its size (issue 8; it was ~4 per flag, ORM work
included): DUE_FLAGS_SQL selects and locks the due (purchase, window) pairs with what
their events say, then RAISE_FLAGS_SQL writes the flags, their history rows and their
outbox events in one statement.  The rows are those `state_machine.flag_deadline`
writes for one flag (kind `deadline_flag`, event `purchase.deadline_near`, payload from
`state_machine.event_payload`): tests/integration/test_deadline_flags_batch.py compares them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from fulfilment import metrics, state_machine
from fulfilment.db import session_scope
from models import Purchase

# state_machine's logger: a flag logs the line `state_machine._record` logs for a history entry.
log = logging.getLogger(state_machine.__name__)

# The scale of deadline_flags.window_hours (numeric(8,2)).
HUNDREDTH = Decimal("0.01")

EVENT_TYPE = "purchase.deadline_near"

# The states watched, written into the SQL as literals: ix_purchases_awaiting_deadline's predicate
# names the same states (models/purchase.py), and the planner uses a partial index only for a
# query whose WHERE clause implies its predicate, which a bound parameter would not.
WATCHED_STATES = tuple(sorted(state.value for state in state_machine.ORDERED))
_WATCHED = ", ".join(f"'{state}'" for state in WATCHED_STATES)

# Uses ix_purchases_awaiting_deadline (partial, on delivery_deadline) and the flags' primary key.
# The windows arrive already rounded to hundredths; numeric against numeric, never float8.
# Also returns what the events report (the columns state_machine.event_payload reads) and the
# transaction's now(): the history rows' created_at, i.e. the events' occurred_at.
DUE_FLAGS_SQL = text(
    f"""
    SELECT p.id, w.hours, p.state, p.request_id, p.metadata, p.order_id, p.order_status, p.transfer_email,
           p.seat_range, p.unit_price, p.delivery_deadline, p.failure_code, p.failure_message, now() AS tx_now
      FROM purchases AS p
      JOIN unnest(CAST(:windows AS numeric(8,2)[])) AS w(hours)
        ON p.delivery_deadline <= now() + make_interval(secs => CAST(w.hours * 3600 AS float8))
     WHERE p.state IN ({_WATCHED})
       AND p.delivery_deadline <= now() + make_interval(secs => CAST(CAST(:widest AS numeric(8,2)) * 3600 AS float8))
       AND p.delivery_deadline > now()
       AND NOT EXISTS (
             SELECT 1 FROM deadline_flags AS f
              WHERE f.purchase_id = p.id AND f.window_hours = w.hours)
     ORDER BY p.delivery_deadline
     LIMIT :batch
       FOR UPDATE OF p SKIP LOCKED
    """
)

# One statement for the whole batch: the flags (the primary key decides, as in
# state_machine.flag_deadline: a pair flagged meanwhile is skipped), then a history row and an
# outbox event for each flag actually inserted.  The history ids are taken from the sequence
# first (`entries`, materialized once) so each event names its own row; both rows' created_at
# default to now(), which is the `tx_now` the payloads were built with (checked on return).
RAISE_FLAGS_SQL = text(
    """
    WITH wanted AS (
        SELECT w.*, p.payload
          FROM unnest(CAST(:purchase_ids AS uuid[]), CAST(:windows AS numeric(8,2)[]), CAST(:states AS text[]),
                      CAST(:reasons AS text[]), CAST(:event_ids AS uuid[]))
               WITH ORDINALITY AS w(purchase_id, window_hours, state, reason, event_id, position)
          JOIN jsonb_array_elements(CAST(:payloads AS jsonb)) WITH ORDINALITY AS p(payload, position) USING (position)
    ), flagged AS (
        INSERT INTO deadline_flags (purchase_id, window_hours)
        SELECT purchase_id, window_hours FROM wanted ORDER BY position
            ON CONFLICT DO NOTHING
        RETURNING purchase_id, window_hours
    ), entries AS MATERIALIZED (
        SELECT nextval(pg_get_serial_sequence('purchase_transitions', 'id')) AS transition_id, w.*
          FROM wanted AS w
          JOIN flagged AS f USING (purchase_id, window_hours)
         ORDER BY w.position
    ), history AS (
        INSERT INTO purchase_transitions (id, kind, purchase_id, from_state, to_state, reason, attempt, message_id)
        SELECT transition_id, 'deadline_flag', purchase_id, state, state, reason, 0, NULL
          FROM entries ORDER BY position
        RETURNING id, created_at
    ), events AS (
        INSERT INTO outbox_events (id, transition_id, purchase_id, routing_key, payload)
        SELECT event_id, transition_id, purchase_id, :event_type, payload
          FROM entries ORDER BY position
        RETURNING id
    )
    SELECT e.position, h.created_at, (SELECT count(*) FROM events) AS events
      FROM entries AS e
      JOIN history AS h ON h.id = e.transition_id
     ORDER BY e.position
    """
)


@dataclass(frozen=True, slots=True)
class _DueFlag:
    """A row of DUE_FLAGS_SQL: what `state_machine.event_payload` reads of a purchase, and the window."""

    id: uuid.UUID
    hours: Decimal
    state: str
    request_id: str
    request_metadata: dict[str, Any] | None
    order_id: str | None
    order_status: str | None
    transfer_email: str | None
    seat_range: str | None
    unit_price: Decimal | None
    delivery_deadline: dt.datetime
    failure_code: str | None
    failure_message: str | None
    tx_now: dt.datetime


def window_hours(hours: float | Decimal | str) -> Decimal:
    """A window as deadline_flags stores it: hundredths of an hour, rounded half up (like Postgres)."""
    return Decimal(str(hours)).quantize(HUNDREDTH, rounding=ROUND_HALF_UP)


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def flag_near_deadlines(windows_hours: Iterable[float], *, batch_size: int) -> int:
    """Flag one batch of purchases that entered a warning window; return how many flags were raised."""
    windows = sorted({rounded for w in windows_hours if (rounded := window_hours(w)) > 0})
    if not windows:
        return 0
    with session_scope() as session:
        rows = session.execute(
            DUE_FLAGS_SQL, {"windows": windows, "widest": max(windows), "batch": batch_size}
        ).all()
        return raise_flags(session, rows)


def raise_flags(session: Session, rows: Sequence[Row[Any]] | Sequence[tuple[Any, ...]]) -> int:
    """Write the flags, history rows and events of DUE_FLAGS_SQL rows (locked by the caller's
    transaction) in one statement; returns how many flags were new."""
    if not rows:
        return 0
    due = [_DueFlag(*row) for row in rows]
    purchase_ids, windows, states, reasons, event_ids, payloads = [], [], [], [], [], []
    for flag in due:
        state = state_machine.State(flag.state)
        # float(Decimal("0.33")) is stored back as exactly 0.33, and reads 0.33 in the event.
        hours = float(flag.hours)
        deadline = _utc(flag.delivery_deadline)
        reason = f"delivery deadline {deadline} is within {hours:g} h"
        event_id = uuid.uuid4()
        payload = state_machine.event_payload(event_id, cast(Purchase, flag), state, state, reason, flag.tx_now,
                                              EVENT_TYPE)
        payload["deadline_warning"] = {"window_hours": hours, "delivery_deadline": deadline}
        purchase_ids.append(flag.id)
        windows.append(flag.hours)
        states.append(state.value)
        reasons.append(reason)
        event_ids.append(event_id)
        payloads.append(payload)
    written = session.execute(RAISE_FLAGS_SQL, {
        "purchase_ids": purchase_ids, "windows": windows, "states": states, "reasons": reasons,
        # One JSON array, not a jsonb[]: psycopg would escape every quote of every payload.
        "event_ids": event_ids, "payloads": json.dumps(payloads), "event_type": EVENT_TYPE,
    }).all()
    for position, created_at, events in written:
        flag = due[position - 1]
        if created_at != flag.tx_now or events != len(written):  # the events' occurred_at is the row's
            raise RuntimeError(f"deadline flags: history row of {flag.id} created at {created_at}, "
                               f"its event says {flag.tx_now}; {events} events for {len(written)} rows")
        log.info("purchase %s: %s -> %s (%s)", flag.id, flag.state, flag.state, reasons[position - 1])
    if written:
        metrics.TRANSITIONS.labels(EVENT_TYPE).inc(len(written))
    return len(written)
