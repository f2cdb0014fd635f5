"""Everything about the Ticketmaster Partner API that no source states, in one place.

Sources, strongest first: seeds 003 (SafeTix) and 004 (FAQ), then the public 2017 reference
(`products-and-docs/apis/partner/index.md`) and its FAQ, summed up in
shared/ticketmaster-contract.md.  Each item below is a guess (ASSUMED) or a choice between
sources that disagree, with a one-line reason.  When Ticketmaster confirms or corrects one,
change it here and nowhere else; the rest of the package reads these names.
"""

from __future__ import annotations

from typing import Literal

# ---- credentials and headers ----------------------------------------------------------------

# ASSUMED: the apikey goes as the query parameter `apikey`, never as `x-api-key`.  Reason: every
# source shows the query parameter, for every endpoint, including the SafeTix seed's
# securerender (a different product, marketplace/v1); only the contract's "newer web docs" mention
# the header, for partners/v1 alone.  The key is added by the transport under httpx (transport.py),
# so no URL that httpx logs, that an error or a response carries, or that we store ever holds it.
# "header" is kept as a switch (TicketmasterApi(apikey_placement=...)) in case TM asks for it.
APIKEY_PLACEMENT: Literal["query", "header"] = "query"
APIKEY_QUERY_PARAM = "apikey"
APIKEY_HEADER = "x-api-key"

# ASSUMED: TM ignores this header; it is sent so that our logs and TM support can join a call
# to a purchase (no source names a request-id header).
REQUEST_ID_HEADER = "X-Request-ID"

# The 2017 doc asks for `True-Client-IP` (the *user's* IP) on ticketing and polling calls.
# ASSUMED: a server-to-server buyer has no user IP; the header is sent only when configured
# (our egress IP, as agreed with TM), never made up.
CLIENT_IP_HEADER = "True-Client-IP"

# ---- paths the seeds leave implicit -------------------------------------------------------------

# The seeds list availability, reserve, payment, commit, orders and securerender paths; these
# three come from elsewhere.
# From the 2017 doc ("Retrieve Event Details"): the seeds never mention event details.
EVENT_DETAILS_PATH = "/events/{event_id}"
# ASSUMED: event-scoped like the seed's other cart paths (the 2017 doc has `DELETE /cart?cart_id=`,
# from the older, session-cart API the seeds replaced); cart_id stays a query parameter as in 2017.
DELETE_CART_PATH = "/events/{event_id}/cart"
# From the 2017 doc; ASSUMED available to our apikey (it needs IP allow-listing): a 401/403 here
# is an account error (errors.py), not a sign that an order is absent.
UNREDEEMED_PATH = "/orders/unredeemed"

# SecureRender (seed 003) is another product on the API's host: production
# `/marketplace/v1/securerender`, pre-production `/marketplace-staging/v1/securerender`.  The public
# reference names the Partner API's hosts: production `https://app.ticketmaster.com/partners/v1`,
# staging `https://app.ticketmaster.com/partners-sandbox/v1`.  ASSUMED: a base URL that says it is
# not production -- its first path segment is `partners-<marker>` (partners-sandbox, the reference's
# staging) or a host label carries a marker (app-preprod.example) -- is pre-production, and its
# SecureRender is the staging path on the same origin; any other base URL (production, our sandbox at
# /partners/v1) gets the production path.  TM_SECURE_RENDER_URL overrides the guess (settings.py).
SECURE_RENDER_PATH = "/marketplace/v1/securerender"
SECURE_RENDER_STAGING_PATH = "/marketplace-staging/v1/securerender"
PREPRODUCTION_MARKERS = frozenset({"sandbox", "staging", "stage", "preprod", "pre-prod", "qa", "uat"})


def is_preproduction(base_url: str) -> bool:
    """Whether a Partner API base URL names a pre-production environment (see above)."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    segment = parts.path.strip("/").split("/", 1)[0].lower()
    if segment.startswith("partners-") and segment.removeprefix("partners-") in PREPRODUCTION_MARKERS:
        return True
    labels = (parts.hostname or "").lower().split(".")
    return any(marker in label.split("-") or label == marker
               for label in labels[:-2] for marker in PREPRODUCTION_MARKERS)


def secure_render_url(base_url: str) -> str:
    """The SecureRender endpoint that goes with a Partner API base URL: same origin, production or
    staging path as the base URL is."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    path = SECURE_RENDER_STAGING_PATH if is_preproduction(base_url) else SECURE_RENDER_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# ---- request shapes --------------------------------------------------------------------------

# ASSUMED: the captcha solution rides at the top level of the reserve body, beside `reserve`
# (the contract only says "+ token when captcha is required").
CAPTCHA_TOKEN_FIELD = "token"
# ASSUMED: a numeric price-level id is sent as a JSON number, as in every example
# (`"price": {"id": 3}`), though availability gives it as a string (`"priceLevelId": "1"`).
SEND_NUMERIC_PRICE_LEVEL_AS_NUMBER = True
# ASSUMED: securerender takes deviceType/deviceOs in upper case, as in its only example
# ("NATIVE", "IOS"); the order-management call takes the documented lower-case values.
SECURE_RENDER_UPPERCASE_DEVICE = True

# ---- polling ---------------------------------------------------------------------------------

# Which calls may answer 202 + {"polling_url", "wait"} (payloads.Operation values).  The contract
# lists availability, reserve, commit, delete and order management; ASSUMED also payment (the 2017
# FAQ: "All transactional api's at TM have polling") and unredeemed orders (it sits under order
# management).  Event details ("Polling: No") and securerender (another product) never poll: a 202
# there is a surprise (UnexpectedResponse).
POLLABLE_OPERATIONS = frozenset(
    {"availability", "reserve", "add_payment", "commit", "delete_cart", "order_tickets", "unredeemed_orders"}
)

