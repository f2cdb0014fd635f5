"""Order and resolve: the intent, commit, and a commit's unknown outcome (its polling URL, unredeemed orders)."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import ROUND_HALF_UP
from typing import Any

from fulfilment import state_machine, ticket_crypto
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import (
    Next,
    failure,
    keep_answer,
    note_late,
    park,
    partner_request_id,
    record,
    step_deadline,
)
from fulfilment.flowkit.flow import StepContext
from fulfilment.flowkit.orders import (
    absence_policy_applies,
    keep_late_order,
    resolve_backoff,
    wait_or_hold,
)
from fulfilment.partners.base import AccountError, PartnerError
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
    Maintenance,
    RateLimited,
    is_commit_definite,
    polling_url_gone,
)
from fulfilment.partners.ticketmaster.flow import data as tm_data
from fulfilment.partners.ticketmaster.flow.base import FlowBase
from fulfilment.partners.ticketmaster.payloads import (
    Committed,
    Operation,
    Polling,
    UnredeemedOrder,
)
from fulfilment.state_machine import OrderEvidence, StaleTransition, State
from fulfilment.step_names import StepName
from models import Purchase

log = logging.getLogger(__name__)


class Commit(FlowBase):
    """QUOTED: commit the cart once; ORDER_UNKNOWN: continue its polling URL or find it among unredeemed orders."""

    # ---- order: commit ------------------------------------------------------------------------------

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = tm_data.TmData(purchase)
        settings = step.settings
        cart = data["cart"]
        margin = dt.timedelta(seconds=settings.quote_safety_margin_seconds)
        if cart is None or purchase.quote_expires_at is None or purchase.quote_expires_at - margin <= self._clock():
            try:
                self._delete_cart(purchase, data, step)
                with autocommit() as db:
                    state_machine.transition(
                        db, purchase, State.RECEIVED, message_id=step.message_id,
                        reason=f"cart {purchase.quote_id} is held for less than the "
                        f"{settings.quote_safety_margin_seconds:g} s safety margin; reserving again",
                        next_action_in=settings.redrive_after_seconds,
                        changes={"partner_data": data.without("cart", "pending")})
            except StaleTransition:
                note_late(purchase, "cart too close to its hold's end, not re-reserved by this worker", step.message_id)
                return None
            return Next(StepName.QUOTE)
        # The intent: from this commit on, an order may exist for this purchase.
        try:
            with autocommit() as db:
                purchase = state_machine.transition(
                    db, purchase, State.ORDERING, reason=f"committing cart {cart['id']}", message_id=step.message_id,
                    next_action_in=settings.claim_lease_seconds, hold_claim_for=settings.claim_lease_seconds,
                    changes={"order_evidence": OrderEvidence.MAY_EXIST.value,
                             "partner_data": data.set(commit_sent_at=tm_data._iso(self._clock()))})
        except StaleTransition:
            return None
        sent_at = self._clock()
        try:
            answer = self.api.commit(purchase.event_id, cart["id"], tm_data.source_account_id(purchase.id),
                                     request_id=partner_request_id(purchase, "commit"),
                                     deadline=step_deadline(settings, step.started))
        except Exception as error:  # noqa: BLE001  classified below: only a definite refusal proves no order
            return self._commit_failed(purchase, data, step, error)
        return self._commit_answer(purchase, data, step, answer, sent_at)

    def _commit_answer(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, answer: Committed | Polling,
                       sent_at: dt.datetime) -> Next | None:
        if isinstance(answer, Polling):
            wait = self._remember_poll(data, answer, sent_at, Operation.COMMIT)
            reason = f"commit of cart {purchase.quote_id} answered 202: polling in {wait:g} s"
            log.info("purchase %s: %s (polling URL kept)", purchase.id, reason)

            def write() -> bool:
                # Only `order` hands a 202 here, its purchase ORDERING (resolve keeps polling a 202 itself).
                return record(purchase, State.ORDER_UNKNOWN, reason, step.message_id, next_action_in=wait,
                              changes={"partner_data": data.values, "last_error": reason})

            if not keep_answer(write, what=f"the polling URL of the commit of cart {purchase.quote_id}"):
                keep_answer(lambda: tm_data.keep_late_polling(purchase, data["pending"], wait, step.message_id),
                            what=f"the polling URL of the commit of cart {purchase.quote_id}")
            return None
        return self._ordered(purchase, data, step, answer, how="committed")

    def _commit_failed(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, error: Exception) -> Next | None:
        """What a commit's failure proves.  Only a definite refusal of the one commit of this cart
        proves that no order was made; everything else is ORDER_UNKNOWN, resolved by asking."""
        settings = step.settings
        definite = isinstance(error, PartnerError) and is_commit_definite(error)
        if not definite:
            log.warning("purchase %s: commit outcome unknown for cart %s: %s", purchase.id, purchase.quote_id, error)
            hint = getattr(error, "order_number", None)
            if hint:
                data.set(order_number_hint=hint)
            changes: dict[str, Any] = {"partner_data": data.without("pending"), "last_error": str(error)[:2000]}
            if hint:
                # TM named the order in the answer we could not read: it exists, whatever a lookup says
                # (the absence policy never applies).
                changes["order_evidence"] = OrderEvidence.EXISTS.value
            if purchase.state == State.ORDERING:
                return Next(StepName.RESOLVE) if record(
                    purchase, State.ORDER_UNKNOWN, f"commit outcome unknown: {error}", step.message_id,
                    next_action_in=settings.redrive_after_seconds, changes=changes) else None
            return self._wait(purchase, data, step, f"commit outcome unknown: {error}")
        assert isinstance(error, PartnerError)
        # Nothing was bought by the one commit of this cart.
        if isinstance(error, (RateLimited, Maintenance)):
            wait = self._wait_seconds(error, data)
            margin = dt.timedelta(seconds=settings.quote_safety_margin_seconds)
            if purchase.quote_expires_at is not None and self._clock() + dt.timedelta(seconds=wait) < (
                    purchase.quote_expires_at - margin):
                # Refused unprocessed, and the paid cart outlives the wait: it is kept, and the quote step
                # then finds it paid and hands it to a commit again (no new reserve, no new payment).
                record(
                    purchase, State.RECEIVED, f"commit refused unprocessed ({error.code}); committing cart "
                    f"{purchase.quote_id} again in {wait:g} s (held until {tm_data._iso(purchase.quote_expires_at)})",
                    step.message_id, next_action_in=wait,
                    changes={"order_evidence": None, "last_error": str(error)[:2000], "partner_data": data.values})
                return None
            self._delete_cart(purchase, data, step)
            record(purchase, State.RECEIVED, f"commit refused unprocessed ({error.code}); reserving again in "
                   f"{wait:g} s", step.message_id, next_action_in=wait,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
            return None
        if isinstance(error, CartInvalid):
            record(purchase, State.RECEIVED, f"cart {purchase.quote_id} no longer valid at commit ({error.code}); "
                   "reserving again", step.message_id, next_action_in=settings.redrive_after_seconds,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
            return Next(StepName.QUOTE)
        self._delete_cart(purchase, data, step)
        if isinstance(error, AccountError):
            record(purchase, State.PAUSED, f"account cannot commit: {error.code}", step.message_id,
                   next_action_in=settings.payment_pause_seconds,
                   changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                            "last_error": str(error)})
        else:
            record(purchase, State.FAILED, f"partner refused the commit: {error.code}", step.message_id,
                   changes={**failure(error.code, error.message), "order_evidence": None,
                            "partner_data": data.without("cart", "pending")})
        return None

    def _commit_refused_late(self, purchase: Purchase, data: tm_data.TmData, step: StepContext,
                             error: PartnerError) -> Next | None:
        """The one commit of the cart was refused, as its polled answer says: no order was made, so
        the purchase reserves again (and learns there whether the refusal lasts: sold out, payment)."""
        self._delete_cart(purchase, data, step)
        return Next(StepName.QUOTE) if record(
            purchase, State.RECEIVED, f"the commit's polled answer refused it ({error.code}); reserving again",
            step.message_id, next_action_in=step.settings.redrive_after_seconds,
            changes={"partner_data": data.without("cart", "pending"), "order_evidence": None,
                     "last_error": str(error)[:2000]}) else None

    def _ordered(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, committed: Committed, *,
                 how: str) -> Next | None:
        order_id = committed.order_number or tm_data._token_ref(committed.order_token)
        # Logged before the write (the order number, never the token): a write that never lands still
        # leaves the order findable.
        log.info("purchase %s: order %s %s for cart %s; recording it", purchase.id, order_id, how, purchase.quote_id)
        sealed = (ticket_crypto.encrypt(self.config.ticket_key, committed.order_token)
                  if committed.order_token is not None else None)
        grand = committed.grand_total if committed.grand_total is not None else purchase.subtotal

        def changes_for(current: Purchase) -> dict[str, Any]:
            """The order's columns onto `current`'s own partner_data (a late answer must not undo what
            happened since this step read it)."""
            kept = tm_data.TmData(current)
            kept.without("pending", "cart")
            if sealed is not None:
                kept.set(order_token=sealed)
            return {"order_id": order_id, "order_status": "committed", "partner_data": kept.values,
                    "last_error": None, "failure_code": None, "failure_message": None, "subtotal": grand,
                    "unit_price": (grand / current.quantity).quantize(tm_data.CENT, ROUND_HALF_UP) if grand is not None
                    else None}

        def write() -> bool:
            try:
                with autocommit() as db:
                    state_machine.transition(db, purchase, State.AWAITING_TICKETS, reason=f"order {order_id} {how}",
                                             message_id=step.message_id, next_action_in=0.0,
                                             changes=changes_for(purchase))
                return True
            except StaleTransition:
                # Never dropped (invariant 10): applied if the purchase still waits for its order (even
                # held for a person), else an orphan order that keeps the sealed token.
                keep_late_order(purchase, order_id=order_id, quote_id=purchase.quote_id,
                                details={"order_id": order_id, "quote_id": purchase.quote_id, "status": "committed",
                                         **({"order_token_sealed": sealed} if sealed else {})},
                                to_state=State.AWAITING_TICKETS, next_action_in=0.0, changes_for=changes_for,
                                message_id=step.message_id, how=how)
                return False

        return Next(StepName.TICKETS) if keep_answer(write, what=f"order {order_id}") else None

    # ---- resolve: continue the polling, look among unredeemed orders ----------------------------------

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        """A commit whose outcome is unknown.  Its polling URL, if TM gave one, is the only source of
        the order token: it is polled until it gives a definite answer, and forgotten only when TM
        says it is gone (404/410).  A stalled, reset or failed poll proves nothing (assumed.py): the
        URL is kept and polled again with backoff, counted against the cart's window, never against
        a number of polls.  Without a URL the order is looked for among unredeemed orders."""
        data = tm_data.TmData(purchase)
        deadline = step_deadline(step.settings, step.started)
        pending = data["pending"]
        if pending is not None and pending["operation"] == str(Operation.COMMIT):
            early = self._too_early(pending)
            if early is not None:
                park(purchase, next_action_in=early,
                     error=f"commit answered 202: polling again at {pending['not_before']}",
                     message_id=step.message_id)
                return None
            try:
                answer = self.api.poll(pending["url"], expect=Operation.COMMIT,
                                       request_id=partner_request_id(purchase, "poll-commit"), deadline=deadline,
                                       cart_id=purchase.quote_id)
            except (RateLimited, Maintenance) as error:
                # The poll itself was refused (quota, niterun): nothing is known of the commit yet.
                wait = self._wait_seconds(error, data)
                park(purchase, next_action_in=wait, error=f"polling the commit refused ({error.code}); polling "
                     f"again in {wait:g} s", message_id=step.message_id)
                return None
            except Exception as error:  # noqa: BLE001  classified below: only the poll's own answer proves anything
                if isinstance(error, PartnerError) and is_commit_definite(error) and not isinstance(
                        error, CartInvalid):
                    # The commit's own answer, read by polling: this commit bought nothing.
                    return self._commit_refused_late(purchase, data, step, error)
                if not polling_url_gone(error):
                    # A stall, a timeout, a reset, a 5xx, an unreadable answer: the URL still holds the
                    # answer (reading it again is safe).  Keep it; poll again later.
                    return self._poll_commit_later(purchase, data, step, f"polling the commit failed: {error}")
                log.warning("purchase %s: the commit's polling URL is gone (%s); looking among unredeemed orders",
                            purchase.id, error)
                purchase = self._save(purchase, data.without("pending"))
            else:
                if isinstance(answer, Polling):
                    self._remember_poll(data, answer, tm_data._parse(pending.get("sent_at")) or self._clock(), Operation.COMMIT)
                    return self._poll_commit_later(purchase, data, step, "commit still processing (202)",
                                                   wait=answer.wait_seconds)
                return self._ordered(purchase, data, step, answer, how="committed")
        return self._look_up(purchase, data, step, deadline)

    def _poll_commit_later(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, why: str, *,
                           wait: float | None = None) -> Next | None:
        """The commit's polling URL did not answer definitely: poll it again after `wait` (TM's) or a
        backoff.  Only once the cart's window is long over (TM_COMMIT_POLL_GRACE_SECONDS after its hold
        ended) is the purchase held for a person, the URL still kept for `fulfil retry`."""
        settings = step.settings
        if wait is None:
            wait = resolve_backoff(purchase.attempts, settings)
        window_end = (purchase.quote_expires_at or self._clock()) + dt.timedelta(
            seconds=settings.tm_commit_poll_grace_seconds)
        if self._clock() >= window_end:
            record(purchase, State.NEEDS_ATTENTION, f"the commit's polling URL gave no definite answer by "
                   f"{tm_data._iso(window_end)}: {why}", step.message_id,
                   changes={**failure("COMMIT_STILL_PROCESSING", f"Ticketmaster has not said whether the commit of "
                                      f"cart {purchase.quote_id} made an order ({why}); its polling URL is kept: "
                                      "`fulfil retry` polls it again"), "partner_data": data.values})
            return None
        pending = data["pending"] or {}
        data.set(pending={**pending, "not_before": tm_data._iso(self._clock() + dt.timedelta(seconds=wait))})
        log.info("purchase %s: %s; polling the commit again in %.1f s", purchase.id, why, wait)
        park(purchase, next_action_in=wait, error=why, message_id=step.message_id, partner_data=data.values)
        return None

    def _look_up(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, deadline: float) -> Next | None:
        wanted = tm_data.source_account_id(purchase.id)
        try:
            answer = self.api.unredeemed_orders(self.config.unredeemed_days,
                                                request_id=partner_request_id(purchase, "unredeemed"),
                                                deadline=deadline)
        except PartnerError as error:
            return self._wait(purchase, data, step, f"the unredeemed-orders lookup failed: {error}")
        if isinstance(answer, Polling):
            return self._wait(purchase, data, step, "the unredeemed-orders lookup answered 202")
        found = [order for order in answer if order.order_source_account_id == wanted]
        if not found and absence_policy_applies(purchase, step.settings) and self._list_covers(data):
            # The operator's explicit policy (ORDER_ABSENCE_GRACE_SECONDS, README): the cart's hold ended
            # that long ago (TM cannot commit it any more) and the list still shows no order from it.
            grace = step.settings.order_absence_grace_seconds
            return Next(StepName.QUOTE) if record(
                purchase, State.RECEIVED, message_id=step.message_id,
                reason=f"no unredeemed order from cart {purchase.quote_id}, whose hold ended more than {grace:g} s "
                "ago (ORDER_ABSENCE_GRACE_SECONDS policy); reserving again",
                next_action_in=step.settings.redrive_after_seconds,
                changes={"order_evidence": None, "partner_data": data.without("pending", "cart")}) else None
        if not found:
            return self._wait(purchase, data, step, "no unredeemed order carries its source_account_id (a lookup "
                              "may lag behind a commit: that proves nothing)")
        return self._found_without_token(purchase, step, found)

    def _list_covers(self, data: tm_data.TmData) -> bool:
        """Could the unredeemed-orders list contain this purchase's order?  It lists *unredeemed* orders
        of the last `TM_UNREDEEMED_DAYS` only: so only while the commit is well inside that window and
        before the event starts (nothing can be redeemed earlier).  Otherwise its silence is no
        evidence, and the absence policy never applies."""
        sent, start = tm_data._parse(data["commit_sent_at"]), tm_data._parse((data["event"] or {}).get("start"))
        now = self._clock()
        if sent is None or start is None or start <= now:
            return False
        return now - sent < dt.timedelta(days=self.config.unredeemed_days) - tm_data.LIST_WINDOW_MARGIN

    def _found_without_token(self, purchase: Purchase, step: StepContext, found: list[UnredeemedOrder]) -> Next | None:
        numbers = sorted({order.order_number or "(no number)" for order in found})
        reason = (f"Ticketmaster lists {len(found)} order(s) from this purchase ({', '.join(numbers)}) among "
                  "unredeemed orders, but the commit's order token was never received: get the tickets from "
                  "Ticketmaster support, then resolve the purchase")
        changes: dict[str, Any] = failure("ORDER_TOKEN_UNKNOWN", reason)
        if len(found) == 1 and found[0].order_number:
            changes["order_id"] = found[0].order_number
        record(purchase, State.NEEDS_ATTENTION, "order found among unredeemed orders, without its token",
               step.message_id, changes={**changes, "order_evidence": OrderEvidence.EXISTS.value})
        return None

    def _wait(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, why: str) -> Next | None:
        """Look again later, or hand over to a person once the lookups are used up (the order step's rule)."""
        hint = data["order_number_hint"]
        if hint:
            why = f"{why}; Ticketmaster named order {hint} in a commit answer we could not read"
        return wait_or_hold(purchase, step.settings, step.message_id, why, partner_data=data.values)
