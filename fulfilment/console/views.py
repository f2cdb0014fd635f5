"""The console's pages and actions.

Reads go through fulfilment/console/queries.py; every action calls the same service function as
the CLI (fulfilment/operator/: retry, cancel, resolve, replay_dead_letters;
fulfilment/rabbitmq/dead_letters.py: purge) with the logged-in user's name as the operator, which the
service functions write to the purchase's history (and so to its event).  Blocking work runs in
Starlette's thread pool.  An action answers with a redirect and a one-time message (POST, then
redirect, then GET), so a reload never repeats it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from fulfilment.console import queries
from fulfilment.console.auth import Authenticator, User, new_csrf_token
from fulfilment.console.config import ConsoleConfig
from fulfilment.console.csrf import FIELD, FORM_KEY
from fulfilment.dependencies import database_unavailable, location
from fulfilment.state_machine import HELD_FOR_OPERATOR, State

log = logging.getLogger("fulfilment.console")

T = TypeVar("T")
MAX_FLASH_CHARS = 1200
MAX_SEARCH_CHARS = 200
RAW_LIMIT = 2000  # bytes of an undecodable dead letter shown
VIA = "web console"


class Unavailable(Exception):
    """The database could not be used: the page says so in one line (503)."""


class BadInput(Exception):
    """The database refused a value from the request (the guards should have caught it first): 400."""


# ---- plumbing --------------------------------------------------------------------------------------


def _config(request: Request) -> ConsoleConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def _user(request: Request) -> User:
    user = request.scope.get("user")
    assert user is not None, "AuthMiddleware lets no anonymous request reach a page"
    return user  # type: ignore[no-any-return]


def _form(request: Request) -> dict[str, str]:
    return request.scope.get(FORM_KEY, {})  # type: ignore[no-any-return]


async def _db(request: Request, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work in the thread pool; a database outage becomes Unavailable (a 503 page)."""
    try:
        return await run_in_threadpool(call, *args, **kwargs)
    except Exception as error:
        outage = database_unavailable(error, _config(request).database_url)
        if outage is None:
            from sqlalchemy import exc

            if isinstance(error, exc.ProgrammingError) and type(error.orig).__name__ == "UndefinedTable":
                raise Unavailable(f"database at {location(_config(request).database_url)} has no fulfilment "
                                  "schema: run `fulfil migrate`") from None
            if isinstance(error, exc.DataError) or (isinstance(error, ValueError) and "NUL" in str(error)):
                raise BadInput("a value in the request cannot be looked up (a NUL byte or a number out of range)") \
                    from None
            raise
        raise Unavailable(str(outage)) from None


def flash(request: Request, level: str, message: str) -> None:
    text = message if len(message) <= MAX_FLASH_CHARS else message[:MAX_FLASH_CHARS] + "…"
    request.session["flash"] = [*request.session.get("flash", []), [level, text]]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    user = request.scope.get("user")
    csrf = request.session.get("csrf")
    if not csrf:
        csrf = request.session["csrf"] = new_csrf_token()
    messages = request.session.pop("flash", []) if user is not None else []
    config = _config(request)
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request, template,
        {"user": user, "csrf_field": FIELD, "csrf_token": csrf, "messages": messages,
         "database_at": location(config.database_url), "broker_at": location(config.broker_url),
         "states": list(State), **context},
        status_code=status_code,
    )


def back_to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never `//host` or a full URL."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


async def unavailable(request: Request, error: Exception) -> Response:
    log.warning("console: %s", error)
    return render(request, "error.html", status_code=503, title="Unavailable", message=str(error))


async def bad_input(request: Request, error: Exception) -> Response:
    log.warning("console: bad input on %s: %s", request.url.path, error)
    return render(request, "error.html", status_code=400, title="Bad request", message=str(error))


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 (an unknown address, a wrong method), in the console's style."""
    from starlette.exceptions import HTTPException

    status = error.status_code if isinstance(error, HTTPException) else 500
    if status == 404:
        title, message = "Not found", "There is no such page in the console."
    elif status == 405:
        title, message = "Not allowed", f"{request.method} is not allowed here."
    else:
        title, message = f"Error {status}", "The request could not be served."
    if request.scope.get("user") is None or "session" not in request.scope:
        from fulfilment.console.csrf import refusal

        return refusal(status, message)
    return render(request, "error.html", status_code=status, title=title, message=message)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


