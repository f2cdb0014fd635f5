"""One hard deadline per partner call (fulfilment/partners/deadline.py), against both sandboxes
over real HTTP with their trickle fault: an answer sent a piece at a time, each piece well inside
the read timeout, so httpx's own timeouts never fire.  The call still ends at its deadline, and
what the cut means follows the call's kind: a read is a transient error, an order or a commit is
"outcome unknown" (the order exists at the partner), never "not sent".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fulfilment.partners.base import OutcomeUnknown, QuoteRequest, TransientError
from fulfilment.partners.deadline import (
    DEADLINE,
    CallDeadlineExceeded,
    DeadlineHTTPTransport,
    DeadlineTransport,
    _DeadlineBackend,
)
from fulfilment.partners.tbb import TbbClient
from fulfilment.partners.tbb.client import RequestNotSent
from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.errors import NotSent, TmOutcomeUnknown, TmTransientError
from tests.support.sandbox import PARTNER_A, Sandbox
from tests.support.tm_sandbox import APIKEY, T0, TEST_EVENT, TMSandboxProcess, payment_body

# A trickled answer: 20 pieces, 0.2 s apart (4 s in all), each far inside a 1 s read timeout.
TRICKLE = {"trickle_ms": 200, "trickle_chunks": 20}
CALL_SECONDS = 1.5  # the call's deadline, from its start
SLACK = 0.35  # how far past its deadline a call may return (scheduling on a busy machine)


def assert_ended_at_deadline(started: float) -> None:
    elapsed = time.monotonic() - started
    assert CALL_SECONDS - 0.1 <= elapsed < CALL_SECONDS + SLACK, elapsed


# ---- the transport alone (no sockets) -------------------------------------------------------

class SlowBody(httpx.SyncByteStream):
    """A body that arrives in `pieces`, `gap` seconds apart (time.sleep: no socket involved)."""

    def __init__(self, pieces: int, gap: float) -> None:
        self.pieces, self.gap, self.sent = pieces, gap, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.pieces):
            time.sleep(self.gap)
            self.sent += 1
            yield b"x"


def test_a_body_arriving_past_the_deadline_is_cut_piece_by_piece() -> None:
    body = SlowBody(pieces=30, gap=0.05)
    client = httpx.Client(transport=DeadlineTransport(httpx.MockTransport(lambda request: httpx.Response(200, stream=body))))
    started = time.monotonic()
    with pytest.raises(CallDeadlineExceeded, match="deadline passed while the answer was arriving"):
        client.get("http://partner.test/slow", extensions={DEADLINE: started + 0.5})
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.5 + SLACK, elapsed
    assert body.sent < 30
    assert isinstance(CallDeadlineExceeded("x"), httpx.ReadTimeout)  # "sent, then timed out" to the clients


def test_without_a_deadline_the_transport_changes_nothing() -> None:
    body = SlowBody(pieces=5, gap=0.01)
    client = httpx.Client(transport=DeadlineTransport(httpx.MockTransport(lambda request: httpx.Response(200, stream=body))))
    assert client.get("http://partner.test/slow").content == b"xxxxx"


def test_a_request_whose_deadline_passed_is_not_sent() -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(transport=DeadlineTransport(httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))))
    with pytest.raises(httpx.ConnectTimeout, match="before the request was sent"):
        client.get("http://partner.test/", extensions={DEADLINE: time.monotonic() - 0.01})
    assert sent == []


def test_the_phase_timeouts_are_cut_to_the_time_left() -> None:
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200)

    client = httpx.Client(transport=DeadlineTransport(httpx.MockTransport(handler)), timeout=httpx.Timeout(30, pool=None))
    client.get("http://partner.test/", extensions={DEADLINE: time.monotonic() + 2})
    assert set(seen[0]) == {"connect", "read", "write", "pool"}
    assert all(0 < value <= 2 for value in seen[0].values()), seen


def test_the_http_transport_wraps_httpcores_network_backend() -> None:
    # DeadlineHTTPTransport reaches into httpcore's pool (httpx has no option for it): this fails
    # loudly if a new httpcore moves the attribute, rather than silently losing the hard deadline.
    transport = DeadlineHTTPTransport()
    assert isinstance(transport._pool._network_backend, _DeadlineBackend)  # type: ignore[union-attr]


# ---- TBB over HTTP -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tbb_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    running = Sandbox(log_path=tmp_path_factory.mktemp("tbb") / "sandbox.log").start()
    yield running
    running.stop()


@pytest.fixture
def tbb(tbb_sandbox: Sandbox) -> Iterator[tuple[TbbClient, Sandbox]]:
    tbb_sandbox.reset()
    client = TbbClient(tbb_sandbox.url, *PARTNER_A, connect_timeout=1, read_timeout=1, max_retry_seconds=10,
                       sleep=lambda _: None)
    client.check_credentials()  # the token is fetched untrickled
    yield client, tbb_sandbox
    tbb_sandbox.clear_faults()
    client.close()


QUOTE = QuoteRequest(event_id="5496124", section_name="101", row_name=None, quantity=1)


def test_tbb_a_trickled_read_ends_at_its_deadline_as_a_transient_error(tbb: tuple[TbbClient, Sandbox]) -> None:
    client, sandbox = tbb
    sandbox.set_faults({"create_quote": TRICKLE})
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        client.create_quote(QUOTE, request_id="trickled-quote", deadline=started + CALL_SECONDS)
    assert_ended_at_deadline(started)
    assert "CallDeadlineExceeded" in raised.value.message
    assert not isinstance(raised.value, RequestNotSent)
    assert sandbox.faults()["counters"]["create_quote"]["trickle"] >= 1
    # Untrickled, the same call answers: the fault, not the call, was slow.
    sandbox.clear_faults()
    assert client.create_quote(QUOTE, request_id="quote", deadline=time.monotonic() + 5).quote_id


def test_tbb_an_order_cut_by_its_deadline_is_outcome_unknown_and_exists(tbb: tuple[TbbClient, Sandbox]) -> None:
    client, sandbox = tbb
    quote = client.create_quote(QUOTE, request_id="quote", deadline=time.monotonic() + 5)
    sandbox.set_faults({"create_order": TRICKLE})
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown):
        client.create_order(quote.quote_id, delivery_type="mobile_transfer",
                            delivery_deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3),
                            request_id="trickled-order", deadline=started + CALL_SECONDS)
    assert_ended_at_deadline(started)
    assert len(sandbox.orders(quote_id=quote.quote_id)) == 1  # the partner has it: unknown, never "not sent"


def test_tbb_a_piece_later_than_the_deadline_is_not_waited_for(tbb: tuple[TbbClient, Sandbox]) -> None:
    # The head comes 1.5 s late, then the body's two pieces 1.5 s apart; read timeout 5 s.  Each
    # socket read's timeout, fixed when the exchange started (2 s left), would let the first piece
    # arrive at 3 s before anything noticed; each read is cut at the deadline itself instead.
    client, sandbox = tbb
    slow = TbbClient(sandbox.url, *PARTNER_A, connect_timeout=1, read_timeout=5, sleep=lambda _: None)
    slow.check_credentials()
    sandbox.set_faults({"create_quote": {"latency_ms": 1500, "trickle_ms": 1500, "trickle_chunks": 2}})
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        slow.create_quote(QUOTE, request_id="gap", deadline=started + 2.0)
    assert time.monotonic() - started < 2.0 + SLACK
    assert "CallDeadlineExceeded" in raised.value.message
    slow.close()


def test_tbb_sandbox_refuses_a_bad_trickle_rule(tbb: tuple[TbbClient, Sandbox]) -> None:
    _, sandbox = tbb
    for rule, reason in (({"trickle_chunks": 0}, "trickle_chunks must be a positive integer"),
                         ({"trickle_ms": -1}, "trickle_ms must be a number >= 0")):
        answer = sandbox.admin.put("/admin/faults", json={"create_order": rule})
        assert answer.status_code == 400 and reason in answer.text, answer.text


# ---- Ticketmaster over HTTP ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tm_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TMSandboxProcess]:
    log = tmp_path_factory.mktemp("tm") / "sandbox.log"
    with TMSandboxProcess({"TM_SANDBOX_CLOCK_START": T0.isoformat(), "TM_SANDBOX_SEED": "5"},
                          log_path=Path(log)) as running:
        yield running


@pytest.fixture
def tm(tm_sandbox: TMSandboxProcess) -> Iterator[tuple[TicketmasterApi, TMSandboxProcess]]:
    tm_sandbox.admin.reset()
    api = TicketmasterApi(f"{tm_sandbox.url}/partners/v1", APIKEY, connect_timeout=1, read_timeout=1,
                          max_retry_seconds=10, sleep=lambda _: None)
    yield api, tm_sandbox
    tm_sandbox.admin.clear_faults()
    api.close()


def test_tm_a_trickled_read_ends_at_its_deadline_as_a_transient_error(tm: tuple[TicketmasterApi, TMSandboxProcess]) -> None:
    api, sandbox = tm
    sandbox.admin.set_faults({"event_details": TRICKLE})
    started = time.monotonic()
    with pytest.raises(TmTransientError) as raised:
        api.event_details(TEST_EVENT, request_id="trickled-details", deadline=started + CALL_SECONDS)
    assert_ended_at_deadline(started)
    assert "CallDeadlineExceeded" in raised.value.message
    assert sandbox.admin.faults()["counters"]["event_details"]["trickle"] >= 1
    sandbox.admin.clear_faults()
    assert api.event_details(TEST_EVENT, request_id="details", deadline=time.monotonic() + 5).event_id == TEST_EVENT


def test_tm_a_commit_cut_by_its_deadline_is_outcome_unknown_and_exists(tm: tuple[TicketmasterApi, TMSandboxProcess]) -> None:
    api, sandbox = tm
    cart = sandbox.partner.cart(TEST_EVENT)
    assert sandbox.partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200
    sandbox.admin.set_faults({"commit": TRICKLE})
    started = time.monotonic()
    with pytest.raises(TmOutcomeUnknown) as raised:
        api.commit(TEST_EVENT, cart["cart_id"], "trickled-purchase", request_id="trickled-commit",
                   deadline=started + CALL_SECONDS)
    assert_ended_at_deadline(started)
    assert not isinstance(raised.value, NotSent)
    assert raised.value.cart_id == cart["cart_id"]
    assert len(sandbox.admin.orders(source_account_id="trickled-purchase")) == 1


def test_tm_sandbox_refuses_a_bad_trickle_rule(tm: tuple[TicketmasterApi, TMSandboxProcess]) -> None:
    _, sandbox = tm
    answer = sandbox.client.put("/admin/faults", json={"commit": {"trickle_chunks": True}})
    assert answer.status_code == 400 and "trickle_chunks must be a positive integer" in answer.text, answer.text
