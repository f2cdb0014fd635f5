from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

HISTORY_KINDS = (
    "transition", "deadline_flag", "late_answer", "orphan_order", "tickets_delayed", "tickets_refreshed",
)


class PurchaseTransition(Base):
    """Append-only history: one row per state change, per deadline warning raised, per
    partner answer that came too late to move the purchase, and per orphan order
    (`kind`); a database trigger refuses UPDATE and DELETE."""

    __tablename__ = "purchase_transitions"
    __table_args__ = (
        CheckConstraint(f"kind IN {HISTORY_KINDS!r}", name="kind_known"),
        Index("ix_purchase_transitions_created_at", "created_at"),  # the console's rates (the last minutes)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), server_default="transition")
    purchase_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchases.id", ondelete="RESTRICT"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(30))
    to_state: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
