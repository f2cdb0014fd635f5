"""`fulfil`: the command line of ticket-fulfilment (operators and developers)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from pydantic import ValidationError
from sqlalchemy import func, select

from fulfilment.requests import DeliveryType, PurchaseRequest, explain, purchase_id_for
from fulfilment.settings import SettingsError, get_settings

app = typer.Typer(help="ticket-fulfilment: buy ticket orders through the TBB Partner API.", no_args_is_help=True)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings():  # type: ignore[no-untyped-def]
    try:
        return get_settings()
    except SettingsError as error:
        _fail(str(error))


@app.command()
def submit(
    request_id: Annotated[str, typer.Option(help="Your idempotency key (unique per purchase).")],
    event_id: Annotated[str, typer.Option()],
    section_name: Annotated[str, typer.Option()],
    quantity: Annotated[int, typer.Option()],
    delivery_deadline: Annotated[str, typer.Option(help="UTC ISO-8601, e.g. 2026-09-12T18:00:00Z")],
    delivery_type: Annotated[DeliveryType, typer.Option()] = DeliveryType.MOBILE_TRANSFER,
    row_name: Annotated[Optional[str], typer.Option(help="Omit for best available row.")] = None,  # noqa: UP007
    max_unit_price: Annotated[Optional[str], typer.Option(help="Refuse quotes above this (USD).")] = None,  # noqa: UP007
    metadata: Annotated[Optional[str], typer.Option(help="Opaque JSON object echoed in events.")] = None,  # noqa: UP007
) -> None:
    """Submit a purchase request; prints the purchase id."""
    from fulfilment.publish import submit as publish

    fields: dict[str, Any] = {
        "request_id": request_id,
        "event_id": event_id,
        "section_name": section_name,
        "row_name": row_name,
        "quantity": quantity,
        "delivery_type": delivery_type.value,
        "delivery_deadline": delivery_deadline,
        "max_unit_price": max_unit_price,
    }
    if metadata is not None:
        try:
            fields["metadata"] = json.loads(metadata)
        except ValueError as error:
            _fail(f"--metadata is not valid JSON: {error}")
    try:
        request = PurchaseRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        _fail(f"invalid request: {explain(error)}")
    typer.echo(publish(request, broker_url=_settings().broker_url))


def _find(session, ident: str):  # type: ignore[no-untyped-def]
    from models import Purchase

    try:
        purchase = session.get(Purchase, uuid.UUID(ident))
    except ValueError:
        purchase = None
    return purchase or session.get(Purchase, purchase_id_for(ident))


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


@app.command()
def status(
    purchase: Annotated[str, typer.Argument(help="Purchase id, or the request_id it was submitted with.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a purchase: state, quote, order, transfer email and its full history."""
    from fulfilment.db import session_scope
    from fulfilment.state_machine import history
    from models import OutboxEvent, PartnerQuote

    _settings()
    with session_scope() as session:
        found = _find(session, purchase)
        if found is None:
            _fail(f"no purchase with id or request_id {purchase!r}", code=1)
        quotes = session.scalars(
            select(PartnerQuote).where(PartnerQuote.purchase_id == found.id).order_by(PartnerQuote.id)
        ).all()
        transitions = history(session, found.id)
        events = session.scalars(
            select(OutboxEvent).where(OutboxEvent.purchase_id == found.id).order_by(OutboxEvent.transition_id)
        ).all()
    view = {
        "purchase_id": str(found.id),
        "request_id": found.request_id,
        "state": found.state,
        "request": {
            "event_id": found.event_id,
            "section_name": found.section_name,
            "row_name": found.row_name,
            "quantity": found.quantity,
            "delivery_type": found.delivery_type,
            "delivery_deadline": _iso(found.delivery_deadline),
            "max_unit_price": str(found.max_unit_price) if found.max_unit_price is not None else None,
        },
        "quote": {"quote_id": found.quote_id, "expires_at": _iso(found.quote_expires_at),
                  "unit_price": _money(found.unit_price), "quotes_taken": found.quotes_taken},
        "order": {"order_id": found.order_id, "status": found.order_status, "transfer_email": found.transfer_email,
                  "seat_range": found.seat_range, "row": found.row_assigned, "subtotal": _money(found.subtotal)},
        "failure": {"code": found.failure_code, "message": found.failure_message} if found.failure_code else None,
        "last_error": found.last_error,
        "next_action_at": _iso(found.next_action_at),
        "quotes": [{"quote_id": q.quote_id, "unit_price": _money(q.unit_price), "expires_at": _iso(q.expires_at)}
                   for q in quotes],
        "history": [{"at": _iso(t.created_at), "kind": t.kind, "from": t.from_state, "to": t.to_state,
                     "reason": t.reason, "attempt": t.attempt} for t in transitions],
        "events": [{"event_id": str(e.id), "type": e.routing_key, "published_at": _iso(e.published_at)}
                   for e in events],
    }
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(f"purchase  {view['purchase_id']}  (request {found.request_id})")
    typer.echo(f"state     {found.state}" + (f"  next action {view['next_action_at']}" if found.next_action_at else ""))
    typer.echo(f"request   event {found.event_id} section {found.section_name} row {found.row_name or '(best)'} "
               f"x{found.quantity} {found.delivery_type} by {view['request']['delivery_deadline']}")
    if found.quote_id:
        typer.echo(f"quote     {found.quote_id} at {_money(found.unit_price)} USD, expires {view['quote']['expires_at']}"
                   f" ({found.quotes_taken} taken)")
    if found.order_id:
        typer.echo(f"order     {found.order_id} [{found.order_status}] seats {found.row_assigned} {found.seat_range}"
                   f" subtotal {_money(found.subtotal)}")
        typer.echo(f"transfer  accept from {found.transfer_email}")
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


