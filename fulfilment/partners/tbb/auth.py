"""One cached access token per (base URL, client id), shared by all threads of a process.

Tokens live an hour and are stateless on TBB's side, so one token serves every
worker thread.  Only one thread fetches a new token at a time; the others wait for
it instead of stampeding the auth endpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fulfilment.partners.base import DeadlineReached


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at_monotonic: float

    def __repr__(self) -> str:  # never let a token reach a log through repr()
        return "AccessToken(value='***')"


class TokenCache:
    # Renew a little before the partner's expiry so in-flight calls don't race it.
    EARLY_RENEWAL_SECONDS = 60.0

    def __init__(self, fetch: Callable[[float | None], tuple[str, float]]) -> None:
        """fetch(deadline) returns (token, lifetime in seconds), by `deadline` (time.monotonic())."""
        self._fetch = fetch
        self._lock = threading.Lock()
        self._token: AccessToken | None = None

    def get(self, deadline: float | None = None) -> str:
        """The current token, fetched if needed; waiting for another thread's fetch counts
        against `deadline` too (a stalled token endpoint must not hold a step past its lease)."""
        token = self._token
        if token is not None and time.monotonic() < token.expires_at_monotonic:
            return token.value
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=timeout):
            raise DeadlineReached("DEADLINE_REACHED", "the step's deadline came while waiting for an access token")
        try:
            token = self._token
            if token is None or time.monotonic() >= token.expires_at_monotonic:
                value, lifetime = self._fetch(deadline)
                margin = min(self.EARLY_RENEWAL_SECONDS, lifetime / 10)
                token = AccessToken(value, time.monotonic() + lifetime - margin)
                self._token = token
            return token.value
        finally:
            self._lock.release()

    def invalidate(self, rejected: str) -> None:
        """Forget `rejected`, unless another thread already replaced it."""
        with self._lock:
            if self._token is not None and self._token.value == rejected:
                self._token = None