# ASSUMED: a polling answer without `wait` means the usual 4 seconds (2017 FAQ: "generally 4").
DEFAULT_POLL_WAIT_SECONDS = 4.0
# ASSUMED: a `wait` above this is TM's problem, not a reason to park a purchase for longer.
MAX_POLL_WAIT_SECONDS = 300.0
# ASSUMED: a polling URL lives on TM's side and survives our restarts (the core stores it); one
# TM no longer knows answers 404 or 410.  For an idempotent read that means "start again"
# (PollingExpired); for a cart call it proves nothing about the cart (OutcomeUnknown).
POLLING_GONE_STATUSES = frozenset({404, 410})
# ASSUMED: a relative polling URL is resolved against the base URL's origin (all examples are
# absolute, on the API host).  One on any other origin is refused: it would get our apikey.

# ---- response shapes ---------------------------------------------------------------------------

# The seed's payment answer has `cart.totals.currency_code`; the 2017 reserve answer has it only
# in each item's totals.  ASSUMED: when the cart's totals lack it, every item's totals carry the
# same one (several different ones are malformed).
# Commit: the contract lists order_number, order_token, grand_total, currency_code,
# redemption_url; the 2017 example lacks order_number and currency_code.  ASSUMED: a 2xx with
# an order_number or an order_token proves the order exists, whatever else is missing.
# ASSUMED: an unredeemed-orders entry may carry `order_number` (the 2017 example has none; we
# read it when present, never need it).
# ASSUMED: `eventdate.value` with format "datetime" and a trailing "Z" is the start in UTC
# (the 2017 example); format "date" (time TBA) gives only a date.  The zone is
# `venue.location.time_zone`.
# ASSUMED: a DELETE answered 200 (not 204) also deleted the cart; any body is ignored.

# `safetix_delivery_delay_date` comes as "YYYY-MM-DD", without a zone, with delay ON and OFF
# alike.  ASSUMED: it is a calendar date in the event's local time zone.  We return it as a
# `datetime.date` and never invent a zone; payloads.delay_date_start() gives the instant to use:
# midnight in the event's zone when it is known, else the latest midnight on Earth (UTC-12),
# so nobody is told "your tickets are ready" before they can be.
DELAY_DATE_FALLBACK_UTC_OFFSET_HOURS = -12
# ASSUMED: a barcode-only ticket (seed 003: "only a barcode ... rendered as a QR code") comes with
# `secure_entry_data` {"token": null, "render_type": "barcode"} and no error.  Any other
# secure_entry_data without a token is a SafeTix ticket whose token is not given yet (a delay, signalled
# or not by a date): never issued as final, asked again (flow.py).
BARCODE_RENDER_TYPE = "barcode"
# Order management's `delivery.service_level` for SafeTix delivery (shared/ticketmaster-contract.md,
# "What the real API does..."): with no token yet, the tickets are delayed even without a delay date.
SAFETIX_SERVICE_LEVEL = "SAFETIX"

# ---- what an answer proves -------------------------------------------------------------------------

# ASSUMED: a 429 comes from the Apigee quota policy in front of the API (2017 FAQ: "apigee
# policies"), before anything reaches the ticketing system: a cart call answered 429 was not
# processed and may be sent again.
# ASSUMED: a POST to order management (get the order and its initial SafeTix token) and a
# securerender refresh change nothing that matters if repeated: both are retried like reads.
ORDER_TICKETS_IS_IDEMPOTENT = True
SECURE_RENDER_IS_IDEMPOTENT = True

# ASSUMED: error codes that, answering a commit, prove that this commit did NOT create an order
# (each refuses the transaction before anything is bought).  Any other answer to a commit that may
# have been sent -- an unknown code, an error without the envelope, a 5xx without one of these
# codes, a timeout, a reset, an unreadable 2xx -- is OutcomeUnknown.
# 90003 (invalid/stale cart) and 21001 (wrong cart id) prove nothing bought *by this request*;
# whether an EARLIER, possibly-sent commit of the same cart bought it is the core's question
# (a committed cart is no longer valid either).
COMMIT_DEFINITE_CODES = frozenset(
    {
        10004, 10031,  # captcha required / invalid: refused before any processing
        20001,  # niterun: the ticketing system is down
        20052,  # no inventory
        20046, 10104, 10161, 90001,  # not sellable / delivery / ticket limit / not transactable
        20122, 20129, 20152,  # payment refused
        90003, 21001,  # invalid or stale cart, invalid request structure
    }
)

# The seed gives "Invalid reserve request data structure" without a code; the 2017 FAQ calls it
# 21001.  ASSUMED: the message text is stable enough to recognise it when the code is missing.
CART_INVALID_MESSAGE = "invalid reserve request data structure"

# ASSUMED: a 401/403 without a documented code is the gateway refusing our apikey (or an
# allow-list): an account problem, not the request's.
ACCOUNT_STATUSES = frozenset({401, 403})
# ASSUMED: a 4xx with a code we do not know is a refusal we do not understand: a permanent
# surprise (UnknownCode), never success and never retried -- except on a commit (see above).

# ---- quotas -------------------------------------------------------------------------------

# Documented (seed 004 and 2017 doc): availability, 3,600 requests per hour per apikey.
# ASSUMED: no other quota is known; we rely on 429 and its Ratelimit-* headers, never on
# counting calls ourselves.
AVAILABILITY_REQUESTS_PER_HOUR = 3600
# ASSUMED: a 429 without a readable Ratelimit-Expiry is retried with our own jittered backoff,
# inside the deadline, like any transient refusal.
