"""Carts, orders and seat inventory, and the purchase rules, behind the shared state lock.

Every public method takes the lock, first expires the carts whose hold has run out (seats back to
inventory, counted as leaked), then checks and acts in one step, so two calls can never both take
the same seats or both commit one cart.

Holds count down: every answer's ``hold_time`` is what is left of the hold at that answer (the
cart's end is the answer's time + its ``hold_time``); a payment extends it
(``payment_extension_seconds``: it "may increase"); ``hold_time_variance_seconds`` (default 0) shaves
a seeded 0..N seconds off a new cart's hold, so even a reserve's answer is not the configured hold.

Best available by default: a reserve that names a place (section/row/seats) with
``accept_best_available`` true gets, for a seeded share ``best_available_swap_rate`` (default 0) of
such reserves, the best block of ANOTHER section/row (of the price level and areas asked for; of any
level when none is named, so the price may change too), even when the named seats are free
(counted ``best_available_swaps``); with ``accept_best_available`` false it gets exactly the named
seats or 20052.

With ``one_time_nonces`` a payment nonce pays once (``assumed.NONCE_REUSED`` afterwards); the used
nonces (hashed) are kept until a reset.

``unredeemed`` leaves out orders younger than ``unredeemed_lag_seconds`` (runtime setting, default
0): a list that lags behind commits; and, for good, the orders its commit chose to hide with
``unredeemed_hide_rate`` (runtime setting 0..1, default 0; seeded RNG ``seed + 2``; 1: committed
orders never appear), as a list that "may never show an order". The admin order list never lags
and shows ``unredeemed_hidden``.

Ids: cart ids are uuid4 (seed 003 shape); order tokens, barcodes and the order-number sequence come
from ``secrets``, never from the seeded RNG, so a restarted sandbox does not hand out ids a client
database already holds.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from fulfilment.partners.sandbox_kit.clock import Clock, iso_z
from fulfilment.partners.sandbox_kit.config import SettingsHolder

from . import assumed
from .catalogue import Catalogue, Event, PriceLevel, RowSpec
from .config import RuntimeSettings
from .counts import Counters
from .errors import TMError
from .inventory import Inventory
from .models import LIVE_STATES, Cart, CartLine, Order, Payment, Ticket
from .niterun import in_window
from .responses import money, to_plain
from .safetix import Delay, Device, delay_of, order_management_view, render_ticket
from .validation import CommitRequest, PaymentRequest, ReserveRequest, SecureRenderRequest


class SandboxStore(SettingsHolder[RuntimeSettings]):
    def __init__(self, catalogue: Catalogue, settings: RuntimeSettings, clock: Clock, lock: threading.RLock,
                 counters: Counters, seed: int = 0) -> None:
        self.catalogue = catalogue
        self._settings = settings
        self._clock = clock
        self._lock = lock
        self._counters = counters
        self._inventory = Inventory(catalogue)
        self._carts: dict[str, Cart] = {}
        self._orders: dict[str, Order] = {}  # by order_token
        self._barcodes: dict[str, tuple[Order, Ticket]] = {}
        self._used_nonces: set[str] = set()  # SHA-256 of every nonce that paid (one_time_nonces)
        self._seed = seed
        self._rng = random.Random(seed + 2)  # unredeemed_hide_rate (separate from polling and faults)
        self._hold_rng = random.Random(seed + 3)  # hold_time_variance_seconds
        self._swap_rng = random.Random(seed + 4)  # best_available_swap_rate
        self._order_seq = 10000 + secrets.randbelow(80000)

    # --- settings / reset -----------------------------------------------------------------------

    def reset(self, settings: RuntimeSettings) -> None:
        with self._lock:
            self._settings = settings
            self._inventory.reset()
            self._carts.clear()
            self._orders.clear()
            self._barcodes.clear()
            self._used_nonces.clear()
            self._rng = random.Random(self._seed + 2)
            self._hold_rng = random.Random(self._seed + 3)
            self._swap_rng = random.Random(self._seed + 4)

    # --- housekeeping ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        """The time, after expiring every cart whose hold ran out (call with the lock held)."""
        now = self._clock()
        for cart in self._carts.values():
            if cart.state in LIVE_STATES and now >= cart.hold_until:
                self._inventory.release(cart.key, cart.seats, cart.cart_id)
                cart.state = "expired"
                cart.ended_at = cart.hold_until
                self._counters.bump("leaked_carts")
        return now

    def event_or_404(self, event_id: str) -> Event:
        event = self.catalogue.event(event_id)
        if event is None:
            raise TMError(assumed.NOT_FOUND, f"Event {event_id} not found")
        return event

    # --- events ---------------------------------------------------------------------------------

    def list_events(self) -> dict[str, Any]:
        events = []
        for event in self.catalogue.events:
            local = event.local_start
            events.append({
                "eventCode": event.code, "eventHost": event.host, "eventId": event.id,
                "eventDate": local.date().isoformat(), "eventTime": local.strftime("%H:%M:%S"),
                "timeZone": event.timezone,
                "offers": [{"repName": t.name, "ticketType": t.id} for t in event.ticket_types],
            })
        return {"events": events}

    def event_details(self, event_id: str) -> dict[str, Any]:
        event = self.event_or_404(event_id)
        with self._lock:
            now = self._now()
        local = event.local_start
        return {
            "api_transactable": now < event.start,
            "event": {
                "id": event.id,
                "name": event.name,
                "event_code": event.code,
                "event_host": event.host,
                "currency_code": event.currency,
                "eventdate": {"format": "datetime", "value": iso_z(event.start)},
                "local_date": local.date().isoformat(),
                "local_time": local.strftime("%H:%M:%S"),
                "timezone": event.timezone,
                "onsale": {"format": "datetime", "value": iso_z(event.onsale)},
                "offsale": {"format": "datetime", "value": iso_z(event.start)},
                "quantities": {"limit": event.ticket_limit},
                "criteria_groups": ["bestavail", "specificseats"],
                "area_groups": [{"label": "Section", "areas": [
                    {"description": area.description, "id": area.id,
                     "prices": [{"id": level.id} for level in event.price_levels
                                if any(area.id in row.area_ids for row in level.rows)]}
                    for area in event.areas]}],
                "prices": [{"id": level.id, "description": level.description, "amounts": [level.charges.face],
                            "areas": [{"id": a} for a in sorted({a for row in level.rows for a in row.area_ids})]}
                           for level in event.price_levels],
                "tickets": [{
                    "id": ticket.id, "description": ticket.description,
                    "prices": [{"id": level.id, "amount": event.charges(ticket, level).face,
                                "display_amount": event.charges(ticket, level).face}
                               for level in event.price_levels],
                    "quantities": {"exact": 0, "limit": event.ticket_limit, "minimum": 1, "multiple": 1},
                } for ticket in event.ticket_types],
                "venue": {"id": event.venue_id, "name": event.venue_name, "location": {
                    "address": {"city": event.city, "region": {"abbrev": event.region},
                                "country": {"abbrev": event.country}},
                    "time_zone": event.timezone}},
            },
        }

    def availability(self, event_id: str) -> dict[str, Any]:
        event = self.event_or_404(event_id)
        with self._lock:
            self._now()
            tickets: list[dict[str, Any]] = []
            for level in event.price_levels:
                inventory: list[dict[str, Any]] = []
                available = total = 0
                for row in level.rows:
                    key = (event.id, row.section, row.row)
                    free = self._inventory.free_seats(key)
                    available += len(free)
                    total += self._inventory.total(key)
                    if free:
                        inventory.append({"section": row.section, "row": row.row, "seats": [int(s) for s in free],
                                          "hasEvenOddMix": False})
                offers = []
                for ticket in event.ticket_types:
                    charges = event.charges(ticket, level)
                    offers.append({
                        "charges": [{"amount": charges.service, "reason": "service", "type": "fee"},
                                    {"amount": charges.facility, "reason": "facility", "type": "fee"}],
                        "currency": event.currency, "faceValue": charges.face,
                        "offerDescription": ticket.description, "offerName": ticket.name,
                        "priceLevelId": str(level.id), "ticketTypeId": ticket.id,
                    })
                tickets.append({"available": available, "total": total,
                                "currentTicketLimit": min(event.ticket_limit, available),
                                "inventory": inventory, "offers": offers})
        return {"event": {"id": event.id, "restrictSingle": False, "eventTicketLimit": event.ticket_limit,
                          "tickets": tickets}}

    # --- reserve --------------------------------------------------------------------------------

    def _find_block(self, event: Event, rows: list[tuple[PriceLevel, RowSpec]], quantity: int, begin: str | None,
                    end: str | None) -> tuple[PriceLevel, RowSpec, list[str]] | None:
        for level, row in rows:
            block = self._inventory.find_block((event.id, row.section, row.row), quantity, begin, end)
            if block is not None:
                return level, row, block
        return None

    def reserve(self, apikey: str, event_id: str, request: ReserveRequest) -> dict[str, Any]:
        event = self.event_or_404(event_id)
        with self._lock:
            now = self._now()
            settings = self._settings
            if now >= event.start:
                raise TMError(assumed.NOT_TRANSACTABLE)
            if settings.captcha_required:
                if not request.captcha_token:
                    raise TMError(assumed.CAPTCHA_REQUIRED)
                if request.captcha_token == assumed.INVALID_CAPTCHA_TOKEN:
                    raise TMError(assumed.CAPTCHA_INVALID)
            ticket_types = []
            for wanted in request.tickets:
                ticket_type = event.ticket_type(wanted.id)
                if ticket_type is None:
                    raise TMError(assumed.TICKET_TYPE_NOT_SELLABLE, f"Ticket type {wanted.id} is not sellable in this channel")
                ticket_types.append(ticket_type)
            if request.quantity > event.ticket_limit:
                raise TMError(assumed.TICKET_LIMIT, f"Ticket limit reached: at most {event.ticket_limit} per reserve")
            if request.price_id is not None and event.price_level(request.price_id) is None:
                raise TMError(assumed.NO_INVENTORY)
            candidates = [(level, row) for level, row in event.rows()
                          if (request.price_id is None or level.id == request.price_id)
                          and (not request.area_ids or set(row.area_ids) & set(request.area_ids))]
            preferred = [(level, row) for level, row in candidates
                         if (request.section is None or row.section == request.section)
                         and (request.row is None or row.row == request.row)]
            place_named = any(v is not None for v in (request.section, request.row, request.begin_seat))
            found = None
            if place_named and request.accept_best_available and self._swap(settings):
                others = [candidate for candidate in candidates if candidate not in preferred]
                found = self._find_block(event, others, request.quantity, None, None)
                if found is not None:
                    self._counters.bump("best_available_swaps")
            if found is None:
                found = self._find_block(event, preferred, request.quantity, request.begin_seat, request.end_seat)
            if found is None and place_named and request.accept_best_available:
                found = self._find_block(event, candidates, request.quantity, None, None)
            if found is None:
                raise TMError(assumed.NO_INVENTORY)
            level, row, seats = found
            cart = Cart(
                cart_id=str(uuid.uuid4()), apikey=apikey, event=event, level=level, row=row, seats=seats,
                lines=[CartLine(t, wanted.quantity, event.charges(t, level))
                       for t, wanted in zip(ticket_types, request.tickets, strict=True)],
                created_at=now, hold_until=now + timedelta(seconds=self._first_hold(settings)),
            )
            self._inventory.hold(cart.key, seats, cart.cart_id)
            self._carts[cart.cart_id] = cart
            return cart.view(now)

    # --- payment --------------------------------------------------------------------------------

    def _own_cart(self, apikey: str, event: Event, cart_id: str) -> Cart | None:
        cart = self._carts.get(cart_id)
        if cart is None or cart.apikey != apikey or cart.event.id != event.id:
            return None
        return cart

    def pay(self, apikey: str, event_id: str, request: PaymentRequest) -> dict[str, Any]:
        event = self.event_or_404(event_id)
        with self._lock:
            now = self._now()
            cart = self._own_cart(apikey, event, request.cart_id)
            if cart is None or cart.state not in LIVE_STATES:
                raise TMError(assumed.INVALID_CART)
            if request.currency != event.currency:
                raise TMError(assumed.INVALID_INPUT, f"payment.currency must be {event.currency} for this cart")
            if request.amount != cart.grand:  # exact: "54.410" is 54.41, "54.414" is not
                raise TMError(assumed.PAYMENT_AMOUNT_MISMATCH,
                              f"Payment amount {request.amount} does not match the cart total {cart.grand}")
            refusal = assumed.CARD_NONCE_ERRORS.get(request.card_number)
            if refusal is not None:
                raise TMError(refusal)
            nonce = hashlib.sha256(request.card_number.encode("utf-8")).hexdigest()
            if self._settings.one_time_nonces and nonce in self._used_nonces:
                self._counters.bump("nonces_reused")
                raise TMError(assumed.NONCE_REUSED)
            self._used_nonces.add(nonce)
            cart.payment = Payment(
                type=request.type, first_name=request.first_name, last_name=request.last_name,
                email_address=request.email_address, amount=money(request.amount), currency=request.currency,
                third_party_account_id=request.third_party_account_id, expire_month=request.expire_month,
                expire_year=request.expire_year,
            )
            cart.state = "paid"
            cart.hold_until = cart.hold_until + timedelta(seconds=self._settings.payment_extension_seconds)
            return cart.view(now)

    # --- commit ---------------------------------------------------------------------------------

    def _new_barcode(self) -> str:
        while True:
            barcode = f"{secrets.randbelow(10**16):016d}"
            if barcode not in self._barcodes and not barcode.startswith("0"):
                return barcode

    @staticmethod
    def _commit_refusal(apikey: str, event: Event, cart: Cart | None) -> tuple[TMError, str | None] | None:
        """Why ``cart`` cannot be committed now (the error and the counter it bumps), or None."""
        if cart is None or cart.apikey != apikey:
            return TMError(assumed.INVALID_RESERVE_STRUCTURE), None
        if cart.event.id != event.id:
            return TMError(assumed.INVALID_CART), None
        if cart.state == "expired":
            return TMError(assumed.INVALID_CART), "commits_on_expired_carts"
        if cart.state == "deleted":
            return TMError(assumed.INVALID_CART), "commits_on_deleted_carts"
        if cart.state == "committed":
            return TMError(assumed.INVALID_CART), "recommits"
        if cart.payment is None:
            return TMError(assumed.PAYMENT_REQUIRED), "commits_without_payment"
        return None

    def can_commit(self, apikey: str, event_id: str, request: CommitRequest) -> bool:
        """Would ``commit`` succeed now? Changes and counts nothing (but expiring what is due)."""
        event = self.event_or_404(event_id)
        with self._lock:
            self._now()
            return self._commit_refusal(apikey, event, self._carts.get(request.cart_id)) is None

    def commit(self, apikey: str, event_id: str, request: CommitRequest, *,
               count_refusals: bool = True) -> dict[str, Any]:
        """Commit the cart (TMError if it cannot be). ``count_refusals=False``: a refusal bumps no
        ``commits_on_*``/``recommits`` counter (a late commit's failure is counted by its caller)."""
        event = self.event_or_404(event_id)
        with self._lock:
            now = self._now()
            cart = self._carts.get(request.cart_id)
            refusal = self._commit_refusal(apikey, event, cart)
            if refusal is not None:
                error, counter = refusal
                if counter is not None and count_refusals:
                    self._counters.bump(counter)
                raise error
            assert cart is not None and cart.payment is not None
            self._order_seq = self._order_seq + 1 if self._order_seq < 99999 else 10000
            tickets: list[Ticket] = []
            for line in cart.lines:
                for _ in range(line.quantity):
                    seat = cart.seats[len(tickets)]
                    tickets.append(Ticket(
                        barcode=self._new_barcode(), seat_id=str(50000000 + secrets.randbelow(40000000)),
                        section=cart.row.section, row=cart.row.row, seat_name=seat, portal=cart.row.portal,
                        ticket_type=line.ticket_type, charges=line.charges,
                    ))
            order = Order(
                order_number=f"{event.order_prefix}-{self._order_seq:05d}/{event.host}",
                order_token=f"{uuid.uuid4()}-{secrets.token_urlsafe(18)}",
                cart_id=cart.cart_id, apikey=apikey, event=event, source_account_id=request.source_account_id,
                third_party_account_id=cart.payment.third_party_account_id,
                customer_email=cart.payment.email_address, created_at=now, tickets=tickets, grand_total=cart.grand,
                unredeemed_hidden=self._hide_from_unredeemed(),
            )
            self._inventory.sell(cart.key, cart.seats, cart.cart_id)
            cart.state = "committed"
            cart.ended_at = now
            cart.order_number = order.order_number
            self._orders[order.order_token] = order
            for ticket in tickets:
                self._barcodes[ticket.barcode] = (order, ticket)
            self._counters.bump("orders_per_source_account", request.source_account_id or "(none)")
            return order.commit_view()

    def _first_hold(self, settings: RuntimeSettings) -> float:
        """A new cart's hold: ``hold_time_seconds`` less a seeded 0..``hold_time_variance_seconds``
        (the cart was held a while before the answer was written), at least 1 s."""
        variance = settings.hold_time_variance_seconds
        shaved = self._hold_rng.uniform(0, variance) if variance > 0 else 0.0
        return max(1.0, settings.hold_time_seconds - shaved)

    def _swap(self, settings: RuntimeSettings) -> bool:
        rate = settings.best_available_swap_rate
        return rate > 0 and self._swap_rng.random() < rate

    def _delay(self, event: Event) -> Delay | None:
        return delay_of(event, self._settings.safetix_delays)

    def _hide_from_unredeemed(self) -> bool:
        rate = self._settings.unredeemed_hide_rate
        return rate > 0 and self._rng.random() < rate

    # --- delete ---------------------------------------------------------------------------------

    def delete(self, apikey: str, event_id: str, cart_id: str) -> None:
        event = self.event_or_404(event_id)
        with self._lock:
            now = self._now()
            cart = self._own_cart(apikey, event, cart_id)
            if cart is None or cart.state == "committed":
                raise TMError(assumed.INVALID_CART)
            if cart.state in LIVE_STATES:
                self._inventory.release(cart.key, cart.seats, cart.cart_id)
                cart.state = "deleted"
                cart.ended_at = now

    # --- orders ---------------------------------------------------------------------------------

    def order_management(self, apikey: str, order_token: str, device: Device) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            order = self._orders.get(order_token)
            if order is None or order.apikey != apikey:
                raise TMError(assumed.ORDER_NOT_FOUND)
            if device.third_party_account_id != order.third_party_account_id:
                raise TMError(assumed.THIRD_PARTY_MISMATCH)
            order.management_calls.append(now)
            event = order.event
            empty = bool({"*", event.id} & set(self._settings.empty_barcode_events))
            return order_management_view(order, device, now, self._delay(event), empty_barcodes=empty)

    def unredeemed(self, apikey: str, days_from_purchase: int | None, days_before_event: int | None) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            found = []
            lag = timedelta(seconds=self._settings.unredeemed_lag_seconds)
            for order in sorted(self._orders.values(), key=lambda o: o.created_at):
                if order.apikey != apikey or order.redeemed or order.unredeemed_hidden:
                    continue
                if lag and now - order.created_at < lag:  # the list lags behind commits
                    continue
                if days_from_purchase is not None and order.created_at < now - timedelta(days=days_from_purchase):
                    continue
                if days_before_event is not None and not (now <= order.event.start <= now + timedelta(days=days_before_event)):
                    continue
                found.append(order.unredeemed_view())
            return {"data": found}

    def securerender(self, apikey: str, request: SecureRenderRequest) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self._now()
            answers: list[dict[str, Any]] = []
            all_ok = True
            for requested in request.tickets:
                barcode = requested.get("barcode")
                found = self._barcodes.get(barcode) if isinstance(barcode, str) else None
                if found is not None and found[0].apikey != apikey:
                    found = None
                answer, ok = render_ticket(requested, found, request.user_id, request.device_os, now, self._delay)
                self._counters.securerender_call(barcode if isinstance(barcode, str) and barcode else "(missing)", now, ok)
                answers.append(answer)
                all_ok = all_ok and ok
            return all_ok, {"deviceId": request.device_id, "deviceType": request.device_type,
                            "deviceOs": request.device_os, "nfcCapableDevice": request.device_type.lower() == "native",
                            "tickets": answers}

    # --- admin ----------------------------------------------------------------------------------

    def hold_seconds(self, cart_id: str) -> int | None:
        with self._lock:
            now = self._now()
            cart = self._carts.get(cart_id)
            return cart.hold_seconds(now) if cart else None

    def admin_carts(self, state: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self._now()
            return [to_plain(c.admin_view(now)) for c in self._carts.values()
                    if (state is None or c.state == state) and (event_id is None or c.event.id == event_id)]

    def admin_orders(self, source_account_id: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._now()
            return [to_plain(o.admin_view()) for o in sorted(self._orders.values(), key=lambda o: o.created_at)
                    if (source_account_id is None or o.source_account_id == source_account_id)
                    and (event_id is None or o.event.id == event_id)]

    def redeem(self, order_token: str) -> dict[str, Any]:
        with self._lock:
            order = self._orders.get(order_token)
            if order is None:
                raise KeyError(order_token)
            order.redeemed = True
            view: dict[str, Any] = to_plain(order.admin_view())
            return view

    def catalogue_report(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._now()
            report = []
            for event in self.catalogue.events:
                report.append({
                    "event_id": event.id, "name": event.name, "timezone": event.timezone,
                    "start": iso_z(event.start), "local_start": event.local_start.isoformat(),
                    "delivery": event.delivery, "safetix_delivery_delay_date": event.delivery_delay_date,
                    "safetix_delay": ({"signal": delay.signal, "shown_date": delay.shown_date, "ends": iso_z(delay.ends)}
                                      if (delay := self._delay(event)) is not None else None),
                    "currency": event.currency, "ticket_limit": event.ticket_limit,
                    "in_niterun_window_now": in_window(event, now),
                    "ticket_types": [{"id": t.id, "description": t.description} for t in event.ticket_types],
                    "price_levels": [{
                        "id": level.id, "description": level.description,
                        "one_ticket_grand": to_plain(money(level.charges.face + level.charges.face_tax + level.charges.service
                                                           + level.charges.service_tax + level.charges.facility
                                                           + level.charges.distance + event.processing_fee)),
                        "rows": [{"section": row.section, "row": row.row, "areas": list(row.area_ids),
                                  **self._inventory.state((event.id, row.section, row.row))} for row in level.rows],
                    } for level in event.price_levels],
                })
            return report
