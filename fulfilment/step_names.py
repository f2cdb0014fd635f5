"""The pipeline's steps as a type (no dependencies: publishers, workers and the core all name them)."""

from __future__ import annotations

from enum import StrEnum


class StepName(StrEnum):
    """The pipeline's steps as a type: each is an actor's name and the name of its messages."""

    QUOTE = "quote_purchase"
    ORDER = "place_order"
    RESOLVE = "resolve_order"
    TRANSFER = "check_transfer"
    TICKETS = "fetch_tickets"
