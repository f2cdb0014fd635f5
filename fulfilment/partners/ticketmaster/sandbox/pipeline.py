"""The path every partner call takes, in this order (ASSUMED where no source says):

1. count the request (per endpoint);
2. apikey (``apikey`` query parameter, else ``x-api-key`` header) -> 401 envelope;
3. quota -> 429 with the ``Ratelimit-*`` headers (those headers go on every later answer too);
4. cart calls (payment, commit, delete): enter the cart's in-flight set; an overlap is counted and,
   with the "reject" policy, answered 409 20099;
5. injected latency and stalls (asyncio.sleep), then an injected 5xx (nothing done); a poll's faults
   are those of ``poll_<operation polled>`` when set, else ``poll`` (``faults``); then an injected
   403/404 (``status_*``, nothing done), then an injected 503 20001 at any hour (``unavailable_*``);
6. niterun for event-scoped calls -> 503 20001;
7. polling decision (``X-TM-FORCE-POLLING: true`` or the seeded rate) for "Polling: Yes" calls;
8. the handler (``TMError`` -> envelope); with polling its outcome is kept and 202 is answered;
   commit only: a late-commit fault (``faults``, ``late``) makes it answer an injected 5xx instead
   (``InjectedAnswer``, even when polled), the commit made already or pending;
9. a 2xx answer may wait ``answer_after_ms`` (fault ``answer_after_*``: the work is done, the answer
   arrives late; the call leaves its cart's in-flight set first), counted in ``late_answers``;
10. commit only: commit-then-drop (the answer's head is sent, then the connection is aborted).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fulfilment.partners.sandbox_kit.faults import DropConnectionResponse
from fulfilment.partners.sandbox_kit.trickle import trickled

from . import assumed
from .counts import key_hint
from .errors import TMError, envelope
from .faults import InjectedAnswer, gateway_response, injected_outcome
from .polling import polling_body
from .responses import Outcome, render
from .state import SandboxState

Endpoint = Callable[[Request], Awaitable[Response]]
CartIdOf = Callable[[Request], Awaitable[str | None]]
FaultNameOf = Callable[[Request, SandboxState], str]


@dataclass(frozen=True)
class Call:
    request: Request
    sandbox: SandboxState
    apikey: str


Handler = Callable[[Call], Awaitable[Outcome]]


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    polling: bool = False       # "Polling: Yes"
    event_scoped: bool = False  # refused during niterun
    cart_id_of: CartIdOf | None = None  # a cart call: where its cart id is
    fault_name_of: FaultNameOf | None = None  # the name its fault rule is looked up by (default: name)


def sandbox_of(request: Request) -> SandboxState:
    sandbox: SandboxState = request.app.state.sandbox
    return sandbox


def apikey_of(request: Request) -> str | None:
    return request.query_params.get(assumed.APIKEY_QUERY_PARAM) or request.headers.get(assumed.APIKEY_HEADER) or None


def _known(apikey: str, keys: list[str]) -> bool:
    given = apikey.encode("utf-8")
    return any(secrets.compare_digest(given, key.encode("utf-8")) for key in keys)


async def body_field(request: Request, name: str) -> str | None:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def respond(sandbox: SandboxState, outcome: Outcome, extra_headers: dict[str, str] | None = None) -> Response:
    outcome = Outcome(outcome.status, outcome.body, {**outcome.headers, **(extra_headers or {})})
    return render(outcome, sandbox.settings.money_format)


async def run_handler(handler: Handler, call: Call) -> Outcome:
    try:
        return await handler(call)
    except TMError as error:
        return Outcome(error.spec.http_status, error.body())


def injected_response(sandbox: SandboxState, status: int, gateway_body: bool, headers: dict[str, str]) -> Response:
    if gateway_body:
        return gateway_response(status)
    return respond(sandbox, injected_outcome(status), headers)


def partner_endpoint(spec: EndpointSpec, handler: Handler) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        sandbox = sandbox_of(request)
        counters = sandbox.counters
        counters.bump("requests", spec.name)
        settings = sandbox.settings
        apikey = apikey_of(request)
        if apikey is None or not _known(apikey, settings.apikeys):
            counters.bump("unauthorized")
            return respond(sandbox, Outcome(401, envelope(assumed.APIKEY_INVALID)))
        quota = sandbox.quota.consume(apikey, sandbox.clock(), settings.quota_per_hour)
        if quota.limited:
            counters.bump("rate_limited")
            counters.bump("rate_limited_per_apikey", key_hint(apikey))
            return JSONResponse(assumed.QUOTA_FAULT_BODY, status_code=429, headers=quota.headers())
        headers = quota.headers()
        cart_id = await spec.cart_id_of(request) if spec.cart_id_of is not None else None
        entered = False
        if cart_id is not None:
            overlapped, entered = sandbox.cart_calls.enter(cart_id, admit_overlap=settings.concurrency_policy == "count")
            if overlapped:
                counters.bump("concurrent_calls")
                counters.bump("concurrent_calls_per_cart", cart_id)
            if not entered:
                return respond(sandbox, Outcome(409, envelope(assumed.CONCURRENT_CART_CALL)), headers)
        try:
            fault_name = spec.fault_name_of(request, sandbox) if spec.fault_name_of is not None else spec.name
            delay = sandbox.faults.latency(fault_name) + sandbox.faults.stall(fault_name)
            if delay > 0:
                await asyncio.sleep(delay)
            plan = sandbox.faults.plan(fault_name)
            if plan.status is not None:
                return injected_response(sandbox, plan.status, plan.gateway_body, headers)
            refused = sandbox.faults.refusal(fault_name)
            if refused is not None:
                return respond(sandbox, Outcome(refused, envelope(assumed.STATUS_FAULTS[refused])), headers)
            if sandbox.faults.unavailable(fault_name, sandbox.clock()):
                counters.bump("unavailable_refusals")
                return respond(sandbox, Outcome(503, envelope(assumed.NITERUN)), headers)
            if spec.event_scoped:
                event = sandbox.catalogue.event(request.path_params["event_id"])
                if event is not None and sandbox.niterun.active(event, sandbox.clock()):
                    counters.bump("niterun_refusals")
                    return respond(sandbox, Outcome(503, envelope(assumed.NITERUN)), headers)
            forced = request.headers.get("x-tm-force-polling", "").strip().lower() == "true"
            polled = spec.polling and sandbox.polling.should_poll(forced, settings.polling_rate)
            try:
                outcome = await run_handler(handler, Call(request, sandbox, apikey))
            except InjectedAnswer as injected:  # a late commit: made already or pending, no polling job
                return injected_response(sandbox, injected.status, injected.gateway_body, headers)
            committed = spec.name == "commit" and outcome.status == 200
            if polled:
                job_cart = outcome.body.get("cart_id") if spec.name == "reserve" and isinstance(outcome.body, dict) else None
                job = sandbox.polling.start(apikey, spec.name, outcome, sandbox.clock(), settings.polling_wait_seconds,
                                            settings.polling_repeats, cart_id=job_cart)
                counters.bump("polling_answers")
                outcome = Outcome(202, polling_body(str(request.base_url), job.poll_id, settings.polling_wait_seconds))
            response = respond(sandbox, outcome, headers)
            answer_delay = sandbox.faults.answer_after(fault_name) if outcome.status < 300 else 0.0
            if answer_delay > 0:
                counters.bump("late_answers", spec.name)
                if entered and cart_id is not None:
                    entered = False
                    sandbox.cart_calls.leave(cart_id)
                await asyncio.sleep(answer_delay)
            if committed and sandbox.faults.should_drop("commit"):
                counters.bump("dropped_after_commit")
                return DropConnectionResponse(response, "the commit took effect")
            return trickled(response, sandbox.faults.trickle(spec.name))
        finally:
            if entered and cart_id is not None:
                sandbox.cart_calls.leave(cart_id)

    endpoint.__name__ = spec.name
    return endpoint
