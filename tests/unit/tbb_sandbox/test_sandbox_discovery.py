"""Discovery: events (filters, pagination), sections and rows with inventory."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sandbox_testkit import Sandbox, assert_error

FUTURE_IDS = ["5490001", "5496123", "5496124", "5496125", "5496126", "5496127"]


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["event_id"] for e in response.json()["data"]]


def test_events_default_to_today_onwards_in_start_order(sandbox: Sandbox) -> None:
    r = sandbox.get("/v1/events")
    assert _ids(r) == FUTURE_IDS
    assert r.json()["pagination"] == {"total": 6, "limit": 20, "offset": 0, "has_more": False}


def test_event_object_shape(sandbox: Sandbox) -> None:
    event = sandbox.get("/v1/events/5496123").json()["data"]
    assert event["event_name"] == "New England Patriots vs. Buffalo Bills"
    assert event["event_timezone"] == "America/New_York"
    assert event["event_datetime_utc"].endswith("Z")
    assert event["event_datetime_local"].endswith("T13:00:00")  # no offset
    assert event["venue"]["venue_id"] == "v_1001"
    assert {p["performer_id"] for p in event["performers"]} == {"p_2001", "p_2002"}


def test_past_event_is_visible_with_date_from_and_by_id(sandbox: Sandbox) -> None:
    past_day = (sandbox.clock.now - timedelta(days=10)).date().isoformat()
    assert "5490000" in _ids(sandbox.get("/v1/events", params={"date_from": past_day}))
    assert sandbox.get("/v1/events/5490000").status_code == 200


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"q": "bills"}, ["5496123", "5496127"]),
        ({"q": "fenway"}, ["5490001"]),
        ({"event_id": "5496125"}, ["5496125"]),
        ({"venue_id": "v_1002"}, ["5496124"]),
        ({"venue_name": "garden"}, ["5496124"]),
        ({"performer_id": "p_2002"}, ["5496123", "5496127"]),
        ({"performer_name": "lakers"}, ["5496125"]),
        ({"q": "no such thing"}, []),
    ],
)
def test_event_filters(sandbox: Sandbox, params: dict, expected: list[str]) -> None:
    assert _ids(sandbox.get("/v1/events", params=params)) == expected


def test_date_window(sandbox: Sandbox) -> None:
    today = sandbox.clock.now.date()
    params = {"date_from": (today + timedelta(days=40)).isoformat(), "date_to": (today + timedelta(days=70)).isoformat()}
    assert _ids(sandbox.get("/v1/events", params=params)) == ["5496124", "5496125"]


def test_pagination(sandbox: Sandbox) -> None:
    r = sandbox.get("/v1/events", params={"limit": 2, "offset": 0})
    assert _ids(r) == FUTURE_IDS[:2]
    assert r.json()["pagination"] == {"total": 6, "limit": 2, "offset": 0, "has_more": True}
    r = sandbox.get("/v1/events", params={"limit": 2, "offset": 4})
    assert _ids(r) == FUTURE_IDS[4:]
    assert r.json()["pagination"]["has_more"] is False
    r = sandbox.get("/v1/events", params={"limit": 100, "offset": 50})
    assert _ids(r) == [] and r.json()["pagination"]["total"] == 6


@pytest.mark.parametrize(
    "params", [{"limit": 101}, {"limit": 0}, {"limit": "x"}, {"offset": -1}, {"date_from": "2026/01/01"}, {"date_to": "x"}]
)
def test_bad_query_is_validation_error(sandbox: Sandbox, params: dict) -> None:
    error = assert_error(sandbox.get("/v1/events", params=params), 400, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] in params


def test_unknown_event(sandbox: Sandbox) -> None:
    assert_error(sandbox.get("/v1/events/1"), 404, "EVENT_NOT_FOUND")
    assert_error(sandbox.get("/v1/events/1/sections"), 404, "EVENT_NOT_FOUND")
    assert_error(sandbox.get("/v1/events/1/sections/101/rows"), 404, "EVENT_NOT_FOUND")


def test_sections_and_rows(sandbox: Sandbox) -> None:
    r = sandbox.get("/v1/events/5496123/sections")
    sections = r.json()["data"]
    assert [s["section_name"] for s in sections] == ["101", "102", "103", "201", "202", "301"]
    assert sections[0] == {"section_id": "5496123-101", "section_name": "101", "section_name_display": "Section 101"}
    assert r.json()["pagination"]["total"] == 6
    rows = sandbox.get("/v1/events/5496123/sections/101/rows").json()["data"]
    assert rows == [{"row_name": n, "row_name_display": f"Row {n}"} for n in "ABCDE"]


def test_sold_out_sections_and_rows_are_hidden(sandbox: Sandbox) -> None:
    sections = sandbox.get("/v1/events/5490001/sections").json()["data"]
    assert [s["section_name"] for s in sections] == ["101"]  # 102 is sold out
    rows = sandbox.get("/v1/events/5490001/sections/101/rows").json()["data"]
    assert [r["row_name"] for r in rows] == ["A"]  # B is sold out
    # A known but sold-out section answers an empty list, not 404.
    assert sandbox.get("/v1/events/5490001/sections/102/rows").json()["data"] == []
    # Selling the last 2 seats removes section 101 as well.
    assert sandbox.order(sandbox.quote_id(event_id="5490001", quantity=2)).status_code == 201
    assert sandbox.get("/v1/events/5490001/sections").json()["data"] == []
    assert sandbox.get("/v1/events/5490001/sections/101/rows").json()["data"] == []


def test_unknown_section_rows(sandbox: Sandbox) -> None:
    assert_error(sandbox.get("/v1/events/5496123/sections/999/rows"), 404, "SECTION_NOT_FOUND")


def test_rows_pagination(sandbox: Sandbox) -> None:
    r = sandbox.get("/v1/events/5496123/sections/101/rows", params={"limit": 2, "offset": 2})
    assert [row["row_name"] for row in r.json()["data"]] == ["C", "D"]
    assert r.json()["pagination"] == {"total": 5, "limit": 2, "offset": 2, "has_more": True}


def test_discovery_requires_a_token(sandbox: Sandbox) -> None:
    for path in ("/v1/events", "/v1/events/5496123", "/v1/events/5496123/sections",
                 "/v1/events/5496123/sections/101/rows"):
        assert_error(sandbox.client.get(path), 401, "UNAUTHORIZED")


def test_nopay_partner_can_browse(sandbox: Sandbox) -> None:
    assert sandbox.get("/v1/events", partner="partner-nopay").status_code == 200
