"""All mutable sandbox state (tokens, quotes, orders, seat inventory) behind one lock.

Why one ``threading.Lock``: the checks and the effects of an order (quote unused and unexpired,
seats free -> consume quote, take seats, record order) must be one atomic step, or two concurrent
orders on the same quote could both succeed. A single lock makes that trivially true and the
sandbox is never the bottleneck.

Quotes reserve nothing: a quote only checks that the seats exist *now*; the seats are taken by the
order, which can therefore fail with NO_INVENTORY_AVAILABLE / INSUFFICIENT_QUANTITY even though
its quote was fine.

Ids (tokens, quote ids, order ids, transfer emails) come from ``secrets``, not from the seeded
RNG: a restarted sandbox must not hand out ids that a client database already holds.
"""

from __future__ import annotations

import math
import random
import secrets
import string
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fulfilment.partners.sandbox_kit.clock import Clock, iso_z, plus_seconds
from fulfilment.partners.sandbox_kit.config import SettingsHolder

from .accounts import SCOPE, AccountDirectory, PartnerAccount
from .catalogue import Catalogue, Event, Section
from .config import RuntimeSettings
from .errors import ApiError
from .inventory import Inventory, RowKey
from .lifecycle import AWAITING, FINAL_STATUSES, draw_outcome, due_transition
from .models import Order, Quote, Token

_ORDER_SUFFIX_ALPHABET = string.ascii_uppercase + string.digits
_EMAIL_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class QuoteRequest:
    event_id: str
    section_name: str
    row_name: str | None
    quantity: int


@dataclass(frozen=True)
class OrderRequest:
    quote_id: str
    delivery_type: str
    delivery_deadline: datetime