# ---- login -----------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if request.scope.get("user") is not None:
        return back_to(_safe_next(request.query_params.get("next")))
    return render(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None)


def client_address(request: Request) -> str:
    """The peer's address as the server saw it (proxy headers are not trusted: `fulfil console` sets none)."""
    return request.client.host if request.client else "-"


async def login(request: Request) -> Response:
    from fulfilment.console.auth import Busy

    form = _form(request)
    authenticator: Authenticator = request.app.state.authenticator
    name, password = form.get("username", "").strip(), form.get("password", "")
    target = _safe_next(form.get("next"))
    address = client_address(request)
    wait = authenticator.throttle.wait_seconds(name, address)
    if wait:
        log.warning("console: login of %r from %s refused: too many failed attempts", name[:64], address)
        return render(request, "login.html", status_code=429, next=target,
                      error=f"Too many failed logins from your address: try again in {wait:.0f} s.")
    user = None
    if name and password:
        try:
            user = await authenticator.gate.run(address, lambda: authenticator.authenticate(name, password))
        except Busy as error:
            log.warning("console: login of %r from %s not checked: %s", name[:64], address, error)
            return render(request, "login.html", status_code=503, next=target, error=f"Not checked: {error}.")
    if user is None:
        authenticator.throttle.failed(name, address)
        log.warning("console: failed login for %r from %s", name[:64], address)
        return render(request, "login.html", status_code=401, next=target, error="Wrong user name or password.")
    authenticator.throttle.succeeded(name, address)
    authenticator.start_session(request.session, user)
    log.info("console: %s logged in (%s) from %s", user.name, user.role, address)
    return back_to(target)


async def logout(request: Request) -> Response:
    authenticator: Authenticator = request.app.state.authenticator
    user = request.scope.get("user")
    authenticator.end_session(request.session)
    if user is not None:
        log.info("console: %s logged out", user.name)
    return back_to("/login")


# ---- pages -----------------------------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    config = _config(request)
    board = await _db(request, queries.dashboard)
    broker = await run_in_threadpool(queries.broker_status, config.broker_url)
    return render(request, "dashboard.html", board=board, broker=broker,
                  finished_hours=queries.FINISHED_WINDOW_HOURS, lease=config.policy.scheduler_leader_lease_seconds)


async def rates(request: Request) -> Response:
    """Rates from Postgres and the broker, drawn as SVG: purchases per minute by state, partner trouble,
    queue depths, the oldest purchase waiting in each state."""
    from fulfilment.console import charts

    raw = request.query_params.get("minutes", "60")
    if not raw.isdigit() or len(raw) > 4 or not 5 <= int(raw) <= 1440:
        raise BadInput("minutes: a window of 5 to 1440 minutes")
    config = _config(request)
    data = await _db(request, queries.rates, int(raw))
    broker = await run_in_threadpool(queries.broker_status, config.broker_url)
    return render(request, "rates.html", r=data, broker=broker, charts=charts, window=int(raw),
                  labels=[m.strftime("%H:%M UTC") for m in data.minutes], trouble=queries.TROUBLE_STATES,
                  oldest_minutes=[(o.state, round(o.age_seconds / 60, 1)) for o in data.oldest])


async def search(request: Request) -> Response:
    """Exactly a purchase id, request id or order id: its page.  Else a prefix of a request, purchase, order or
    event id: the one match's page, or the list of matches."""
    query = request.query_params.get("q", "").strip()
    if not query:
        return back_to("/")
    if len(query) > MAX_SEARCH_CHARS:
        raise BadInput(f"a search is at most {MAX_SEARCH_CHARS} characters")
    found = await _db(request, queries.search, query)
    if found is not None:
        return back_to(f"/purchases/{found}")
    matches = await _db(request, queries.search_prefix, query)
    if len(matches) == 1:
        return back_to(f"/purchases/{matches[0].id}")
    if matches:
        return render(request, "search.html", query=query, rows=matches, limit=queries.SEARCH_LIMIT)
    rejections = await _db(request, queries.rejections_for, query)
    return render(request, "not_found.html", status_code=404, query=query, rejections=rejections)


def _list_filter(request: Request, default_state: State | None = State.STALLED) -> queries.ListFilter:
    try:
        return queries.parse_filter(request.query_params, default_state=default_state)
    except queries.BadFilter as error:
        raise BadInput(str(error)) from None


