from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# Kept in sync with fulfilment.state_machine.State by tests/unit/test_models.py.
STATE_VALUES = (
    "received",
    "quoted",
    "ordering",
    "order_unknown",
    "awaiting_transfer",
    "transfer_complete",
    "transfer_expired",
    "cancelled",
    "failed",
    "paused",
    "needs_attention",
    "stalled",
    "awaiting_tickets",
    "tickets_issued",
)

# Kept in sync with fulfilment.state_machine.OrderEvidence by tests/unit/test_models.py.
EVIDENCE_VALUES = ("may_exist", "exists")


class Purchase(Base):
    """One purchase request and where it stands.

    `next_action_at` is the heartbeat of invariant 2: every live purchase has one, and
    the scheduler re-drives purchases whose time has passed (for AWAITING_TRANSFER it
    is the next status check).  `claimed_until` is a short lease taken before any
    partner call so that a duplicate message does not call the partner twice;
    `nudged_at` keeps the scheduler from re-sending the same step every tick.
    """

    __tablename__ = "purchases"
    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in STATE_VALUES)})", name="state_known"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(f"order_evidence IN ({', '.join(repr(e) for e in EVIDENCE_VALUES)})", name="order_evidence_known"),
        # The scheduler's re-drive and due-check scans: only live rows are indexed.
        Index("ix_purchases_next_action_at", "next_action_at", postgresql_where=text("next_action_at IS NOT NULL")),
        # `fulfil list --state …` and the console's lists, newest first (keyset pagination: created_at, id).
        Index("ix_purchases_state_created_id", "state", "created_at", "id"),
        Index("ix_purchases_created_id", "created_at", "id"),
        Index("ix_purchases_delivery_deadline", "delivery_deadline"),
        # The console's rates: the purchase waiting longest in each state.
        Index("ix_purchases_state_changed", "state", "state_changed_at"),
        # The console's prefix search (LIKE 'prefix%' whatever the collation).
        *(Index(f"ix_purchases_{column}_prefix", column, postgresql_ops={column: "text_pattern_ops"})
          for column in ("request_id", "order_id", "event_id")),
        # The scheduler's deadline-warning scan (fulfilment/deadlines.py: the ordered states).
        Index(
            "ix_purchases_awaiting_deadline",
            "delivery_deadline",
            postgresql_where=text("state IN ('awaiting_tickets', 'awaiting_transfer')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    partner: Mapped[str] = mapped_column(String(40), server_default="tbb")

    # The request, as validated by fulfilment.requests.PurchaseRequest.
    event_id: Mapped[str] = mapped_column(String(100))
    section_name: Mapped[str | None] = mapped_column(String(100), doc="None: any section (a partner that allows it)")
    row_name: Mapped[str | None] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(Integer)
    delivery_type: Mapped[str] = mapped_column(String(30))
    delivery_deadline: Mapped[dt.datetime]
    max_unit_price: Mapped[Decimal | None]
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    partner_data: Mapped[dict[str, Any] | None] = mapped_column(
        doc="what only this purchase's partner needs (its request fields, cart, pending polling, order token "
        "encrypted): read and written by the partner's flow alone"
    )

    state: Mapped[str] = mapped_column(String(30))
    state_changed_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    next_action_at: Mapped[dt.datetime | None]
    claimed_until: Mapped[dt.datetime | None]
    nudged_at: Mapped[dt.datetime | None] = mapped_column(doc="when the scheduler last re-sent its step")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", doc="claims taken in the current state")
    claim_token: Mapped[uuid.UUID | None] = mapped_column(
        doc="owner of the current claim: every change made under a claim is conditional on it (fencing)"
    )

    quotes_taken: Mapped[int] = mapped_column(Integer, server_default="0")
    quote_id: Mapped[str | None] = mapped_column(String(100), doc="the partner quote currently in use")
    quote_expires_at: Mapped[dt.datetime | None]
    order_evidence: Mapped[str | None] = mapped_column(
        String(20), doc="what we know of an order from the current quote (state_machine.OrderEvidence)"
    )

    order_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    order_status: Mapped[str | None] = mapped_column(String(40))
    transfer_email: Mapped[str | None] = mapped_column(String(320))
    seat_range: Mapped[str | None] = mapped_column(String(100))
    row_assigned: Mapped[str | None] = mapped_column(String(100))
    unit_price: Mapped[Decimal | None]
    subtotal: Mapped[Decimal | None]

    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    stalled_from: Mapped[str | None] = mapped_column(String(30))

    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
