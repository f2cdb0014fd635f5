"""What the console's pages read from Postgres and RabbitMQ (blocking: called in a thread).

The dashboard reuses the scheduler's own queries (fulfilment/scheduler/gauges.py: read_live_counts,
scheduler_leader) and the gauges' queue depths (fulfilment/rabbitmq/queues.py); actions are not here but
in fulfilment/operator/, which the CLI calls too.  Nothing read here carries a secret:
the claim token of a purchase, the only token in its row, is never selected into a view.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, tuple_

from fulfilment.db import session_scope
from fulfilment.scheduler import Leader, LiveCounts, read_live_counts, scheduler_leader
from fulfilment.state_machine import HELD_FOR_OPERATOR, NEXT_STEP, TERMINAL, State
from models import DeadlineFlag, OrphanOrder, OutboxEvent, PartnerQuote, Purchase, PurchaseTransition, RejectedRequest

# How far back the dashboard counts finished purchases (by creation, index-backed).
FINISHED_WINDOW_HOURS = 24
PARTNER_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")

FINISHED_COUNTS_SQL = text(
    """
    SELECT state, count(*)
      FROM purchases
     WHERE state = ANY(:states) AND created_at >= now() - make_interval(hours => :hours)
     GROUP BY state
    """
)


@dataclass(frozen=True)
class Dashboard:
    live: LiveCounts
    finished: dict[str, int]  # terminal states, purchases created in the last FINISHED_WINDOW_HOURS
    leader: Leader | None
    held: list[Purchase]  # the newest purchases waiting for a person


@dataclass(frozen=True)
class Broker:
    depths: dict[str, int] | None  # None: RabbitMQ could not be read
    error: str | None

    @property
    def dead_letters(self) -> int:
        from fulfilment.rabbitmq.queues import DEAD_LETTER_QUEUES

        return sum((self.depths or {}).get(queue, 0) for queue in DEAD_LETTER_QUEUES)


def dashboard() -> Dashboard:
    with session_scope() as session:
        live = read_live_counts(session)
        finished = {state.value: 0 for state in TERMINAL}
        for state, count in session.execute(FINISHED_COUNTS_SQL, {"states": list(finished),
                                                                 "hours": FINISHED_WINDOW_HOURS}):
            finished[state] = count
        leader = scheduler_leader(session)
        held = list(session.scalars(
            select(Purchase).where(Purchase.state.in_([s.value for s in HELD_FOR_OPERATOR]))
            .order_by(Purchase.state_changed_at.desc()).limit(10)
        ))
    return Dashboard(live, finished, leader, held)


def broker_status(broker_url: str) -> Broker:
    """Queue depths (main queues, dead letters, unrouted events), or one line saying why not."""
    from fulfilment.dependencies import broker_unavailable, location, reason
    from fulfilment.rabbitmq.queues import queue_depths

    try:
        return Broker(queue_depths(broker_url), None)
    except Exception as error:  # noqa: BLE001  any failure is shown as one line, never a traceback
        known = broker_unavailable(error, broker_url)
        return Broker(None, str(known) if known else f"RabbitMQ at {location(broker_url)}: {reason(error)}")


# ---- rates ---------------------------------------------------------------------------------------

# A purchase entering one of these states counts as trouble with its partner on the rates page.
TROUBLE_STATES = ("stalled", "needs_attention", "paused", "order_unknown", "failed")

RATES_SQL = text(
    """
    SELECT date_trunc('minute', t.created_at) AS minute, t.to_state, p.partner, count(*) AS n
      FROM purchase_transitions t
      JOIN purchases p ON p.id = t.purchase_id
     WHERE t.created_at >= :since AND t.kind = 'transition'
     GROUP BY 1, 2, 3
    """
)

OLDEST_SQL = text(
    """
    SELECT s.state, o.id, o.state_changed_at
      FROM unnest(CAST(:states AS text[])) AS s(state)
     CROSS JOIN LATERAL (SELECT id, state_changed_at FROM purchases
                          WHERE purchases.state = s.state
                          ORDER BY state_changed_at, id LIMIT 1) AS o
    """
)


@dataclass(frozen=True)
class Oldest:
    state: str
    purchase_id: uuid.UUID
    age_seconds: float


@dataclass(frozen=True)
class Rates:
    since: dt.datetime  # the first minute counted (the database's clock, whole minutes)
    now: dt.datetime
    minutes: list[dt.datetime]  # every minute of the window, oldest first
    by_state: dict[str, list[int]]  # purchases entering each state, per minute (states with any)
    by_partner: dict[str, tuple[list[int], list[int]]]  # per partner: all changes, troubled ones, per minute
    oldest: list[Oldest]  # the purchase waiting longest in each non-terminal state that has any

    def total(self, state: str) -> int:
        return sum(self.by_state.get(state, []))

    def error_rate(self, partner: str) -> float:
        everything, trouble = self.by_partner[partner]
        return 100.0 * sum(trouble) / sum(everything) if sum(everything) else 0.0


def rates(minutes: int) -> Rates:
    """Purchases per minute by state, partner trouble per minute, the oldest waiting purchase per state.

    From the history (index on purchase_transitions.created_at) and the non-terminal purchases only.
    """
    with session_scope() as session:
        now = session.execute(text("SELECT now()")).scalar_one()
        since = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
        window = [since + dt.timedelta(minutes=i) for i in range(minutes)]
        index = {minute: i for i, minute in enumerate(window)}
        by_state: dict[str, list[int]] = {}
        by_partner: dict[str, tuple[list[int], list[int]]] = {}
        for minute, to_state, partner, n in session.execute(RATES_SQL, {"since": since}):
            i = index.get(minute.astimezone(dt.UTC))
            if i is None:
                continue
            by_state.setdefault(to_state, [0] * minutes)[i] += n
            everything, trouble = by_partner.setdefault(partner, ([0] * minutes, [0] * minutes))
            everything[i] += n
            if to_state in TROUBLE_STATES:
                trouble[i] += n
        waiting = [s.value for s in State if s not in TERMINAL]
        oldest = [Oldest(state, pid, (now - changed).total_seconds())
                  for state, pid, changed in session.execute(OLDEST_SQL, {"states": waiting})]
    order = {s.value: i for i, s in enumerate(State)}
    return Rates(since, now, window, dict(sorted(by_state.items(), key=lambda kv: order.get(kv[0], 99))),
                 dict(sorted(by_partner.items())), sorted(oldest, key=lambda o: order.get(o.state, 99)))


# ---- lists: keyset pagination, filters, prefix search ----------------------------------------------

PAGE_SIZE = 50
# A list counts its rows up to this many ("more than 1,000"), in its own index order: never the whole table.
COUNT_CAP = 1_000
SEARCH_LIMIT = 50


class BadFilter(ValueError):
    """A list's filter or cursor that means nothing (shown as a 400 with this text)."""


