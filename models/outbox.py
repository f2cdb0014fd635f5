from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class OutboxEvent(Base):
    """Transactional outbox: written with what it reports, published later by the relay.

    Each event reports exactly one of: a purchase's history entry (`transition_id` and
    `purchase_id`, routing key `purchase.*`) or a rejected request (`rejection_id`, routing key
    `request.rejected`; no purchase).  `id` is the event id consumers de-duplicate on; it never
    changes once written.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_unpublished", "created_at", postgresql_where=text("published_at IS NULL")),
        CheckConstraint(
            "(transition_id IS NOT NULL AND purchase_id IS NOT NULL AND rejection_id IS NULL) OR "
            "(transition_id IS NULL AND purchase_id IS NULL AND rejection_id IS NOT NULL)",
            name="one_source",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    transition_id: Mapped[int | None] = mapped_column(ForeignKey("purchase_transitions.id"), unique=True)
    purchase_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("purchases.id", ondelete="RESTRICT"), index=True)
    rejection_id: Mapped[int | None] = mapped_column(
        ForeignKey("rejected_requests.id", ondelete="RESTRICT"), unique=True
    )
    routing_key: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[dt.datetime | None]
