"""What the chaos run verifies at the end, from the sandbox's own records and the database."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from fulfilment.db import session_scope
from fulfilment.state_machine import HELD_FOR_OPERATOR, TERMINAL, State
from models import OrphanOrder, OutboxEvent, PartnerQuote, Purchase, PurchaseTransition, RejectedRequest
from tests.support.sandbox import Sandbox


@dataclass
class Verdict:
    purchases: int = 0
    states: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    duplicates: int = 0  # purchases with more than one partner order, across all their quotes
    orphan_orders: int = 0  # partner orders for quotes we never recorded
    # Partner orders for a known quote that are neither the purchase's recorded order, nor in
    # orphan_orders, nor held in needs_attention for a person: an order we would never deliver.
    orders_unaccounted: int = 0
    recorded_orders_missing: int = 0  # a purchase's order_id that the partner does not have
    recorded_orphan_orders: int = 0  # rows in orphan_orders: an order that arrived after its purchase moved on
    late_answers: int = 0  # history rows of kind late_answer
    absence_requotes: int = 0  # unknown order outcomes re-quoted under ORDER_ABSENCE_GRACE_SECONDS
    lost: int = 0  # purchases neither final nor visibly held
    stalled: int = 0  # held for an operator: stalled or needs_attention
    needs_attention: int = 0
    needs_attention_with_order: int = 0  # ... of which a partner order exists for one of their quotes
    needs_attention_without_evidence: int = 0  # ... of which carry no failure code, message or order evidence
    needs_attention_detail: list[str] = field(default_factory=list)
    held_without_reason: int = 0
    orders_on_expired_quote: int = 0
    transitions: int = 0
    transitions_without_one_event: int = 0
    unpublished_events: int = 0
    events_never_received: int = 0
    events_received_twice: int = 0
    secret_leaks: list[str] = field(default_factory=list)
    # Ticketmaster purchases, from the TM sandbox's records (orders by source_account_id).
    tm_purchases: int = 0
    tm_states: Counter[str] = field(default_factory=Counter)
    tm_orders: int = 0
    tm_duplicates: int = 0
    tm_orders_unaccounted: int = 0  # a TM order neither the purchase's recorded one nor held for a person
    tm_commits_on_expired_carts: int = 0
    tm_concurrent_calls: int = 0
    tm_leaked_carts: int = 0  # reported, not a failure: a cart left to its hold's end buys nothing
    tm_token_unknown: int = 0  # held ORDER_TOKEN_UNKNOWN: the order exists, its token never reached us

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.orphan_orders or self.orders_unaccounted or self.recorded_orders_missing
                    or self.lost or self.held_without_reason or self.needs_attention_without_evidence
                    or self.orders_on_expired_quote or self.transitions_without_one_event
                    or self.unpublished_events or self.events_never_received or self.secret_leaks
                    or self.tm_duplicates or self.tm_orders_unaccounted or self.tm_commits_on_expired_carts
                    or self.tm_concurrent_calls)


def check_purchases(purchase_ids: list[uuid.UUID], sandbox: Sandbox, verdict: Verdict) -> None:
    with session_scope() as session:
        purchases = {p.id: p for p in session.scalars(select(Purchase).where(Purchase.id.in_(purchase_ids)))}
        quotes = session.execute(select(PartnerQuote.quote_id, PartnerQuote.purchase_id)).all()
        orphans = {order_id: purchase_id for order_id, purchase_id
                   in session.execute(select(OrphanOrder.order_id, OrphanOrder.purchase_id))}
        verdict.late_answers = session.scalar(
            select(func.count()).select_from(PurchaseTransition).where(PurchaseTransition.kind == "late_answer")) or 0
        verdict.absence_requotes = session.scalar(
            select(func.count()).select_from(PurchaseTransition)
            .where(PurchaseTransition.reason.contains("(ORDER_ABSENCE_GRACE_SECONDS policy)"))) or 0
    verdict.purchases = len(purchases)
    verdict.recorded_orphan_orders = len(orphans)
    verdict.lost += len(purchase_ids) - len(purchases)  # never even stored
    for purchase in purchases.values():
        verdict.states[purchase.state] += 1
        if purchase.state in TERMINAL:
            continue
        if purchase.state in HELD_FOR_OPERATOR:
            verdict.stalled += 1
            if not (purchase.last_error or purchase.failure_code):
                verdict.held_without_reason += 1
            continue
        verdict.lost += 1

    purchase_of_quote = {quote_id: purchase_id for quote_id, purchase_id in quotes}
    orders = sandbox.orders()
    verdict.orders = len(orders)
    orders_of: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for order in orders:
        owner = purchase_of_quote.get(order["quote_id"])
        if owner is None:
            verdict.orphan_orders += 1
        else:
            orders_of.setdefault(owner, []).append(order)
            owner_row = purchases.get(owner)
            held = owner_row is not None and owner_row.state == State.NEEDS_ATTENTION
            if not (held or order["order_id"] in orphans
                    or (owner_row is not None and owner_row.order_id == order["order_id"])):
                verdict.orders_unaccounted += 1
        if order.get("created_on_expired_quote"):
            verdict.orders_on_expired_quote += 1
    verdict.duplicates = sum(1 for found in orders_of.values() if len(found) > 1)
    verdict.orders_on_expired_quote = max(verdict.orders_on_expired_quote,
                                          sandbox.stats().get("orders_on_expired_quote", 0))
    at_partner = {order["order_id"] for order in orders}
    verdict.recorded_orders_missing = sum(1 for p in purchases.values()
                                          if p.partner == "tbb" and p.order_id and p.order_id not in at_partner)

    for purchase in purchases.values():
        if purchase.state != State.NEEDS_ATTENTION or purchase.partner != "tbb":
            continue
        verdict.needs_attention += 1
        found = [order["order_id"] for order in orders_of.get(purchase.id, [])]
        verdict.needs_attention_with_order += bool(found)
        evidence = purchase.order_evidence or purchase.order_id or purchase.id in orphans.values()
        if not (purchase.failure_code and purchase.failure_message and evidence):
            verdict.needs_attention_without_evidence += 1
        verdict.needs_attention_detail.append(
            f"{purchase.id} {purchase.failure_code} evidence={purchase.order_evidence} quote={purchase.quote_id} "
            f"partner orders={found or 'none'}: {purchase.failure_message}")


def check_tm_purchases(purchase_ids: list[uuid.UUID], tm: Any, counts: dict[str, Any], verdict: Verdict) -> None:
    """At most one TM order per purchase; each one the purchase's recorded order or held for a person."""
    from fulfilment.partners.ticketmaster.flow import source_account_id

    with session_scope() as session:
        purchases = list(session.scalars(select(Purchase).where(Purchase.id.in_(purchase_ids),
                                                                Purchase.partner == "ticketmaster")))
    orders = tm.admin.orders()
    by_source: dict[str, list[dict[str, Any]]] = {}
    for found in orders:
        by_source.setdefault(found["source_account_id"], []).append(found)
    verdict.tm_purchases = len(purchases)
    verdict.tm_orders = len(orders)
    mine = {source_account_id(p.id): p for p in purchases}
    for source, found in by_source.items():
        purchase = mine.get(source)
        if purchase is None:
            verdict.tm_orders_unaccounted += len(found)
            continue
        if len(found) > 1:
            verdict.tm_duplicates += 1
        for order in found:
            if not (purchase.order_id == order["order_number"] or purchase.state == State.NEEDS_ATTENTION):
                verdict.tm_orders_unaccounted += 1
    for purchase in purchases:
        verdict.tm_states[purchase.state] += 1
        if purchase.state == State.NEEDS_ATTENTION:
            verdict.needs_attention += 1
            found = [order["order_number"] for order in by_source.get(source_account_id(purchase.id), [])]
            verdict.needs_attention_with_order += bool(found)
            if not (purchase.failure_code and purchase.failure_message and purchase.order_evidence):
                verdict.needs_attention_without_evidence += 1
            verdict.needs_attention_detail.append(
                f"{purchase.id} (TM) {purchase.failure_code} evidence={purchase.order_evidence} cart={purchase.quote_id}"
                f" TM orders={found or 'none'}: {purchase.failure_message}")
    verdict.tm_token_unknown = sum(1 for p in purchases if p.failure_code == "ORDER_TOKEN_UNKNOWN")
    verdict.tm_commits_on_expired_carts = int(counts.get("commits_on_expired_carts", 0))
    verdict.tm_concurrent_calls = int(counts.get("concurrent_calls", 0))
    verdict.tm_leaked_carts = int(counts.get("leaked_carts", 0))


