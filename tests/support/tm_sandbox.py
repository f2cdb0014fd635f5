"""The Ticketmaster sandbox for tests: as a real uvicorn subprocess (``TMSandboxProcess``) or in
process (``in_process``), with the same two small wrappers over any httpx-style client: ``Partner``
(the partner calls, apikey added) and ``Admin`` (the admin API).

Self-contained on purpose (no import from ``fulfilment.partners.tbb.sandbox`` or the TBB helpers).
"""

from __future__ import annotations

import sys
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

with warnings.catch_warnings():
    # starlette nudges towards "httpx2" on import; the TestClient works fine with httpx 0.28.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig, create_app
from tests.support.sandbox_process import SandboxProcess

REPO = Path(__file__).resolve().parents[2]
APIKEY = "tm-sandbox-apikey"
# A Tuesday, 18:00 UTC: 11:00 in Los Angeles and Phoenix, 05:00 (next day) in Sydney: no niterun.
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)

TEST_EVENT = "000051048D991EE7"     # LA, SafeTix, 1 ticket at price level 1 = 54.41
DELAY_EVENT = "3F005105D843DFA3"    # Phoenix, SafeTix with a delivery delay date
BARCODE_EVENT = "0B004D43F86C478F"  # LA, barcode only
TINY_EVENT = "3F005237E5CB39EA"     # Sydney, AUD, tiny inventory




class FakeClock:
    """A clock that only moves when told (the sandbox adds its own admin offset on top)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def payment_body(cart: dict[str, Any], *, amount: str | None = None, nonce: str = "fake-valid-visa-nonce",
                 third_party_account_id: str = "12313131", **overrides: Any) -> dict[str, Any]:
    """Seed 003's payment example for ``cart`` (a reserve answer)."""
    totals = cart["cart"]["totals"]
    payment: dict[str, Any] = {
        "first_name": "Tom", "last_name": "Brown", "home_phone": "4110001234", "type": "BRAINTREE", "reference": "",
        "address": {"line1": "123 Main Street", "line2": "", "unit": "1", "city": "Hollywood",
                    "country": {"code": "US", "id": "840"}, "region": {"abbrev": "CA"}, "postal_code": "92806"},
        "amount": amount if amount is not None else f"{float(totals['grand']):.2f}",
        "currency": totals["currency_code"],
        "card": {"number": nonce, "cin": "123", "expire_month": 0, "expire_year": 0},
        "email_address": "tom.brown@email.com", "third_party_account_id": third_party_account_id,
    }
    payment.update(overrides)
    return {"cartId": cart["cart_id"], "payment": payment}


def fresh_nonce() -> str:
    """A payment nonce never used before (the sandbox accepts any ``fake-valid-nonce-*``)."""
    return f"fake-valid-nonce-{uuid.uuid4().hex}"


def reserve_body(ticket_id: str = "000000000001", quantity: int = 1, price_id: int | None = 1,
                 **place: Any) -> dict[str, Any]:
    ticket: dict[str, Any] = {"id": ticket_id, "quantity": quantity}
    if price_id is not None:
        ticket["price"] = {"id": price_id}
    return {"reserve": {"tickets": [ticket], **place}}


def render_request(event_id: str, ticket: dict[str, Any]) -> dict[str, Any]:
    """A SecureRender ticket entry for an order management ``ticket``."""
    return {"eventId": event_id, "section": ticket["section"], "row": ticket["row"], "seat": ticket["seat_name"],
            "barcode": ticket["barcode_id"]}


DEVICE = {"device_id": "device-12345", "device_os": "android", "device_type": "native", "third_party_account_id": "12313131"}