async def purchase_list(request: Request) -> Response:
    selected = _list_filter(request)
    raw_after = request.query_params.get("after")
    try:
        after = queries.Cursor.parse(raw_after) if raw_after else None
    except queries.BadFilter as error:
        raise BadInput(str(error)) from None
    page = await _db(request, queries.purchase_page, selected, after)
    return render(request, "purchases.html", f=selected, page=page, rows=page.rows, first=after is None,
                  query=selected.query(), bulk_retry=selected.state in RETRYABLE, partners=PARTNERS)


# ---- bulk actions -------------------------------------------------------------------------------

BULK_LIMIT = 200
RETRYABLE = frozenset({*HELD_FOR_OPERATOR, State.PAUSED})
PARTNERS = ("tbb", "ticketmaster")  # the filter's choices (any other name may be typed in the URL)


async def bulk_retry_confirm(request: Request) -> Response:
    """The confirmation page of a bulk retry: the filter, how many, and which (at most BULK_LIMIT)."""
    selected = _list_filter(request, default_state=None)
    if selected.state not in RETRYABLE:
        raise BadInput("a bulk retry needs a state filter of stalled, needs_attention or paused")
    ids = await _db(request, queries.matching_ids, selected, limit=BULK_LIMIT + 1)
    return render(request, "bulk.html", action="retry", f=selected, items=[str(i) for i in ids[:BULK_LIMIT]],
                  more=len(ids) > BULK_LIMIT, limit=BULK_LIMIT, back="/purchases?" + urlencode(selected.query()),
                  post="/purchases/bulk/retry")


def _bulk_items(request: Request) -> list[str]:
    items = [item for item in _form(request).get("items", "").split() if item]
    if not items:
        raise BadInput("nothing selected")
    if len(items) > BULK_LIMIT or len(set(items)) != len(items):
        raise BadInput(f"at most {BULK_LIMIT} distinct items at once")
    return items


async def bulk_retry(request: Request) -> Response:
    """Retry exactly the purchases the confirmation page showed; the result of each, in the operator's name."""
    from fulfilment import operator as actions

    config, user, items = _config(request), _user(request), _bulk_items(request)
    for item in items:
        try:
            uuid.UUID(item)
        except ValueError:
            raise BadInput(f"{item[:40]!r} is not a purchase id") from None
    via = f"{VIA}, bulk retry of {len(items)}"
    results = []
    for item in items:
        try:
            retried = await _db(request, actions.retry, item, operator=user.name, settings=config.policy,
                                broker_url=config.broker_url, via=via)
        except actions.OperatorActionError as error:
            results.append((item, "error", f"not retried: {error}"))
            continue
        resumed = retried.resumed
        what = f"{resumed.from_state} → {resumed.to_state}" if resumed.changed else f"already {resumed.to_state}"
        sent = f"sent {resumed.step}" if retried.send_error is None else "the scheduler sends its step"
        results.append((item, "ok", f"retried: {what}; {sent}"))
    done = sum(1 for _, level, _ in results if level == "ok")
    log.info("console: %s bulk-retried %d purchase(s): %d retried, %d refused", user.name, len(items), done,
             len(items) - done)
    return render(request, "bulk_done.html", action="retry", results=results, done=done, link="/purchases/")


async def bulk_replay_confirm(request: Request) -> Response:
    """The confirmation page of a bulk replay: the dead letters of the filter (actor, purchase) that can be replayed."""
    from fulfilment.rabbitmq.dead_letters import list_dead_letters

    config = _config(request)
    letters = await _broker(request, list_dead_letters, config.broker_url)
    chosen = [d for d in _letter_filter(request, letters) if d.body is not None]
    return render(request, "bulk.html", action="replay", f=None, items=[d.key for d in chosen[:BULK_LIMIT]],
                  more=len(chosen) > BULK_LIMIT, limit=BULK_LIMIT, back="/dead-letters?" + urlencode(
                      {k: v for k, v in request.query_params.items() if k in ("actor", "purchase")}),
                  post="/dead-letters/bulk/replay")


