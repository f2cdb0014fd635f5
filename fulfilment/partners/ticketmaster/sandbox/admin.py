"""Admin API (``/admin/...``): inspect and steer the sandbox from tests and the demo.

No apikey, loopback peers only; plain JSON (money as strings); errors are ``{"error": "<reason>"}``
with 400/403/404.

  POST   /admin/reset                      back to the start-up state (see ``SandboxState.reset``)
  GET    /admin/clock                      {"now", "epoch_ms"}
  PUT    /admin/clock                      body {"now": ISO-8601 with offset}: set the sandbox clock
  POST   /admin/clock/advance              body {"seconds": n}: move the sandbox clock forward (or back)
  GET    /admin/config                     runtime settings (apikeys as hints), seed, clock, niterun
  PATCH  /admin/config                     body: any of apikeys, hold_time_seconds,
                                           payment_extension_seconds, quota_per_hour, polling_rate,
                                           polling_wait_seconds, polling_repeats, concurrency_policy,
                                           money_format, captcha_required, unredeemed_lag_seconds,
                                           polling_ttl_seconds, one_time_nonces,
                                           unredeemed_hide_rate, safetix_delays,
                                           empty_barcode_events, hold_time_variance_seconds,
                                           best_available_swap_rate
  GET    /admin/faults                     {"rules", "counters"}
  PUT    /admin/faults                     body {endpoint: rule}; replaces all rules (see ``faults``)
  DELETE /admin/faults                     clears the rules, keeps the counters
  GET    /admin/niterun                    {"mode", "per_event"}
  PUT    /admin/niterun                    body {"mode": "auto"|"on"|"off", "event_id"?}
  DELETE /admin/niterun                    back to the start-up mode for every event
  GET    /admin/quota                      usage in the current window, forced 429s
  PUT    /admin/quota/force                body {"expiry_epoch_ms" | "seconds", "apikey"?}: answer 429
                                           with that Ratelimit-Expiry until the clock reaches it
  DELETE /admin/quota/force                lifts forced 429s
  GET    /admin/carts?state=&event_id=     {"carts": [...], "count"} (held/paid/committed/deleted/expired)
  GET    /admin/orders?source_account_id=&event_id=   {"orders": [...], "count"} (with tokens, barcodes)
  POST   /admin/orders/{order_token}/redeem          the order leaves the unredeemed list
  GET    /admin/polling                    polling jobs
  DELETE /admin/polling/{poll_id}          forget a polling URL: it answers 404 from now on
  GET    /admin/counts                     see ``counts`` (+ faults counters, quota; late commits:
                                           ``commits_processed_late``, ``late_commits_failed``; the
                                           unkind modes: ``late_answers``, ``nonces_reused``,
                                           ``unavailable_refusals``, ``best_available_swaps``)
  GET    /admin/catalogue                  seeded events with live seat states
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fulfilment.partners.sandbox_kit.admin import AdminHandler, fail, loopback_only, read_object
from fulfilment.partners.sandbox_kit.clock import epoch_ms, iso_z, parse_iso_utc

from .models import CART_STATES
from .niterun import MODES
from .state import SandboxState


def _sandbox(request: Request) -> SandboxState:
    sandbox: SandboxState = request.app.state.sandbox
    return sandbox


def _admin(handler: Callable[[Request, SandboxState], Awaitable[Response]]) -> AdminHandler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request, _sandbox(request))
        except ValueError as exc:  # BadBody included
            return fail(400, str(exc))

    wrapped.__name__ = handler.__name__
    return loopback_only(wrapped)


async def _reset(request: Request, sandbox: SandboxState) -> Response:
    sandbox.reset()
    return JSONResponse({"ok": True})


def _clock_view(sandbox: SandboxState) -> dict[str, Any]:
    now = sandbox.clock()
    return {"now": iso_z(now), "epoch_ms": epoch_ms(now)}


async def _get_clock(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse(_clock_view(sandbox))


async def _set_clock(request: Request, sandbox: SandboxState) -> Response:
    body = await read_object(request)
    moment = parse_iso_utc(body["now"]) if isinstance(body.get("now"), str) else None
    if moment is None:
        raise ValueError('body must be {"now": "<ISO-8601 instant with offset>"}')
    sandbox.clock.set(moment)
    return JSONResponse(_clock_view(sandbox))


async def _advance_clock(request: Request, sandbox: SandboxState) -> Response:
    body = await read_object(request)
    seconds = body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError('body must be {"seconds": <number>}')
    sandbox.clock.advance(float(seconds))
    return JSONResponse(_clock_view(sandbox))


async def _get_config(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse(sandbox.public_config())


async def _patch_config(request: Request, sandbox: SandboxState) -> Response:
    sandbox.patch_settings(await read_object(request))
    return JSONResponse(sandbox.public_config())


async def _get_faults(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse(sandbox.faults.snapshot())


async def _put_faults(request: Request, sandbox: SandboxState) -> Response:
    sandbox.faults.replace_rules(await read_object(request))
    return JSONResponse(sandbox.faults.snapshot())


async def _delete_faults(request: Request, sandbox: SandboxState) -> Response:
    sandbox.faults.clear_rules()
    return JSONResponse(sandbox.faults.snapshot())


async def _get_niterun(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse(sandbox.niterun.snapshot())


async def _put_niterun(request: Request, sandbox: SandboxState) -> Response:
    body = await read_object(request)
    mode, event_id = body.get("mode"), body.get("event_id")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}")
    if event_id is not None and (not isinstance(event_id, str) or sandbox.catalogue.event(event_id) is None):
        raise ValueError("event_id must name a seeded event")
    sandbox.niterun.set(mode, event_id)
    return JSONResponse(sandbox.niterun.snapshot())


async def _delete_niterun(request: Request, sandbox: SandboxState) -> Response:
    sandbox.niterun.reset()
    return JSONResponse(sandbox.niterun.snapshot())


async def _get_quota(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse({**sandbox.quota.snapshot(), "allowed": sandbox.settings.quota_per_hour})


async def _force_quota(request: Request, sandbox: SandboxState) -> Response:
    body = await read_object(request)
    expiry, seconds, apikey = body.get("expiry_epoch_ms"), body.get("seconds"), body.get("apikey")
    if isinstance(expiry, int) and not isinstance(expiry, bool):
        chosen = expiry
    elif isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        chosen = epoch_ms(sandbox.clock()) + int(seconds * 1000)
    else:
        raise ValueError('body must carry "expiry_epoch_ms" (int) or "seconds" (> 0)')
    if apikey is not None and not isinstance(apikey, str):
        raise ValueError("apikey must be a string")
    sandbox.quota.force(chosen, apikey)
    return JSONResponse({"expiry_epoch_ms": chosen})


async def _lift_quota(request: Request, sandbox: SandboxState) -> Response:
    sandbox.quota.clear_forced()
    return JSONResponse({"ok": True})


async def _carts(request: Request, sandbox: SandboxState) -> Response:
    state = request.query_params.get("state") or None
    if state is not None and state not in CART_STATES:
        raise ValueError(f"state must be one of {list(CART_STATES)}")
    carts = sandbox.store.admin_carts(state, request.query_params.get("event_id") or None)
    return JSONResponse({"carts": carts, "count": len(carts)})


async def _orders(request: Request, sandbox: SandboxState) -> Response:
    query = request.query_params
    orders = sandbox.store.admin_orders(query.get("source_account_id") or None, query.get("event_id") or None)
    return JSONResponse({"orders": orders, "count": len(orders)})


async def _redeem(request: Request, sandbox: SandboxState) -> Response:
    try:
        order = sandbox.store.redeem(request.path_params["order_token"])
    except KeyError:
        return fail(404, "order not found")
    return JSONResponse({"order": order})


async def _polling(request: Request, sandbox: SandboxState) -> Response:
    jobs = sandbox.polling.snapshot()
    return JSONResponse({"jobs": jobs, "count": len(jobs)})


async def _forget_poll(request: Request, sandbox: SandboxState) -> Response:
    if not sandbox.polling.forget(request.path_params["poll_id"]):
        return fail(404, "no such polling job")
    return JSONResponse({"ok": True})


async def _counts(request: Request, sandbox: SandboxState) -> Response:
    sandbox.store.admin_carts()  # expire what is due, so leaked_carts is current
    return JSONResponse({**sandbox.counters.snapshot(), "faults": sandbox.faults.snapshot()["counters"],
                         "quota": sandbox.quota.snapshot()})


async def _catalogue(request: Request, sandbox: SandboxState) -> Response:
    return JSONResponse({"events": sandbox.store.catalogue_report()})


ROUTES: list[tuple[str, list[str], AdminHandler]] = [
    ("/admin/reset", ["POST"], _admin(_reset)),
    ("/admin/clock", ["GET"], _admin(_get_clock)),
    ("/admin/clock", ["PUT"], _admin(_set_clock)),
    ("/admin/clock/advance", ["POST"], _admin(_advance_clock)),
    ("/admin/config", ["GET"], _admin(_get_config)),
    ("/admin/config", ["PATCH"], _admin(_patch_config)),
    ("/admin/faults", ["GET"], _admin(_get_faults)),
    ("/admin/faults", ["PUT"], _admin(_put_faults)),
    ("/admin/faults", ["DELETE"], _admin(_delete_faults)),
    ("/admin/niterun", ["GET"], _admin(_get_niterun)),
    ("/admin/niterun", ["PUT"], _admin(_put_niterun)),
    ("/admin/niterun", ["DELETE"], _admin(_delete_niterun)),
    ("/admin/quota", ["GET"], _admin(_get_quota)),
    ("/admin/quota/force", ["PUT"], _admin(_force_quota)),
    ("/admin/quota/force", ["DELETE"], _admin(_lift_quota)),
    ("/admin/carts", ["GET"], _admin(_carts)),
    ("/admin/orders", ["GET"], _admin(_orders)),
    ("/admin/orders/{order_token}/redeem", ["POST"], _admin(_redeem)),
    ("/admin/polling", ["GET"], _admin(_polling)),
    ("/admin/polling/{poll_id}", ["DELETE"], _admin(_forget_poll)),
    ("/admin/counts", ["GET"], _admin(_counts)),
    ("/admin/catalogue", ["GET"], _admin(_catalogue)),
]