class Partner:
    """Partner API calls; the apikey goes in the query (or the x-api-key header with ``header=True``)."""

    def __init__(self, client: httpx.Client, apikey: str = APIKEY) -> None:
        self.client = client
        self.apikey = apikey

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
             headers: dict[str, str] | None = None, apikey: str | None = None, header: bool = False) -> httpx.Response:
        key = self.apikey if apikey is None else apikey
        query = dict(params or {})
        all_headers = dict(headers or {})
        if key:
            if header:
                all_headers["x-api-key"] = key
            else:
                query["apikey"] = key
        return self.client.request(method, path, json=json, params=query, headers=all_headers)

    def reserve(self, event_id: str = TEST_EVENT, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.call("POST", f"/partners/v1/events/{event_id}/cart", json=body or reserve_body(), **kwargs)

    def cart(self, event_id: str = TEST_EVENT, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.reserve(event_id, body)
        assert response.status_code == 200, response.text
        cart: dict[str, Any] = response.json()
        return cart

    def pay(self, event_id: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.call("PUT", f"/partners/v1/events/{event_id}/cart/payment", json=body, **kwargs)

    def commit(self, event_id: str, cart_id: str, source_account_id: str | None = "purchase-1",
               **kwargs: Any) -> httpx.Response:
        body: dict[str, Any] = {"cart_id": cart_id}
        if source_account_id is not None:
            body["source_account_id"] = source_account_id
        return self.call("PUT", f"/partners/v1/events/{event_id}/cart", json=body, **kwargs)

    def delete(self, event_id: str, cart_id: str, **kwargs: Any) -> httpx.Response:
        return self.call("DELETE", f"/partners/v1/events/{event_id}/cart", params={"cart_id": cart_id}, **kwargs)

    def order(self, order_token: str, device: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.call("POST", "/partners/v1/orders", params={"order_token": order_token}, json=device or DEVICE,
                         **kwargs)

    def securerender(self, tickets: list[dict[str, Any]], user_id: str | None = "12313131",
                     path: str = "/marketplace/v1/securerender", **kwargs: Any) -> httpx.Response:
        headers = {"x-user-id": user_id} if user_id is not None else {}
        body = {"deviceId": "68753A11-1234-1226-9D60-0050E4C000000", "deviceType": "NATIVE", "deviceOs": "IOS",
                "userAgent": "Mozilla/5.0", "tickets": tickets}
        return self.call("POST", path, json=body, headers=headers, **kwargs)

    def poll(self, polling_url: str, **kwargs: Any) -> httpx.Response:
        return self.call("GET", httpx.URL(polling_url).path, **kwargs)

    def buy(self, event_id: str = TEST_EVENT, body: dict[str, Any] | None = None, source_account_id: str = "purchase-1",
            third_party_account_id: str = "12313131", nonce: str = "fake-valid-visa-nonce") -> dict[str, Any]:
        """Reserve, pay and commit; the commit answer plus ``cart``."""
        cart = self.cart(event_id, body)
        paid = self.pay(event_id, payment_body(cart, third_party_account_id=third_party_account_id, nonce=nonce))
        assert paid.status_code == 200, paid.text
        committed = self.commit(event_id, cart["cart_id"], source_account_id)
        assert committed.status_code == 200, committed.text
        order: dict[str, Any] = committed.json()
        order["cart"] = cart
        return order


class Admin:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _ok(self, response: httpx.Response) -> Any:
        assert response.status_code == 200, response.text
        return response.json()

    def reset(self) -> None:
        self._ok(self.client.post("/admin/reset"))

    def set_clock(self, moment: datetime) -> Any:
        return self._ok(self.client.put("/admin/clock", json={"now": moment.isoformat()}))

    def now(self) -> datetime:
        """The sandbox clock."""
        return datetime.fromisoformat(self._ok(self.client.get("/admin/clock"))["now"].replace("Z", "+00:00"))

    def advance(self, seconds: float) -> Any:
        return self._ok(self.client.post("/admin/clock/advance", json={"seconds": seconds}))

    def configure(self, **values: Any) -> Any:
        return self._ok(self.client.patch("/admin/config", json=values))

    def set_faults(self, rules: dict[str, Any]) -> Any:
        return self._ok(self.client.put("/admin/faults", json=rules))

    def clear_faults(self) -> Any:
        return self._ok(self.client.delete("/admin/faults"))

    def faults(self) -> Any:
        return self._ok(self.client.get("/admin/faults"))

    def niterun(self, mode: str, event_id: str | None = None) -> Any:
        body: dict[str, Any] = {"mode": mode}
        if event_id is not None:
            body["event_id"] = event_id
        return self._ok(self.client.put("/admin/niterun", json=body))

    def force_quota(self, **body: Any) -> Any:
        return self._ok(self.client.put("/admin/quota/force", json=body))

    def lift_quota(self) -> Any:
        return self._ok(self.client.delete("/admin/quota/force"))

    def carts(self, **filters: str) -> list[dict[str, Any]]:
        carts: list[dict[str, Any]] = self._ok(self.client.get("/admin/carts", params=filters))["carts"]
        return carts

    def orders(self, **filters: str) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = self._ok(self.client.get("/admin/orders", params=filters))["orders"]
        return orders

    def redeem(self, order_token: str) -> Any:
        return self._ok(self.client.post(f"/admin/orders/{order_token}/redeem"))

    def counts(self) -> Any:
        return self._ok(self.client.get("/admin/counts"))

    # --- the unkind modes (sandbox/faults.py, config.py) -----------------------------------------

    def polling_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._ok(self.client.get("/admin/polling"))["jobs"]
        return jobs

    def forget_poll(self, polling_url_or_id: str) -> Any:
        """The polling URL is gone: it answers 404 from now on."""
        poll_id = polling_url_or_id.rstrip("/").rsplit("/", 1)[-1]
        return self._ok(self.client.delete(f"/admin/polling/{poll_id}"))

    def stall_polls(self, n: int, stall_ms: float, operation: str | None = None) -> Any:
        """The next ``n`` polls (of ``operation``'s polling URLs only, e.g. "commit", when given) hang
        ``stall_ms`` before they answer; other rules are replaced (PUT /admin/faults)."""
        name = f"poll_{operation}" if operation else "poll"
        return self.set_faults({name: {"stall_next": n, "stall_ms": stall_ms}})

    def answer_late(self, n: int, answer_after_ms: float, endpoint: str = "commit") -> Any:
        """The next ``n`` successful calls of ``endpoint`` are processed at once and answered
        ``answer_after_ms`` later; other rules are replaced (PUT /admin/faults)."""
        return self.set_faults({endpoint: {"answer_after_next": n, "answer_after_ms": answer_after_ms}})

    def refuse(self, endpoint: str, status: int, n: int | None = None) -> Any:
        """``endpoint`` answers ``status`` (403 or 404, TM envelope): the next ``n`` calls, or every
        call when ``n`` is None; other rules are replaced (PUT /admin/faults)."""
        rule: dict[str, Any] = {"status": status, **({"status_next": n} if n is not None else {"status_rate": 1.0})}
        return self.set_faults({endpoint: rule})

    def delay_safetix(self, signal: str, *, event_id: str = "*", date: str | None = None,
                      until: datetime | None = None) -> Any:
        """SafeTix tokens withheld until ``until`` (or the event-local midnight of ``date``), signalled
        only by ``signal``: "service_level" or "date" (replaces the ``safetix_delays`` setting)."""
        entry: dict[str, Any] = {"signal": signal}
        if date is not None:
            entry["date"] = date
        if until is not None:
            entry["until"] = until.isoformat()
        return self.configure(safetix_delays={event_id: entry})

    def empty_barcodes(self, *event_ids: str) -> Any:
        """Order management answers SafeTix tickets of these events (default: all) with ``barcode_id: ""``."""
        return self.configure(empty_barcode_events=list(event_ids or ("*",)))

    def swap_best_available(self, rate: float = 1.0) -> Any:
        """A share ``rate`` of reserves that name a place with accept_best_available true get another
        section/row."""
        return self.configure(best_available_swap_rate=rate)

    def hide_from_unredeemed(self, rate: float = 1.0) -> Any:
        """Orders committed from now on never appear in the unredeemed list (a share ``rate`` of them)."""
        return self.configure(unredeemed_hide_rate=rate)

    def unavailable(self, endpoint: str, n: int | None = None, seconds: float | None = None) -> Any:
        """``endpoint`` (or "*") answers 503 20001 at any hour: the next ``n`` calls, or every call for
        ``seconds`` of the sandbox clock from the first; other rules are replaced (PUT /admin/faults)."""
        rule: dict[str, Any] = {}
        if n is not None:
            rule["unavailable_next"] = n
        if seconds is not None:
            rule["unavailable_seconds"] = seconds
        return self.set_faults({endpoint: rule})

    def one_time_nonces(self, on: bool = True) -> Any:
        """A payment nonce pays once only (use ``fresh_nonce()`` per purchase)."""
        return self.configure(one_time_nonces=on)

    def catalogue(self) -> Any:
        return self._ok(self.client.get("/admin/catalogue"))


class InProcess:
    """The sandbox app in this process (Starlette TestClient) on a ``FakeClock``."""

    def __init__(self, config: SandboxConfig | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.app = create_app(config or SandboxConfig(), clock=self.clock)
        self.client = TestClient(self.app, base_url="http://tm.test")
        self.partner = Partner(self.client)
        self.admin = Admin(self.client)

    def close(self) -> None:
        self.client.close()


class TMSandboxProcess(SandboxProcess):
    """``python -m fulfilment.partners.ticketmaster.sandbox`` on a free loopback port."""

    name = "TM sandbox"

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        super().__init__(env, log_path, "/tmp/tm-sandbox-{port}.log")
        self.partner = Partner(self.client)
        self.admin = Admin(self.client)

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "fulfilment.partners.ticketmaster.sandbox", "--host", "127.0.0.1",
                "--port", str(port)]
