"""The seeded, deterministic event catalogue.

Event dates are relative to the UTC date at start-up, at a fixed local kick-off time in the event's
timezone, so the catalogue never goes stale. Prices are fixed per section (x an event multiplier).

Seeded ids
----------
============  =================================================  ==========  =================
event_id      event                                              when        notes
============  =================================================  ==========  =================
5496123       New England Patriots vs. Buffalo Bills             +30 days    the seed-doc event;
                                                                             section 101 = 175.00
5496124       Boston Celtics vs. New York Knicks                 +45 days
5496125       Los Angeles Lakers vs. Golden State Warriors       +60 days
5496126       Chicago Cubs vs. St. Louis Cardinals               +90 days
5496127       Buffalo Bills vs. Miami Dolphins                   +120 days   Bills again (performer filter)
5490000       Miami Dolphins vs. New York Jets                   -3 days     PAST: quotes -> EVENT_EXPIRED
5490001       Boston Red Sox vs. New York Yankees                +21 days    TINY INVENTORY
============  =================================================  ==========  =================

Standard events: sections ``101 102 103 201 202 301``, each with rows ``A B C D E`` of
``seats_per_row`` seats (default 20, numbered from 1). Base prices per ticket: 101 175.00,
102 165.00, 103 155.00, 201 125.00, 202 115.00, 301 85.00, multiplied per event (5496123 x1.0,
5496124 x1.2, 5496125 x1.4, 5496126 x0.6, 5496127 x0.9, 5490000 x1.0).

Tiny event 5490001 ignores ``seats_per_row``:
  * section ``101`` row ``A``: 2 seats (95.00) - quantity 3 -> INSUFFICIENT_QUANTITY; after an
    order for 2 -> NO_INVENTORY_AVAILABLE;
  * section ``101`` row ``B``: 0 seats (sold out, hidden from the rows list) ->
    NO_INVENTORY_AVAILABLE;
  * section ``102`` row ``A``: 0 seats (80.00) - the whole section is sold out, hidden from the
    sections list, quotes -> NO_INVENTORY_AVAILABLE.

Unknown section names (e.g. ``999``) and rows (e.g. ``Z``) -> 404 SECTION_NOT_FOUND.
ASSUMED beyond the docs: ``venue`` carries ``venue_name``, ``city``, ``state``; events carry a
``performers`` list (the discovery filters imply performers exist).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

PAST_EVENT_ID = "5490000"
TINY_EVENT_ID = "5490001"
SEED_EVENT_ID = "5496123"

STANDARD_SECTIONS: tuple[tuple[str, str], ...] = (
    ("101", "175.00"),
    ("102", "165.00"),
    ("103", "155.00"),
    ("201", "125.00"),
    ("202", "115.00"),
    ("301", "85.00"),
)
STANDARD_ROWS: tuple[str, ...] = ("A", "B", "C", "D", "E")


@dataclass(frozen=True)
class Venue:
    venue_id: str
    venue_name: str
    city: str
    state: str

    def public(self) -> dict[str, str]:
        return {"venue_id": self.venue_id, "venue_name": self.venue_name, "city": self.city, "state": self.state}


@dataclass(frozen=True)
class Performer:
    performer_id: str
    performer_name: str

    def public(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    """A row of a section, with the seats it has."""

    name: str
    capacity: int

    @property
    def display(self) -> str:
        return f"Row {self.name}"


@dataclass(frozen=True)
class Section:
    section_id: str
    name: str
    unit_price: float
    rows: tuple[Row, ...]

    @property
    def display(self) -> str:
        return f"Section {self.name}"

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


@dataclass(frozen=True)
class Event:
    event_id: str
    name: str
    starts_at: datetime  # UTC
    timezone: str
    venue: Venue
    performers: tuple[Performer, ...]
    sections: tuple[Section, ...]
    note: str = ""

    @property
    def local_datetime(self) -> str:
        """``event_datetime_local``: wall-clock time without offset (zone is beside it)."""
        return self.starts_at.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None).isoformat(timespec="seconds")

    @property
    def local_date(self) -> date:
        return self.starts_at.astimezone(ZoneInfo(self.timezone)).date()

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def summary(self) -> dict[str, str]:
        """The ``event`` object embedded in quotes and orders (seed 001/002)."""
        return {
            "event_id": self.event_id,
            "event_name": self.name,
            "event_datetime_local": self.local_datetime,
            "event_timezone": self.timezone,
        }

    def public(self) -> dict[str, Any]:
        """The discovery event object."""
        return {
            "event_id": self.event_id,
            "event_name": self.name,
            "event_datetime_utc": self.starts_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "event_datetime_local": self.local_datetime,
            "event_timezone": self.timezone,
            "venue": self.venue.public(),
            "performers": [p.public() for p in self.performers],
        }


class Catalogue:
    def __init__(self, events: list[Event]) -> None:
        self._events = {e.event_id: e for e in events}

    def event(self, event_id: str) -> Event | None:
        return self._events.get(event_id)

    def events(self) -> list[Event]:
        """All events in start order (the order discovery lists them in)."""
        return sorted(self._events.values(), key=lambda e: (e.starts_at, e.event_id))


# --- seed data --------------------------------------------------------------------------------

_PATRIOTS = Performer("p_2001", "New England Patriots")
_BILLS = Performer("p_2002", "Buffalo Bills")
_CELTICS = Performer("p_2003", "Boston Celtics")
_KNICKS = Performer("p_2004", "New York Knicks")
_LAKERS = Performer("p_2005", "Los Angeles Lakers")
_WARRIORS = Performer("p_2006", "Golden State Warriors")
_CUBS = Performer("p_2007", "Chicago Cubs")
_CARDINALS = Performer("p_2008", "St. Louis Cardinals")
_DOLPHINS = Performer("p_2009", "Miami Dolphins")
_JETS = Performer("p_2010", "New York Jets")
_RED_SOX = Performer("p_2011", "Boston Red Sox")
_YANKEES = Performer("p_2012", "New York Yankees")


@dataclass(frozen=True)
class _EventSpec:
    event_id: str
    name: str
    days_from_today: int
    local_time: time
    tz: str
    venue: Venue
    performers: tuple[Performer, ...]
    price_multiplier: str
    note: str = ""


_SPECS: tuple[_EventSpec, ...] = (
    _EventSpec("5496123", "New England Patriots vs. Buffalo Bills", 30, time(13, 0), "America/New_York",
               Venue("v_1001", "Gillette Stadium", "Foxborough", "MA"), (_PATRIOTS, _BILLS), "1.0",
               "seed-doc event"),
    _EventSpec("5496124", "Boston Celtics vs. New York Knicks", 45, time(19, 30), "America/New_York",
               Venue("v_1002", "TD Garden", "Boston", "MA"), (_CELTICS, _KNICKS), "1.2"),
    _EventSpec("5496125", "Los Angeles Lakers vs. Golden State Warriors", 60, time(19, 0), "America/Los_Angeles",
               Venue("v_1003", "Crypto.com Arena", "Los Angeles", "CA"), (_LAKERS, _WARRIORS), "1.4"),
    _EventSpec("5496126", "Chicago Cubs vs. St. Louis Cardinals", 90, time(13, 20), "America/Chicago",
               Venue("v_1004", "Wrigley Field", "Chicago", "IL"), (_CUBS, _CARDINALS), "0.6"),
    _EventSpec("5496127", "Buffalo Bills vs. Miami Dolphins", 120, time(13, 0), "America/New_York",
               Venue("v_1005", "Highmark Stadium", "Orchard Park", "NY"), (_BILLS, _DOLPHINS), "0.9"),
    _EventSpec(PAST_EVENT_ID, "Miami Dolphins vs. New York Jets", -3, time(13, 0), "America/New_York",
               Venue("v_1006", "Hard Rock Stadium", "Miami Gardens", "FL"), (_DOLPHINS, _JETS), "1.0",
               "past event: quotes -> EVENT_EXPIRED"),
)

_TINY_SPEC = _EventSpec(TINY_EVENT_ID, "Boston Red Sox vs. New York Yankees", 21, time(19, 10), "America/New_York",
                        Venue("v_1007", "Fenway Park", "Boston", "MA"), (_RED_SOX, _YANKEES), "1.0",
                        "tiny inventory: 101/A has 2 seats, 101/B and section 102 are sold out")


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _starts_at(spec: _EventSpec, today: date) -> datetime:
    local = datetime.combine(today + timedelta(days=spec.days_from_today), spec.local_time, ZoneInfo(spec.tz))
    return local.astimezone(UTC)


def build_catalogue(today: date, seats_per_row: int) -> Catalogue:
    """Build the catalogue for a given UTC start-up date; same inputs, same catalogue."""
    events: list[Event] = []
    for spec in _SPECS:
        sections = tuple(
            Section(
                section_id=f"{spec.event_id}-{name}",
                name=name,
                unit_price=_money(Decimal(base) * Decimal(spec.price_multiplier)),
                rows=tuple(Row(r, seats_per_row) for r in STANDARD_ROWS),
            )
            for name, base in STANDARD_SECTIONS
        )
        events.append(Event(spec.event_id, spec.name, _starts_at(spec, today), spec.tz, spec.venue,
                            spec.performers, sections, spec.note))
    tiny_sections = (
        Section(f"{TINY_EVENT_ID}-101", "101", 95.0, (Row("A", 2), Row("B", 0))),
        Section(f"{TINY_EVENT_ID}-102", "102", 80.0, (Row("A", 0),)),
    )
    events.append(Event(_TINY_SPEC.event_id, _TINY_SPEC.name, _starts_at(_TINY_SPEC, today), _TINY_SPEC.tz,
                        _TINY_SPEC.venue, _TINY_SPEC.performers, tiny_sections, _TINY_SPEC.note))
    return Catalogue(events)
