"""Seat occupancy. Not thread-safe on its own: ``store.SandboxStore`` calls it under the state lock.

Each row is an ordered list of seat names; a seat is free, held by a cart, or sold. A reserve takes
``quantity`` seats that are adjacent in the row's order (the first such block, best row first), so
"no contiguous seats" is a real outcome (20052) even when enough seats are free in total.
"""

from __future__ import annotations

from .catalogue import Catalogue

RowKey = tuple[str, str, str]  # (event_id, section, row)
SOLD = "\x00sold"


class Inventory:
    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._order: dict[RowKey, tuple[str, ...]] = {}
        self._holder: dict[RowKey, dict[str, str | None]] = {}
        self.reset()

    def reset(self) -> None:
        self._order.clear()
        self._holder.clear()
        for event in self._catalogue.events:
            for _, row in event.rows():
                key = (event.id, row.section, row.row)
                self._order[key] = row.seats
                self._holder[key] = {seat: (SOLD if seat in row.presold else None) for seat in row.seats}

    def free_seats(self, key: RowKey) -> list[str]:
        holders = self._holder.get(key, {})
        return [seat for seat in self._order.get(key, ()) if holders[seat] is None]

    def total(self, key: RowKey) -> int:
        return len(self._order.get(key, ()))

    def find_block(self, key: RowKey, quantity: int, begin: str | None = None, end: str | None = None) -> list[str] | None:
        """``quantity`` adjacent free seats (from ``begin``, up to ``end``, when given); None if impossible."""
        seats = self._order.get(key, ())
        holders = self._holder.get(key, {})
        if quantity < 1:
            return None
        if begin is not None:
            if begin not in holders or (end is not None and end not in holders):
                return None
            first = seats.index(begin)
            last = seats.index(end) if end is not None else first + quantity - 1
            block = list(seats[first: last + 1])
            if len(block) != quantity or any(holders[s] is not None for s in block):
                return None
            return block
        run: list[str] = []
        for seat in seats:
            run = run + [seat] if holders[seat] is None else []
            if len(run) == quantity:
                return run
        return None

    def hold(self, key: RowKey, seats: list[str], cart_id: str) -> None:
        holders = self._holder[key]
        for seat in seats:
            assert holders[seat] is None, f"seat {key}/{seat} is not free"
            holders[seat] = cart_id

    def release(self, key: RowKey, seats: list[str], cart_id: str) -> None:
        holders = self._holder[key]
        for seat in seats:
            if holders[seat] == cart_id:
                holders[seat] = None

    def sell(self, key: RowKey, seats: list[str], cart_id: str) -> None:
        holders = self._holder[key]
        for seat in seats:
            assert holders[seat] == cart_id, f"seat {key}/{seat} is not held by the cart"
            holders[seat] = SOLD

    def state(self, key: RowKey) -> dict[str, int]:
        holders = self._holder.get(key, {})
        return {
            "free": sum(1 for h in holders.values() if h is None),
            "held": sum(1 for h in holders.values() if h is not None and h != SOLD),
            "sold": sum(1 for h in holders.values() if h == SOLD),
        }
