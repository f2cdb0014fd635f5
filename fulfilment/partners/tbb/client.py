"""HTTP client for the TBB Partner API.

Rules this module keeps (design.md, failure policy):
- explicit connect and read timeouts on every call;
- one cached token per process, re-authenticated once on TOKEN_EXPIRED / UNAUTHORIZED;
- errors mapped by `error.code` to the kinds in `fulfilment.partners.base`;
- transient failures of *idempotent* calls retried with tenacity (jittered exponential
  backoff, bounded attempts and total time, Retry-After honoured);
- `POST /v1/orders` is retried only when the request provably never reached the server
  (connect failure) or was refused unprocessed (429, 401); any other failure after
  sending is `OutcomeUnknown`, resolved by the caller by asking, never by re-ordering;
- `X-Request-ID` on every call; the secret and tokens never appear in logs or errors;
- one overall deadline per call (`deadline`, a `time.monotonic()` instant): every
  exchange's connect/read/write/pool timeouts, the wait for and the fetch of a token,
  and the retries all fit before it, and it is hard: every socket operation and every
  chunk of an answer is cut at it (fulfilment.partners.deadline), so a partner trickling
  its answer cannot keep a call open past its step's claim lease; an order cut by it after
  sending is `OutcomeUnknown`;
- an order lookup is found / absent / unknown: a paginated (`has_more`) or malformed
  answer is unknown, never absent.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from fulfilment.partners.base import (
    DeadlineReached,
    LookupUnknown,
    Order,
    OrderAbsent,
    OrderFound,
    OrderLookup,
    OutcomeUnknown,
    PartnerError,
    Quote,
    QuoteRequest,
    TransientError,
)
from fulfilment.partners.deadline import DEADLINE, DeadlineTransport
from fulfilment.partners.retry_log import retry_logger
from fulfilment.partners.tbb import assumed
from fulfilment.partners.tbb.auth import TokenCache
from fulfilment.partners.tbb.errors import AUTH_RETRY_CODES, error_from_response
from fulfilment.partners.tbb.payloads import MalformedResponse, parse_order, parse_quote

log = logging.getLogger(__name__)
_log_retry = retry_logger("tbb", "tbb", log, title="TBB")

# (operation, outcome code, seconds) → metrics; outcome is "ok" or the error code.
CallObserver = Callable[[str, str, float], None]


class RequestNotSent(TransientError):
    """The connection was never established: the server cannot have acted on it."""


# An exchange is not started with less time than this left before the deadline.
MIN_EXCHANGE_SECONDS = 0.05


def _hard(deadline: float | None) -> dict[str, float]:
    """The request extension that makes `deadline` hard (fulfilment.partners.deadline)."""
    return {} if deadline is None else {DEADLINE: deadline}


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TbbClient:
    name = "tbb"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        observe: CallObserver | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._observe = observe
        self._sleep = sleep
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"Accept": "application/json"},
            transport=DeadlineTransport(transport),
        )
        self._tokens = TokenCache(self._authenticate)

    def __repr__(self) -> str:
        return f"TbbClient(base_url={str(self._http.base_url)!r}, client_id={self._client_id!r})"

    def close(self) -> None:
        self._http.close()

    def check_credentials(self, *, deadline: float | None = None) -> None:
        """Fetch a token now (health checks): raises AccountError/TransientError if it cannot."""
        self._tokens.get(deadline)

    # ---- the Partner interface --------------------------------------------------------

    def create_quote(self, request: QuoteRequest, *, request_id: str, deadline: float | None = None) -> Quote:
        body: dict[str, Any] = {
            "event_id": request.event_id,
            "section_name": request.section_name,
            "quantity": request.quantity,
        }
        if request.row_name is not None:
            body["row_name"] = request.row_name
        # Quotes reserve nothing, so asking again after a lost answer costs nothing.
        body_ = self._idempotent("create_quote", "POST", "/v1/quotes", request_id=request_id, deadline=deadline,
                                 json=body)
        return parse_quote(body_["data"])

    def create_order(
        self, quote_id: str, *, delivery_type: str, delivery_deadline: dt.datetime, request_id: str,
        deadline: float | None = None,
    ) -> Order:
        body = {"quote_id": quote_id, "delivery_type": delivery_type, "delivery_deadline": _utc(delivery_deadline)}
        for attempt in self._retrying(retry_on=RequestNotSent, deadline=deadline):
            with attempt:
                return self._create_order_once(body, request_id, deadline)
        raise AssertionError("unreachable")  # pragma: no cover  (tenacity reraises)

    def get_order(self, order_id: str, *, request_id: str, deadline: float | None = None) -> Order:
        path = assumed.ORDER_STATUS_PATH.format(order_id=order_id)
        return parse_order(self._idempotent("get_order", "GET", path, request_id=request_id, deadline=deadline)["data"])

    def find_order_for_quote(self, quote_id: str, *, request_id: str, deadline: float | None = None) -> OrderLookup:
        """Found, absent (a complete, well-formed, empty answer) or unknown; raises on transport trouble."""
        body = self._idempotent(
            "find_order",
            "GET",
            assumed.ORDER_LOOKUP_PATH,
            request_id=request_id,
            deadline=deadline,
            params={assumed.ORDER_LOOKUP_QUERY_PARAM: quote_id},
        )
        return read_lookup(body, quote_id)

    # ---- plumbing -----------------------------------------------------------------------

    def _create_order_once(self, body: dict[str, Any], request_id: str, deadline: float | None) -> Order:
        started = time.monotonic()
        try:
            response = self._send("POST", "/v1/orders", request_id=request_id, deadline=deadline, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            self._record("create_order", "NOT_SENT", started)
            raise RequestNotSent("NETWORK_ERROR", f"{type(error).__name__}: could not connect") from None
        except httpx.TransportError as error:
            # Reset, read timeout, dropped connection: the order may exist.
            self._record("create_order", "UNKNOWN", started)
            raise OutcomeUnknown("NETWORK_ERROR", f"{type(error).__name__} after the request was sent") from None
        if response.is_error:
            refusal = error_from_response(response)
            self._record("create_order", refusal.code, started)
            if response.status_code == 429:  # refused unprocessed: safe to send again
                raise RequestNotSent(refusal.code, refusal.message, status=429,
                                     retry_after=getattr(refusal, "retry_after", None))
            if response.status_code >= 500:  # may have been processed before failing
                raise OutcomeUnknown(refusal.code, refusal.message, status=response.status_code)
            raise refusal
        try:
            order = parse_order(self._body(response)["data"])
        except MalformedResponse as error:
            # A 2xx we cannot read still probably created the order.
            self._record("create_order", "UNKNOWN", started)
            raise OutcomeUnknown(error.code, error.message, status=response.status_code) from None
        self._record("create_order", "ok", started)
        return order

    def _idempotent(
        self, operation: str, method: str, path: str, *, request_id: str, deadline: float | None, **kwargs: Any
    ) -> dict[str, Any]:
        """The whole success envelope of an idempotent call, retried while that is safe and time allows."""
        for attempt in self._retrying(retry_on=TransientError, deadline=deadline):
            with attempt:
                started = time.monotonic()
                try:
                    response = self._send(method, path, request_id=request_id, deadline=deadline, **kwargs)
                except httpx.TransportError as error:
                    self._record(operation, "NETWORK_ERROR", started)
                    raise TransientError("NETWORK_ERROR", f"{type(error).__name__} calling {method} {path}") from None
                if response.is_error:
                    refusal = error_from_response(response)
                    self._record(operation, refusal.code, started)
                    raise refusal
                try:
                    data = self._body(response)
                except MalformedResponse as error:
                    self._record(operation, error.code, started)
                    raise TransientError(error.code, error.message, status=response.status_code) from None
                self._record(operation, "ok", started)
                return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, path: str, *, request_id: str, deadline: float | None, **kwargs: Any) -> httpx.Response:
        """One exchange, plus one re-authentication if the token was refused (401), all before `deadline`."""
        token = self._tokens.get(deadline)
        response = self._http.request(method, path, headers=self._headers(token, request_id),
                                      timeout=self._timeout(deadline), extensions=_hard(deadline), **kwargs)
        if response.status_code == 401 and self._error_code(response) in AUTH_RETRY_CODES:
            # A 401 is refused before any processing, so repeating the call is safe.
            log.info("tbb token refused (%s); re-authenticating once", self._error_code(response))
            self._tokens.invalidate(token)
            token = self._tokens.get(deadline)
            response = self._http.request(method, path, headers=self._headers(token, request_id),
                                          timeout=self._timeout(deadline), extensions=_hard(deadline), **kwargs)
        return response

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        """The configured timeouts, cut to the time left; DeadlineReached (nothing sent) if none is."""
        if deadline is None:
            return httpx.Timeout(self._read_timeout, connect=self._connect_timeout)
        left = deadline - time.monotonic()
        if left < MIN_EXCHANGE_SECONDS:
            raise DeadlineReached("DEADLINE_REACHED", "the step's deadline came before this request could be sent")
        return httpx.Timeout(min(self._read_timeout, left), connect=min(self._connect_timeout, left), pool=left)

    def _authenticate(self, deadline: float | None) -> tuple[str, float]:
        body = {"client_id": self._client_id, "client_secret": self._client_secret, "grant_type": "client_credentials"}
        for attempt in self._retrying(retry_on=TransientError, deadline=deadline):
            with attempt:
                started = time.monotonic()
                try:
                    response = self._http.post("/v1/auth/token", json=body, headers={"X-Request-ID": str(uuid.uuid4())},
                                               timeout=self._timeout(deadline), extensions=_hard(deadline))
                except httpx.TransportError as error:
                    self._record("auth_token", "NETWORK_ERROR", started)
                    raise TransientError("NETWORK_ERROR", f"{type(error).__name__} calling POST /v1/auth/token") from None
                if response.is_error:
                    refusal = error_from_response(response)
                    self._record("auth_token", refusal.code, started)
                    raise refusal
                data = self._body(response)["data"]
                self._record("auth_token", "ok", started)
                try:
                    return str(data["access_token"]), float(data.get("expires_in", 3600))
                except (KeyError, TypeError, ValueError):
                    raise MalformedResponse("auth response without access_token/expires_in") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, *, retry_on: type[PartnerError], deadline: float | None) -> Retrying:
        return Retrying(
            # DeadlineReached is transient but final: there is no time left to try again.
            retry=retry_if_exception_type(retry_on) & retry_if_not_exception_type(DeadlineReached),
            stop=stop_any(stop_after_attempt(self._max_attempts), stop_before_delay(self._max_retry_seconds),
                          _stop_before_deadline(deadline)),
            wait=_honour_retry_after(wait_random_exponential(multiplier=0.25, max=8)),
            before_sleep=_log_retry,
            sleep=self._sleep,
            reraise=True,
        )

    @staticmethod
    def _headers(token: str, request_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise MalformedResponse(f"HTTP {response.status_code} with a non-JSON body") from None
        if not isinstance(body, dict) or body.get("success") is not True or "data" not in body:
            raise MalformedResponse("success response without the documented envelope")
        return body

    @staticmethod
    def _error_code(response: httpx.Response) -> str | None:
        try:
            return response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def _record(self, operation: str, outcome: str, started: float) -> None:
        if self._observe is not None:
            self._observe(operation, outcome, time.monotonic() - started)


def read_lookup(body: dict[str, Any], quote_id: str) -> OrderLookup:
    """What an order lookup's envelope proves.  Absent only for a complete, well-formed list
    with no order from the quote; anything paginated or unreadable is unknown (issue 7)."""
    data = body.get("data")
    if not isinstance(data, list):
        return LookupUnknown("order lookup did not return a list")
    pagination = body.get("pagination")
    if not isinstance(pagination, dict):
        return LookupUnknown("order lookup without its pagination block: cannot tell whether every order is listed")
    if pagination.get("has_more") is not False:
        return LookupUnknown(f"order lookup is paginated (has_more={pagination.get('has_more')!r}): not every order is listed")
    orders = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("quote_id"), str):
            return LookupUnknown("order lookup lists an entry without a quote_id")
        if item["quote_id"] != quote_id:
            continue  # the partner ignored our filter; other quotes' orders say nothing
        try:
            orders.append(parse_order(item))
        except MalformedResponse as error:
            return LookupUnknown(f"order lookup lists an unreadable order: {error.message}")
    if len(orders) > 1:
        # One quote is single-use: two orders from it would be the partner's bug, and ours to flag.
        return LookupUnknown(f"{len(orders)} orders found for quote {quote_id}: "
                             + ", ".join(order.order_id for order in orders))
    return OrderFound(orders[0]) if orders else OrderAbsent()


class _stop_before_deadline(stop_base):
    """Stop when the next try could not finish before the step's deadline."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return time.monotonic() + (retry_state.upcoming_sleep or 0.0) + MIN_EXCHANGE_SECONDS >= self.deadline


def _honour_retry_after(backoff: Callable[[RetryCallState], float]) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        base = backoff(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(base, retry_after) if retry_after is not None else base

    return wait