async def bulk_replay(request: Request) -> Response:
    """Replay exactly the dead letters the confirmation page showed, each resuming its purchase in the operator's name."""
    from fulfilment.operator import replay_dead_letters

    config, user, items = _config(request), _user(request), _bulk_items(request)
    via = f"{VIA}, bulk replay of {len(items)}"
    results = []
    for item in items:
        try:
            report = await _db(request, replay_dead_letters, config.broker_url, settings=config.policy,
                               operator=user.name, via=via, message_id=item)
        except Unavailable:
            raise
        except Exception as error:  # noqa: BLE001  RabbitMQ out of reach: one line per item
            results.append((item, "error", f"not replayed: {_broker_problem(error, config.broker_url)}"))
            continue
        if report.replayed:
            letter = report.replayed[0]
            results.append((item, "ok", f"replayed ({letter.actor}) to {letter.queue}"
                                        + (f"; purchase {letter.purchase_id} resumed" if letter.purchase_id else "")))
        elif report.skipped:
            results.append((item, "error", f"not replayed: {report.skipped[0][1]}"))
        else:
            results.append((item, "error", "not replayed: no longer there (replayed, purged or expired)"))
    done = sum(1 for _, level, _ in results if level == "ok")
    log.info("console: %s bulk-replayed %d dead message(s): %d replayed", user.name, len(items), done)
    return render(request, "bulk_done.html", action="replay", results=results, done=done, link="/dead-letters/")


async def purchase_page(request: Request) -> Response:
    ident = request.path_params["ident"]
    try:
        purchase_id = uuid.UUID(ident)
    except ValueError:
        found = await _db(request, queries.search, ident)
        if found is None:
            return render(request, "not_found.html", status_code=404, query=ident, rejections=[])
        return back_to(f"/purchases/{found}")
    detail = await _db(request, queries.purchase_detail, purchase_id)
    if detail is None:
        return render(request, "not_found.html", status_code=404, query=ident, rejections=[])
    return render(request, "purchase.html", d=detail, p=detail.purchase, payload=queries.event_payload,
                  partner_configured=_config(request).partner is not None,
                  ticket_key_configured=_ticket_key(request) is not None)


# ---- purchase actions ------------------------------------------------------------------------------


def _as_console(user: User) -> str:
    """The operator as the history names a console action: "alice (web console)" (retry and replay pass
    `via` to say the same)."""
    return f"{user.name} ({VIA})"


def _purchase_ident(request: Request) -> str:
    return str(request.path_params["ident"])


async def retry(request: Request) -> Response:
    from fulfilment import operator as actions

    config, user, ident = _config(request), _user(request), _purchase_ident(request)
    try:
        retried = await _db(request, actions.retry, ident, operator=user.name, settings=config.policy,
                            broker_url=config.broker_url, via=VIA)
    except actions.OperatorActionError as error:
        flash(request, "error", f"Not retried: {error}")
        log.info("console: retry of %s by %s refused: %s", ident, user.name, error)
        return back_to(f"/purchases/{ident}")
    resumed = retried.resumed
    what = f"{resumed.from_state} → {resumed.to_state}" if resumed.changed else f"already {resumed.to_state}"
    if retried.send_error is not None:
        flash(request, "warning", f"Retried ({what}), but {resumed.step} could not be sent: {retried.send_error}. "
                                  "The scheduler sends it once the broker is back.")
    else:
        flash(request, "ok", f"Retried: {what}; sent {resumed.step}.")
    log.info("console: %s retried purchase %s (%s)", user.name, resumed.purchase_id, what)
    return back_to(f"/purchases/{resumed.purchase_id}")


async def cancel(request: Request) -> Response:
    from fulfilment import operator as actions

    user, ident, form = _user(request), _purchase_ident(request), _form(request)
    try:
        done = await _db(request, actions.cancel, ident, reason=form.get("reason", ""), operator=_as_console(user),
                         no_order_confirmed=form.get("no_order_confirmed") == "yes")
    except (actions.OperatorActionError, ValueError) as error:
        flash(request, "error", f"Not given up: {error}")
        log.info("console: cancel of %s by %s refused: %s", ident, user.name, error)
        return back_to(f"/purchases/{ident}")
    flash(request, "ok", f"Given up: {done.from_state} → {done.to_state}; {done.reason}")
    log.info("console: %s gave up purchase %s", user.name, done.purchase_id)
    return back_to(f"/purchases/{done.purchase_id}")


def _ticket_key(request: Request) -> Any:
    partner = _config(request).partner
    return partner.ticket_key if partner is not None else None


