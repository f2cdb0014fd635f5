"""A dependency outage, logged in a bounded way: one line when it goes down, a summary a minute
while it stays down (for how long, how many attempts failed, how many purchases wait), one line
when it is back.

Without this a RabbitMQ outage filled the logs (issue 19, 128 s measured: 2.3 MB and 860
tracebacks from the workers, 1.4 MB from the scheduler): pika logs every failed connection at
ERROR with a traceback, dramatiq restarts each consumer every 3 s and says so twice, and each send
tries several connections.  A Postgres outage logged every intake wait, every pool reset (with a
traceback) and every scheduler stand-by; a partner outage every retried call and every failed
message with its traceback.  Those lines are dropped by `QuietOutageLogs` (installed on the log
handler by logging_setup.configure) or routed here by the code, and counted as failed attempts;
the code that finds the dependency working again calls `recovered()` (a consumer started, a
message sent, a database connection opened, a partner call answered).  Tracebacks stay for
unexpected errors only.

**Purchases waiting** (in the summary and the back line): the distinct purchases (or, at intake,
requests) whose work in this process failed for want of the dependency since it went down: the
purchase or request id of the log context of each failed attempt, counted in a set (so a purchase
retried a hundred times counts once), emptied when the dependency is back. Purchases that did not
try in this process (waiting for their time in Postgres, or in a queue) are not counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("fulfilment.outage")

SUMMARY_EVERY_SECONDS = 60.0


def _current_purchase() -> str | None:
    from fulfilment.logging_setup import context

    bound = context()
    return bound.get("purchase_id") or bound.get("request_id")


class Outage:
    """One dependency's state in this process, thread-safe.

    `down_after`: failed attempts in a row (no success between) before it counts as down. 1 for
    a server the process cannot work without; more for a partner, whose single failed attempts
    (retried at once) are logged by its client as they happen until then.
    """

    def __init__(self, what: str, *, summary_every: float = SUMMARY_EVERY_SECONDS, down_after: int = 1) -> None:
        self.what = what
        self.summary_every = summary_every
        self.down_after = down_after
        self._lock = threading.Lock()
        self._since: float | None = None
        self._attempts = 0
        self._in_a_row = 0
        self._last_line = 0.0
        self._waiting: set[str] = set()

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, *, waiting: Iterable[str] | None = None) -> None:
        """An attempt to use the dependency failed for want of it.  `waiting`: the purchases (or
        requests) it held up; by default the one of the log context, if any."""
        keys = list(waiting) if waiting is not None else [key for key in (_current_purchase(),) if key]
        now = time.monotonic()
        with self._lock:
            self._attempts += 1
            self._waiting.update(keys)
            if self._since is None:
                self._in_a_row += 1
                if self._in_a_row < self.down_after:
                    return
                self._since, self._attempts, self._last_line = now, self._in_a_row, now
                log.warning("%s down: %s; retrying quietly, a summary every %.0f s until it is back",
                            self.what, reason[:300], self.summary_every)
            elif now - self._last_line >= self.summary_every:
                self._last_line = now
                log.warning("%s still down after %.0f s: %d failed attempts, %d purchase(s) waiting in this "
                            "process (last: %s)", self.what, now - self._since, self._attempts,
                            len(self._waiting), reason[:300])

    def forget(self) -> None:
        """Back to the state of a new process, without a line (tests run many scenarios in one)."""
        with self._lock:
            self._since, self._attempts, self._in_a_row = None, 0, 0
            self._waiting.clear()

    def recovered(self) -> None:
        """The dependency answered again (cheap when it was not down)."""
        if self._since is None:
            if self._in_a_row:
                with self._lock:
                    self._in_a_row = 0
                    self._waiting.clear()
            return
        with self._lock:
            if self._since is None:
                return
            log.warning("%s back after %.0f s (%d failed attempts, %d purchase(s) waited in this process)",
                        self.what, time.monotonic() - self._since, self._attempts, len(self._waiting))
            self._since = None
            self._attempts = 0
            self._in_a_row = 0
            self._waiting.clear()


BROKER = Outage("broker (RabbitMQ)")
DATABASE = Outage("database (Postgres)")
# A partner is down once this many attempts in a row failed (about one call's retries).
PARTNER_DOWN_AFTER = 5
# One outage per partner, by the name purchases carry: registered by the partner's client
# (partners/retry_log.py) as its module is imported; this module names no partner.
PARTNERS: dict[str, Outage] = {}
_partners_lock = threading.Lock()


def partner_outage(name: str, title: str | None = None) -> Outage:
    """The outage of partner `name` (created on first use; `title` names it in the log lines,
    "partner <title>").  A partner's errors count on it when raised under fulfilment/partners/<name>/."""
    with _partners_lock:
        outage = PARTNERS.get(name)
        if outage is None:
            outage = PARTNERS[name] = Outage(f"partner {title or name}", down_after=PARTNER_DOWN_AFTER)
        elif title and outage.what == f"partner {name}":  # first named by a caller that had no title
            outage.what = f"partner {title}"
        return outage


