"""Near-deadline warnings: purchases awaiting transfer whose delivery deadline is close.

Each warning window (DEADLINE_WARNING_HOURS, e.g. 24 and 2) is raised once per
purchase: a history entry and a `purchase.deadline_near` event, so the requesting
service can nudge its customer to accept the transfer.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text

from fulfilment import state_machine
from fulfilment.db import session_scope
from models import Purchase

# Uses ix_purchases_awaiting_deadline (partial, on delivery_deadline) and the flags' primary key.
DUE_FLAGS_SQL = text(
    """
    SELECT p.id, w.hours
      FROM purchases AS p
      JOIN unnest(CAST(:windows AS float8[])) AS w(hours)
        ON p.delivery_deadline <= now() + make_interval(secs => w.hours * 3600)
     WHERE p.state = 'awaiting_transfer'
       AND p.delivery_deadline <= now() + make_interval(secs => :widest * 3600)
       AND p.delivery_deadline > now()
       AND NOT EXISTS (
             SELECT 1 FROM deadline_flags AS f
              WHERE f.purchase_id = p.id AND f.window_hours = w.hours)
     ORDER BY p.delivery_deadline
     LIMIT :batch
       FOR UPDATE OF p SKIP LOCKED
    """
)


def flag_near_deadlines(windows_hours: Iterable[float], *, batch_size: int) -> int:
    """Flag one batch of purchases that entered a warning window; return how many flags were raised."""
    windows = sorted({float(w) for w in windows_hours if w > 0})
    if not windows:
        return 0
    raised = 0
    with session_scope() as session:
        rows = session.execute(
            DUE_FLAGS_SQL, {"windows": windows, "widest": max(windows), "batch": batch_size}
        ).all()
        for purchase_id, hours in rows:
            purchase = session.get_one(Purchase, purchase_id)
            raised += state_machine.flag_deadline(session, purchase, hours)
    return raised