async def resolve(request: Request) -> Response:
    """Record an order found at the partner: TBB's fetched first (needs its settings); a Ticketmaster
    order with the token support gave (sealed with TICKET_KEY, never shown again)."""
    from pydantic import SecretStr

    from fulfilment import operator as actions
    from fulfilment.partners.registry import build_tbb

    config, user, ident, form = _config(request), _user(request), _purchase_ident(request), _form(request)
    partner, key = config.partner, _ticket_key(request)
    call: Callable[[], actions.Done]
    if form.get("order_token") is not None:
        if key is None:
            flash(request, "error", "Not recorded: the console has no TICKET_KEY, which seals the token before it "
                                    "is stored. Use `fulfil resolve --order-token-file` where it is set.")
            return back_to(f"/purchases/{ident}")

        def call() -> actions.Done:
            return actions.resolve_with_token(ident, order_id=form.get("order_id", ""),
                                              order_token=SecretStr(form.get("order_token", "")),
                                              operator=_as_console(user), ticket_key=key,
                                              note=form.get("note") or None, via=None)
    elif partner is None:
        flash(request, "error", "Not recorded: the console has no partner settings (TBB_BASE_URL, TBB_CLIENT_ID, "
                                "TBB_CLIENT_SECRET), which it needs to fetch the order first.")
        return back_to(f"/purchases/{ident}")
    else:
        def call() -> actions.Done:
            client = build_tbb(partner)
            try:
                return actions.resolve(ident, order_id=form.get("order_id", ""), operator=_as_console(user),
                                       partner=client, settings=config.policy, note=form.get("note") or None)
            finally:
                client.close()

    try:
        done = await _db(request, call)
    except actions.PartnerUnreachable as error:
        from fulfilment.dependencies import partner_unavailable

        assert partner is not None  # only the TBB fetch raises it
        flash(request, "error", f"Not recorded: {partner_unavailable(error.error, str(partner.tbb_base_url))}")
        return back_to(f"/purchases/{ident}")
    except (actions.OperatorActionError, ValueError) as error:
        flash(request, "error", f"Not recorded: {error}")
        log.info("console: resolve of %s by %s refused: %s", ident, user.name, error)
        return back_to(f"/purchases/{ident}")
    flash(request, "ok", f"Recorded: {done.from_state} → {done.to_state}; {done.reason}")
    log.info("console: %s recorded an order for purchase %s", user.name, done.purchase_id)
    return back_to(f"/purchases/{done.purchase_id}")


# ---- dead letters ----------------------------------------------------------------------------------


def _broker_problem(error: Exception, broker_url: str) -> str:
    from fulfilment.dependencies import broker_unavailable, reason

    known = broker_unavailable(error, broker_url)
    return str(known) if known else f"RabbitMQ at {location(broker_url)}: {reason(error)}"


async def _broker(request: Request, call: Callable[..., T], *args: Any) -> T:
    """Blocking RabbitMQ work in the thread pool; RabbitMQ out of reach is a 503 page in one line."""
    try:
        return await run_in_threadpool(call, *args)
    except Exception as error:  # noqa: BLE001  shown as one line
        raise Unavailable(_broker_problem(error, _config(request).broker_url)) from None


def _letter_filter(request: Request, letters: Sequence[Any]) -> list[Any]:
    """The dead letters of the page's filter: ?purchase= (its id) and ?actor= (its name)."""
    purchase, actor = request.query_params.get("purchase"), request.query_params.get("actor")
    return [d for d in letters if (not purchase or d.purchase_id == purchase) and (not actor or d.actor == actor)]


async def dead_letter_list(request: Request) -> Response:
    from fulfilment.rabbitmq.dead_letters import list_dead_letters

    config = _config(request)
    purchase, actor = request.query_params.get("purchase") or None, request.query_params.get("actor") or None
    try:
        letters = await run_in_threadpool(list_dead_letters, config.broker_url)
    except Exception as error:  # noqa: BLE001  shown as one line
        return render(request, "dead_letters.html", letters=[], error=_broker_problem(error, config.broker_url),
                      purchase=purchase, actor=actor, actors=[], query="")
    actors = sorted({d.actor for d in letters if d.actor})
    chosen = _letter_filter(request, letters)
    query = urlencode({k: v for k, v in (("purchase", purchase), ("actor", actor)) if v})
    return render(request, "dead_letters.html", letters=chosen, error=None, purchase=purchase, actor=actor,
                  actors=actors, query=query)


