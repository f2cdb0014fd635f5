"""`fulfil dlq list | show | replay | purge`: dead letters (fulfilment/rabbitmq/dead_letters.py).

`list`, `show` and `purge` need BROKER_URL only; `replay` also DATABASE_URL (it resumes the
messages' purchases first).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Optional

import typer

from fulfilment.cli.common import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, app, broker, check_database, fail, require
from fulfilment.settings import BrokerSettings, DatabaseSettings, PolicySettings


class Actor(StrEnum):
    """The actors whose messages can die (workers/*.py): intake's and every step's
    (tests/unit/test_step_names.py keeps it so)."""

    SUBMIT_PURCHASE = "submit_purchase"
    QUOTE_PURCHASE = "quote_purchase"
    PLACE_ORDER = "place_order"
    RESOLVE_ORDER = "resolve_order"
    CHECK_TRANSFER = "check_transfer"
    FETCH_TICKETS = "fetch_tickets"
    REFRESH_TICKETS = "refresh_tickets"


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
    from fulfilment.dependencies import BrokerUnavailable, broker_unavailable

    try:
        return call()
    except BrokerUnavailable as error:
        fail(str(broker_unavailable(error, broker().broker_url)), code=EXIT_UNAVAILABLE)


def _letter_view(d: Any) -> dict[str, Any]:
    return {"queue": d.queue, "key": d.key, "message_id": d.message_id, "actor": d.actor, "purchase_id": d.purchase_id,
            "request_id": d.request_id, "error": d.error, "retries": d.retries, "age_seconds": d.age_seconds}


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Dead messages: queue, message id (an undecodable one's key, raw-...), actor, purchase, error, retries, age."""
    from fulfilment.rabbitmq.dead_letters import list_dead_letters, raw_preview

    broker_url = broker().broker_url
    letters = _broker_call(lambda: list_dead_letters(broker_url))
    if as_json:
        typer.echo(json.dumps([_letter_view(d) for d in letters], indent=2))
        return
    for d in letters:
        subject = d.purchase_id or (f"request {d.request_id}" if d.request_id else "")
        what = f"{d.actor or '?'} {subject}" if d.body is not None else f"undecodable: {raw_preview(d)}"
        typer.echo(f"{d.queue:<20} {d.key:<36} {what}  retries={d.retries} "
                   f"age={_age(d.age_seconds)}  {d.error or ''}")
    typer.echo(f"{len(letters)} dead message(s)")


@dlq.command("show")
def dlq_show(
    message_id: Annotated[str, typer.Argument(help="A message id, or an undecodable message's key (raw-...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One dead message in full (its body, with the traceback of its last failure, or its raw bytes); exit 1 if gone."""
    from fulfilment.rabbitmq.dead_letters import find, raw_preview

    broker_url = broker().broker_url
    letter = _broker_call(lambda: find(broker_url, message_id))
    if letter is None:
        fail(f"no dead message {message_id} (dead messages expire after 7 days)", code=EXIT_NOT_FOUND)
    if as_json:
        raw = None if letter.body is not None else raw_preview(letter, 500)
        typer.echo(json.dumps({**_letter_view(letter), "body": letter.body, "raw_preview": raw}, indent=2))
        return
    typer.echo(f"queue {letter.queue}  retries {letter.retries}  age {_age(letter.age_seconds)}")
    typer.echo(json.dumps(letter.body, indent=2) if letter.body is not None else raw_preview(letter, 500))


def _selection(message_id: str | None, actor: str | None, everything: bool) -> dict[str, Any]:
    if sum(bool(x) for x in (message_id, actor, everything)) != 1:
        fail("choose exactly one: a MESSAGE_ID (or --id ID), --actor NAME or --all")
    return {"message_id": message_id, "actor": actor, "all": everything}


@dlq.command("replay")
def dlq_replay(
    message_id: Annotated[Optional[str], typer.Argument(help="One dead message.")] = None,
    actor: Annotated[Optional[Actor], typer.Option(help="Every dead message of this actor.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead message.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed.")] = False,
    operator: Annotated[Optional[str], typer.Option(
        help="Your name, written to the resumed purchases' history (default: $USER).")] = None,
) -> None:
    """Send dead messages back to their queue (retries reset), resuming their stalled purchases.

    Each is published persistent with confirms before its dead copy is removed: an
    interrupted replay may duplicate a message, never lose one.  A purchase that moved
    on makes its replayed message a no-op.  Exit 1 if any message was skipped.
    """
    from fulfilment.operator import operator_name, replay_dead_letters
    from fulfilment.settings import get_policy_settings

    selection = _selection(message_id, actor, everything)
    require(BrokerSettings, *(() if dry_run else (DatabaseSettings, PolicySettings)))
    broker_url = broker().broker_url
    if not dry_run:
        check_database()  # unreachable: exit 3 now, rather than skip every message
    try:
        name: str | None = operator_name(operator)
    except ValueError:
        name = None  # no login name to record: the history names the message only

    report = _broker_call(lambda: replay_dead_letters(
        broker_url, settings=None if dry_run else get_policy_settings(), operator=name, dry_run=dry_run, **selection))
    verb = "would replay" if dry_run else "replayed"
    for letter in report.replayed:
        typer.echo(f"{verb} {letter.message_id} {letter.actor} {letter.purchase_id or letter.request_id or ''}")
    for letter, reason in report.skipped:
        typer.echo(f"skipped {letter.message_id or '(undecodable)'}: {reason}", err=True)
    typer.echo(f"{len(report.replayed)} {verb}, {len(report.skipped)} skipped")
    if report.skipped:
        raise typer.Exit(EXIT_NOT_FOUND)


@dlq.command("purge")
def dlq_purge(
    message_id: Annotated[Optional[str], typer.Argument(help="A message id or key (as --id).")] = None,
    ident: Annotated[Optional[str], typer.Option(
        "--id", help="One dead message: its id, or an undecodable one's key (raw-..., from `fulfil dlq list`).")] = None,
    actor: Annotated[Optional[Actor], typer.Option()] = None,
    everything: Annotated[bool, typer.Option("--all")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete dead messages for good (asks first).  Their purchases stay as they are in Postgres.

    Exit 1 if nothing matched.
    """
    from fulfilment.rabbitmq.dead_letters import purge

    if message_id and ident:
        fail("give the message either as an argument or with --id, not both")
    one = message_id or ident
    selection = _selection(one, actor, everything)
    what = one or (f"every dead {actor} message" if actor else "EVERY dead message")
    broker_url = broker().broker_url
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        fail("nothing purged", code=EXIT_NOT_FOUND)
    count = _broker_call(lambda: purge(broker_url, **selection))
    typer.echo(f"purged {count} dead message(s)")
    if one and not count:
        fail(f"no dead message {one} (replayed, purged, or expired after 7 days)", code=EXIT_NOT_FOUND)
