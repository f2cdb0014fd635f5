from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class DeadlineFlag(Base):
    """A purchase whose delivery deadline entered a warning window (e.g. 24 h, 2 h before).

    The primary key makes "flagged once per window" a database guarantee, so two
    scheduler ticks (or two schedulers in a hand-over) can never flag twice.
    """

    __tablename__ = "deadline_flags"

    purchase_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchases.id", ondelete="CASCADE"), primary_key=True
    )
    window_hours: Mapped[Decimal] = mapped_column(Numeric(8, 2), primary_key=True)
    flagged_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
