"""The Ticketmaster sandbox as a real server process (``python -m ...sandbox``) over real HTTP.

The happy path end to end, commit-then-drop (a transport error, yet an order the unredeemed list
shows), polling driven by the admin clock, 429 headers, and a log that never shows the apikey.
The many rule tests run in process (test_tm_sandbox_purchase/_delivery/_limits).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.tm_sandbox import APIKEY, T0, TEST_EVENT, TMSandboxProcess, payment_body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TMSandboxProcess]:
    log = tmp_path_factory.mktemp("tm-sandbox") / "sandbox.log"
    with TMSandboxProcess({"TM_SANDBOX_CLOCK_START": T0.isoformat(), "TM_SANDBOX_SEED": "3"}, log_path=log) as running:
        yield running


@pytest.fixture
def sandbox(server: TMSandboxProcess) -> TMSandboxProcess:
    server.admin.reset()
    return server


def test_happy_path_over_http(sandbox: TMSandboxProcess) -> None:
    partner, admin = sandbox.partner, sandbox.admin
    assert sandbox.client.get("/healthz").json() == {"ok": True}

    details = partner.call("GET", f"/partners/v1/events/{TEST_EVENT}", header=True)  # x-api-key header
    assert details.status_code == 200
    assert details.json()["event"]["venue"]["location"]["time_zone"] == "America/Los_Angeles"
    availability = partner.call("GET", f"/partners/v1/events/{TEST_EVENT}/availability")
    assert availability.status_code == 200
    offer = availability.json()["event"]["tickets"][0]["offers"][0]
    assert offer["ticketTypeId"] == "000000000001" and offer["priceLevelId"] == "1"
    assert availability.headers["Ratelimit-Quota-Allowed"] == "3600"

    reserved = partner.reserve(TEST_EVENT)
    assert reserved.status_code == 200
    assert '"grand":54.41' in reserved.text  # a JSON number with two decimals, like seed 003
    cart = reserved.json()
    assert cart["cart"]["hold_time"] == 300 and cart["cart"]["totals"]["unpaid"] == 54.41

    paid = partner.pay(TEST_EVENT, payment_body(cart))
    assert paid.status_code == 200
    assert paid.json()["cart"]["totals"]["unpaid"] == 0 and paid.json()["cart"]["hold_time"] > 300

    committed = partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="purchase-http")
    assert committed.status_code == 200
    order = committed.json()
    assert re.fullmatch(r"35-\d{5}/LA1", order["order_number"])
    assert order["grand_total"] == 54.41 and order["currency_code"] == "USD"
    assert order["order_token"] in order["redemption_url"]

    managed = partner.order(order["order_token"])
    assert managed.status_code == 200
    ticket = managed.json()["tickets"][0]
    token = ticket["secure_entry_data"]["token"]
    assert json.loads(base64.b64decode(token))["b"] == ticket["barcode_id"]

    refreshed = partner.securerender([{"eventId": TEST_EVENT, "section": ticket["section"], "row": ticket["row"],
                                       "seat": ticket["seat_name"], "barcode": ticket["barcode_id"]}])
    assert refreshed.status_code == 200
    answer = refreshed.json()["tickets"][0]
    assert answer["barcode"] == ticket["barcode_id"] and answer["token"] != token

    unredeemed = partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "1"})
    assert [o["order_source_account_id"] for o in unredeemed.json()["data"]] == ["purchase-http"]
    assert admin.counts()["orders_per_source_account"] == {"purchase-http": 1}


def test_commit_then_drop_leaves_an_order_the_unredeemed_list_shows(sandbox: TMSandboxProcess) -> None:
    partner, admin = sandbox.partner, sandbox.admin
    cart = partner.cart(TEST_EVENT)
    assert partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200
    admin.set_faults({"commit": {"drop_next": 1}})

    with pytest.raises(httpx.TransportError):
        partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="dropped-purchase")

    orders = admin.orders(source_account_id="dropped-purchase")
    assert len(orders) == 1 and orders[0]["cart_id"] == cart["cart_id"]
    unredeemed = partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "1"}).json()
    assert [o["order_source_account_id"] for o in unredeemed["data"]] == ["dropped-purchase"]
    # Re-committing the cart does not make a second order.
    again = partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="dropped-purchase")
    assert again.status_code == 400 and again.json()["error"]["code"] == 90003
    counts = admin.counts()
    assert counts["dropped_after_commit"] == 1 and counts["recommits"] == 1
    assert counts["orders_per_source_account"] == {"dropped-purchase": 1}
    assert admin.faults()["counters"]["commit"] == {"drop_after_commit": 1}


def test_polling_over_http_with_the_admin_clock(sandbox: TMSandboxProcess) -> None:
    partner, admin = sandbox.partner, sandbox.admin
    first = partner.reserve(TEST_EVENT, headers={"X-TM-FORCE-POLLING": "true"})
    assert first.status_code == 202
    polling_url, wait = first.json()["polling_url"], first.json()["wait"]
    assert wait == 4 and polling_url.startswith(sandbox.url + "/partners/v1/polling/")
    assert "apikey" not in polling_url and APIKEY not in polling_url

    early = partner.poll(polling_url)
    assert early.status_code == 202 and early.json()["polling_url"] == polling_url
    assert admin.counts()["polls_before_wait"] == 1
    assert partner.poll(polling_url, apikey="").status_code == 401  # the apikey is required like anywhere

    admin.advance(wait)
    final = partner.poll(polling_url)
    assert final.status_code == 200 and final.json()["cart"]["hold_time"] <= 296
    assert [c["state"] for c in admin.carts()] == ["held"]


def test_quota_429_headers_over_http(sandbox: TMSandboxProcess) -> None:
    partner, admin = sandbox.partner, sandbox.admin
    expiry = admin.force_quota(seconds=120)["expiry_epoch_ms"]
    limited = partner.call("GET", f"/partners/v1/events/{TEST_EVENT}/availability")
    assert limited.status_code == 429
    assert limited.headers["Ratelimit-Expiry"] == str(expiry)
    assert limited.headers["Ratelimit-Quota-Available"] == "0"
    assert limited.headers["Ratelimit-Quota-Allowed"] == "3600" and "Ratelimit-Quota-Used" in limited.headers
    assert "retry-after" not in limited.headers
    admin.lift_quota()
    assert partner.call("GET", f"/partners/v1/events/{TEST_EVENT}/availability").status_code == 200
    assert admin.counts()["rate_limited"] == 1


def test_the_log_never_shows_the_apikey(sandbox: TMSandboxProcess) -> None:
    sandbox.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}")
    sandbox.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}", header=True)
    log = sandbox.log_path.read_text()
    assert f"/partners/v1/events/{TEST_EVENT} -> 200" in log
    assert APIKEY not in log
    assert "Exception in ASGI application" not in log  # the deliberate drop is not logged as a crash
