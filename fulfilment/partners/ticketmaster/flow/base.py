"""What every part of Ticketmaster's flow uses: the calls with their waits parked in Postgres (429, niterun,
202 polling), saving partner_data, giving up, deleting carts; and `release`."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import (
    Next,
    failure,
    note_late,
    park,
    partner_request_id,
    record,
    release_and_retry,
    step_deadline,
)
from fulfilment.flowkit.flow import StepContext
from fulfilment.partners.base import AccountError, DeadlineReached, PartnerError, PermanentError
from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
    Maintenance,
    NotSent,
    RateLimited,
    TmNotFound,
    TmOutcomeUnknown,
)
from fulfilment.partners.ticketmaster.flow.data import (
    NAME,
    NITERUN_END_HOUR,
    QUOTA_FALLBACK_SECONDS,
    TmConfig,
    TmData,
    _iso,
    _now,
    _parse,
    _Stop,
    names_payment_field,
    niterun_end,
)
from fulfilment.partners.ticketmaster.payloads import (
    Device,
    EventDetails,
    Operation,
    Polling,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import StaleTransition, State
from fulfilment.step_names import StepName
from models import Purchase

log = logging.getLogger(__name__)


class FlowBase:
    """The flow's state and shared parts; reserve.py, commit.py and tickets.py add the steps."""

    name = NAME
    ordered_state = State.AWAITING_TICKETS
    limits_resolve_attempts = False  # it counts its own waits (a commit polled against its cart's window)

    def __init__(self, api: TicketmasterApi, config: TmConfig, *, clock: Callable[[], dt.datetime] = _now) -> None:
        self.api = api
        self.config = config
        self._clock = clock
        self._events: dict[str, tuple[float, EventDetails]] = {}
        self._events_lock = threading.Lock()

    def close(self) -> None:
        self.api.close()

    def device_of(self, partner_data: dict[str, Any] | None, given: dict[str, Any] | None = None) -> Device:
        """The fan's device (seed 003: per device/app install), as given now (an on-demand refresh) or
        by the request; this server's TM_DEVICE_ID only as a fallback (README: its risk)."""
        found = given or (partner_data or {}).get("device")
        if found:
            return Device(device_id=found["device_id"], device_type=found["device_type"], device_os=found["device_os"])
        return self.config.device

    # ---- release: a purchase that ended before its order --------------------------------------------

    def release(self, purchase: Purchase, settings: Settings) -> None:
        """Delete the carts of a purchase that ended before any commit (deadline, re-quote limit, an
        operator's cancel): never left to lapse while they hold seats.  Best effort: never raises."""
        data = TmData(purchase)
        carts = [*([data["cart"]["id"]] if data["cart"] else []), *(data["abandoned"] or [])]
        deadline = time.monotonic() + settings.step_deadline_seconds
        for cart_id in dict.fromkeys(carts):
            try:
                self.api.delete_cart(purchase.event_id, cart_id, request_id=partner_request_id(
                    purchase, f"release-{cart_id}"), deadline=deadline)
                log.info("purchase %s ended: cart %s deleted", purchase.id, cart_id)
            except (CartInvalid, TmNotFound):
                pass  # gone already
            except Exception as error:  # noqa: BLE001  best effort: TM releases it at its hold's end
                log.warning("purchase %s ended: cart %s not deleted (%s); TM releases it at its hold's end",
                            purchase.id, cart_id, error)

    # ---- shared -------------------------------------------------------------------------------

    def _call(self, purchase: Purchase, data: TmData, step: StepContext, what: str,
              call: Callable[[float], Any], *, ordered: bool = False) -> Any:
        """Run one partner call; what its failure means for the purchase.  Before any commit a refusal
        fails (or pauses) it; once `ordered` (the order exists) it holds it for a person instead."""
        try:
            return call(step_deadline(step.settings, step.started))
        except (RateLimited, Maintenance) as error:
            self._park(purchase, data, step, self._wait_seconds(error, data), f"{what}: {error}")
        except TmOutcomeUnknown as error:
            # A reserve or payment that may have been processed: no money moves before a commit.
            if error.cart_id or data["cart"]:
                self._abandon_and_retry(purchase, data, step, f"{what} outcome unknown: {error}",
                                        cart_id=error.cart_id)
            raise release_and_retry(purchase, error, step.settings) from error
        except TmNotFound as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            self._give_up(purchase, data, step, State.FAILED, f"{what}: not found ({error.code})",
                          failure("EVENT_NOT_FOUND" if what == "event" else error.code, error.message))
        except AccountError as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            self._give_up(purchase, data, step, State.PAUSED, f"account cannot {what}: {error.code}",
                          {"last_error": str(error)[:2000]})
        except PermanentError as error:
            if ordered:
                self._hold(purchase, data, step, what, error)
            if isinstance(error, CartInvalid) and data["cart"] is not None and what != "reserve":
                # The cart expired or is gone: reserve another.
                data.without("cart", "pending")
                self._park(purchase, data, step, 0.5, f"{what}: cart no longer valid ({error.code}); reserving again")
            if what == "add_payment" and names_payment_field(error):
                # The operator's payment setup (a field TM refuses, a missing cin): the same for every
                # purchase, so each one pauses with the reason; none is failed for it.
                self._give_up(purchase, data, step, State.PAUSED, f"payment setup refused: {error.code}",
                              {"last_error": f"PAYMENT_SETUP: {error}"[:2000]})
            self._give_up(purchase, data, step, State.FAILED, f"partner refused {what}: {error.code}",
                          failure(error.code, error.message))
        except PartnerError as error:
            raise release_and_retry(purchase, error, step.settings) from error
        raise AssertionError("unreachable")

    def _poll(self, purchase: Purchase, data: TmData, step: StepContext, what: str, poll: Callable[[float], Any],
              *, ordered: bool = False) -> tuple[Purchase, Any]:
        """Continue the stored polling URL (`data["pending"]`).  If the poll itself was refused or never
        sent (quota, niterun, connect error, no time left), the URL is kept for the next claim.  Any
        other failure (the URL gone, an unreadable answer) means it will not tell us any more: it is
        forgotten, in Postgres first, and the failure is then handled like the call's own (so a
        forgotten URL is never polled again and again)."""
        try:
            return purchase, poll(step_deadline(step.settings, step.started))
        except (RateLimited, Maintenance, NotSent, DeadlineReached) as error:
            failed: PartnerError = error
        except PartnerError as error:
            failed = error
            purchase = self._save(purchase, data.without("pending"))

        def fail(deadline: float) -> Any:
            raise failed

        return purchase, self._call(purchase, data, step, what, fail, ordered=ordered)

    def _hold(self, purchase: Purchase, data: TmData, step: StepContext, what: str, error: PartnerError) -> None:
        """The order exists: a refusal now is for a person to look at, never a failure of the purchase."""
        record(purchase, State.NEEDS_ATTENTION, f"{what} refused for order {purchase.order_id}: {error.code}",
               step.message_id, changes={**failure(error.code, error.message), "partner_data": data.values})
        raise _Stop()

    def _wait_seconds(self, error: PartnerError, data: TmData) -> float:
        """How long a quota or a 20001 lasts: until Ratelimit-Expiry; inside the event-local 00:00-02:00
        window until 02:00 (niterun); outside it (or where the zone is unknown) 20001 means the system
        is unavailable: minutes (TM_UNAVAILABLE_RETRY_SECONDS), never until the next night."""
        now = self._clock()
        if isinstance(error, RateLimited):
            if error.retry_at is not None:
                return max((error.retry_at - now).total_seconds(), 1.0)
            return QUOTA_FALLBACK_SECONDS
        end = niterun_end(now, (data["event"] or {}).get("timezone"))
        if end is not None and end - now <= dt.timedelta(hours=NITERUN_END_HOUR):
            return max((end - now).total_seconds(), 1.0)
        return self.config.unavailable_retry_seconds

    def _wait_for_poll(self, purchase: Purchase, data: TmData, step: StepContext, answer: Polling,
                       sent_at: dt.datetime, *, operation: Operation | None = None) -> None:
        wait = self._remember_poll(data, answer, sent_at, operation or answer.operation)
        self._park(purchase, data, step, wait, f"{answer.operation} answered 202: polling in {wait:g} s")

    def _remember_poll(self, data: TmData, answer: Polling, sent_at: dt.datetime, operation: Operation) -> float:
        """Keep a 202's polling URL (without the apikey) for whoever claims the purchase next; returns its wait."""
        wait = answer.wait_seconds
        data.set(pending={"operation": str(operation), "url": answer.url, "sent_at": _iso(sent_at),
                          "not_before": _iso(self._clock() + dt.timedelta(seconds=wait))})
        return wait

    def _too_early(self, pending: dict[str, Any]) -> float | None:
        """Seconds left before a stored polling URL may be polled (its `wait`), None once it may."""
        not_before = _parse(pending["not_before"])
        left = (not_before - self._clock()).total_seconds() if not_before is not None else 0.0
        return left if left > 0 else None

    def _park(self, purchase: Purchase, data: TmData, step: StepContext, seconds: float, why: str) -> None:
        log.info("purchase %s waits %.1f s: %s", purchase.id, seconds, why)
        park(purchase, next_action_in=max(seconds, 0.001), error=why, message_id=step.message_id,
             partner_data=data.values)
        raise _Stop()

    def _save(self, purchase: Purchase, values: dict[str, Any]) -> Purchase:
        try:
            with autocommit() as db:
                return state_machine.save(db, purchase, partner_data=values)
        except StaleTransition:
            note_late(purchase, "progress with Ticketmaster not saved by this worker", None)
            raise _Stop() from None

    def _give_up(self, purchase: Purchase, data: TmData, step: StepContext, to_state: State, reason: str,
                 changes: dict[str, Any]) -> None:
        self._delete_cart(purchase, data, step)
        extra = {"next_action_in": step.settings.payment_pause_seconds} if to_state is State.PAUSED else {}
        record(purchase, to_state, reason, step.message_id,
               changes={**changes, "partner_data": data.without("cart", "pending")}, **extra)
        raise _Stop()

    def _abandon_and_retry(self, purchase: Purchase, data: TmData, step: StepContext, why: str, *,
                           cart_id: str | None = None) -> None:
        if cart_id and cart_id != (data["cart"] or {}).get("id"):
            data.set(abandoned=[*(data["abandoned"] or []), cart_id])
        self._delete_cart(purchase, data, step)
        data.without("cart", "pending")
        purchase_after = purchase
        if purchase.quotes_taken + 1 > step.settings.max_requotes + 1:
            self._give_up(purchase_after, data, step, State.FAILED, "re-reserve limit reached",
                          failure("REQUOTE_LIMIT", f"{purchase.quotes_taken + 1} carts taken, none could be ordered: "
                                  f"{why}"))
        park(purchase_after, next_action_in=0.5, error=why, message_id=step.message_id, partner_data=data.values,
             quotes_taken=purchase.quotes_taken + 1)
        raise _Stop(Next(StepName.QUOTE, delay_seconds=0.5))

    def _delete_cart(self, purchase: Purchase, data: TmData, step: StepContext) -> None:
        """Delete the purchase's cart (best effort, within the step's deadline); one not deleted is
        kept in `abandoned` for the next step.  Never called once a commit of it may be in flight."""
        cart = data["cart"]
        if cart is not None:
            data.set(abandoned=[*(data["abandoned"] or []), cart["id"]])
            data.without("cart")
        self._delete_listed(purchase, data, step)

    def _delete_abandoned(self, purchase: Purchase, data: TmData, step: StepContext) -> Purchase:
        if not data["abandoned"]:
            return purchase
        self._delete_listed(purchase, data, step)
        return self._save(purchase, data.values)

    def _delete_listed(self, purchase: Purchase, data: TmData, step: StepContext) -> None:
        left = []
        for cart_id in data["abandoned"] or []:
            try:
                answer = self.api.delete_cart(purchase.event_id, cart_id,
                                              request_id=partner_request_id(purchase, f"delete-{cart_id}"),
                                              deadline=step_deadline(step.settings, step.started))
                if isinstance(answer, Polling):
                    left.append(cart_id)  # deleting again later is harmless
            except (CartInvalid, TmNotFound):
                pass  # gone already
            except PartnerError as error:
                log.warning("purchase %s: cart %s not deleted yet (%s); trying again later", purchase.id, cart_id,
                            error)
                left.append(cart_id)
        data.set(abandoned=left) if left else data.without("abandoned")
