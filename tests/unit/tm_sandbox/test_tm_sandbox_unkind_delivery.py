"""Issue 16, point 11, mode 6: a SafeTix delay signalled only by ``delivery.service_level`` SAFETIX
with no token, or only by a future ``safetix_delivery_delay_date`` (``safetix_delays``, per event or
``*``); tokens come once the delay ends on the sandbox clock.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import (
    BARCODE_EVENT,
    DELAY_EVENT,
    T0,
    TEST_EVENT,
    InProcess,
    render_request,
    reserve_body,
)

LA = ZoneInfo("America/Los_Angeles")


def _management(tm: InProcess, order: dict[str, Any]) -> dict[str, Any]:
    answer = tm.partner.order(order["order_token"])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _withheld(body: dict[str, Any]) -> bool:
    entries = [ticket["secure_entry_data"] for ticket in body["tickets"]]
    if all(entry["token"] is None and "error" not in entry for entry in entries):
        return True
    assert all(entry["token"] and "error" not in entry for entry in entries), entries
    return False


def test_a_delay_signalled_only_by_the_service_level(tm: InProcess) -> None:
    tm.admin.delay_safetix("service_level", event_id=TEST_EVENT, until=T0 + timedelta(hours=1))
    order = tm.partner.buy(TEST_EVENT, reserve_body(quantity=2))
    before = _management(tm, order)
    assert before["delivery"]["service_level"] == "SAFETIX"
    assert before["additional_info"] == {} and _withheld(before)
    render = [render_request(TEST_EVENT, ticket) for ticket in before["tickets"]]
    refused = tm.partner.securerender(render)
    assert refused.status_code == 400
    assert [t["error"]["error"] for t in refused.json()["tickets"]] == ["safetix.delivery.delayed"] * 2

    tm.admin.advance(3599)
    assert _withheld(_management(tm, order))
    tm.admin.advance(1)
    after = _management(tm, order)
    assert not _withheld(after) and after["additional_info"] == {}
    assert tm.partner.securerender(render).status_code == 200


def test_a_delay_signalled_only_by_a_future_date(tm: InProcess) -> None:
    day = (T0.astimezone(LA).date() + timedelta(days=3)).isoformat()
    tm.admin.delay_safetix("date", date=day)  # every SafeTix event
    order = tm.partner.buy(TEST_EVENT)
    before = _management(tm, order)
    assert before["additional_info"] == {"safetix_delivery_delay_date": day} and _withheld(before)

    midnight = datetime.combine(datetime.fromisoformat(day).date(), time(0), tzinfo=LA)
    tm.admin.set_clock(midnight - timedelta(seconds=1))
    assert _withheld(_management(tm, order))
    tm.admin.set_clock(midnight)
    after = _management(tm, order)
    assert not _withheld(after)
    assert after["additional_info"] == {"safetix_delivery_delay_date": day}  # still shown, as in the seed


def test_a_date_signal_with_an_until_shows_the_until_s_local_date(tm: InProcess) -> None:
    until = T0 + timedelta(days=2)
    tm.admin.delay_safetix("date", event_id=TEST_EVENT, until=until)
    body = _management(tm, tm.partner.buy(TEST_EVENT))
    assert body["additional_info"] == {"safetix_delivery_delay_date": until.astimezone(LA).date().isoformat()}
    assert _withheld(body)


def test_an_entry_replaces_the_catalogue_delay_and_leaves_barcode_events_alone(tm: InProcess) -> None:
    tm.admin.delay_safetix("service_level", until=T0 + timedelta(minutes=5))
    theatre = _management(tm, tm.partner.buy(DELAY_EVENT, reserve_body(price_id=7)))
    assert theatre["additional_info"] == {} and _withheld(theatre)  # no date, no error any more
    barcode = _management(tm, tm.partner.buy(BARCODE_EVENT, reserve_body("000042800007", price_id=8),
                                              source_account_id="p-2"))
    assert barcode["delivery"]["service_level"] == "ETICKET"
    assert barcode["tickets"][0]["secure_entry_data"] == {"token": None, "render_type": "barcode",
                                                           "segment_type": "BARCODE"}
    assert tm.admin.catalogue()["events"][0]["safetix_delay"]["signal"] == "service_level"


def test_safetix_delays_are_validated_and_read_from_env(tm: InProcess) -> None:
    for bad in ({"NOPE": {"signal": "date", "date": "2026-03-12"}}, {"*": {"signal": "loud", "date": "2026-03-12"}},
                {"*": {"signal": "date"}}, {"*": {"signal": "date", "date": "12/03/2026"}},
                {"*": {"signal": "date", "until": "2026-03-12T00:00:00"}}, {"*": {"signal": "date", "x": 1}}, []):
        refused = tm.admin.client.patch("/admin/config", json={"safetix_delays": bad})
        assert refused.status_code == 400, bad
    assert tm.admin.client.get("/admin/config").json()["safetix_delays"] == {}
    config = SandboxConfig.from_env({"TM_SANDBOX_SAFETIX_DELAYS": '{"*": {"signal": "date", "date": "2026-03-12"}}'})
    assert config.safetix_delays == {"*": {"signal": "date", "date": "2026-03-12"}}
    with pytest.raises(ValueError, match="NOPE"):
        InProcess(SandboxConfig(safetix_delays={"NOPE": {"signal": "date", "date": "2026-03-12"}}))


# --- mode 7: empty barcodes (seed 003's example) ----------------------------------------------------------


def test_empty_barcodes_come_with_a_token_and_order_management_refreshes_it(tm: InProcess) -> None:
    tm.admin.empty_barcodes(TEST_EVENT)
    order = tm.partner.buy(TEST_EVENT, reserve_body(quantity=2))
    first = _management(tm, order)
    assert [t["barcode_id"] for t in first["tickets"]] == ["", ""]
    assert first["delivery"]["service_level"] == "SAFETIX" and not _withheld(first)
    # SecureRender needs the barcode: with the empty one it refuses every ticket...
    refused = tm.partner.securerender([render_request(TEST_EVENT, t) for t in first["tickets"]])
    assert refused.status_code == 400
    assert [t["error"] for t in refused.json()["tickets"]] == [{"code": 400, "error": "missing.barcode.attribute"}] * 2
    # ...so the refresh is order management again: the same seats, new tokens.
    again = _management(tm, order)
    assert [(t["seat_name"], t["barcode_id"]) for t in again["tickets"]] == [("1", ""), ("2", "")]
    old = [t["secure_entry_data"]["token"] for t in first["tickets"]]
    new = [t["secure_entry_data"]["token"] for t in again["tickets"]]
    assert all(new) and not set(new) & set(old)
    # The tickets have barcodes all the same (the admin view; a barcode-only event is unaffected).
    assert all(len(t["barcode"]) == 16 for t in tm.admin.orders()[0]["tickets"])


def test_empty_barcodes_for_every_safetix_event_but_not_barcode_only_ones(tm: InProcess) -> None:
    tm.admin.empty_barcodes()
    theatre = _management(tm, tm.partner.buy(DELAY_EVENT, reserve_body(price_id=7)))
    assert theatre["tickets"][0]["barcode_id"] == ""
    barcode = _management(tm, tm.partner.buy(BARCODE_EVENT, reserve_body("000042800007", price_id=8),
                                              source_account_id="p-2"))
    assert len(barcode["tickets"][0]["barcode_id"]) == 16
    tm.admin.configure(empty_barcode_events=[])
    assert len(_management(tm, tm.partner.buy(TEST_EVENT, source_account_id="p-3"))["tickets"][0]["barcode_id"]) == 16


def test_empty_barcode_events_are_validated_and_read_from_env(tm: InProcess) -> None:
    for bad in (["NOPE"], "*", [""], [1]):
        assert tm.admin.client.patch("/admin/config", json={"empty_barcode_events": bad}).status_code == 400, bad
    config = SandboxConfig.from_env({"TM_SANDBOX_EMPTY_BARCODE_EVENTS": f"{TEST_EVENT}, {DELAY_EVENT}"})
    assert config.empty_barcode_events == (TEST_EVENT, DELAY_EVENT)
