"""Seat occupancy per row. Not thread-safe on its own: ``store.SandboxStore`` guards it.

Seats are numbered 1..capacity. Orders take the lowest run of ``quantity`` *consecutive* free seats
(first fit), which is what makes ``seat_range`` like ``"12-13"`` meaningful, so "available" for a
request means the longest run of consecutive free seats, not merely the count of free seats.

Each row is stored as a sorted list of free intervals rather than a set of seats: e2e and load
runs use rows of 100 000 seats, and every check must stay O(number of gaps), not O(seats).
"""

from __future__ import annotations

from .catalogue import Catalogue

RowKey = tuple[str, str, str]  # (event_id, section_name, row_name)
Interval = tuple[int, int]  # inclusive (first_seat, last_seat)


class Inventory:
    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._free: dict[RowKey, list[Interval]] = {}

    def _capacity(self, key: RowKey) -> int:
        event = self._catalogue.event(key[0])
        section = event.section(key[1]) if event else None
        row = section.row(key[2]) if section else None
        return row.capacity if row else 0

    def _intervals(self, key: RowKey) -> list[Interval]:
        if key not in self._free:
            capacity = self._capacity(key)
            self._free[key] = [(1, capacity)] if capacity > 0 else []
        return self._free[key]

    def free(self, key: RowKey) -> int:
        return sum(last - first + 1 for first, last in self._intervals(key))

    def longest_run(self, key: RowKey) -> int:
        """The largest quantity that can be sold in this row as consecutive seats."""
        return max((last - first + 1 for first, last in self._intervals(key)), default=0)

    def take(self, key: RowKey, quantity: int) -> Interval | None:
        """Claim the first run of ``quantity`` consecutive free seats; None if there is none."""
        intervals = self._intervals(key)
        for index, (first, last) in enumerate(intervals):
            if last - first + 1 >= quantity:
                claimed = (first, first + quantity - 1)
                if claimed[1] == last:
                    del intervals[index]
                else:
                    intervals[index] = (claimed[1] + 1, last)
                return claimed
        return None

    def sold(self, key: RowKey) -> int:
        return self._capacity(key) - self.free(key)

    def reset(self) -> None:
        self._free.clear()


def seat_range(first: int, last: int) -> str:
    """``"12-13"`` for a block, ``"7"`` for a single seat (seed 001 format)."""
    return str(first) if first == last else f"{first}-{last}"
