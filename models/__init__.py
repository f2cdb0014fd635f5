"""The database schema as typed SQLAlchemy 2 models.

Postgres is the source of truth for every purchase; messages on the broker are only
nudges.  The state column is changed in exactly one place:
`fulfilment.state_machine.transition`.
"""

from models.base import Base
from models.deadline_flag import DeadlineFlag
from models.orphan_order import OrphanOrder
from models.outbox import OutboxEvent
from models.purchase import Purchase
from models.quote import PartnerQuote
from models.rejected import RejectedRequest
from models.ticket import Ticket
from models.transition import PurchaseTransition

__all__ = [
    "Base", "DeadlineFlag", "OrphanOrder", "OutboxEvent", "PartnerQuote", "Purchase", "PurchaseTransition",
    "RejectedRequest", "Ticket",
]
