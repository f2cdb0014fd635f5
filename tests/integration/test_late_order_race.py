"""Two late order answers for the same purchase at once (`keep_late_order`, fulfilment/flowkit/orders.py).

An order answer that comes after its claim passed on is applied only if the purchase still waits for
exactly it, else kept as an orphan order: never dropped.  Two such answers may come at once (two
workers whose claims both lapsed, a duplicate delivery).  `keep_late_order` reads the purchase under
a row lock, so the second one sees what the first did: they must not both apply, and the second must
not be lost (a fenced transition that finds the row changed under it raises, and the order with it).

Real Postgres, no mocks: a third connection holds the purchase's row lock until both answers wait on
it, then lets them go together (issue 20).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text

from fulfilment import state_machine
from fulfilment.db import get_engine, session_scope
from fulfilment.flowkit.orders import keep_late_order
from fulfilment.state_machine import State
from models import OrphanOrder, Purchase, PurchaseTransition
from tests.support.factories import reload, stored_purchase

# The backends waiting on the holder, directly or behind another waiter (a second row-lock waiter
# queues behind the first).
BLOCKED_BY = text(
    """
    WITH RECURSIVE waiting(pid) AS (
        SELECT pid FROM pg_stat_activity WHERE CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))
        UNION
        SELECT a.pid FROM pg_stat_activity a JOIN waiting w ON w.pid = ANY(pg_blocking_pids(a.pid))
    )
    SELECT count(*) FROM waiting
    """
)


def _order_unknown() -> uuid.UUID:
    """A TBB purchase whose order request's outcome is unknown (ORDER_UNKNOWN on quote q-<id>)."""
    purchase_id = stored_purchase()
    steps = ((State.QUOTED, {"quote_id": f"q-{purchase_id.hex[:8]}", "unit_price": Decimal("50.00"),
                             "subtotal": Decimal("50.00"),
                             "quote_expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}),
             (State.ORDERING, {"order_evidence": "may_exist"}),
             (State.ORDER_UNKNOWN, {}))
    for to_state, changes in steps:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)
    return purchase_id


def _late_answers_at_once(purchase_id: uuid.UUID, order_ids: list[str]) -> list[BaseException]:
    """Each order answer arrives late, all at once: the purchase's row is locked meanwhile, and let go
    once every answer waits on it.  Returns what the answers raised."""
    stale = reload(purchase_id)  # what each late worker read before its claim passed on
    errors: list[BaseException] = []

    def answer(order_id: str) -> None:
        try:
            keep_late_order(stale, order_id=order_id, quote_id=stale.quote_id,
                            details={"order_id": order_id, "quote_id": stale.quote_id, "status": "confirmed"},
                            to_state=State.AWAITING_TRANSFER, next_action_in=0.0,
                            changes_for=lambda current: {"order_id": order_id, "order_status": "confirmed"},
                            message_id=f"late-{order_id}", how="confirmed")
        except BaseException as error:  # noqa: BLE001  reported to the test
            errors.append(error)

    threads = [threading.Thread(target=answer, args=(order_id,)) for order_id in order_ids]
    with get_engine().connect() as holder:
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
        holder.execute(text("SELECT 1 FROM purchases WHERE id = :id FOR UPDATE"), {"id": purchase_id})
        for thread in threads:
            thread.start()
        with get_engine().connect() as watcher:
            for _ in range(600):  # until every answer waits on the row (each on its lock or its UPDATE)
                waiting = watcher.execute(BLOCKED_BY, {"holder": holder_pid}).scalar()
                watcher.rollback()  # pg_stat_activity is read once per transaction
                if waiting >= len(threads) or errors:
                    break
                threading.Event().wait(0.05)
            else:
                raise AssertionError("the late answers never reached the purchase's row")
        holder.rollback()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a late answer still waits"
    return errors


def _rows(purchase_id: uuid.UUID) -> tuple[list[Any], list[Any]]:
    with session_scope() as session:
        history = [(t.kind, t.from_state, t.to_state, t.message_id) for t in session.scalars(
            select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
            .order_by(PurchaseTransition.id))]
        orphans = list(session.scalars(select(OrphanOrder.order_id).where(OrphanOrder.purchase_id == purchase_id)))
    return history, orphans


def test_two_different_late_orders_at_once_one_applies_the_other_is_kept() -> None:
    """Two late answers naming two different orders: exactly one is the purchase's order, the other is
    an orphan order kept for operators -- neither raises, neither is lost."""
    purchase_id = _order_unknown()
    first, second = f"ORD-{purchase_id.hex[:8]}-A", f"ORD-{purchase_id.hex[:8]}-B"
    errors = _late_answers_at_once(purchase_id, [first, second])
    assert errors == []
    purchase = reload(purchase_id)
    history, orphans = _rows(purchase_id)
    assert State(purchase.state) is State.AWAITING_TRANSFER and purchase.order_id in (first, second)
    assert orphans == [second if purchase.order_id == first else first]
    applied = [row for row in history if row[0] == "transition" and row[2] == State.AWAITING_TRANSFER]
    assert len(applied) == 1 and applied[0][3] == f"late-{purchase.order_id}"
    assert [row[0] for row in history].count("orphan_order") == 1
    kept = orphans[0]
    assert _orphan_reason(kept) == (  # what an operator reads: the order the purchase has, and what to do
        f"order {kept} (quote {purchase.quote_id}) confirmed after the purchase moved on "
        f"(it is awaiting_transfer with order {purchase.order_id}); check it with the partner")


def _orphan_reason(order_id: str) -> str:
    with session_scope() as session:
        return session.scalars(select(OrphanOrder.reason).where(OrphanOrder.order_id == order_id)).one()


def test_the_same_late_order_twice_at_once_applies_once() -> None:
    """A late answer delivered twice at once: applied once, the repeat only noted (no orphan, no error)."""
    purchase_id = _order_unknown()
    the_order = f"ORD-{purchase_id.hex[:8]}"
    errors = _late_answers_at_once(purchase_id, [the_order, the_order])
    assert errors == []
    purchase = reload(purchase_id)
    history, orphans = _rows(purchase_id)
    assert (State(purchase.state), purchase.order_id) == (State.AWAITING_TRANSFER, the_order)
    assert orphans == []
    kinds = [row[0] for row in history if row[3] == f"late-{the_order}"]
    assert sorted(kinds) == ["late_answer", "transition"]


def _moves_on(purchase_id: uuid.UUID, *steps: tuple[State, dict[str, Any]]) -> None:
    for to_state, changes in steps:
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)


