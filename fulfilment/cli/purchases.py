"""`fulfil submit | status | list | retry`: purchases, from the operator's side.

Each command validates only the settings it uses: `submit` BROKER_URL; `status` and `list`
DATABASE_URL; `retry` both (it sends the resumed step).
"""

from __future__ import annotations

import inspect
import json
import uuid
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from sqlalchemy import func, select

from fulfilment.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    app,
    broker,
    fail,
    find_purchase,
    iso,
    money,
    quiet_broker_logs,
    require,
)
from fulfilment.cli.request_options import OptionError, parameters, request_fields, request_models, request_options
from fulfilment.requests import AnyPurchaseRequest, DeliveryType, explain, parse_request
from fulfilment.settings import BrokerSettings, DatabaseSettings, PolicySettings, SettingsError, get_broker_settings
from fulfilment.state_machine import State

# `fulfil submit`'s options are the request models' fields (cli/request_options.py): a field added
# to a partner's request is an option at once.  TBB's delivery type keeps its old CLI default.
_SUBMIT_OPTIONS = request_options(request_models(AnyPurchaseRequest),
                                  defaults={("tbb", "delivery_type"): DeliveryType.MOBILE_TRANSFER.value})


def submit(**values: Any) -> None:
    """Submit a purchase request; prints the purchase id.

    `--partner` chooses the request's shape (default tbb): each option says which partners take
    it, and which require it.  Secrets (a payment nonce) are read from a file, stdin or the
    environment, never from the command line.  `fulfil submit-json` takes the same request as JSON.
    """
    from fulfilment.publish import submit as publish

    try:
        fields = request_fields(values, _SUBMIT_OPTIONS)
    except OptionError as error:
        fail(str(error))
    try:
        request = parse_request(fields)
    except ValidationError as error:
        fail(f"invalid request: {explain(error)}")
    broker_url = broker().broker_url
    with quiet_broker_logs():
        typer.echo(publish(request, broker_url=broker_url))


submit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typer reads the options from it
    parameters(_SUBMIT_OPTIONS, list(request_models(AnyPurchaseRequest)), "tbb"))
app.command()(submit)


@app.command("submit-json")
def submit_json(
    request_file: Annotated[str, typer.Argument(help="A JSON request (any partner), or - for stdin.",
                                                metavar="FILE")],
) -> None:
    """Submit a purchase request given as JSON (docs/schemas/purchase-request.schema.json), for any
    partner: `"partner": "ticketmaster"` buys through Ticketmaster; prints the purchase id."""
    import sys
    from pathlib import Path

    from fulfilment.publish import submit as publish

    try:
        text = sys.stdin.read() if request_file == "-" else Path(request_file).read_text()
        raw = json.loads(text)
    except (OSError, ValueError) as error:
        fail(f"cannot read a JSON request from {request_file}: {error}")
    try:
        request = parse_request(raw)
    except ValidationError as error:
        fail(f"invalid request: {explain(error)}")
    broker_url = broker().broker_url
    with quiet_broker_logs():
        typer.echo(publish(request, broker_url=broker_url))


