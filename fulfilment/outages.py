"""A dependency outage, logged in a bounded way: one line when it goes down, a summary a minute
while it stays down (for how long, how many attempts failed), one line when it is back.

Without this a RabbitMQ outage filled the logs (issue 19, 128 s measured: 2.3 MB and 860
tracebacks from the workers, 1.4 MB from the scheduler): pika logs every failed connection at
ERROR with a traceback, dramatiq restarts each consumer every 3 s and says so twice, and each send
tries several connections.  Those lines are dropped by `QuietOutageLogs` (installed on the log
handler by logging_setup.configure) and counted here as failed attempts; the code that finds the
dependency working again calls `recovered()` (fulfilment/rabbitmq/broker.py: a consumer started,
a message sent).  Tracebacks stay for unexpected errors only.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("fulfilment.outage")

SUMMARY_EVERY_SECONDS = 60.0


class Outage:
    """One dependency's state in this process, thread-safe."""

    def __init__(self, what: str, *, summary_every: float = SUMMARY_EVERY_SECONDS) -> None:
        self.what = what
        self.summary_every = summary_every
        self._lock = threading.Lock()
        self._since: float | None = None
        self._attempts = 0
        self._last_line = 0.0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: str) -> None:
        """An attempt to use the dependency failed for want of it."""
        now = time.monotonic()
        with self._lock:
            self._attempts += 1
            if self._since is None:
                self._since, self._attempts, self._last_line = now, 1, now
                log.warning("%s down: %s; retrying quietly, a summary every %.0f s until it is back",
                            self.what, reason[:300], self.summary_every)
            elif now - self._last_line >= self.summary_every:
                self._last_line = now
                log.warning("%s still down after %.0f s: %d failed attempts (last: %s)",
                            self.what, now - self._since, self._attempts, reason[:300])

    def recovered(self) -> None:
        """The dependency answered again (cheap when it was not down)."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            log.warning("%s back after %.0f s (%d failed attempts)", self.what,
                        time.monotonic() - self._since, self._attempts)
            self._since = None
            self._attempts = 0


BROKER = Outage("broker (RabbitMQ)")
# RabbitMQ's management API (BROKER_MANAGEMENT_URL), read by the scheduler's gauges only.
BROKER_MANAGEMENT = Outage("RabbitMQ management API")

# What dramatiq's consumer threads say about a lost connection (dramatiq/worker.py), twice per
# consumer every 3 s: counted as attempts, not logged.
_CONSUMER_CONNECTION = "Consumer encountered a connection error"
_CONSUMER_RESTART = "Restarting consumer in"
_CHANNEL_CLOSED = "Channel.Close"


class QuietOutageLogs(logging.Filter):
    """Drops the per-attempt lines of a broker outage and counts them on `BROKER` instead.

    - pika's warnings and errors about connections (attempts failed, connections lost); a channel
      closed by the broker (a passive declare's 404) is not an outage and is logged as before.
    - dramatiq's consumer threads: "encountered a connection error" and, while the broker is down,
      "Restarting consumer".  A restart after an unexpected error stays, with its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith("pika") and record.levelno >= logging.WARNING:
            line = _first_line(record)
            if _CHANNEL_CLOSED in line:  # a channel refused (404, 406): not an outage, logged as before
                return True
            BROKER.failed(line)
            return False
        if name.startswith("dramatiq.worker.ConsumerThread"):
            message = record.getMessage()
            if message.startswith(_CONSUMER_CONNECTION):
                BROKER.failed(message)
                return False
            if message.startswith(_CONSUMER_RESTART) and BROKER.down:
                return False
        return True


def _first_line(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  a malformed pika record must not break logging
        message = str(record.msg)
    return " ".join(message.split())
