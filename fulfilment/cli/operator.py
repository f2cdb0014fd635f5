"""`fulfil cancel | resolve | rejected list | rejected show`: a person's decisions, and refused requests.

The work is done by fulfilment/operator/ (the web console calls the same functions);
these commands parse, call, and map the outcome to an exit code.  `cancel` and `rejected`
need DATABASE_URL only; `resolve` also the partner's variables (it fetches the order).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, NoReturn, Optional

import typer

from fulfilment.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PARTNER_LOGGERS,
    app,
    fail,
    quiet_logs,
    require,
)
from fulfilment.settings import DatabaseSettings, PartnerSettings, PolicySettings

PurchaseArgument = Annotated[str, typer.Argument(help="Purchase id, or the request_id it was submitted with.")]
OperatorOption = Annotated[
    Optional[str], typer.Option(help="Your name, written to the purchase's history (default: $USER).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _refuse(error: Exception) -> NoReturn:
    from fulfilment.operator import NothingToDo, OrderNotFound, PurchaseNotFound, Refused

    if isinstance(error, (PurchaseNotFound, NothingToDo, OrderNotFound)):
        fail(str(error), EXIT_NOT_FOUND)
    if isinstance(error, Refused):
        fail(str(error), EXIT_REFUSED)
    fail(str(error), EXIT_USAGE)  # ValueError: a bad argument


def _operator(given: str | None) -> str:
    from fulfilment.operator import operator_name

    try:
        return operator_name(given)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)


def _done(done: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"purchase_id": str(done.purchase_id), "from": done.from_state.value,
                               "to": done.to_state.value, "reason": done.reason}, indent=2))
    else:
        typer.echo(f"{done.purchase_id}: {done.from_state} -> {done.to_state}; {done.reason}")


@app.command()
def cancel(
    purchase: PurchaseArgument,
    reason: Annotated[str, typer.Option(help="Why you give up on it: kept in the history, sent in the event.")],
    operator: OperatorOption = None,
    no_order_confirmed: Annotated[bool, typer.Option(
        "--no-order-confirmed",
        help="needs_attention only: you checked with the partner that no order exists for this purchase.",
    )] = False,
    as_json: JsonOption = False,
) -> None:
    """Give up on a purchase: it fails with code CANCELLED_BY_OPERATOR and your reason.

    Only where no order can exist or be in flight: received, quoted, paused, or stalled from
    one of those; needs_attention only with --no-order-confirmed.  Refused (exit 4) while
    ordering, order_unknown or awaiting_transfer.  Exit 1: no such purchase, or finished.
    """
    from fulfilment import operator as actions

    require(DatabaseSettings)
    name = _operator(operator)
    try:
        done = actions.cancel(purchase, reason=reason, operator=name, no_order_confirmed=no_order_confirmed)
    except (actions.OperatorActionError, ValueError) as error:
        _refuse(error)
    _done(done, as_json)
    _release(done.purchase_id)


def _release(purchase_id: Any) -> None:
    """A cancelled purchase's partner holds (TM carts) are let go of now, not left to lapse."""
    from fulfilment.db import session_scope
    from fulfilment.partners.registry import build_ticketmaster
    from fulfilment.settings import SettingsError, get_settings
    from models import Purchase

    with session_scope() as session:
        cancelled = session.get(Purchase, purchase_id)
    data = (cancelled.partner_data or {}) if cancelled is not None else {}
    if cancelled is None or cancelled.partner != "ticketmaster" or not (data.get("cart") or data.get("abandoned")):
        return
    try:
        settings = get_settings()
        if not settings.tm_enabled:
            raise SettingsError("TM_ENABLED is not set")
    except (SettingsError, ValueError) as error:
        typer.echo(f"note: its Ticketmaster cart was not deleted here ({str(error).splitlines()[0]}); TM releases it "
                   "at its hold's end", err=True)
        return
    flow = build_ticketmaster(settings)
    try:
        with quiet_logs(*PARTNER_LOGGERS):
            flow.release(cancelled, settings)
    finally:
        getattr(flow, "close", lambda: None)()


