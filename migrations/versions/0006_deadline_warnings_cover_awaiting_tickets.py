"""deadline warnings cover awaiting_tickets: the deadline scan's partial index takes both ordered states

The scheduler's near-deadline flagging (fulfilment/deadlines.py) now flags purchases awaiting
their tickets (Ticketmaster) as well as those awaiting a transfer (TBB); its index's predicate
follows, so that the scan stays an index scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 08:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "state = 'awaiting_transfer'"
NEW = "state IN ('awaiting_tickets', 'awaiting_transfer')"


def upgrade() -> None:
    op.drop_index('ix_purchases_awaiting_deadline', table_name='purchases', postgresql_where=sa.text(OLD))
    op.create_index('ix_purchases_awaiting_deadline', 'purchases', ['delivery_deadline'], unique=False,
                    postgresql_where=sa.text(NEW))


def downgrade() -> None:
    op.drop_index('ix_purchases_awaiting_deadline', table_name='purchases', postgresql_where=sa.text(NEW))
    op.create_index('ix_purchases_awaiting_deadline', 'purchases', ['delivery_deadline'], unique=False,
                    postgresql_where=sa.text(OLD))