@app.command()
def status(
    purchase: Annotated[str, typer.Argument(help="Purchase id, or the request_id it was submitted with.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a purchase: state, quote, order, transfer email and its full history (exit 1: none)."""
    from fulfilment.db import session_scope
    from fulfilment.state_machine import history
    from models import OutboxEvent, PartnerQuote, Ticket

    require(DatabaseSettings)
    with session_scope() as session:
        found = find_purchase(session, purchase)
        if found is None:
            fail(_not_recorded(session, purchase), code=EXIT_NOT_FOUND)
        quotes = session.scalars(
            select(PartnerQuote).where(PartnerQuote.purchase_id == found.id).order_by(PartnerQuote.id)
        ).all()
        transitions = history(session, found.id)
        events = session.scalars(
            select(OutboxEvent).where(OutboxEvent.purchase_id == found.id).order_by(OutboxEvent.transition_id)
        ).all()
        tickets = session.scalars(select(Ticket).where(Ticket.purchase_id == found.id).order_by(Ticket.position)).all()
    view = {
        "purchase_id": str(found.id),
        "request_id": found.request_id,
        "partner": found.partner,
        "state": found.state,
        "request": {
            "event_id": found.event_id,
            "section_name": found.section_name,
            "row_name": found.row_name,
            "quantity": found.quantity,
            "delivery_type": found.delivery_type,
            "delivery_deadline": iso(found.delivery_deadline),
            "max_unit_price": str(found.max_unit_price) if found.max_unit_price is not None else None,
        },
        "quote": {"quote_id": found.quote_id, "expires_at": iso(found.quote_expires_at),
                  "unit_price": money(found.unit_price), "quotes_taken": found.quotes_taken},
        "order": {"order_id": found.order_id, "status": found.order_status, "transfer_email": found.transfer_email,
                  "seat_range": found.seat_range, "row": found.row_assigned, "subtotal": money(found.subtotal)},
        "failure": {"code": found.failure_code, "message": found.failure_message} if found.failure_code else None,
        "last_error": found.last_error,
        "next_action_at": iso(found.next_action_at),
        # Never the tokens (encrypted at rest; they reach the requester in events only).
        "tickets": [{"section": t.section, "row": t.row, "seat": t.seat, "barcode": t.barcode,
                     "render_type": t.render_type, "refresh_due_at": iso(t.refresh_due_at),
                     "refreshed_at": iso(t.refreshed_at)} for t in tickets],
        "quotes": [{"quote_id": q.quote_id, "unit_price": money(q.unit_price), "expires_at": iso(q.expires_at)}
                   for q in quotes],
        "history": [{"at": iso(t.created_at), "kind": t.kind, "from": t.from_state, "to": t.to_state,
                     "reason": t.reason, "attempt": t.attempt} for t in transitions],
        "events": [{"event_id": str(e.id), "type": e.routing_key, "published_at": iso(e.published_at)}
                   for e in events],
    }
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(f"purchase  {view['purchase_id']}  (request {found.request_id})")
    typer.echo(f"partner   {found.partner}")
    typer.echo(f"state     {found.state}" + (f"  next action {view['next_action_at']}" if found.next_action_at else ""))
    typer.echo(f"request   event {found.event_id} section {found.section_name or '(best)'} row {found.row_name or '(best)'} "
               f"x{found.quantity} {found.delivery_type} by {view['request']['delivery_deadline']}")
    if found.quote_id:
        typer.echo(f"quote     {found.quote_id} at {money(found.unit_price)} each, expires {view['quote']['expires_at']}"
                   f" ({found.quotes_taken} taken)")
    if found.order_id:
        typer.echo(order_line(found))
        if found.transfer_email:
            typer.echo(f"transfer  accept from {found.transfer_email}")
    for ticket in view["tickets"]:
        typer.echo(f"ticket    {ticket['section']}/{ticket['row']}/{ticket['seat']} barcode {ticket['barcode']} "
                   f"{ticket['render_type']}, refresh due {ticket['refresh_due_at'] or '-'}")
    if found.failure_code:
        typer.echo(f"failure   {found.failure_code}: {found.failure_message}")
    if found.last_error:
        typer.echo(f"last err  {found.last_error}")
    typer.echo("history")
    for t in view["history"]:
        arrow = "->" if t["kind"] == "transition" else "!!"
        typer.echo(f"  {t['at']}  {t['from'] or '-':>17} {arrow} {t['to']:<17}  {t['reason']}")
    sent = sum(1 for e in events if e.published_at is not None)
    typer.echo(f"events    {len(events)} recorded, {sent} published to fulfilment.events")


def order_line(purchase: Any) -> str:
    """`status`'s order line: the seats only where the partner assigned them at order time (TBB);
    Ticketmaster's seats are on its tickets, listed below it."""
    seats = " ".join(part for part in (purchase.row_assigned, purchase.seat_range) if part)
    parts = [f"order     {purchase.order_id} [{purchase.order_status or '-'}]"]
    if seats:
        parts.append(f"seats {seats}")
    if purchase.subtotal is not None:
        parts.append(f"subtotal {money(purchase.subtotal)}")
    return " ".join(parts)


def _not_recorded(session: Any, ident: str) -> str:
    """Why `status` finds no purchase: rejected, still queued for intake, or unknown.

    A submission is stored by the intake workers, so a caller can hold a purchase id
    before the purchase exists (for as long as the database is unavailable, say).
    """
    from dramatiq.common import dq_name, xq_name

    from fulfilment.rabbitmq.queues import INTAKE_QUEUE, queue_depths
    from fulfilment.requests import purchase_id_for
    from models import RejectedRequest

    rejected = session.scalars(
        select(RejectedRequest).where(RejectedRequest.request_id == ident).order_by(RejectedRequest.id.desc())
    ).first()
    if rejected is not None:
        return (f"no purchase for request_id {ident!r}: the request was rejected at {iso(rejected.created_at)}: "
                f"{rejected.reason_code}: {rejected.reason}")
    try:
        purchase_id = str(uuid.UUID(ident))
    except ValueError:
        purchase_id = str(purchase_id_for(ident))
    lines = [f"no purchase recorded yet for {ident!r} (purchase id {purchase_id}).",
             f"If `fulfil submit` accepted it (it printed this id, exit 0), it waits in {INTAKE_QUEUE} until "
             f"the intake workers store it; a submission that failed (exit 3: no broker node reachable) was "
             f"never queued."]
    try:
        broker_url = get_broker_settings().broker_url
        depths = queue_depths(broker_url, (INTAKE_QUEUE, dq_name(INTAKE_QUEUE), xq_name(INTAKE_QUEUE)))
    except SettingsError:
        lines.append("(BROKER_URL is not set or invalid: the intake queue cannot be shown)")
    except Exception as error:  # noqa: BLE001  the answer stands without the queue depths
        from fulfilment.dependencies import location, reason

        lines.append(f"(RabbitMQ not reachable at {location(broker_url)} to show the intake queue: {reason(error)})")
    else:
        lines.append(f"intake queue now: {depths[INTAKE_QUEUE]} waiting, {depths[dq_name(INTAKE_QUEUE)]} delayed for "
                     f"a retry (messages a worker holds for its retry delay are not counted), "
                     f"{depths[xq_name(INTAKE_QUEUE)]} dead-lettered (`fulfil dlq list`).")
    lines.append("Workers logging \"intake waiting for the database\" store it as soon as the database is back; "
                 "if it was never submitted, submit it again (the same request_id makes the same purchase).")
    return "\n".join(lines)


@app.command("list")
def list_purchases(
    state: Annotated[Optional[list[State]], typer.Option(help="Only these states (repeatable).")] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only purchases awaiting transfer or tickets "
                                          "whose delivery deadline is near (flagged by the scheduler).")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List purchases, newest first, optionally filtered by state; ends with counts per state."""
    from fulfilment.db import session_scope
    from fulfilment.deadlines import WATCHED_STATES
    from models import DeadlineFlag, Purchase

    require(DatabaseSettings)
    wanted = [s.value for s in state or []]
    if flagged:
        wanted = wanted or list(WATCHED_STATES)
    with session_scope() as session:
        query = select(Purchase).order_by(Purchase.created_at.desc()).limit(limit)
        counts_query = select(Purchase.state, func.count()).group_by(Purchase.state)
        if wanted:
            query = query.where(Purchase.state.in_(wanted))
            counts_query = counts_query.where(Purchase.state.in_(wanted))
        if flagged:
            has_flag = select(DeadlineFlag.purchase_id).where(DeadlineFlag.purchase_id == Purchase.id).exists()
            query = query.where(has_flag)
            counts_query = counts_query.where(has_flag)
        rows = session.scalars(query).all()
        counts = dict(session.execute(counts_query).all())
        windows: dict[uuid.UUID, list[float]] = {}
        if flagged and rows:
            for purchase_id, hours in session.execute(
                select(DeadlineFlag.purchase_id, DeadlineFlag.window_hours)
                .where(DeadlineFlag.purchase_id.in_([p.id for p in rows]))
            ):
                windows.setdefault(purchase_id, []).append(float(hours))
    if as_json:
        typer.echo(json.dumps({"purchases": [
            {"purchase_id": str(p.id), "request_id": p.request_id, "state": p.state, "order_id": p.order_id,
             "failure_code": p.failure_code, "delivery_deadline": iso(p.delivery_deadline),
             **({"deadline_windows_hours": sorted(windows.get(p.id, []))} if flagged else {})}
            for p in rows], "counts": counts}, indent=2))
        return
    for p in rows:
        detail = p.order_id or p.failure_code or p.quote_id or ""
        if flagged:
            detail += f"  deadline {iso(p.delivery_deadline)} (within {min(windows.get(p.id, [0])):g} h)"
        typer.echo(f"{p.id}  {p.state:<17}  {p.request_id:<36}  {detail}")
    typer.echo("counts: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"))


@app.command()
def retry(
    purchase: Annotated[str, typer.Argument(help="Purchase id or request_id of a stalled purchase.")],
    operator: Annotated[Optional[str], typer.Option(help="Your name, for the history (default: $USER).")] = None,
) -> None:
    """Resume a stalled (or needs-attention) purchase, even after its dead message expired.

    Exit 1 if there is no such purchase or it is finished; 3 if the step could not be sent
    (the purchase is resumed all the same, and the scheduler sends it once the broker is back).
    """
    from fulfilment import operator as actions
    from fulfilment.settings import get_policy_settings

    require(DatabaseSettings, BrokerSettings, PolicySettings)
    try:
        name = actions.operator_name(operator)
    except ValueError as error:
        fail(str(error))
    try:
        with quiet_broker_logs():
            retried = actions.retry(purchase, operator=name, settings=get_policy_settings(),
                                    broker_url=get_broker_settings().broker_url)
    except actions.OperatorActionError as error:
        fail(str(error), code=EXIT_NOT_FOUND)
    resumed = retried.resumed
    what = f"{resumed.from_state} -> {resumed.to_state}" if resumed.changed else f"already {resumed.to_state}"
    if retried.send_error is not None:
        fail(f"{resumed.purchase_id}: {what}, but {resumed.step} could not be sent: {retried.send_error}; the "
             "scheduler sends it once the broker is back", code=EXIT_UNAVAILABLE)
    typer.echo(f"{resumed.purchase_id}: {what}; sent {resumed.step}")
