"""How a purchase goes through Ticketmaster: the partner part of each step (flowkit/flow.py).

In parts: reserve.py (quote), commit.py (order, resolve), tickets.py (deliver, refresh) over base.py
(the calls and waits every part shares, release) and data.py (config, partner_data, time, seats).


    quote    RECEIVED/PAUSED: the event's start and zone (the request's, else event details, cached,
             never failing the purchase) -> reserve (named seats: accept_best_available false) ->
             price and seat checks -> payment with one nonce per payment (payment.py) -> QUOTED
             (quote_id = the cart id; quote_expires_at = when the last answer's call was SENT + that
             answer's hold_time)
    order    QUOTED: the intent (ORDERING, order evidence may_exist) -> commit, with
             source_account_id = a stable hash of the purchase id -> AWAITING_TICKETS
    resolve  ORDER_UNKNOWN: continue the commit's stored polling URL (kept through stalls, resets and
             5xx; forgotten only on a definite answer or 404/410), else look for the order in
             the unredeemed orders by source_account_id; absence proves nothing -> NEEDS_ATTENTION
             once the lookups are used up.  Never a second commit or reserve while an order may exist.
    deliver  AWAITING_TICKETS: order management -> tickets stored (tokens encrypted) ->
             TICKETS_ISSUED, or parked until the delivery delay date (`purchase.tickets_delayed`).

Long waits are parked in Postgres (`flowkit.fencing.park`), never slept through or retried by the
broker: a 202's `wait` (the polling URL, without the apikey, kept in partner_data.pending and
continued by whoever claims the purchase next, never sent afresh), a 429 until Ratelimit-Expiry,
niterun until 02:00 in the event's time zone.

Carts: one worker at a time works on a purchase (the claim), so calls on its cart are serialized
across processes; the client serializes them within one.  A cart we give up on (price above the
limit, short hold, a refusal after reserve, an unknown payment) is deleted, never while a commit of
it may be in flight; a cart we could not delete yet is kept in partner_data.abandoned and deleted
by the purchase's next step.  What partner_data holds is listed at `TmData`.
"""

from __future__ import annotations

from collections.abc import Callable

from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.flow.commit import Commit
from fulfilment.partners.ticketmaster.flow.data import (
    NAME,
    TmConfig,
    TmData,
    keep_late_polling,
    niterun_end,
    seats_not_as_asked,
    source_account_id,
)
from fulfilment.partners.ticketmaster.flow.reserve import Reserve
from fulfilment.partners.ticketmaster.flow.tickets import Tickets
from fulfilment.settings import Settings

__all__ = ["NAME", "TicketmasterFlow", "TmConfig", "TmData", "build", "keep_late_polling", "niterun_end",
           "seats_not_as_asked", "source_account_id"]


class TicketmasterFlow(Reserve, Commit, Tickets):
    """Ticketmaster's `PartnerFlow` (flowkit/flow.py): quote, order, resolve, deliver, release, refresh."""


def build(settings: Settings, observe: Callable[[str, str, float], None] | None = None) -> TicketmasterFlow:
    assert settings.tm_base_url is not None and settings.tm_apikey is not None
    api = TicketmasterApi(
        str(settings.tm_base_url), settings.tm_apikey.get_secret_value(),
        securerender_url=str(settings.tm_secure_render_url) if settings.tm_secure_render_url else None,
        connect_timeout=settings.tm_connect_timeout, read_timeout=settings.tm_read_timeout, observe=observe,
    )
    return TicketmasterFlow(api, TmConfig.from_settings(settings))
