"""Everything about TBB that is NOT documented publicly, in one place.

Each item is a guess the contract marks ASSUMED; when TBB confirms the real shape,
change it here and nowhere else.
"""

from __future__ import annotations

# Order status read: same `data` shape as the create-order response.
ORDER_STATUS_PATH = "/v1/orders/{order_id}"

# Order lookup by quote, used only to resolve an order whose creation outcome is unknown.
ORDER_LOOKUP_PATH = "/v1/orders"
ORDER_LOOKUP_QUERY_PARAM = "quote_id"

# Rate limiting: 429 with Retry-After in seconds (see errors.parse_retry_after).
RATE_LIMIT_STATUS = 429