class SandboxStore(SettingsHolder[RuntimeSettings]):
    def __init__(
        self,
        catalogue: Catalogue,
        accounts: AccountDirectory,
        settings: RuntimeSettings,
        clock: Clock,
        lifecycle_rng: random.Random,
        token_prefix: str = "tbb_",
    ) -> None:
        self.catalogue = catalogue
        self._token_prefix = token_prefix
        self.accounts = accounts
        self._settings = settings
        self._clock = clock
        self._rng = lifecycle_rng
        self._lock = threading.Lock()
        self._inventory = Inventory(catalogue)
        self._tokens: dict[str, Token] = {}
        self._quotes: dict[str, Quote] = {}
        self._orders: dict[str, Order] = {}
        self._tokens_issued: Counter[str] = Counter()

    # --- settings ---------------------------------------------------------------------------

    # --- auth -------------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        account = self.accounts.authenticate(client_id, client_secret)
        with self._lock:
            now = self._clock()
            ttl = self._settings.token_ttl_seconds
            token = Token(self._token_prefix + secrets.token_urlsafe(32), account.client_id, now, plus_seconds(now, ttl))
            self._tokens[token.access_token] = token
            self._tokens_issued[account.client_id] += 1
        return {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "expires_at": iso_z(token.expires_at),
            # Integer like the docs (3600); expires_at carries the exact instant for tiny TTLs.
            "expires_in": max(1, math.ceil(ttl)),
            "scope": SCOPE,
        }

    def authenticate(self, authorization: str | None) -> PartnerAccount:
        """Resolve ``Authorization: Bearer <token>`` to an account or raise 401."""
        if not authorization:
            raise ApiError("UNAUTHORIZED")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise ApiError("UNAUTHORIZED")
        with self._lock:
            token = self._tokens.get(value)
            if token is None:
                raise ApiError("UNAUTHORIZED")
            if self._clock() >= token.expires_at:
                raise ApiError("TOKEN_EXPIRED", {"expired_at": iso_z(token.expires_at)})
        account = self.accounts.get(token.client_id)
        if account is None:  # pragma: no cover - accounts are static
            raise ApiError("UNAUTHORIZED")
        return account

    def require_payment(self, account: PartnerAccount) -> None:
        if not account.payment_configured:
            raise ApiError(self.settings.payment_error_code)

    # --- discovery --------------------------------------------------------------------------

    def event_or_404(self, event_id: str) -> Event:
        event = self.catalogue.event(event_id)
        if event is None:
            raise ApiError("EVENT_NOT_FOUND", {"event_id": event_id})
        return event

    def sections_with_inventory(self, event_id: str) -> list[Section]:
        event = self.event_or_404(event_id)
        with self._lock:
            return [
                s for s in event.sections
                if any(self._inventory.free((event_id, s.name, r.name)) > 0 for r in s.rows)
            ]

    def rows_with_inventory(self, event_id: str, section_name: str) -> list[dict[str, str]]:
        event = self.event_or_404(event_id)
        section = event.section(section_name)
        if section is None:
            raise ApiError("SECTION_NOT_FOUND", {"event_id": event_id, "section_name": section_name})
        with self._lock:
            return [
                {"row_name": r.name, "row_name_display": r.display}
                for r in section.rows
                if self._inventory.free((event_id, section_name, r.name)) > 0
            ]

    # --- quotes -----------------------------------------------------------------------------

    def create_quote(self, account: PartnerAccount, request: QuoteRequest) -> dict[str, Any]:
        self.require_payment(account)
        event = self.event_or_404(request.event_id)
        with self._lock:
            now = self._clock()
            if now >= event.starts_at:
                raise ApiError("EVENT_EXPIRED", {"event_id": event.event_id,
                                                 "event_datetime_utc": iso_z(event.starts_at)})
            section = event.section(request.section_name)
            if section is None:
                raise ApiError("SECTION_NOT_FOUND", {"event_id": event.event_id,
                                                     "section_name": request.section_name})
            row_name = self._pick_row(event, section, request)
            quote_id = self._new_id(lambda: "qt_" + secrets.token_hex(4), self._quotes)
            quote = Quote(
                quote_id=quote_id,
                client_id=account.client_id,
                event_id=event.event_id,
                section_name=section.name,
                row_name=row_name,
                quantity=request.quantity,
                unit_price=section.unit_price,
                created_at=now,
                expires_at=plus_seconds(now, self._settings.quote_ttl_seconds),
            )
            self._quotes[quote_id] = quote
            return quote.public(event)

    def _pick_row(self, event: Event, section: Section, request: QuoteRequest) -> str:
        """Validate the requested row, or choose the best (front-most) row that fits."""
        base = {"event_id": event.event_id, "section_name": section.name}
        if request.row_name is not None:
            row = section.row(request.row_name)
            if row is None:
                raise ApiError("SECTION_NOT_FOUND", {**base, "row_name": request.row_name})
            self._check_row_availability((event.event_id, section.name, row.name), request.quantity,
                                         {**base, "row_name": row.name})
            return row.name
        runs = {r.name: self._inventory.longest_run((event.event_id, section.name, r.name)) for r in section.rows}
        for row in section.rows:  # rows are ordered best first (A is nearest the field)
            if runs[row.name] >= request.quantity:
                return row.name
        best = max(runs.values(), default=0)
        if best == 0:
            raise ApiError("NO_INVENTORY_AVAILABLE", base)
        raise ApiError("INSUFFICIENT_QUANTITY", {**base, "requested": request.quantity, "available": best})

    def _check_row_availability(self, key: RowKey, quantity: int, details: dict[str, Any]) -> None:
        if self._inventory.free(key) == 0:
            raise ApiError("NO_INVENTORY_AVAILABLE", details)
        available = self._inventory.longest_run(key)
        if available < quantity:
            raise ApiError("INSUFFICIENT_QUANTITY", {**details, "requested": quantity, "available": available})

    # --- orders -----------------------------------------------------------------------------

    def create_order(
        self, account: PartnerAccount, request: OrderRequest, *, expiry_checked_first: bool = False
    ) -> dict[str, Any]:
        """Consume the quote and take the seats, atomically.

        ``expiry_checked_first`` (fault rule of the same name) swaps the consumed/expired checks, so
        a quote that is both answers QUOTE_EXPIRED, as a partner checking expiry first would.
        """
        self.require_payment(account)
        with self._lock:
            now = self._clock()
            quote = self._quotes.get(request.quote_id)
            if quote is None:
                raise ApiError("QUOTE_NOT_FOUND", {"quote_id": request.quote_id})
            if quote.client_id != account.client_id:
                raise ApiError("FORBIDDEN", {"quote_id": request.quote_id})
            # Consumption is checked before expiry by default: "already used" is the more useful
            # answer for a client retrying an order whose first attempt actually succeeded.
            consumed = quote.consumed_by_order_id is not None
            expired = now >= quote.expires_at
            if consumed and not (expired and expiry_checked_first):
                raise ApiError("QUOTE_ALREADY_CONSUMED", {"quote_id": quote.quote_id})
            if expired:
                raise ApiError("QUOTE_EXPIRED", {"quote_id": quote.quote_id, "expired_at": iso_z(quote.expires_at)})
            event = self.catalogue.event(quote.event_id)
            assert event is not None
            if request.delivery_deadline >= event.starts_at:
                raise ApiError("INVALID_DELIVERY_DEADLINE", {
                    "delivery_deadline": iso_z(request.delivery_deadline),
                    "event_datetime_utc": iso_z(event.starts_at),
                })
            if request.delivery_deadline <= now:
                # ASSUMED: the docs only name "after the event", but a deadline already in the
                # past would create an order that is expired on arrival.
                raise ApiError("INVALID_DELIVERY_DEADLINE", {
                    "delivery_deadline": iso_z(request.delivery_deadline),
                    "reason": "delivery_deadline is in the past",
                }, message="delivery_deadline must be in the future and before the event start time.")
            key = (quote.event_id, quote.section_name, quote.row_name)
            details = {"event_id": quote.event_id, "section_name": quote.section_name, "row_name": quote.row_name}
            self._check_row_availability(key, quote.quantity, details)
            seats = self._inventory.take(key, quote.quantity)
            assert seats is not None  # guaranteed by the availability check under the same lock
            order_id = self._new_id(
                lambda: f"TBB-{now:%Y%m%d}-" + "".join(secrets.choice(_ORDER_SUFFIX_ALPHABET) for _ in range(4)),
                self._orders,
            )
            order = Order(
                order_id=order_id,
                client_id=account.client_id,
                quote_id=quote.quote_id,
                event_id=quote.event_id,
                section_name=quote.section_name,
                row_name=quote.row_name,
                quantity=quote.quantity,
                first_seat=seats[0],
                last_seat=seats[1],
                unit_price=quote.unit_price,
                delivery_type=request.delivery_type,
                delivery_deadline=request.delivery_deadline,
                transfer_email="transfer-inbox-" + "".join(secrets.choice(_EMAIL_ALPHABET) for _ in range(8))
                + "@ticketbuyback.com",
                status=AWAITING,
                created_at=now,
                updated_at=now,
                quote_expires_at=quote.expires_at,
            )
            quote.consumed_by_order_id = order_id
            quote.consumed_at = now
            self._orders[order_id] = order
            return order.public(event)

    def quote_consumed(self, quote_id: str) -> bool:
        with self._lock:
            quote = self._quotes.get(quote_id)
            return quote is not None and quote.consumed_by_order_id is not None

    def get_order(self, account: PartnerAccount, order_id: str) -> dict[str, Any]:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise ApiError("ORDER_NOT_FOUND", {"order_id": order_id})
            if order.client_id != account.client_id:
                raise ApiError("FORBIDDEN", {"order_id": order_id})
            self._advance(order, self._clock())
            return order.public(self._event(order))

    def list_orders(
        self, account: PartnerAccount, quote_id: str | None, limit: int, offset: int,
        hide: Callable[[datetime, datetime], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """This partner's orders (optionally for one quote), oldest first, paginated.

        ``hide(created_at, now)`` leaves an order out before pagination, as if it did not exist
        (the lookup faults: a lagging index, a random miss).
        """
        with self._lock:
            now = self._clock()
            mine = [
                o for o in self._orders.values()
                if o.client_id == account.client_id and (quote_id is None or o.quote_id == quote_id)
            ]
            if hide is not None:
                mine = [o for o in mine if not hide(o.created_at, now)]
            mine.sort(key=lambda o: o.created_at)  # stable: ties keep creation order
            page = mine[offset: offset + limit]
            for order in page:
                self._advance(order, now)
            return [o.public(self._event(o)) for o in page], len(mine)

    def _advance(self, order: Order, now: datetime) -> None:
        """Apply any lifecycle transition that is due (lazy evaluation on read)."""
        if order.status != AWAITING or order.status_forced:
            return
        due = due_transition(order.created_at, order.delivery_deadline, self._settings.transfer_after_seconds, now)
        if due is None:
            return
        kind, at = due
        order.status = "transfer_expired" if kind == "deadline" else draw_outcome(self._settings.transfer_outcome, self._rng)
        order.updated_at = max(at, order.created_at)

    def _event(self, order_or_quote: Order | Quote) -> Event:
        event = self.catalogue.event(order_or_quote.event_id)
        assert event is not None
        return event

    @staticmethod
    def _new_id(make: Any, existing: dict[str, Any]) -> str:
        while True:
            candidate = make()
            if candidate not in existing:
                return candidate

    # --- admin ------------------------------------------------------------------------------

    def admin_orders(
        self, quote_id: str | None = None, partner: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            result = []
            for order in sorted(self._orders.values(), key=lambda o: o.created_at):
                self._advance(order, now)
                if quote_id is not None and order.quote_id != quote_id:
                    continue
                if partner is not None and order.client_id != partner:
                    continue
                if status is not None and order.status != status:
                    continue
                result.append(order.admin(self._event(order)))
            return result

    def admin_quotes(self, quote_id: str | None = None, partner: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [
                q.admin(self._event(q), now)
                for q in sorted(self._quotes.values(), key=lambda q: q.created_at)
                if (quote_id is None or q.quote_id == quote_id) and (partner is None or q.client_id == partner)
            ]

    def force_status(self, order_id: str, status: str) -> dict[str, Any]:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {list(FINAL_STATUSES)}")
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise KeyError(order_id)
            order.status = status
            order.status_forced = True
            order.updated_at = max(self._clock(), order.created_at)
            return order.admin(self._event(order))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            for order in self._orders.values():
                self._advance(order, now)
            quotes_by_partner = Counter(q.client_id for q in self._quotes.values())
            orders_by_partner = Counter(o.client_id for o in self._orders.values())
            return {
                "tokens_issued": dict(self._tokens_issued),
                "tokens_issued_total": sum(self._tokens_issued.values()),
                "quotes": dict(quotes_by_partner),
                "quotes_total": len(self._quotes),
                "quotes_consumed": sum(1 for q in self._quotes.values() if q.consumed_by_order_id),
                "orders": dict(orders_by_partner),
                "orders_total": len(self._orders),
                "orders_by_status": dict(Counter(o.status for o in self._orders.values())),
                # Must always be 0: the whole point of the quote TTL check.
                "orders_on_expired_quote": sum(1 for o in self._orders.values() if o.created_on_expired_quote),
            }

    def catalogue_report(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            report = []
            for event in self.catalogue.events():
                sections = []
                for section in event.sections:
                    rows = []
                    for row in section.rows:
                        key = (event.event_id, section.name, row.name)
                        rows.append({
                            "row_name": row.name,
                            "capacity": row.capacity,
                            "sold": self._inventory.sold(key),
                            "available": self._inventory.free(key),
                        })
                    sections.append({
                        "section_id": section.section_id,
                        "section_name": section.name,
                        "unit_price": section.unit_price,
                        "rows": rows,
                    })
                report.append({**event.public(), "is_past": now >= event.starts_at, "note": event.note,
                               "sections": sections})
            return report

    def reset(self, settings: RuntimeSettings, lifecycle_rng: random.Random) -> None:
        """Forget every token/quote/order, restore inventory and the start-up settings."""
        with self._lock:
            self._settings = settings
            self._rng = lifecycle_rng
            self._tokens.clear()
            self._quotes.clear()
            self._orders.clear()
            self._tokens_issued.clear()
            self._inventory.reset()
