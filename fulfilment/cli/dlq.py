"""`fulfil dlq list | show | replay | purge`: dead letters (fulfilment/dead_letters.py)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Optional

import typer

from fulfilment.cli.common import app, fail, load_settings

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
        fail(str(error), code=1)


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Dead messages: queue, message id, actor, purchase, error, retries, age."""
    from fulfilment.dead_letters import list_dead_letters, raw_preview

    letters = _broker_call(lambda: list_dead_letters(load_settings().broker_url))
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

    letter = _broker_call(lambda: find(load_settings().broker_url, message_id))
    if letter is None:
        fail(f"no dead message {message_id} (dead messages expire after 7 days)", code=1)
    typer.echo(f"queue {letter.queue}  retries {letter.retries}  age {_age(letter.age_seconds)}")
    typer.echo(json.dumps(letter.body, indent=2) if letter.body is not None else raw_preview(letter, 500))


def _selection(message_id: str | None, actor: str | None, everything: bool) -> dict[str, Any]:
    if sum(bool(x) for x in (message_id, actor, everything)) != 1:
        fail("choose exactly one: a MESSAGE_ID, --actor NAME or --all")
    return {"message_id": message_id, "actor": actor, "all": everything}


@dlq.command("replay")
def dlq_replay(
    message_id: Annotated[Optional[str], typer.Argument(help="One dead message.")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Every dead message of this actor.")] = None,
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

    settings = load_settings()

    def resume_purchase(letter: DeadLetter) -> None:
        if letter.purchase_id is None:
            return  # intake messages have no purchase yet
        try:
            resume(uuid.UUID(letter.purchase_id), settings=settings, checked_by_person=False,
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
    message_id: Annotated[Optional[str], typer.Argument()] = None,
    actor: Annotated[Optional[str], typer.Option()] = None,
    everything: Annotated[bool, typer.Option("--all")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete dead messages for good (asks first).  Their purchases stay as they are in Postgres."""
    from fulfilment.dead_letters import purge

    selection = _selection(message_id, actor, everything)
    what = message_id or (f"every dead {actor} message" if actor else "EVERY dead message")
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        fail("nothing purged", code=1)
    count = _broker_call(lambda: purge(load_settings().broker_url, **selection))
    typer.echo(f"purged {count} dead message(s)")
