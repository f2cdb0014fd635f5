from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ForeignKey, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class OrphanOrder(Base):
    """A partner order that arrived when its purchase no longer expected it (fencing, invariant 8).

    An order id is never dropped: a confirmation for a purchase that moved on (another
    quote, a failure, a second order) is kept here with its purchase, and raised to
    operators (history, event, ERROR log, metric) until someone resolves it.
    """

    __tablename__ = "orphan_orders"

    order_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    purchase_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchases.id", ondelete="RESTRICT"), index=True)
    partner: Mapped[str] = mapped_column(String(40))
    quote_id: Mapped[str | None] = mapped_column(String(100))
    order_status: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any]]
    reason: Mapped[str] = mapped_column(Text)
    found_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    resolved_at: Mapped[dt.datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)
