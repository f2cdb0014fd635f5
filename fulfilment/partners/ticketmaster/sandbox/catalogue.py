"""The seeded, deterministic inventory (ALL of it ASSUMED unless noted: no source lists inventory).

Event start times are relative to the sandbox clock at start-up (``anchor``): the event-local date of
the anchor + N days, at a fixed local time, so the catalogue never goes stale.

==================  ===================================  ===================  =====  ===============================
event_id            what                                 timezone             when   delivery
==================  ===================================  ===================  =====  ===============================
000051048D991EE7    the FAQ's test event (seed 004)      America/Los_Angeles  +30 d  SafeTix, no delay
3F005105D843DFA3    seed 003's theatre (BALC2L, PL 7)    America/Phoenix      +14 d  SafeTix, delivery delay date
                                                                                     = event date - 2 days
0B004D43F86C478F    seed 003's payment-URL event         America/Los_Angeles  +45 d  barcode only (no SafeTix)
3F005237E5CB39EA    seed 003's SecureRender event, TINY  Australia/Sydney     +21 d  SafeTix (NFC), AUD
==================  ===================================  ===================  =====  ===============================

Prices (per ticket: face + face tax, service + service tax; plus a processing fee per cart):

* 000051048D991EE7 price level 1 (section 101, rows A-B, seats 1-10): 40.00 + 2.90, 8.00 + 0.58,
  processing 2.93 -> one ticket is exactly 54.41 (seed 003's payment amount); price level 2
  (section 201, rows A-C, seats 1-10): 25.00 + 1.81, 5.00 + 0.36. Ticket type ``000000000001``.
* 3F005105D843DFA3 price level 7 (BALC2L rows A-B, odd seats 1-19, areas 8/9/11/16 as in seed 003):
  57.00 + 4.13, 34.20 + 2.57, processing 3.76 -> one ticket is 101.66 (seed 003's cart); price level 6
  (BALC2 row K, seats 101-110): 37.00 + 5.26 (seed 003's order). Ticket type ``000000000001``.
* 0B004D43F86C478F ticket types ``000042800007`` GPAS1 and ``000083000007`` GPAS2 (2017 doc ids;
  GPAS2 is a child ticket at 60 % of face value); price level 8 (ORCH rows A-D, seats 1-12):
  150.00, service 12.00; price level 9 (MEZZ rows A-B, seats 1-12): 100.00, service 9.00.
* 3F005237E5CB39EA (tiny; ticket type ``000002040006``, the contract's example id): section G row 17
  seats 1-4 (seed 003's SecureRender seats), section H row 1 seats 1-6 with 3 and 4 already sold (no
  3 contiguous seats), section J row 1 seats 1-2 both sold (sold out). Price level 1: 89.00 + 8.90,
  service 11.00, processing 4.50, currency AUD.

Ticket limit per reserve: 8 (3F005237E5CB39EA: 4). Seats are numbered strings; "contiguous" means
adjacent in the row's seat order (so 13, 15, 17 are contiguous on an odd-numbered side).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

TEST_EVENT_ID = "000051048D991EE7"       # DOCUMENTED (seed 004): the test event id
DELAY_EVENT_ID = "3F005105D843DFA3"      # seed 003's event id
BARCODE_EVENT_ID = "0B004D43F86C478F"    # seed 003's payment URL event id
TINY_EVENT_ID = "3F005237E5CB39EA"       # seed 003's SecureRender event id

Delivery = Literal["safetix", "barcode"]


@dataclass(frozen=True)
class Charges:
    """What one ticket costs (per unit)."""

    face: Decimal
    face_tax: Decimal = Decimal("0.00")
    service: Decimal = Decimal("0.00")
    service_tax: Decimal = Decimal("0.00")
    facility: Decimal = Decimal("0.00")
    distance: Decimal = Decimal("0.00")

    def scaled(self, factor: Decimal) -> Charges:
        """A discounted ticket type: face value and its tax scale, fees stay."""
        cent = Decimal("0.01")
        return replace(self, face=(self.face * factor).quantize(cent), face_tax=(self.face_tax * factor).quantize(cent))


@dataclass(frozen=True)
class Area:
    id: int
    description: str


@dataclass(frozen=True)
class RowSpec:
    section: str
    row: str
    seats: tuple[str, ...]
    area_ids: tuple[int, ...]
    portal: str
    presold: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PriceLevel:
    id: int
    description: str
    charges: Charges
    rows: tuple[RowSpec, ...]  # best first


@dataclass(frozen=True)
class TicketType:
    id: str  # a string: leading zeros are significant (2017 doc)
    description: str
    name: str
    face_factor: Decimal = Decimal("1")


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    code: str
    host: str
    order_prefix: str
    timezone: str
    start: datetime  # UTC
    venue_id: int
    venue_name: str
    city: str
    region: str
    country: str
    currency: str
    ticket_limit: int
    processing_fee: Decimal
    delivery: Delivery
    segment_type: str
    areas: tuple[Area, ...]
    price_levels: tuple[PriceLevel, ...]
    ticket_types: tuple[TicketType, ...]
    delay_days_before: int | None = None
    onsale: datetime = field(default_factory=lambda: datetime(2020, 1, 1, tzinfo=UTC))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(self.zone)

    @property
    def delivery_delay_date(self) -> str | None:
        if self.delay_days_before is None:
            return None
        return (self.local_start.date() - timedelta(days=self.delay_days_before)).isoformat()

    def price_level(self, price_id: int) -> PriceLevel | None:
        return next((p for p in self.price_levels if p.id == price_id), None)

    def ticket_type(self, ticket_id: str) -> TicketType | None:
        return next((t for t in self.ticket_types if t.id == ticket_id), None)

    def area(self, area_id: int) -> Area | None:
        return next((a for a in self.areas if a.id == area_id), None)

    def charges(self, ticket_type: TicketType, level: PriceLevel) -> Charges:
        return level.charges if ticket_type.face_factor == 1 else level.charges.scaled(ticket_type.face_factor)

    def rows(self) -> list[tuple[PriceLevel, RowSpec]]:
        return [(level, row) for level in self.price_levels for row in level.rows]


@dataclass(frozen=True)
class Catalogue:
    events: tuple[Event, ...]

    def event(self, event_id: str) -> Event | None:
        return next((e for e in self.events if e.id == event_id), None)


def _d(value: str) -> Decimal:
    return Decimal(value)


def _seats(first: int, last: int, step: int = 1) -> tuple[str, ...]:
    return tuple(str(n) for n in range(first, last + 1, step))


def _start(anchor: datetime, timezone: str, days: int, at: time) -> datetime:
    zone = ZoneInfo(timezone)
    local_day = anchor.astimezone(zone).date() + timedelta(days=days)
    return datetime.combine(local_day, at, tzinfo=zone).astimezone(UTC)


def build_catalogue(anchor: datetime, *, seats_per_row: int | None = None) -> Catalogue:
    """`seats_per_row`: the test and barcode-only events' rows get that many seats (load and chaos runs)."""
    standard = TicketType("000000000001", "Standard Ticket", "GPAS1")
    test_event = Event(
        id=TEST_EVENT_ID, name="Partner API Test Event", code="ETEST01", host="LA1", order_prefix="35",
        timezone="America/Los_Angeles", start=_start(anchor, "America/Los_Angeles", 30, time(19, 30)),
        venue_id=100001, venue_name="Sandbox Hall", city="Los Angeles", region="CA", country="US", currency="USD",
        ticket_limit=8, processing_fee=_d("2.93"), delivery="safetix", segment_type="ROTATING_SYMBOLOGY",
        areas=(Area(1, "Lower Level"), Area(2, "Upper Level")),
        price_levels=(
            PriceLevel(1, "Price Level 1", Charges(_d("40.00"), _d("2.90"), _d("8.00"), _d("0.58")), tuple(
                RowSpec("101", row, _seats(1, seats_per_row or 10), (1,), "LOWER LEVEL") for row in ("A", "B"))),
            PriceLevel(2, "Price Level 2", Charges(_d("25.00"), _d("1.81"), _d("5.00"), _d("0.36")), tuple(
                RowSpec("201", row, _seats(1, seats_per_row or 10), (2,), "UPPER LEVEL") for row in ("A", "B", "C"))),
        ),
        ticket_types=(standard,),
    )
    theatre = Event(
        id=DELAY_EVENT_ID, name="Sandbox Theatre Night", code="ECAPI1", host="PHX", order_prefix="39",
        timezone="America/Phoenix", start=_start(anchor, "America/Phoenix", 14, time(19, 0)),
        venue_id=100002, venue_name="Sandbox Theatre", city="Phoenix", region="AZ", country="US", currency="USD",
        ticket_limit=8, processing_fee=_d("3.76"), delivery="safetix", segment_type="ROTATING_SYMBOLOGY",
        areas=(Area(8, "Second Balcony"), Area(9, "Left Side of Theatre"), Area(11, "Seats are Odd-Numbered"),
               Area(16, "Price Level 7"), Area(15, "Price Level 6")),
        price_levels=(
            PriceLevel(7, "Price Level 7", Charges(_d("57.00"), _d("4.13"), _d("34.20"), _d("2.57")), tuple(
                RowSpec("BALC2L", row, _seats(1, 19, 2), (8, 9, 11, 16), "SECOND BALCONY") for row in ("A", "B"))),
            PriceLevel(6, "Price Level 6", Charges(_d("37.00"), _d("5.26")), (
                RowSpec("BALC2", "K", _seats(101, 110), (8, 15), "SECOND BALCONY"),)),
        ),
        ticket_types=(standard,),
        delay_days_before=2,
    )
    barcode_only = Event(
        id=BARCODE_EVENT_ID, name="Sandbox Barcode Concert", code="EPT0726E", host="LA2", order_prefix="36",
        timezone="America/Los_Angeles", start=_start(anchor, "America/Los_Angeles", 45, time(18, 30)),
        venue_id=100003, venue_name="Sandbox Arena", city="Los Angeles", region="CA", country="US", currency="USD",
        ticket_limit=8, processing_fee=_d("5.00"), delivery="barcode", segment_type="BARCODE",
        areas=(Area(0, "Orchestra"), Area(2, "Mezzanine")),
        price_levels=(
            PriceLevel(8, "Price Level 1", Charges(_d("150.00"), service=_d("12.00")), tuple(
                RowSpec("ORCH", row, _seats(1, seats_per_row or 12), (0,), "ORCHESTRA") for row in ("A", "B", "C", "D"))),
            PriceLevel(9, "Price Level 2", Charges(_d("100.00"), service=_d("9.00")), tuple(
                RowSpec("MEZZ", row, _seats(1, seats_per_row or 12), (2,), "MEZZANINE") for row in ("A", "B"))),
        ),
        ticket_types=(TicketType("000042800007", "Adult", "GPAS1"),
                      TicketType("000083000007", "Child", "GPAS2", face_factor=_d("0.6"))),
    )
    tiny = Event(
        id=TINY_EVENT_ID, name="Sandbox Tiny Gig", code="ESYD01", host="SYD", order_prefix="41",
        timezone="Australia/Sydney", start=_start(anchor, "Australia/Sydney", 21, time(20, 0)),
        venue_id=100004, venue_name="Sandbox Club", city="Sydney", region="NSW", country="AU", currency="AUD",
        ticket_limit=4, processing_fee=_d("4.50"), delivery="safetix", segment_type="NFC_ROTATING_SYMBOLOGY",
        areas=(Area(1, "Floor"),),
        price_levels=(
            PriceLevel(1, "Price Level 1", Charges(_d("89.00"), _d("8.90"), _d("11.00")), (
                RowSpec("G", "17", _seats(1, 4), (1,), "GATE G"),
                RowSpec("H", "1", _seats(1, 6), (1,), "GATE H", presold=frozenset({"3", "4"})),
                RowSpec("J", "1", _seats(1, 2), (1,), "GATE J", presold=frozenset({"1", "2"})),
            )),
        ),
        ticket_types=(TicketType("000002040006", "General Admission", "GPAS1"),),
    )
    return Catalogue((test_event, theatre, barcode_only, tiny))
