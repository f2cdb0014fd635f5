"""What a flow that issues refreshable tickets gives the core's refresh step (steps/refresh.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr

from models import Purchase, Ticket


@dataclass(frozen=True, slots=True)
class Refreshed:
    """One ticket's refresh: a new token, or the partner's refusal (`error`)."""

    ticket_id: int
    token: str | None
    error: str | None = None


@runtime_checkable
class Refresher(Protocol):
    """A partner flow that refreshes issued tickets (Ticketmaster's SafeTix)."""

    def refresh(self, purchase: Purchase, tickets: Sequence[Ticket], *, key: SecretStr,
                deadline: float, device: dict[str, Any] | None = None) -> list[Refreshed]: ...