def _money(value: Decimal | None) -> str | None:
    return f"{value:.2f}" if value is not None else None


@app.command("list")
def list_purchases(
    state: Annotated[Optional[list[str]], typer.Option(help="Only these states (repeatable).")] = None,  # noqa: UP007
    flagged: Annotated[bool, typer.Option("--flagged", help="Only purchases awaiting transfer whose "
                                          "delivery deadline is near (flagged by the scheduler).")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List purchases, newest first, optionally filtered by state; ends with counts per state."""
    from fulfilment.db import session_scope
    from fulfilment.state_machine import State
    from models import DeadlineFlag, Purchase

    _settings()
    wanted = list(state or [])
    unknown = [s for s in wanted if s not in State.__members__.values()]
    if unknown:
        _fail(f"unknown state(s) {', '.join(unknown)}; known: {', '.join(s.value for s in State)}")
    if flagged:
        wanted = wanted or [State.AWAITING_TRANSFER.value]
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
             "failure_code": p.failure_code, "delivery_deadline": _iso(p.delivery_deadline),
             **({"deadline_windows_hours": sorted(windows.get(p.id, []))} if flagged else {})}
            for p in rows], "counts": counts}, indent=2))
        return
    for p in rows:
        detail = p.order_id or p.failure_code or p.quote_id or ""
        if flagged:
            detail += f"  deadline {_iso(p.delivery_deadline)} (within {min(windows.get(p.id, [0])):g} h)"
        typer.echo(f"{p.id}  {p.state:<17}  {p.request_id:<36}  {detail}")
    typer.echo("counts: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"))


@app.command()
def retry(
    purchase: Annotated[str, typer.Argument(help="Purchase id or request_id of a stalled purchase.")],
) -> None:
    """Resume a stalled (or needs-attention) purchase, even after its dead message expired."""
    import dramatiq

    from fulfilment.db import session_scope
    from fulfilment.steps.resume import CannotResume, resume

    settings = _settings()
    with session_scope() as session:
        found = _find(session, purchase)
        if found is None:
            _fail(f"no purchase with id or request_id {purchase!r}", code=1)
    try:
        resumed = resume(found.id, settings=settings, reason="resumed by operator (fulfil retry)")
    except CannotResume as error:
        _fail(str(error), code=1)
    import workers  # noqa: F401  the broker and the actor names

    dramatiq.get_broker().get_actor(resumed.step).send(str(resumed.purchase_id))
    what = f"{resumed.from_state} -> {resumed.to_state}" if resumed.changed else f"already {resumed.to_state}"
    typer.echo(f"{resumed.purchase_id}: {what}; sent {resumed.step}")


@app.command()
def health() -> None:
    """Check database, broker and partner authentication; exit 1 naming the failing part."""
    from fulfilment.health import run_checks

    results = run_checks(_settings())
    for result in results:
        typer.echo(f"{result.name:<9} {'ok' if result.ok else 'FAILED'}  {result.detail}")
    if not all(result.ok for result in results):
        raise typer.Exit(1)


dlq = typer.Typer(help="Dead letters: jobs whose retries ran out (kept 7 days in the .XQ queues).",
                  no_args_is_help=True)
app.add_typer(dlq, name="dlq")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _broker_call(call):  # type: ignore[no-untyped-def]
    from fulfilment.dead_letters import BrokerUnavailable

    try:
        return call()
    except BrokerUnavailable as error:
        _fail(str(error), code=1)


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Dead messages: queue, message id, actor, purchase, error, retries, age."""
    from fulfilment.dead_letters import list_dead_letters, raw_preview

    letters = _broker_call(lambda: list_dead_letters(_settings().broker_url))
    if as_json:
        typer.echo(json.dumps([{"queue": d.queue, "message_id": d.message_id, "actor": d.actor,
                                "purchase_id": d.purchase_id, "request_id": d.request_id, "error": d.error,
                                "retries": d.retries, "age_seconds": d.age_seconds} for d in letters], indent=2))
        return
    for d in letters:
        subject = d.purchase_id or (f"request {d.request_id}" if d.request_id else "")
        what = f"{d.actor or '?'} {subject}" if d.body is not None else f"undecodable: {raw_preview(d)}"
        typer.echo(f"{d.queue:<20} {d.message_id or '-':<36} {what}  retries={d.retries} "
                   f"age={_age(d.age_seconds)}  {d.error or ''}")
    typer.echo(f"{len(letters)} dead message(s)")


@dlq.command("show")
def dlq_show(message_id: str) -> None:
    """One dead message in full (its body, with the traceback of its last failure)."""
    from fulfilment.dead_letters import find, raw_preview

    letter = _broker_call(lambda: find(_settings().broker_url, message_id))
    if letter is None:
        _fail(f"no dead message {message_id} (dead messages expire after 7 days)", code=1)
    typer.echo(f"queue {letter.queue}  retries {letter.retries}  age {_age(letter.age_seconds)}")
    typer.echo(json.dumps(letter.body, indent=2) if letter.body is not None else raw_preview(letter, 500))


def _selection(message_id: str | None, actor: str | None, everything: bool) -> dict[str, Any]:
    if sum(bool(x) for x in (message_id, actor, everything)) != 1:
        _fail("choose exactly one: a MESSAGE_ID, --actor NAME or --all")
    return {"message_id": message_id, "actor": actor, "all": everything}


@dlq.command("replay")
def dlq_replay(
    message_id: Annotated[Optional[str], typer.Argument(help="One dead message.")] = None,  # noqa: UP007
    actor: Annotated[Optional[str], typer.Option(help="Every dead message of this actor.")] = None,  # noqa: UP007
    everything: Annotated[bool, typer.Option("--all", help="Every dead message.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed.")] = False,
) -> None:
    """Send dead messages back to their queue (retries reset), resuming their stalled purchases.

    Each is published persistent with confirms before its dead copy is removed: an
    interrupted replay may duplicate a message, never lose one.  A purchase that moved
    on makes its replayed message a no-op.
    """
    from fulfilment.dead_letters import DeadLetter, replay
    from fulfilment.steps.resume import CannotResume, resume

    settings = _settings()

    def resume_purchase(letter: DeadLetter) -> None:
        if letter.purchase_id is None:
            return  # intake messages have no purchase yet
        try:
            resume(uuid.UUID(letter.purchase_id), settings=settings,
                   reason=f"resumed by dead-letter replay of message {letter.message_id}")
        except CannotResume as error:
            if "finished" not in str(error):
                raise
            # A finished purchase: the replayed message will find nothing to do.

    report = _broker_call(lambda: replay(settings.broker_url, dry_run=dry_run, before_publish=resume_purchase,
                                         **_selection(message_id, actor, everything)))
    verb = "would replay" if dry_run else "replayed"
    for letter in report.replayed:
        typer.echo(f"{verb} {letter.message_id} {letter.actor} {letter.purchase_id or letter.request_id or ''}")
    for letter, reason in report.skipped:
        typer.echo(f"skipped {letter.message_id or '(undecodable)'}: {reason}", err=True)
    typer.echo(f"{len(report.replayed)} {verb}, {len(report.skipped)} skipped")
    if report.skipped:
        raise typer.Exit(1)


@dlq.command("purge")
def dlq_purge(
    message_id: Annotated[Optional[str], typer.Argument()] = None,  # noqa: UP007
    actor: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP007
    everything: Annotated[bool, typer.Option("--all")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete dead messages for good (asks first).  Their purchases stay as they are in Postgres."""
    from fulfilment.dead_letters import purge

    selection = _selection(message_id, actor, everything)
    what = message_id or (f"every dead {actor} message" if actor else "EVERY dead message")
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        _fail("nothing purged", code=1)
    count = _broker_call(lambda: purge(_settings().broker_url, **selection))
    typer.echo(f"purged {count} dead message(s)")


@app.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations (alembic upgrade)."""
    from alembic import command
    from alembic.config import Config

    settings = _settings()
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, revision)
    typer.echo(f"database at {revision}")


@app.command()
def scheduler() -> None:
    """Run the scheduler (one live instance; others wait as standbys). Stops cleanly on SIGTERM."""
    import dramatiq
    from prometheus_client import start_http_server

    from fulfilment import logging_setup
    from fulfilment.deadlines import flag_near_deadlines
    from fulfilment.outbox import EventPublisher, relay_outbox
    from fulfilment.scheduler import Job, Scheduler, redrive_due, update_gauges

    settings = _settings()
    logging_setup.configure(settings.log_level)
    import workers  # noqa: F401  the broker and the actor names

    def send(step: str, purchase_id: uuid.UUID) -> None:
        dramatiq.get_broker().get_actor(step).send(str(purchase_id))

    publisher = EventPublisher(settings.broker_url)

    def relay() -> int:
        # Drain the backlog within a time budget, one confirmed batch at a time.
        total, deadline = 0, time.monotonic() + max(1.0, settings.scheduler_interval_seconds)
        while time.monotonic() < deadline:
            sent = relay_outbox(publisher, batch_size=settings.scheduler_batch_size)
            total += sent
            if sent < settings.scheduler_batch_size:
                break
        return total

    def gauges() -> int:
        from fulfilment.queues import queue_depths

        return update_gauges(settings, lambda: queue_depths(settings.broker_url))

    jobs = [
        Job("redrive", lambda: redrive_due(settings, send)),
        Job("deadlines", lambda: flag_near_deadlines(settings.deadline_warning_hours,
                                                     batch_size=settings.scheduler_batch_size)),
        Job("outbox", relay),
        Job("gauges", gauges),
    ]
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    runner = Scheduler(settings, jobs)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    try:
        runner.run()
    finally:
        publisher.close()


@app.command()
def sandbox(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 18080,
) -> None:
    """Run the TBB Partner API sandbox (for development and tests)."""
    from fulfilment.sandbox.config import SandboxConfig
    from fulfilment.sandbox.server import run

    run(host, port, SandboxConfig.from_env())


@app.command()
def schema() -> None:
    """Print the JSON Schema of a purchase request."""
    typer.echo(json.dumps(request_schema(), indent=2))


def request_schema() -> dict[str, Any]:
    schema = PurchaseRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ticket-fulfilment.invalid/schemas/purchase-request.schema.json"
    return schema


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
