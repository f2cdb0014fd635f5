"""Everything about TBB that is NOT documented publicly, in one place.

Each item is a guess the contract marks ASSUMED; when TBB confirms the real shape,
change it here and nowhere else.
"""

from __future__ import annotations

# Order status read: same `data` shape as the create-order response.
ORDER_STATUS_PATH = "/v1/orders/{order_id}"

# Order lookup by quote, used only to resolve an order whose creation outcome is unknown.
# It lists this partner's orders made from that quote, in the list envelope with `pagination`.
ORDER_LOOKUP_PATH = "/v1/orders"
ORDER_LOOKUP_QUERY_PARAM = "quote_id"

# Rate limiting: 429 with Retry-After in seconds (see errors.parse_retry_after).
RATE_LIMIT_STATUS = 429

# ---- What the partner's answers prove about an order (README, "What proves there is no order") ----
#
# Once an order request for a quote may have reached TBB, we assume NOTHING that would prove
# absence.  In particular we do not assume:
# - that the order lookup is consistent with the order service: it may lag behind a commit
#   (a read replica, a search index), so a complete, empty lookup proves nothing;
# - that TBB checks consumption before expiry: a retry of a consumed quote may be answered
#   QUOTE_EXPIRED, so QUOTE_EXPIRED to a retry proves nothing;
# - that a request the client gave up on is not processed later: a quote expiring on our clock
#   proves nothing about a request in flight.
# We DO take as proof:
ORDER_EXISTS_CODES = frozenset({"QUOTE_ALREADY_CONSUMED"})  # an order from this quote exists
# ... and an order listed by the lookup for the quote (one; two would be TBB's bug: unknown).
# A lookup answer counts as complete only with `pagination.has_more` exactly false
# (client.read_lookup); anything else is "unknown", never "none".
# If TBB ever guarantees a bound on the lookup's lag, an operator may set
# ORDER_ABSENCE_GRACE_SECONDS above it; until then it stays unset.
