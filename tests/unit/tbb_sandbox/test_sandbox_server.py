"""The sandbox over a real socket: uvicorn in a thread, real httpx client.

This is where drop-after-commit is proven: the order is committed, the client sees a transport
error (not a status code), and the admin API shows exactly one order for the quote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fulfilment.partners.tbb.sandbox import SandboxConfig, SandboxServer


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig()) as running:
        yield running


@pytest.fixture
def client(server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        assert http.post("/admin/reset").status_code == 200
        token = http.post("/v1/auth/token", json={
            "client_id": "partner-a", "client_secret": "sandbox-secret-a", "grant_type": "client_credentials",
        }).json()["data"]["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def _quote(http: httpx.Client) -> str:
    r = http.post("/v1/quotes", json={"event_id": "5496123", "section_name": "101", "row_name": "A", "quantity": 2})
    assert r.status_code == 201, r.text
    return r.json()["data"]["quote_id"]


def _order_body(quote_id: str) -> dict:
    deadline = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"quote_id": quote_id, "delivery_type": "mobile_transfer", "delivery_deadline": deadline}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_drop_after_commit_is_a_transport_error(client: httpx.Client) -> None:
    quote_id = _quote(client)
    assert client.put("/admin/faults", json={"create_order": {"drop_after_commit_rate": 1.0}}).status_code == 200
    # uvicorn's logger does not propagate to the root, so listen on it directly.
    uvicorn_log = logging.getLogger("uvicorn.error")
    records = _Records()
    uvicorn_log.addHandler(records)
    try:
        with pytest.raises(httpx.TransportError) as caught:
            client.post("/v1/orders", json=_order_body(quote_id))
    finally:
        uvicorn_log.removeHandler(records)
    assert isinstance(caught.value, (httpx.RemoteProtocolError, httpx.ReadError))
    # The deliberate drop is not logged as an application crash.
    assert not [r for r in records.records if "Exception in ASGI application" in r.getMessage()]

    admin = client.get("/admin/orders", params={"quote_id": quote_id}).json()
    assert admin["count"] == 1 and admin["orders"][0]["quote_id"] == quote_id
    assert client.get("/admin/faults").json()["counters"]["create_order"]["drop_after_commit"] == 1

    # The client's recovery path: the retry says consumed; the lookup by quote finds the order.
    client.delete("/admin/faults")
    retry = client.post("/v1/orders", json=_order_body(quote_id))
    assert retry.status_code == 422 and retry.json()["error"]["code"] == "QUOTE_ALREADY_CONSUMED"
    found = client.get("/v1/orders", params={"quote_id": quote_id}).json()
    assert [o["order_id"] for o in found["data"]] == [admin["orders"][0]["order_id"]]
    # And the server is still healthy for new connections.
    assert client.get("/healthz").json() == {"ok": True}


def test_plain_5xx_and_429_over_the_wire(client: httpx.Client) -> None:
    client.put("/admin/faults", json={
        "list_events": {"fail_next": 1, "error_statuses": [502], "plain_body_rate": 1},
        "get_event": {"rate_limit_rate": 1.0, "retry_after_seconds": 1},
    })
    r = client.get("/v1/events")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "Bad Gateway" in r.text
    r = client.get("/v1/events/5496123")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "RATE_LIMITED"


def test_request_id_over_the_wire(client: httpx.Client) -> None:
    r = client.get("/v1/events", headers={"X-Request-ID": "trace-123"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-123" and r.json()["meta"]["request_id"] == "trace-123"


def test_full_flow_over_the_wire(client: httpx.Client) -> None:
    quote_id = _quote(client)
    order = client.post("/v1/orders", json=_order_body(quote_id))
    assert order.status_code == 201
    order_id = order.json()["data"]["order_id"]
    assert client.get(f"/v1/orders/{order_id}").json()["data"]["status"] == "awaiting_transfer"
    stats = client.get("/admin/stats").json()
    assert stats["orders"] == {"partner-a": 1} and stats["orders_on_expired_quote"] == 0


def test_respond_after_commit_is_a_read_timeout_while_the_order_exists(client: httpx.Client) -> None:
    quote_id = _quote(client)
    client.put("/admin/faults", json={"create_order": {"respond_after_commit_ms": 800}})
    uvicorn_log = logging.getLogger("uvicorn.error")
    records = _Records()
    uvicorn_log.addHandler(records)
    try:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/orders", json=_order_body(quote_id), timeout=0.2)
        # The answer is still being held back, yet the order is already committed and findable.
        found = client.get("/v1/orders", params={"quote_id": quote_id}).json()
        assert [o["quote_id"] for o in found["data"]] == [quote_id]
        time.sleep(0.8)  # let the held answer go out to the closed connection
        assert client.get("/healthz").json() == {"ok": True}
    finally:
        uvicorn_log.removeHandler(records)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    assert client.get("/admin/faults").json()["counters"]["create_order"] == {"respond_after_commit": 1}
    assert client.get("/admin/orders", params={"quote_id": quote_id}).json()["count"] == 1


def test_respond_after_commit_then_drop(client: httpx.Client) -> None:
    quote_id = _quote(client)
    client.put("/admin/faults", json={"create_order": {"respond_after_commit_ms": 100, "drop_next": 1}})
    started = time.perf_counter()
    with pytest.raises(httpx.TransportError):
        client.post("/v1/orders", json=_order_body(quote_id))
    assert time.perf_counter() - started >= 0.1
    counters = client.get("/admin/faults").json()["counters"]["create_order"]
    assert counters == {"respond_after_commit": 1, "drop_after_commit": 1}


def test_stalled_token_endpoint_times_out_then_recovers(server: SandboxServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        assert http.post("/admin/reset").status_code == 200
        http.put("/admin/faults", json={"auth_token": {"stall_next": 1, "stall_ms": 600}})
        body = {"client_id": "partner-a", "client_secret": "sandbox-secret-a", "grant_type": "client_credentials"}
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/auth/token", json=body, timeout=0.2)
        r = http.post("/v1/auth/token", json=body, timeout=0.2)
        assert r.status_code == 200 and r.json()["data"]["access_token"]
        time.sleep(0.5)  # the stalled request completes server-side before the next test resets
        assert http.get("/admin/faults").json()["counters"]["auth_token"] == {"stall": 1}
