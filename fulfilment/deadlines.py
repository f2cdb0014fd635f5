"""Near-deadline warnings: purchases awaiting transfer whose delivery deadline is close.

Each warning window (DEADLINE_WARNING_HOURS, e.g. 24 and 2) is raised once per
purchase: a history entry and a `purchase.deadline_near` event, so the requesting
service can nudge its customer to accept the transfer.

A window is kept to hundredths of an hour everywhere: `deadline_flags.window_hours`
is numeric(8,2), so 0.333 is rounded to 0.33 (half up, as Postgres rounds) before it
is matched, flagged and reported.  Matching the unrounded value against the stored
one never succeeds: the purchase would come back every tick, taking a place in the
batch (and a row lock) from purchases still to be flagged.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text

from fulfilment import state_machine
from fulfilment.db import session_scope
from models import Purchase

# The scale of deadline_flags.window_hours (numeric(8,2)).
HUNDREDTH = Decimal("0.01")

# Uses ix_purchases_awaiting_deadline (partial, on delivery_deadline) and the flags' primary key.
# The windows arrive already rounded to hundredths; numeric against numeric, never float8.
DUE_FLAGS_SQL = text(
    """
    SELECT p.id, w.hours
      FROM purchases AS p
      JOIN unnest(CAST(:windows AS numeric(8,2)[])) AS w(hours)
        ON p.delivery_deadline <= now() + make_interval(secs => CAST(w.hours * 3600 AS float8))
     WHERE p.state = 'awaiting_transfer'
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


def window_hours(hours: float | Decimal | str) -> Decimal:
    """A window as deadline_flags stores it: hundredths of an hour, rounded half up (like Postgres)."""
    return Decimal(str(hours)).quantize(HUNDREDTH, rounding=ROUND_HALF_UP)


def flag_near_deadlines(windows_hours: Iterable[float], *, batch_size: int) -> int:
    """Flag one batch of purchases that entered a warning window; return how many flags were raised."""
    windows = sorted({rounded for w in windows_hours if (rounded := window_hours(w)) > 0})
    if not windows:
        return 0
    raised = 0
    with session_scope() as session:
        rows = session.execute(
            DUE_FLAGS_SQL, {"windows": windows, "widest": max(windows), "batch": batch_size}
        ).all()
        for purchase_id, hours in rows:
            purchase = session.get_one(Purchase, purchase_id)
            # float(Decimal("0.33")) is stored back as exactly 0.33, and reads 0.33 in the event.
            raised += state_machine.flag_deadline(session, purchase, float(hours))
    return raised
