"""`fulfil tickets list | refresh | new-key`: the tickets of purchases whose partner issues them.

`list` shows what is stored (never a token: they are encrypted at rest, `ticket_crypto`);
`refresh` asks the workers for fresh SafeTix tokens now (the same message another service sends
with `fulfilment.publish.request_ticket_refresh`; the tokens come back in a
`purchase.tickets_refreshed` event); `new-key` prints a TICKET_KEY.
"""

from __future__ import annotations

import json

import typer

from fulfilment.cli.common import EXIT_NOT_FOUND, app, broker, database, fail, find_purchase, iso
from fulfilment.cli.operator import JsonOption, PurchaseArgument

tickets = typer.Typer(help="Tickets of purchases whose partner issues them (Ticketmaster SafeTix).",
                      no_args_is_help=True)
app.add_typer(tickets, name="tickets")


@tickets.command("list")
def tickets_list(purchase: PurchaseArgument, as_json: JsonOption = False) -> None:
    """The purchase's tickets: seat, barcode, render type, refresh times (tokens are never shown)."""
    from sqlalchemy import select

    from fulfilment.db import session_scope
    from models import Ticket

    database()
    with session_scope() as session:
        found = find_purchase(session, purchase)
        if found is None:
            fail(f"no purchase {purchase!r}", EXIT_NOT_FOUND)
        rows = [{"position": t.position, "section": t.section, "row": t.row, "seat": t.seat, "barcode": t.barcode,
                 "render_type": t.render_type, "has_token": t.token_encrypted is not None, "voided": t.voided,
                 "event_start": iso(t.event_start), "refresh_due_at": iso(t.refresh_due_at),
                 "refreshed_at": iso(t.refreshed_at)}
                for t in session.scalars(select(Ticket).where(Ticket.purchase_id == found.id).order_by(Ticket.position))]
        purchase_id, state = found.id, found.state
    if as_json:
        typer.echo(json.dumps({"purchase_id": str(purchase_id), "state": state, "tickets": rows}, indent=2))
        return
    if not rows:
        typer.echo(f"{purchase_id} ({state}): no tickets stored")
        return
    for row in rows:
        typer.echo(f"{purchase_id} #{row['position']} {row['section']}/{row['row']}/{row['seat']} "
                   f"barcode {row['barcode']} {row['render_type']} token {'yes' if row['has_token'] else 'no'} "
                   f"refresh due {row['refresh_due_at']} refreshed {row['refreshed_at'] or 'not yet'}")


@tickets.command("refresh")
def tickets_refresh(purchase: PurchaseArgument) -> None:
    """Ask the workers to refresh the purchase's SafeTix tokens now (a `purchase.tickets_refreshed`
    event follows).  Exit 1 if the purchase does not exist or has no tickets issued."""
    from fulfilment.db import session_scope
    from fulfilment.rabbitmq.publisher import request_ticket_refresh
    from fulfilment.state_machine import State

    database()
    with session_scope() as session:
        found = find_purchase(session, purchase)
        if found is None:
            fail(f"no purchase {purchase!r}", EXIT_NOT_FOUND)
        if found.state != State.TICKETS_ISSUED:
            fail(f"purchase {found.id} is {found.state}: only issued tickets are refreshed", EXIT_NOT_FOUND)
        purchase_id = found.id
    message_id = request_ticket_refresh(purchase_id, broker_url=broker().broker_url)
    typer.echo(f"refresh of {purchase_id} requested (message {message_id})")


@tickets.command("new-key")
def tickets_new_key() -> None:
    """Print a new TICKET_KEY (Fernet).  Keep it secret; tokens stored under one key need that key."""
    from fulfilment.ticket_crypto import new_key

    typer.echo(new_key())