@dataclass(frozen=True)
class ListFilter:
    """What a purchase list shows: all optional, combined with AND.  Dates are UTC days."""

    state: State | None = None
    partner: str | None = None
    created_from: dt.date | None = None  # created on or after this day
    created_to: dt.date | None = None  # created on or before this day
    deadline_within_hours: int | None = None  # delivery deadline from now to this many hours ahead

    def where(self, now: dt.datetime) -> list[Any]:
        clauses: list[Any] = []
        if self.state is not None:
            clauses.append(Purchase.state == self.state.value)
        if self.partner:
            clauses.append(Purchase.partner == self.partner)
        if self.created_from:
            clauses.append(Purchase.created_at >= _day(self.created_from))
        if self.created_to:
            clauses.append(Purchase.created_at < _day(self.created_to) + dt.timedelta(days=1))
        if self.deadline_within_hours is not None:
            clauses += [Purchase.delivery_deadline >= now,
                        Purchase.delivery_deadline <= now + dt.timedelta(hours=self.deadline_within_hours)]
        return clauses

    def query(self) -> dict[str, str]:
        """As URL parameters (for links to the next page and the bulk forms)."""
        pairs = {"state": self.state.value if self.state else "all", "partner": self.partner or "",
                 "from": self.created_from.isoformat() if self.created_from else "",
                 "to": self.created_to.isoformat() if self.created_to else "",
                 "deadline_within": str(self.deadline_within_hours) if self.deadline_within_hours is not None else ""}
        return {key: value for key, value in pairs.items() if value}


