"""The TM sandbox's operating limits, in process: polling, quotas (429), niterun by the event's
timezone, injected faults, concurrent calls on one cart, and the admin API itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fulfilment.partners.sandbox_kit.faults import ConnectionDropped
from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import (
    APIKEY,
    DELAY_EVENT,
    DEVICE,
    T0,
    TEST_EVENT,
    TINY_EVENT,
    InProcess,
    payment_body,
    reserve_body,
)

FORCE = {"X-TM-FORCE-POLLING": "true"}


@pytest.fixture
def tm() -> Iterator[InProcess]:
    sandbox = InProcess()
    yield sandbox
    sandbox.close()


def _availability(tm: InProcess, event_id: str = TEST_EVENT, **kwargs: Any) -> httpx.Response:
    return tm.partner.call("GET", f"/partners/v1/events/{event_id}/availability", **kwargs)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- polling ----------------------------------------------------------------------------------------


def test_forced_polling_does_the_work_and_serves_it_after_wait(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    first = partner.reserve(headers=FORCE)
    assert first.status_code == 202
    polling_url = first.json()["polling_url"]
    assert first.json()["wait"] == 4
    assert polling_url.startswith("http://tm.test/partners/v1/polling/") and "apikey" not in polling_url
    assert [c["state"] for c in admin.carts()] == ["held"]  # the seats are held already

    early = partner.poll(polling_url)
    assert early.status_code == 202 and early.json() == {"polling_url": polling_url, "wait": 4}
    admin.advance(2)
    assert partner.poll(polling_url).json()["wait"] == 2
    assert admin.counts()["polls_before_wait"] == 2

    admin.advance(2)
    final = partner.poll(polling_url)
    assert final.status_code == 200
    assert final.json()["cart_id"] == admin.carts()[0]["cart_id"] and final.json()["cart"]["hold_time"] == 296
    again = partner.poll(polling_url)  # a re-read, nothing is done twice
    assert again.json()["cart_id"] == final.json()["cart_id"] and len(admin.carts()) == 1
    counts = admin.counts()
    assert counts["polls_before_wait"] == 2 and counts["polling_answers"] == 3
    jobs = admin.client.get("/admin/polling").json()["jobs"]
    assert [(j["endpoint"], j["polls"], j["early_polls"], j["delivered"]) for j in jobs] == [("reserve", 4, 2, 2)]


def test_polling_url_needs_the_apikey_of_its_caller(tm: InProcess) -> None:
    tm.admin.configure(apikeys=[APIKEY, "other-partner-key"])
    polling_url = _availability(tm, headers=FORCE).json()["polling_url"]
    tm.admin.advance(4)
    assert tm.partner.poll(polling_url, apikey="").status_code == 401
    foreign = tm.partner.poll(polling_url, apikey="other-partner-key")
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == 90005
    assert tm.partner.call("GET", "/partners/v1/polling/0123456789ABCDEF").status_code == 404
    assert tm.partner.poll(polling_url, header=True).status_code == 200


def test_polling_can_repeat_after_wait(tm: InProcess) -> None:
    tm.admin.configure(polling_wait_seconds=1, polling_repeats=2)
    polling_url = _availability(tm, headers=FORCE).json()["polling_url"]
    statuses = []
    for _ in range(3):
        tm.admin.advance(1)
        statuses.append(tm.partner.poll(polling_url).status_code)
    assert statuses == [202, 202, 200]
    assert tm.admin.counts()["polls_before_wait"] == 0


def test_every_polling_endpoint_can_poll(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin

    def through_polling(response: httpx.Response) -> httpx.Response:
        assert response.status_code == 202, response.text
        admin.advance(4)
        return partner.poll(response.json()["polling_url"])

    assert "event" in through_polling(_availability(tm, headers=FORCE)).json()
    sold_out = through_polling(partner.reserve(TINY_EVENT, reserve_body("000002040006", 1, section="J",
                                                                        accept_best_available=False), headers=FORCE))
    assert sold_out.status_code == 400 and sold_out.json()["error"]["code"] == 20052
    cart = partner.cart()
    paid = partner.pay(TEST_EVENT, payment_body(cart), headers=FORCE)
    assert paid.status_code == 200  # payment is "Polling: No"
    committed = through_polling(partner.commit(TEST_EVENT, cart["cart_id"], headers=FORCE))
    assert committed.status_code == 200 and committed.json()["order_token"]
    managed = through_polling(partner.order(committed.json()["order_token"], headers=FORCE))
    assert managed.status_code == 200 and managed.json()["tickets"]
    other = partner.cart()
    deleted = through_polling(partner.delete(TEST_EVENT, other["cart_id"], headers=FORCE))
    assert deleted.status_code == 204 and deleted.content == b""
    assert partner.call("GET", f"/partners/v1/events/{TEST_EVENT}", headers=FORCE).status_code == 200


def _statuses_with_rate(seed: int) -> list[int]:
    sandbox = InProcess(SandboxConfig(seed=seed, polling_rate=0.5))
    try:
        return [_availability(sandbox).status_code for _ in range(12)]
    finally:
        sandbox.close()


def test_random_polling_follows_the_seed() -> None:
    first = _statuses_with_rate(seed=11)
    assert first == _statuses_with_rate(seed=11)
    assert set(first) == {200, 202}


# --- quotas -----------------------------------------------------------------------------------------


def test_hourly_quota_answers_429_with_the_ratelimit_headers(tm: InProcess) -> None:
    tm.admin.configure(quota_per_hour=3)
    next_window = _ms(T0 + timedelta(hours=1))
    for used in (1, 2, 3):
        ok = _availability(tm)
        assert ok.status_code == 200
        assert (ok.headers["Ratelimit-Quota-Used"], ok.headers["Ratelimit-Quota-Available"]) == (str(used), str(3 - used))
    assert tm.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}", apikey="wrong").status_code == 401  # not counted
    limited = _availability(tm)
    assert limited.status_code == 429
    assert {k: limited.headers[k] for k in ("Ratelimit-Quota-Allowed", "Ratelimit-Quota-Used",
                                            "Ratelimit-Quota-Available", "Ratelimit-Expiry")} == {
        "Ratelimit-Quota-Allowed": "3", "Ratelimit-Quota-Used": "3", "Ratelimit-Quota-Available": "0",
        "Ratelimit-Expiry": str(next_window)}
    assert "retry-after" not in limited.headers
    assert limited.json()["fault"]["detail"]["errorcode"] == "policies.ratelimit.QuotaViolation"
    assert tm.admin.counts()["rate_limited"] == 1
    tm.admin.set_clock(datetime.fromtimestamp(next_window / 1000, tz=UTC))
    again = _availability(tm)
    assert again.status_code == 200 and again.headers["Ratelimit-Quota-Used"] == "1"


def test_admin_forces_429_with_a_chosen_expiry(tm: InProcess) -> None:
    tm.admin.configure(apikeys=[APIKEY, "other-partner-key"])
    expiry = _ms(T0 + timedelta(seconds=90))
    tm.admin.force_quota(expiry_epoch_ms=expiry, apikey=APIKEY)
    limited = tm.partner.reserve()
    assert limited.status_code == 429 and limited.headers["Ratelimit-Expiry"] == str(expiry)
    assert _availability(tm, apikey="other-partner-key").status_code == 200
    tm.admin.advance(89)
    assert _availability(tm).status_code == 429
    tm.admin.advance(1)
    assert _availability(tm).status_code == 200
    assert tm.admin.counts()["rate_limited_per_apikey"] == {"...ikey": 2}
    assert tm.admin.carts() == []


# --- niterun ----------------------------------------------------------------------------------------


def test_niterun_follows_each_events_timezone(tm: InProcess) -> None:
    order = tm.partner.buy()
    # 07:30 UTC on 11 March 2026: 00:30 in Los Angeles (PDT) and Phoenix (MST), 18:30 in Sydney.
    tm.admin.set_clock(datetime(2026, 3, 11, 7, 30, tzinfo=UTC))
    for event_id in (TEST_EVENT, DELAY_EVENT):
        refused = _availability(tm, event_id)
        assert refused.status_code == 503
        assert refused.json()["error"] == {"message": "Ticketing system is down/unavailable/niterun", "code": 20001,
                                           "http_code": 503, "severity": "DEBUG"}
    assert tm.partner.reserve().status_code == 503
    assert _availability(tm, TINY_EVENT).status_code == 200
    assert tm.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}").status_code == 200  # details stay up
    assert tm.partner.order(order["order_token"]).status_code == 200  # not event-scoped
    tm.admin.set_clock(datetime(2026, 3, 11, 8, 59, 59, tzinfo=UTC))  # 01:59:59 local
    assert _availability(tm).status_code == 503
    tm.admin.set_clock(datetime(2026, 3, 11, 9, 0, tzinfo=UTC))  # 02:00 local
    assert _availability(tm).status_code == 200
    # 13:30 UTC on 10 March: 00:30 in Sydney (AEDT), 06:30 in Los Angeles.
    tm.admin.set_clock(datetime(2026, 3, 10, 13, 30, tzinfo=UTC))
    assert _availability(tm, TINY_EVENT).status_code == 503 and _availability(tm).status_code == 200
    assert tm.admin.counts()["niterun_refusals"] == 5


def test_admin_forces_niterun_on_and_off(tm: InProcess) -> None:
    tm.admin.niterun("on", TEST_EVENT)
    assert _availability(tm).status_code == 503 and _availability(tm, DELAY_EVENT).status_code == 200
    tm.admin.niterun("on")
    assert _availability(tm, DELAY_EVENT).status_code == 503
    tm.admin.set_clock(datetime(2026, 3, 11, 7, 30, tzinfo=UTC))  # niterun time in Los Angeles
    tm.admin.niterun("off")
    assert _availability(tm).status_code == 200
    assert tm.admin.client.delete("/admin/niterun").json() == {"mode": "auto", "per_event": {}}
    assert _availability(tm).status_code == 503
    assert tm.admin.client.put("/admin/niterun", json={"mode": "sometimes"}).status_code == 400


# --- faults -----------------------------------------------------------------------------------------


def test_injected_5xx_changes_nothing(tm: InProcess) -> None:
    tm.admin.set_faults({"reserve": {"fail_next": 1, "error_statuses": [503]}})
    failed = tm.partner.reserve()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == 10503
    assert tm.admin.carts() == []
    assert tm.partner.reserve().status_code == 200
    tm.admin.set_faults({"*": {"error_rate": 1.0, "error_statuses": [502], "gateway_body": True}})
    gateway = _availability(tm)
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")
    assert tm.admin.faults()["counters"] == {"reserve": {"error": 1, "error_503": 1},
                                             "availability": {"error": 1, "error_502": 1}}


def test_injected_latency(tm: InProcess) -> None:
    tm.admin.set_faults({"availability": {"latency_ms": 150}})
    started = time.monotonic()
    assert _availability(tm).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_fault_rules_are_validated(tm: InProcess) -> None:
    for rules in ({"reserve": {"drop_next": 1}}, {"nowhere": {}}, {"commit": {"error_statuses": [404]}},
                  {"commit": {"surprise": 1}}):
        assert tm.admin.client.put("/admin/faults", json=rules).status_code == 400
    assert tm.admin.faults()["rules"] == {}


def test_commit_then_drop_in_process(tm: InProcess) -> None:
    """In process the drop surfaces as ConnectionDropped (over a socket: a transport error, see _http)."""
    cart = tm.partner.cart()
    tm.partner.pay(TEST_EVENT, payment_body(cart))
    tm.admin.set_faults({"commit": {"drop_next": 1}})
    with pytest.raises(ConnectionDropped):
        tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-drop")
    assert [o["source_account_id"] for o in tm.admin.orders()] == ["p-drop"]
    refused = tm.partner.cart()  # failed business calls are never dropped
    tm.admin.set_faults({"commit": {"drop_rate": 1.0}})
    assert tm.partner.commit(TEST_EVENT, refused["cart_id"]).status_code == 400
    assert tm.admin.counts()["dropped_after_commit"] == 1


# --- concurrency ------------------------------------------------------------------------------------


async def _two_payments_at_once(tm: InProcess, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=tm.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tm.test") as client:
        return list(await asyncio.gather(*(
            client.put(f"/partners/v1/events/{TEST_EVENT}/cart/payment", params={"apikey": APIKEY}, json=body)
            for body in bodies)))


def test_concurrent_calls_on_one_cart_are_detected_and_refused(tm: InProcess) -> None:
    cart = tm.partner.cart()
    tm.admin.set_faults({"payment": {"latency_ms": 200}})
    responses = asyncio.run(_two_payments_at_once(tm, [payment_body(cart), payment_body(cart)]))
    assert sorted(r.status_code for r in responses) == [200, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert refused.json()["error"]["code"] == 20099
    counts = tm.admin.counts()
    assert counts["concurrent_calls"] == 1 and counts["concurrent_calls_per_cart"] == {cart["cart_id"]: 1}


def test_concurrent_calls_counted_only_with_count_policy(tm: InProcess) -> None:
    tm.admin.configure(concurrency_policy="count")
    cart, other = tm.partner.cart(), tm.partner.cart()
    tm.admin.set_faults({"payment": {"latency_ms": 100}})
    responses = asyncio.run(_two_payments_at_once(tm, [payment_body(cart), payment_body(cart)]))
    assert [r.status_code for r in responses] == [200, 200]
    responses = asyncio.run(_two_payments_at_once(tm, [payment_body(cart), payment_body(other)]))
    assert [r.status_code for r in responses] == [200, 200]  # different carts may overlap
    assert tm.admin.counts()["concurrent_calls_per_cart"] == {cart["cart_id"]: 1}


# --- admin ------------------------------------------------------------------------------------------


def test_reset_restores_the_start_up_state(tm: InProcess) -> None:
    tm.partner.buy()
    tm.partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G"))
    tm.admin.set_faults({"reserve": {"latency_ms": 1}})
    tm.admin.niterun("on")
    tm.admin.configure(hold_time_seconds=5)
    tm.admin.advance(3600)
    tm.admin.reset()
    assert tm.admin.carts() == [] and tm.admin.orders() == []
    assert tm.admin.client.get("/admin/clock").json()["now"] == "2026-03-10T18:00:00Z"
    counts = tm.admin.counts()
    assert counts["orders_per_source_account"] == {} and counts["requests"] == {}
    assert tm.admin.faults() == {"rules": {}, "counters": {}}
    assert tm.partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G"))["cart"]["hold_time"] == 300


def test_config_is_validated_and_never_echoes_a_key(tm: InProcess) -> None:
    for patch in ({"surprise": 1}, {"polling_rate": 2}, {"apikeys": []}, {"hold_time_seconds": 0},
                  {"concurrency_policy": "maybe"}, {"money_format": "float"}, {"captcha_required": "yes"}):
        assert tm.admin.client.patch("/admin/config", json=patch).status_code == 400, patch
    config = tm.admin.client.get("/admin/config").json()
    assert config["apikeys"] == ["...ikey"] and APIKEY not in str(config)
    assert config["quota_per_hour"] == 3600 and config["hold_time_seconds"] == 300


def test_clock_endpoints(tm: InProcess) -> None:
    assert tm.admin.client.get("/admin/clock").json() == {"now": "2026-03-10T18:00:00Z", "epoch_ms": _ms(T0)}
    assert tm.admin.advance(1.5)["now"] == "2026-03-10T18:00:01.500Z"
    assert tm.admin.set_clock(datetime(2026, 5, 1, tzinfo=UTC))["now"] == "2026-05-01T00:00:00Z"
    assert tm.admin.client.put("/admin/clock", json={"now": "2026-05-01T00:00:00"}).status_code == 400  # naive


def test_catalogue_report_and_healthz(tm: InProcess) -> None:
    assert tm.client.get("/healthz").json() == {"ok": True}
    events = {e["event_id"]: e for e in tm.admin.catalogue()["events"]}
    assert events[TEST_EVENT]["price_levels"][0]["one_ticket_grand"] == "54.41"
    assert events[DELAY_EVENT]["safetix_delivery_delay_date"] is not None
    assert events[TINY_EVENT]["price_levels"][0]["rows"][1] == {"section": "H", "row": "1", "areas": [1],
                                                                "free": 4, "held": 0, "sold": 2}


def test_admin_answers_loopback_only(tm: InProcess) -> None:
    async def from_elsewhere() -> int:
        transport = httpx.ASGITransport(app=tm.app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://tm.test") as client:
            return (await client.get("/admin/counts")).status_code

    assert asyncio.run(from_elsewhere()) == 403


def test_order_management_uses_the_device_body(tm: InProcess) -> None:
    order = tm.partner.buy()
    assert tm.partner.order(order["order_token"], {**DEVICE, "device_type": "web"}).json()["nfc_capable_device"] is False


def test_seats_per_row_scales_the_test_and_barcode_events_for_load_runs() -> None:
    big = InProcess(SandboxConfig.from_env({"TM_SANDBOX_SEATS_PER_ROW": "300"}))
    try:
        # Far more than the catalogued 20 seats at price level 1: 30 carts of 8 seats each.
        carts = [big.partner.reserve(TEST_EVENT, reserve_body(quantity=8)) for _ in range(30)]
        assert [response.status_code for response in carts] == [200] * 30
    finally:
        big.close()
    with pytest.raises(ValueError, match="seats_per_row"):
        SandboxConfig.from_env({"TM_SANDBOX_SEATS_PER_ROW": "0"})


def test_as_catalogued_the_test_events_price_level_sells_out() -> None:
    small = InProcess()
    try:
        statuses = [small.partner.reserve(TEST_EVENT, reserve_body(quantity=8)).status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and statuses[-1] == 400  # 20 seats: the third cart of 8 cannot fit
    finally:
        small.close()