def _one_late_answer(purchase_id: uuid.UUID, quote_id: str, order_id: str) -> None:
    stale = reload(purchase_id)
    keep_late_order(stale, order_id=order_id, quote_id=quote_id,
                    details={"order_id": order_id, "quote_id": quote_id, "status": "confirmed"},
                    to_state=State.AWAITING_TRANSFER, next_action_in=0.0,
                    changes_for=lambda current: {"order_id": order_id, "order_status": "confirmed"},
                    message_id=f"late-{order_id}", how="confirmed")


def _orphan_held(purchase_id: uuid.UUID, order_id: str) -> None:
    """The late order is kept as an orphan, and the purchase waits for a person who checks it."""
    purchase = reload(purchase_id)
    history, orphans = _rows(purchase_id)
    assert orphans == [order_id]
    assert (State(purchase.state), purchase.failure_code) == (State.NEEDS_ATTENTION, "ORPHAN_ORDER")
    assert purchase.order_id is None
    assert purchase.failure_message == _orphan_reason(order_id)
    assert _orphan_reason(order_id).startswith(f"order {order_id} (quote ")
    assert _orphan_reason(order_id).endswith(" confirmed after the purchase moved on (it is "
                                            f"{history[-3][2]}); check it with the partner")
    assert [(row[0], row[3]) for row in history[-2:]] == [("orphan_order", f"late-{order_id}"),
                                                        ("transition", f"late-{order_id}")]


def test_a_late_order_after_the_purchase_went_back_to_quoting_is_kept_and_raised() -> None:
    """The purchase left the order path (the absence policy sent it back to quoting, same quote id
    still on it): a late order for that quote is never applied there, but kept and raised to a person."""
    purchase_id = _order_unknown()
    quote_id = reload(purchase_id).quote_id
    _moves_on(purchase_id, (State.RECEIVED, {"order_evidence": None}))
    _one_late_answer(purchase_id, quote_id, f"ORD-{purchase_id.hex[:8]}")
    _orphan_held(purchase_id, f"ORD-{purchase_id.hex[:8]}")


def test_a_late_order_for_an_earlier_quote_is_never_taken_for_the_current_one() -> None:
    """The purchase resolves an order of a newer quote: a late order of the earlier quote is not its
    answer -- kept as an orphan, and the purchase raised to a person."""
    purchase_id = _order_unknown()
    first_quote = reload(purchase_id).quote_id
    _moves_on(purchase_id, (State.RECEIVED, {"order_evidence": None}),
              (State.QUOTED, {"quote_id": f"q2-{purchase_id.hex[:8]}",
                              "quote_expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}),
              (State.ORDERING, {"order_evidence": "may_exist"}), (State.ORDER_UNKNOWN, {}))
    _one_late_answer(purchase_id, first_quote, f"ORD-{purchase_id.hex[:8]}")
    _orphan_held(purchase_id, f"ORD-{purchase_id.hex[:8]}")


def test_a_late_order_answer_without_prices_keeps_the_quoted_ones() -> None:
    """TBB's order reads may leave the pricing out (partners/tbb/payloads.py): a late answer applied to
    the purchase still resolving its quote takes the order, and keeps the prices the purchase has --
    read under the row lock, not from a purchase it never saw."""
    from fulfilment.partners.base import Order
    from fulfilment.partners.tbb.flow import late_order
    from fulfilment.settings import get_settings

    purchase_id = _order_unknown()
    stale = reload(purchase_id)
    order_id = f"ORD-{purchase_id.hex[:8]}"
    late_order(stale, Order(order_id=order_id, status="awaiting_transfer", quote_id=str(stale.quote_id),
                            transfer_email=None, seat_range="1-2", row_name="A", unit_price=None, subtotal=None),
               get_settings(), "late-msg", how="found by lookup")
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.order_id, purchase.seat_range) == (State.AWAITING_TRANSFER, order_id, "1-2")
    assert (purchase.unit_price, purchase.subtotal) == (Decimal("50.00"), Decimal("50.00"))


def test_a_late_order_answer_with_its_own_prices_sets_them() -> None:
    """The order's own prices (what the partner charged) win over the quoted ones when it has them."""
    from fulfilment.partners.base import Order
    from fulfilment.partners.tbb.flow import late_order
    from fulfilment.settings import get_settings

    purchase_id = _order_unknown()
    stale = reload(purchase_id)
    order_id = f"ORD-{purchase_id.hex[:8]}"
    late_order(stale, Order(order_id=order_id, status="awaiting_transfer", quote_id=str(stale.quote_id),
                            transfer_email=None, seat_range="1-2", row_name="A", unit_price=Decimal("55.10"),
                            subtotal=Decimal("110.20")),
               get_settings(), "late-msg", how="found by lookup")
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.unit_price, purchase.subtotal) == (
        State.AWAITING_TRANSFER, Decimal("55.10"), Decimal("110.20"))
