from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Ticket(Base):
    """One ticket of a purchase whose partner issues tickets (Ticketmaster's order management).

    `token_encrypted` is the ticket's SafeTix token encrypted at rest (fulfilment.tickets.crypto,
    key TICKET_KEY); it is never logged.  A SafeTix ticket is refreshed once at `refresh_due_at`
    (event start - 20 h) by the scheduler: `refreshed_at` records it, `refresh_claimed_until` is
    the lease of whoever is refreshing it, so that two schedulers refresh each ticket once.
    """

    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("purchase_id", "position"),
        # The scheduler's refresh scan: SafeTix tickets not refreshed yet, by due time.
        Index("ix_tickets_refresh_due", "refresh_due_at",
              postgresql_where=text("refresh_due_at IS NOT NULL AND refreshed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchases.id", ondelete="RESTRICT"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    barcode: Mapped[str | None] = mapped_column(String(100))
    section: Mapped[str | None] = mapped_column(String(100))
    row: Mapped[str | None] = mapped_column(String(100))
    seat: Mapped[str | None] = mapped_column(String(100))
    render_type: Mapped[str | None] = mapped_column(String(40))
    token_encrypted: Mapped[str | None] = mapped_column(Text)
    voided: Mapped[bool] = mapped_column(Boolean, server_default="false")
    event_start: Mapped[dt.datetime | None]
    refresh_due_at: Mapped[dt.datetime | None]
    refresh_claimed_until: Mapped[dt.datetime | None]
    refreshed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
