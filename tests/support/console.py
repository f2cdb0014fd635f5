"""What the console's rates page must show, read independently from Postgres (the console's tests)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import text

from fulfilment.db import session_scope


def transitions_since(since: dt.datetime) -> dict[str, int]:
    """State changes (history kind `transition`) since `since`, by the state entered."""
    with session_scope() as session:
        return dict(session.execute(text(
            "SELECT to_state, count(*) FROM purchase_transitions WHERE created_at >= :since AND kind = 'transition' "
            "GROUP BY to_state"), {"since": since}).all())


def oldest_waiting(states: Iterable[str]) -> dict[str, str]:
    """The purchase longest in each of these states (by state_changed_at, then id)."""
    with session_scope() as session:
        return dict(session.execute(text(
            "SELECT DISTINCT ON (state) state, id::text FROM purchases WHERE state = ANY(:states) "
            "ORDER BY state, state_changed_at, id"), {"states": list(states)}).all())
