"""What a person does to one purchase: resume it, give up on it, record an order found at the
partner, and look at rejected requests.

`fulfil retry`, `fulfil cancel`, `fulfil resolve` and `fulfil rejected` call these, and so does
the web console: every action goes through one function, takes the operator's name and writes
it to the purchase's history (and so to the event the requesting service receives).  Errors
are OperatorActionError subclasses (PurchaseNotFound, NothingToDo, Refused, OrderNotFound,
PartnerUnreachable) whose message is written for a person; ValueError is a bad argument.

Giving up (`cancel`) is allowed only where no order can exist or be in flight (invariant 1):
RECEIVED, QUOTED, PAUSED, and STALLED from one of those.  NEEDS_ATTENTION means an order may
exist: a person must have checked with the partner (`no_order_confirmed`).  ORDERING,
ORDER_UNKNOWN and AWAITING_TRANSFER are refused: an order request may be in flight, its
outcome is being resolved, or an order exists.

Recording a found order (`resolve`) is for NEEDS_ATTENTION, ORDER_UNKNOWN and STALLED from
the order path: the order is fetched from the partner first, and is recorded only if it was
made from one of this purchase's quotes.
"""

from __future__ import annotations

from fulfilment.operator.actions import (
    CANCELLED_BY_OPERATOR,
    Done,
    NothingToDo,
    OperatorActionError,
    OrderNotFound,
    PartnerUnreachable,
    PurchaseNotFound,
    Refused,
    Retried,
    cancel,
    find_purchase,
    operator_name,
    replay_dead_letters,
    retry,
)
from fulfilment.operator.found_orders import (
    resolve,
    resolve_with_token,
)
from fulfilment.operator.rejections import (
    rejected_request,
    rejected_requests,
    rejection_view,
)

__all__ = [
    "CANCELLED_BY_OPERATOR", "Done", "NothingToDo", "OperatorActionError", "OrderNotFound",
    "PartnerUnreachable", "PurchaseNotFound", "Refused", "Retried", "cancel", "find_purchase",
    "operator_name", "rejected_request", "rejected_requests", "rejection_view", "replay_dead_letters",
    "resolve", "resolve_with_token", "retry",
]