def scan_for_ticket_tokens(tm: Any, files: list[Path], outputs: dict[str, str], verdict: Verdict) -> None:
    """No order token (from the TM sandbox's records) in a log, a CLI output or Postgres in clear."""
    tokens = [order["order_token"] for order in tm.admin.orders() if order.get("order_token")]
    if not tokens:
        return
    pattern = re.compile("|".join(re.escape(token) for token in tokens))
    for path in files:
        if path.name.startswith("tm-sandbox"):
            continue  # the sandbox's own log is the partner's side
        if pattern.search(path.read_text(errors="replace")):
            verdict.secret_leaks.append(f"{path}: contains a TM order token")
    for name, output in outputs.items():
        if pattern.search(output):
            verdict.secret_leaks.append(f"output of {name}: contains a TM order token")
    with session_scope() as session:
        for payload in session.scalars(select(OutboxEvent.payload)):
            if pattern.search(str(payload)):
                verdict.secret_leaks.append("an event: contains a TM order token")
        for data in session.scalars(select(Purchase.partner_data).where(Purchase.partner_data.is_not(None))):
            if pattern.search(str(data)):
                verdict.secret_leaks.append("purchases.partner_data: contains a TM order token in clear")


def check_events(received: list[dict[str, Any]], verdict: Verdict) -> None:
    """Exactly one event per history entry, all published, every id received (duplicates allowed)."""
    with session_scope() as session:
        verdict.transitions = session.scalar(select(func.count()).select_from(PurchaseTransition)) or 0
        verdict.transitions_without_one_event = session.scalar(text(
            "SELECT count(*) FROM purchase_transitions t "
            "WHERE (SELECT count(*) FROM outbox_events e WHERE e.transition_id = t.id) <> 1")) or 0
        verdict.unpublished_events = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))) or 0
        event_ids = {str(i) for i in session.scalars(select(OutboxEvent.id))}
    seen = Counter(message["message_id"] for message in received)
    verdict.events_never_received = len(event_ids - set(seen))
    verdict.events_received_twice = sum(1 for i, n in seen.items() if n > 1)


def scan_for_secrets(needles: list[str], token_pattern: re.Pattern[str], files: list[Path],
                     outputs: dict[str, str], verdict: Verdict) -> None:
    """The secret and any access token must appear in no log, event, stored error or CLI output."""

    def scan(where: str, content: str) -> None:
        for needle in needles:
            if needle in content:
                verdict.secret_leaks.append(f"{where}: contains the client secret")
        if token_pattern.search(content):
            verdict.secret_leaks.append(f"{where}: contains an access token")

    for path in files:
        scan(str(path), path.read_text(errors="replace"))
    for name, output in outputs.items():
        scan(f"output of {name}", output)
    with session_scope() as session:
        for column in (Purchase.last_error, Purchase.failure_message):
            for value in session.scalars(select(column).where(column.is_not(None))):
                scan(f"purchases.{column.key}", value or "")
        for payload in session.scalars(select(OutboxEvent.payload)):
            scan("an event", str(payload))
        for reason in session.scalars(select(PurchaseTransition.reason)):
            scan("purchase_transitions.reason", reason)
        for body in session.scalars(select(RejectedRequest.raw_body)):
            scan("rejected_requests.raw_body", body)
