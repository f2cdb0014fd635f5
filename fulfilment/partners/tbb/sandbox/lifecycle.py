"""Order status lifecycle, evaluated lazily whenever an order is read.

An order starts ``awaiting_transfer``. Two things can end it, whichever is due first:

* the delivery deadline passes while still awaiting the transfer -> ``transfer_expired``
  (documented in seed 001);
* ``transfer_after_seconds`` after creation the simulated customer "acts": the final status is
  drawn from the outcome policy in force at that moment.

``updated_at`` is set to the instant the transition logically happened (the deadline or
created_at + transfer_after_seconds), not to the moment somebody happened to look, so repeated
reads are stable. An admin-forced status is final and is never re-evaluated.

Outcome policy forms (``transfer_outcome``): ``"complete"`` (default), ``"expire"``, ``"cancel"``,
any final status name, or weights such as
``{"transfer_complete": 0.8, "transfer_expired": 0.1, "cancelled": 0.1}``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Union

from fulfilment.partners.sandbox_kit.clock import plus_seconds

AWAITING = "awaiting_transfer"
FINAL_STATUSES: tuple[str, ...] = ("transfer_complete", "transfer_expired", "cancelled")
ALL_STATUSES: tuple[str, ...] = (AWAITING, *FINAL_STATUSES)

OutcomePolicy = Union[str, Mapping[str, float]]

_ALIASES = {"complete": "transfer_complete", "expire": "transfer_expired", "cancel": "cancelled"}


def normalise_policy(policy: Any) -> dict[str, float]:
    """Turn any accepted policy form into positive weights per final status; ValueError if bad."""
    if isinstance(policy, str):
        status = _ALIASES.get(policy, policy)
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"transfer_outcome must be one of {sorted(_ALIASES)} or {list(FINAL_STATUSES)}, got {policy!r}"
            )
        return {status: 1.0}
    if isinstance(policy, Mapping):
        weights: dict[str, float] = {}
        for key, weight in policy.items():
            status = _ALIASES.get(key) or key
            if status not in FINAL_STATUSES:
                raise ValueError(f"unknown status {key!r} in transfer_outcome")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"weight for {key!r} must be a non-negative number")
            if weight > 0:
                weights[status] = weights.get(status, 0.0) + float(weight)
        if not weights:
            raise ValueError("transfer_outcome weights must not all be zero")
        return weights
    raise ValueError("transfer_outcome must be a string or an object of weights")


def draw_outcome(policy: OutcomePolicy, rng: random.Random) -> str:
    weights = normalise_policy(policy)
    statuses = list(weights)
    return rng.choices(statuses, weights=[weights[s] for s in statuses], k=1)[0]


def due_transition(
    created_at: datetime,
    delivery_deadline: datetime,
    transfer_after_seconds: float | None,
    now: datetime,
) -> tuple[str, datetime] | None:
    """What should happen to an awaiting order at ``now``.

    Returns ``("deadline", at)`` or ``("outcome", at)`` with the logical transition instant, or
    None when nothing is due yet. ``transfer_after_seconds=None`` disables the simulated customer.
    """
    outcome_at = plus_seconds(created_at, transfer_after_seconds) if transfer_after_seconds is not None else None
    if outcome_at is not None and outcome_at < delivery_deadline:
        if now >= outcome_at:
            return ("outcome", outcome_at)
        return None
    if now >= delivery_deadline:
        return ("deadline", delivery_deadline)
    return None
