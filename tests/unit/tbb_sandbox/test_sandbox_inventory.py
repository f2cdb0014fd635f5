"""Seat allocation: consecutive first-fit blocks, availability as the longest free run."""

from __future__ import annotations

import time
from datetime import date

from fulfilment.partners.tbb.sandbox.catalogue import build_catalogue
from fulfilment.partners.tbb.sandbox.inventory import Inventory, seat_range

KEY = ("5496123", "101", "A")


def test_first_fit_consecutive_blocks() -> None:
    inventory = Inventory(build_catalogue(date(2026, 1, 1), seats_per_row=5))
    assert inventory.free(KEY) == 5 and inventory.longest_run(KEY) == 5
    assert inventory.take(KEY, 2) == (1, 2)
    assert inventory.take(KEY, 1) == (3, 3)
    assert inventory.take(KEY, 3) is None  # only 2 left
    assert inventory.take(KEY, 2) == (4, 5)
    assert inventory.free(KEY) == 0 and inventory.longest_run(KEY) == 0 and inventory.sold(KEY) == 5
    inventory.reset()
    assert inventory.free(KEY) == 5


def test_unknown_and_zero_capacity_rows() -> None:
    inventory = Inventory(build_catalogue(date(2026, 1, 1), seats_per_row=5))
    assert inventory.free(("5490001", "101", "B")) == 0
    assert inventory.take(("5490001", "102", "A"), 1) is None
    assert inventory.free(("nope", "1", "A")) == 0


def test_huge_rows_stay_fast() -> None:
    inventory = Inventory(build_catalogue(date(2026, 1, 1), seats_per_row=100_000))
    started = time.perf_counter()
    for _ in range(2000):
        inventory.longest_run(KEY)
        inventory.take(KEY, 2)
    assert time.perf_counter() - started < 0.5
    assert inventory.free(KEY) == 96_000


def test_seat_range_format() -> None:
    assert seat_range(12, 13) == "12-13"
    assert seat_range(7, 7) == "7"
