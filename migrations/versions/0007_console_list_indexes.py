"""console: indexes for keyset pagination and prefix search

The console's lists page by keyset, newest first: (state, created_at, id) replaces
(state, created_at) (same leading columns, so every query of the old one is served), and
(created_at, id) serves the list of every state.  Prefix search on request, order and event
ids uses text_pattern_ops indexes (a LIKE 'prefix%' range scan whatever the collation); a
purchase id prefix is a range on the primary key.  delivery_deadline is indexed for the
deadline window filter; (state, state_changed_at) finds the purchase waiting longest in each state,
and the history's created_at the rates page's last minutes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 08:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PATTERN = {'request_id': 'ix_purchases_request_id_prefix', 'order_id': 'ix_purchases_order_id_prefix',
           'event_id': 'ix_purchases_event_id_prefix'}


def upgrade() -> None:
    op.create_index('ix_purchases_state_created_id', 'purchases', ['state', 'created_at', 'id'], unique=False)
    op.drop_index('ix_purchases_state_created_at', table_name='purchases')
    op.create_index('ix_purchases_created_id', 'purchases', ['created_at', 'id'], unique=False)
    op.create_index('ix_purchases_delivery_deadline', 'purchases', ['delivery_deadline'], unique=False)
    for column, name in PATTERN.items():
        op.create_index(name, 'purchases', [column], unique=False, postgresql_ops={column: 'text_pattern_ops'})
    op.create_index('ix_purchases_state_changed', 'purchases', ['state', 'state_changed_at'], unique=False)
    op.create_index('ix_purchase_transitions_created_at', 'purchase_transitions', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_purchase_transitions_created_at', table_name='purchase_transitions')
    op.drop_index('ix_purchases_state_changed', table_name='purchases')
    for name in PATTERN.values():
        op.drop_index(name, table_name='purchases')
    op.drop_index('ix_purchases_delivery_deadline', table_name='purchases')
    op.drop_index('ix_purchases_created_id', table_name='purchases')
    op.create_index('ix_purchases_state_created_at', 'purchases', ['state', 'created_at'], unique=False)
    op.drop_index('ix_purchases_state_created_id', table_name='purchases')