def _day(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def parse_filter(params: Mapping[str, str], *, default_state: State | None = State.STALLED) -> ListFilter:
    """A ListFilter from URL parameters; BadFilter names the parameter that means nothing."""
    raw_state = params.get("state")
    state: State | None = default_state
    if raw_state is not None:
        try:
            state = State(raw_state) if raw_state not in ("", "all") else None
        except ValueError:
            raise BadFilter(f"no state {raw_state[:40]!r}; states are: {', '.join(s.value for s in State)}") from None
    partner = params.get("partner") or None
    if partner is not None and not PARTNER_NAME.match(partner):
        raise BadFilter("a partner is a short name of letters, digits, _ and -")
    return ListFilter(state=state, partner=partner, created_from=_date(params, "from"), created_to=_date(params, "to"),
                      deadline_within_hours=_hours(params.get("deadline_within")))


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    value = params.get(name)
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value[:10]) if len(value) <= 10 else None
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 2999:
        raise BadFilter(f"{name}: a day as YYYY-MM-DD (got {value[:20]!r})")
    return day


def _hours(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 6 or not 1 <= int(value) <= 24 * 366:
        raise BadFilter(f"deadline_within: a number of hours from 1 to {24 * 366} (got {value[:20]!r})")
    return int(value)


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last row's (created_at, id); the next page starts strictly after it."""

    created_at: dt.datetime
    id: uuid.UUID

    def text(self) -> str:
        return f"{self.created_at.astimezone(dt.UTC).isoformat()}_{self.id}"

    @classmethod
    def parse(cls, value: str) -> Cursor:
        stamp, _, ident = value.partition("_")
        try:
            created = dt.datetime.fromisoformat(stamp)
            if created.tzinfo is None:
                raise ValueError(stamp)
            return cls(created, uuid.UUID(ident))
        except ValueError:
            raise BadFilter("after: not a page position from this console (follow the Next link)") from None


@dataclass(frozen=True)
class PurchasePage:
    rows: list[Purchase]
    next: Cursor | None  # None: this is the last page
    count: int  # rows matching the filter (from the first page's position), at most COUNT_CAP + 1
    now: dt.datetime

    @property
    def count_text(self) -> str:
        return f"more than {COUNT_CAP:,}" if self.count > COUNT_CAP else f"{self.count:,}"


def purchase_page(selected: ListFilter, after: Cursor | None = None, *, size: int | None = None) -> PurchasePage:
    """One page of purchases (PAGE_SIZE), newest first, by keyset on (created_at, id): never OFFSET."""
    size = size or PAGE_SIZE
    with session_scope() as session:
        now = session.execute(text("SELECT now()")).scalar_one()
        clauses = selected.where(now)
        query = select(Purchase).where(*clauses)
        if after is not None:
            query = query.where(tuple_(Purchase.created_at, Purchase.id) < tuple_(after.created_at, after.id))
        rows = list(session.scalars(query.order_by(Purchase.created_at.desc(), Purchase.id.desc()).limit(size + 1)))
        capped = (select(Purchase.id).where(*clauses).order_by(Purchase.created_at.desc(), Purchase.id.desc())
                  .limit(COUNT_CAP + 1).subquery())
        count = int(session.scalar(select(func.count()).select_from(capped)) or 0)
    more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if more else None
    return PurchasePage(rows, Cursor(last.created_at, last.id) if last else None, count, now)


def matching_ids(selected: ListFilter, *, limit: int) -> list[uuid.UUID]:
    """The ids a bulk action would act on: the filter's purchases, newest first, at most `limit`."""
    with session_scope() as session:
        now = session.execute(text("SELECT now()")).scalar_one()
        return list(session.scalars(select(Purchase.id).where(*selected.where(now))
                                    .order_by(Purchase.created_at.desc(), Purchase.id.desc()).limit(limit)))


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _uuid_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The purchase ids starting with this prefix of hex digits (dashes ignored), as a key range."""
    digits = prefix.replace("-", "").lower()
    if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def search(query: str) -> uuid.UUID | None:
    """A purchase by its id, the request_id it was submitted with, or its partner order id (exactly)."""
    from fulfilment.operator.actions import find_purchase_id

    query = query.strip()
    if not query:
        return None
    with session_scope() as session:
        found = find_purchase_id(session, query)
        if found is None:
            found = session.scalar(select(Purchase.id).where(Purchase.order_id == query))
        return found


def search_prefix(prefix: str, *, limit: int = SEARCH_LIMIT) -> list[Purchase]:
    """Purchases whose request id, purchase id, order id or event id starts with `prefix` (at most `limit` of each
    kind, the first by that id), shown newest first.

    Each is an index range scan (text_pattern_ops indexes; the primary key for purchase ids).
    """
    prefix = prefix.strip()
    if not prefix:
        return []
    pattern = _like_prefix(prefix)
    matches: list[tuple[Any, Any]] = [(column, column.like(pattern, escape="\\"))
                                      for column in (Purchase.request_id, Purchase.order_id, Purchase.event_id)]
    ids = _uuid_range(prefix)
    if ids is not None:
        matches.append((Purchase.id, Purchase.id.between(*ids)))
    with session_scope() as session:
        found: dict[uuid.UUID, Purchase] = {}
        # One index range scan each, in the index's order so that it stops after `limit` rows however short
        # the prefix (an OR of them would not use the indexes; newest first would sort every match).
        for column, match in matches:
            for purchase in session.scalars(select(Purchase).where(match).order_by(column).limit(limit)):
                found.setdefault(purchase.id, purchase)
    return sorted(found.values(), key=lambda p: (p.created_at, p.id), reverse=True)[:limit]


@dataclass(frozen=True)
class PurchaseDetail:
    purchase: Purchase
    quotes: list[PartnerQuote]
    history: list[PurchaseTransition]
    events: list[OutboxEvent]
    flags: list[DeadlineFlag]
    orphans: list[OrphanOrder]
    now: dt.datetime

    @property
    def state(self) -> State:
        return State(self.purchase.state)

    @property
    def live(self) -> bool:
        return self.state in NEXT_STEP

    @property
    def can_retry(self) -> bool:
        return self.state in HELD_FOR_OPERATOR or self.state is State.PAUSED

    @property
    def can_cancel(self) -> bool:
        from fulfilment.operator.actions import CANCELLABLE

        if self.state in CANCELLABLE:
            return True
        if self.state is State.STALLED:
            return self.purchase.stalled_from in {s.value for s in CANCELLABLE}
        return self.state is State.NEEDS_ATTENTION and not self.purchase.order_id

    @property
    def can_resolve(self) -> bool:
        from fulfilment.operator.actions import ORDER_PATH, RESOLVABLE

        if self.purchase.order_id and not (self.purchase.partner == "ticketmaster"
                                           and not (self.purchase.partner_data or {}).get("order_token")):
            return False  # (a TM order known without its token may still have its token recorded)
        return self.state in RESOLVABLE or (
            self.state is State.STALLED and self.purchase.stalled_from in {s.value for s in ORDER_PATH})


def purchase_detail(purchase_id: uuid.UUID) -> PurchaseDetail | None:
    from fulfilment.state_machine import history

    with session_scope() as session:
        purchase = session.get(Purchase, purchase_id)
        if purchase is None:
            return None
        return PurchaseDetail(
            purchase=purchase,
            quotes=list(session.scalars(select(PartnerQuote).where(PartnerQuote.purchase_id == purchase_id)
                                        .order_by(PartnerQuote.id))),
            history=history(session, purchase_id),
            events=list(session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)
                                        .order_by(OutboxEvent.transition_id))),
            flags=list(session.scalars(select(DeadlineFlag).where(DeadlineFlag.purchase_id == purchase_id)
                                       .order_by(DeadlineFlag.flagged_at))),
            orphans=list(session.scalars(select(OrphanOrder).where(OrphanOrder.purchase_id == purchase_id)
                                         .order_by(OrphanOrder.found_at))),
            now=session.execute(text("SELECT now()")).scalar_one(),
        )


def rejected_page(*, request_id: str | None, before: int | None, size: int | None = None
                  ) -> tuple[list[RejectedRequest], int | None]:
    """One page of rejected requests, newest first, by keyset on id (below `before`); and the next page's
    `before`, None on the last page."""
    size = size or PAGE_SIZE
    with session_scope() as session:
        query = select(RejectedRequest).order_by(RejectedRequest.id.desc()).limit(size + 1)
        if request_id is not None:
            query = query.where(RejectedRequest.request_id == request_id)
        if before is not None:
            query = query.where(RejectedRequest.id < before)
        rows = list(session.scalars(query))
    return rows[:size], rows[size - 1].id if len(rows) > size else None


def rejections_for(request_id: str) -> list[RejectedRequest]:
    from fulfilment.operator import rejected_requests

    return rejected_requests(limit=20, request_id=request_id)


def event_payload(event: OutboxEvent) -> dict[str, Any]:
    """An event's payload for display, with any field named like a secret masked (none is expected)."""
    return _mask(event.payload)


_SECRET_WORDS = ("token", "secret", "password", "authorization")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "***" if any(word in str(key).lower() for word in _SECRET_WORDS) else _mask(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value