async def dead_letter_page(request: Request) -> Response:
    from fulfilment.rabbitmq.dead_letters import decode_problem, find, raw_preview

    config, message_id = _config(request), request.path_params["message_id"]
    try:
        letter = await run_in_threadpool(find, config.broker_url, message_id)
    except Exception as error:  # noqa: BLE001  shown as one line
        return render(request, "error.html", status_code=503, title="RabbitMQ unavailable",
                      message=_broker_problem(error, config.broker_url))
    if letter is None:
        return render(request, "error.html", status_code=404, title="No such dead message",
                      message=f"No dead message {message_id}: it was replayed or purged, or it expired "
                              "(dead messages are kept 7 days).")
    traceback = (letter.body or {}).get("options", {}).get("traceback")
    return render(request, "dead_letter.html", letter=letter, traceback=traceback, raw_limit=RAW_LIMIT,
                  raw=None if letter.body is not None else raw_preview(letter, RAW_LIMIT),
                  problem=None if letter.body is not None else decode_problem(letter.raw))


async def replay(request: Request) -> Response:
    from fulfilment.operator import replay_dead_letters

    config, user, message_id = _config(request), _user(request), request.path_params["message_id"]
    try:
        report = await _db(request, replay_dead_letters, config.broker_url, settings=config.policy,
                           operator=user.name, via=VIA, message_id=message_id)
    except Unavailable:
        raise
    except Exception as error:  # noqa: BLE001  RabbitMQ out of reach: one line
        flash(request, "error", f"Not replayed: {_broker_problem(error, config.broker_url)}")
        return back_to(f"/dead-letters/{message_id}")
    for letter in report.replayed:
        flash(request, "ok", f"Replayed {letter.message_id} ({letter.actor}) to {letter.queue}"
                             + (f"; purchase {letter.purchase_id} resumed" if letter.purchase_id else "") + ".")
    for letter, why in report.skipped:
        flash(request, "error", f"Not replayed {letter.key}: {why}")
    if not report.replayed and not report.skipped:
        flash(request, "error", f"No dead message {message_id} (replayed, purged or expired).")
    log.info("console: %s replayed dead message %s: %d replayed, %d skipped", user.name, message_id,
             len(report.replayed), len(report.skipped))
    return back_to("/dead-letters")


async def purge(request: Request) -> Response:
    from fulfilment.rabbitmq.dead_letters import purge as purge_letters

    config, user, message_id = _config(request), _user(request), request.path_params["message_id"]
    if _form(request).get("confirm") != "yes":
        flash(request, "error", "Not purged: tick the box to confirm that the message is to be deleted for good.")
        return back_to(f"/dead-letters/{message_id}")
    try:
        removed = await run_in_threadpool(purge_letters, config.broker_url, message_id=message_id)
    except Exception as error:  # noqa: BLE001  one line
        flash(request, "error", f"Not purged: {_broker_problem(error, config.broker_url)}")
        return back_to(f"/dead-letters/{message_id}")
    if removed:
        flash(request, "ok", f"Purged dead message {message_id} ({removed} cop{'y' if removed == 1 else 'ies'}).")
    else:
        flash(request, "error", f"No dead message {message_id} (replayed, purged or expired).")
    log.info("console: %s purged dead message %s (%d removed)", user.name, message_id, removed)
    return back_to("/dead-letters")


# ---- rejected requests ----------------------------------------------------------------------------


async def rejected_list(request: Request) -> Response:
    request_id = request.query_params.get("request_id") or None
    raw_before = request.query_params.get("before")
    if raw_before is not None and not (raw_before.isdigit() and len(raw_before) <= 18):
        raise BadInput("before: not a page position from this console (follow the Next link)")
    before = int(raw_before) if raw_before else None
    rows, next_before = await _db(request, queries.rejected_page, request_id=request_id, before=before)
    query = urlencode({"request_id": request_id} if request_id else {})
    return render(request, "rejected.html", rows=rows, request_id=request_id, next_before=next_before, query=query,
                  first=before is None)


async def rejected_page(request: Request) -> Response:
    from fulfilment.operator import rejected_request

    rejection_id = request.path_params["rejection_id"]
    found = await _db(request, rejected_request, rejection_id) if 0 < rejection_id < 2**63 else None
    if found is None:
        return render(request, "error.html", status_code=404, title="No such rejected request",
                      message=f"No rejected request {rejection_id}.")
    return render(request, "rejection.html", r=found)
