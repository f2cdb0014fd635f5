"""The line a partner client logs before retrying a call, shared by both clients.

Each retried attempt gets a line until the partner counts as down (its `outages.partner_outage`); from then on
the attempts are only counted, with one line down, a summary a minute and one line back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import RetryCallState

from fulfilment.outages import partner_outage
from fulfilment.partners.base import TransientError


def retry_logger(partner: str, label: str, log: logging.Logger, *, title: str | None = None) -> Callable[[RetryCallState], None]:
    """tenacity's `before_sleep` for `partner`'s client; `label` starts its lines ("tbb", "tm").

    Registers the partner's outage (`title` names it: "partner <title>"), so that its transient
    failures are logged quietly while it is down, whatever the partner."""
    outage = partner_outage(partner, title)

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        if not outage.down:
            log.warning("%s call failed (attempt %d): %s; retrying in %.2fs", label, state.attempt_number, error, sleep)
        if isinstance(error, TransientError):
            outage.failed(f"{label} call failed: {error}")

    return log_retry