@app.command()
def resolve(
    purchase: PurchaseArgument,
    order_id: Annotated[str, typer.Option("--order-id", help="The partner's order id you found.")],
    operator: OperatorOption = None,
    note: Annotated[Optional[str], typer.Option(help="Anything to keep with it (e.g. a ticket number).")] = None,
    order_token_file: Annotated[Optional[str], typer.Option(
        "--order-token-file", help="Ticketmaster: a file holding the order token support gave you ('-': standard "
        "input). Never on the command line: it would show in `ps` and the shell's history.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record an order a person found at the partner, for a purchase whose order outcome is unknown.

    For needs_attention, order_unknown, or stalled while ordering.  The order is fetched from
    the partner and recorded only if it was made from one of the purchase's quotes; the
    purchase then awaits its transfer.  Exit 1: no such purchase or order; 3: the partner
    could not be asked; 4: refused (another state, or not this purchase's order).
    """
    from fulfilment import operator as actions
    from fulfilment.dependencies import partner_unavailable
    from fulfilment.partners.registry import build_tbb
    from fulfilment.settings import get_partner_settings, get_policy_settings

    if order_token_file is not None:
        _resolve_with_token(purchase, order_id, order_token_file, operator, note, as_json)
        return
    require(DatabaseSettings, PartnerSettings, PolicySettings)
    name = _operator(operator)
    partner_settings = get_partner_settings()
    client = build_tbb(partner_settings)
    try:
        with quiet_logs(*PARTNER_LOGGERS):
            done = actions.resolve(purchase, order_id=order_id, operator=name, partner=client,
                                   settings=get_policy_settings(), note=note)
    except actions.PartnerUnreachable as error:
        fail(str(partner_unavailable(error.error, str(partner_settings.tbb_base_url))), EXIT_UNAVAILABLE)
    except (actions.OperatorActionError, ValueError) as error:
        _refuse(error)
    finally:
        client.close()
    _done(done, as_json)


def _resolve_with_token(purchase: str, order_id: str, token_file: str, operator: str | None, note: str | None,
                        as_json: bool) -> None:
    """A Ticketmaster order found through support: its number and token (from a file or stdin)."""
    import sys

    from pydantic import SecretStr

    from fulfilment import operator as actions
    from fulfilment.settings import get_partner_settings

    require(DatabaseSettings, PartnerSettings)
    key = get_partner_settings().ticket_key
    if key is None:
        fail("TICKET_KEY is not set: an order token cannot be kept (it is stored sealed)", EXIT_USAGE)
    try:
        raw = sys.stdin.read() if token_file == "-" else open(token_file, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read the order token from {token_file!r}: {type(error).__name__}", EXIT_USAGE)
    name = _operator(operator)
    try:
        done = actions.resolve_with_token(purchase, order_id=order_id, order_token=SecretStr(raw), operator=name,
                                          ticket_key=key, note=note)
    except (actions.OperatorActionError, ValueError) as error:
        _refuse(error)
    _done(done, as_json)


# ---- rejected requests ------------------------------------------------------------------------

rejected = typer.Typer(help="Requests intake refused: invalid, or a request_id reused with other content. "
                            "Each also published a request.rejected event to its sender.", no_args_is_help=True)
app.add_typer(rejected, name="rejected")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str | None) -> str:
    """The sender's text, with control characters shown escaped (no terminal escapes from a request)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text or "")


@rejected.command("list")
def rejected_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    request_id: Annotated[Optional[str], typer.Option(help="Only rejections of this request_id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rejected requests, newest first: id, when, code, request_id, reason."""
    from fulfilment.operator import rejected_requests, rejection_view

    require(DatabaseSettings)
    rows = rejected_requests(limit=limit, request_id=request_id)
    if as_json:
        typer.echo(json.dumps([rejection_view(r) for r in rows], indent=2))
        return
    for r in rows:
        view = rejection_view(r)
        reason = printable(r.reason)
        typer.echo(f"{r.id:>7}  {view['rejected_at']}  {r.reason_code:<19}  {printable(r.request_id) or '-'}  "
                   f"{reason[:160]}{'...' if len(reason) > 160 else ''}")
    typer.echo(f"{len(rows)} rejected request(s)")


@rejected.command("show")
def rejected_show(
    rejection_id: Annotated[int, typer.Argument(help="The id `rejected list` shows.")],
    as_json: JsonOption = False,
) -> None:
    """One rejected request in full, with the body as it was received (exit 1: no such id)."""
    from fulfilment.operator import rejected_request, rejection_view

    require(DatabaseSettings)
    found = rejected_request(rejection_id)
    if found is None:
        fail(f"no rejected request {rejection_id}", EXIT_NOT_FOUND)
    view = rejection_view(found, with_body=True)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(f"rejection   {found.id}  at {view['rejected_at']}")
    typer.echo(f"request_id  {printable(found.request_id) or '(none)'}")
    typer.echo(f"code        {found.reason_code}")
    typer.echo(f"reason      {printable(found.reason)}")
    typer.echo(f"message     {found.message_id or '-'}")
    typer.echo("body        " + printable(found.raw_body))
