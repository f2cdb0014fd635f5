from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class PartnerQuote(Base):
    """Every quote a purchase received, kept as history (a purchase may be re-quoted)."""

    __tablename__ = "partner_quotes"

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purchases.id", ondelete="CASCADE"), index=True)
    quote_id: Mapped[str] = mapped_column(String(100), unique=True)
    expires_at: Mapped[dt.datetime]
    section_name: Mapped[str] = mapped_column(String(100))
    row_name: Mapped[str | None] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal]
    subtotal: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
