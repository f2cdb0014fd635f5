"""Event search for ``GET /v1/events``: the documented filters over the seeded catalogue.

Matching rules (ASSUMED where the docs are silent): ``q``, ``venue_name`` and ``performer_name``
are case-insensitive substring matches (``q`` looks at event, venue and performer names);
``event_id``, ``venue_id`` and ``performer_id`` are exact; ``date_from``/``date_to`` are inclusive
and compare with the event's *local* date; ``date_from`` defaults to today (UTC), so past events
only show up when asked for explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .catalogue import Catalogue, Event


@dataclass(frozen=True)
class EventFilters:
    date_from: date
    q: str | None = None
    event_id: str | None = None
    venue_id: str | None = None
    venue_name: str | None = None
    performer_id: str | None = None
    performer_name: str | None = None
    date_to: date | None = None


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def matches(event: Event, f: EventFilters) -> bool:
    if f.event_id is not None and event.event_id != f.event_id:
        return False
    if f.venue_id is not None and event.venue.venue_id != f.venue_id:
        return False
    if f.venue_name is not None and not _contains(event.venue.venue_name, f.venue_name):
        return False
    if f.performer_id is not None and all(p.performer_id != f.performer_id for p in event.performers):
        return False
    if f.performer_name is not None and not any(_contains(p.performer_name, f.performer_name) for p in event.performers):
        return False
    if f.q is not None:
        names = [event.name, event.venue.venue_name, *(p.performer_name for p in event.performers)]
        if not any(_contains(name, f.q) for name in names):
            return False
    if event.local_date < f.date_from:
        return False
    if f.date_to is not None and event.local_date > f.date_to:
        return False
    return True


def search(catalogue: Catalogue, filters: EventFilters) -> list[Event]:
    return [e for e in catalogue.events() if matches(e, filters)]