# RabbitMQ's management API (BROKER_MANAGEMENT_URL), read by the scheduler's gauges only.
BROKER_MANAGEMENT = Outage("RabbitMQ management API")


def every_outage() -> tuple[Outage, ...]:
    """The broker's, its management API's, the database's and each registered partner's."""
    return (BROKER, BROKER_MANAGEMENT, DATABASE, *PARTNERS.values())

# What dramatiq's consumer threads say about a lost connection (dramatiq/worker.py), twice per
# consumer every 3 s: counted as attempts, not logged.
_CONSUMER_CONNECTION = "Consumer encountered a connection error"
_CONSUMER_RESTART = "Restarting consumer in"
_CHANNEL_CLOSED = "Channel.Close"


_FAILED_MESSAGE = "Failed to process message"
_RETRYING = "Retrying message"


class QuietOutageLogs(logging.Filter):
    """Drops the per-attempt lines of an outage and counts them on its `Outage` instead.

    - pika's warnings and errors about connections (attempts failed, connections lost); a channel
      closed by the broker (a passive declare's 404) is not an outage and is logged as before.
    - dramatiq's consumer threads: "encountered a connection error" and, while the broker is down,
      "Restarting consumer".  A restart after an unexpected error stays, with its traceback.
    - dramatiq's "Failed to process message ... with unhandled exception" (and its traceback) when
      the exception is a dependency being unavailable: Postgres, RabbitMQ, or a partner's transient
      failure (network, 5xx, 429); and "Retrying message ..." while an outage is on.
    - SQLAlchemy's pool errors (a connection reset failing) when Postgres is unreachable.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if record.exc_info and record.exc_info[1] is not None and (
                name.startswith(("dramatiq.worker", "sqlalchemy.pool"))):
            outage = _outage_of(record.exc_info[1])
            if outage is not None:
                outage.failed(f"{_first_line(record)[:120]}: {type(record.exc_info[1]).__name__}: "
                              f"{' '.join(str(record.exc_info[1]).split())[:200]}")
                return False
        if name == "dramatiq.middleware.retries.Retries" and _first_line(record).startswith(_RETRYING) and any(
                outage.down for outage in (BROKER, DATABASE, *PARTNERS.values())):
            return False
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
    # pika appends the caller's stack to some lines: a traceback belongs to unexpected errors only.
    for cut in ("Caller's stack:", "Traceback (most recent call last)"):
        message = message.split(cut, 1)[0]
    return " ".join(message.split()).rstrip(" ;")


def _outage_of(error: BaseException) -> Outage | None:
    """The dependency whose unavailability `error` is (or directly caused), if it is one: a step
    raises its own error `from` a partner's transient failure (steps.common.RetryLater)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return None
        outage = _outage_of_one(seen)
        if outage is not None:
            return outage
        seen = seen.__cause__
    return None


def _outage_of_one(error: BaseException) -> Outage | None:
    from fulfilment.dependencies import is_database_unavailable

    if is_database_unavailable(error):
        return DATABASE
    import pika.exceptions

    if isinstance(error, pika.exceptions.AMQPConnectionError) and not isinstance(
            error, pika.exceptions.ConnectionClosedByClient):
        return BROKER
    if any(isinstance(error, kind) and not isinstance(error, but) for kind, but in _PARTNER_UNAVAILABLE):
        partner = _partner_of(error)
        return PARTNERS.get(partner) if partner else None
    return None


# The partner errors that say "the partner is unavailable", registered by the module that defines them
# (flowkit/errors.py: TransientError, but not DeadlineReached, which is our own step's time running
# out): this module sits below every layer and names none of them.
_PARTNER_UNAVAILABLE: list[tuple[type[BaseException], tuple[type[BaseException], ...]]] = []


def partner_unavailable_when(kind: type[BaseException], *, but: tuple[type[BaseException], ...] = ()) -> None:
    """Count errors of `kind` (other than `but`) raised inside a partner's folder as that partner's outage."""
    _PARTNER_UNAVAILABLE.append((kind, but))


def _partner_of(error: BaseException) -> str | None:
    """Which partner's client raised `error` (the innermost frame under fulfilment/partners/<name>/)."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        for partner in tuple(PARTNERS):
            if f"/partners/{partner}/" in path:
                found = partner
        tb = tb.tb_next
    return found
