"""Late commits (a commit answered 5xx yet processed, maybe later) and the lagging unredeemed list.

Fault fields ``late_next``/``late_rate``/``late_ms`` (commit only) and the runtime setting
``unredeemed_lag_seconds``. A late commit with ``late_ms > 0`` is an asyncio task in the app's event
loop: in process it needs a loop that outlives the request, so those tests enter the TestClient
(``with tm.client``: one portal loop for every call); one test does it over real HTTP (uvicorn).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fulfilment.partners.sandbox_kit.faults import ConnectionDropped
from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import T0, TEST_EVENT, InProcess, Partner, TMSandboxProcess, payment_body

UNREDEEMED = "/partners/v1/orders/unredeemed"


@pytest.fixture
def tm() -> Iterator[InProcess]:
    sandbox = InProcess()
    yield sandbox
    sandbox.close()


def _paid_cart(partner: Partner) -> dict[str, Any]:
    cart = partner.cart(TEST_EVENT)
    paid = partner.pay(TEST_EVENT, payment_body(cart))
    assert paid.status_code == 200, paid.text
    return cart


def _unredeemed(partner: Partner) -> list[str | None]:
    response = partner.call("GET", UNREDEEMED, params={"days_from_purchase": "1"})
    assert response.status_code == 200, response.text
    return [order["order_source_account_id"] for order in response.json()["data"]]


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _late_counts(counts: dict[str, Any]) -> tuple[int, int]:
    return counts["commits_processed_late"], counts["late_commits_failed"]


# --- late_ms == 0: committed, then the 5xx --------------------------------------------------------------


def test_late_commit_without_delay_answers_5xx_with_the_order_made(tm: InProcess) -> None:
    cart = _paid_cart(tm.partner)
    assert _late_counts(tm.admin.counts()) == (0, 0)
    tm.admin.set_faults({"commit": {"late_next": 1, "error_statuses": [503]}})

    answered = tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-late")
    assert answered.status_code == 503
    assert answered.json()["error"]["code"] == 10503  # the injected-5xx envelope

    orders = tm.admin.orders()
    assert [(o["source_account_id"], o["cart_id"]) for o in orders] == [("p-late", cart["cart_id"])]
    assert [c["state"] for c in tm.admin.carts()] == ["committed"]
    assert _unredeemed(tm.partner) == ["p-late"]
    counts = tm.admin.counts()
    assert _late_counts(counts) == (1, 0)
    assert counts["orders_per_source_account"] == {"p-late": 1}
    assert counts["faults"]["commit"] == {"late_commit": 1, "late_commit_503": 1}

    # The worker's retry is a recommit; late_next is used up, so the next commit is a plain 200.
    retry = tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-late")
    assert retry.status_code == 400 and retry.json()["error"]["code"] == 90003
    assert tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"], source_account_id="p-next").status_code == 200
    counts = tm.admin.counts()
    assert counts["recommits"] == 1 and _late_counts(counts) == (1, 0)
    assert counts["orders_per_source_account"] == {"p-late": 1, "p-next": 1}
    assert tm.admin.faults()["rules"]["commit"]["late_next"] == 0


def test_only_commits_that_would_succeed_are_late(tm: InProcess) -> None:
    tm.admin.set_faults({"commit": {"late_next": 1}})
    unpaid = tm.partner.cart(TEST_EVENT)
    refused = tm.partner.commit(TEST_EVENT, unpaid["cart_id"])
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 20120  # its own error, as ever
    assert tm.admin.counts()["commits_without_payment"] == 1
    assert tm.admin.faults()["rules"]["commit"]["late_next"] == 1  # not used up
    assert tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"]).status_code == 500
    assert _late_counts(tm.admin.counts()) == (1, 0)


def test_late_rate_on_the_wildcard_with_a_gateway_page(tm: InProcess) -> None:
    tm.admin.set_faults({"*": {"late_rate": 1.0, "error_statuses": [502], "gateway_body": True}})
    cart = _paid_cart(tm.partner)  # reserve and payment are not affected
    answered = tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-gw")
    assert answered.status_code == 502 and answered.headers["content-type"].startswith("text/html")
    assert "502 Bad gateway" in answered.text
    assert [o["source_account_id"] for o in tm.admin.orders()] == ["p-gw"]
    assert tm.admin.faults()["counters"] == {"commit": {"late_commit": 1, "late_commit_502": 1}}


def test_a_late_commit_is_answered_5xx_even_when_polled_and_is_never_dropped(tm: InProcess) -> None:
    tm.admin.set_faults({"commit": {"late_next": 1, "drop_next": 1}})
    polled = tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"], headers={"X-TM-FORCE-POLLING": "true"})
    assert polled.status_code == 500
    assert tm.admin.client.get("/admin/polling").json()["count"] == 0
    assert tm.admin.faults()["rules"]["commit"]["drop_next"] == 1  # the drop waits for a 200
    with pytest.raises(ConnectionDropped):
        tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"])
    counts = tm.admin.counts()
    assert _late_counts(counts) == (1, 0) and counts["dropped_after_commit"] == 1
    assert len(tm.admin.orders()) == 2


# --- late_ms > 0: the 5xx now, the commit later ------------------------------------------------------------


def test_late_commit_takes_effect_after_late_ms(tm: InProcess) -> None:
    with tm.client:  # one event loop for every call, so the late commit's task keeps running
        cart = _paid_cart(tm.partner)
        tm.admin.set_faults({"commit": {"late_next": 1, "late_ms": 600}})
        answered = tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-later")
        assert answered.status_code == 500 and answered.json()["error"]["code"] == 10500

        assert tm.admin.orders() == [] and _unredeemed(tm.partner) == []
        assert [c["state"] for c in tm.admin.carts()] == ["paid"]
        assert _late_counts(tm.admin.counts()) == (0, 0)
        assert tm.app.state.sandbox.late_commits.pending() == 1
        assert tm.app.state.sandbox.cart_calls._in_flight == {}  # the 5xx left the cart's call

        _eventually(lambda: tm.admin.counts()["commits_processed_late"] == 1)
        orders = tm.admin.orders()
        assert [(o["source_account_id"], o["cart_id"]) for o in orders] == [("p-later", cart["cart_id"])]
        assert [c["state"] for c in tm.admin.carts()] == ["committed"]
        assert _unredeemed(tm.partner) == ["p-later"]
        counts = tm.admin.counts()
        assert counts["orders_per_source_account"] == {"p-later": 1} and counts["late_commits_failed"] == 0
        assert tm.app.state.sandbox.late_commits.pending() == 0


@pytest.mark.parametrize("meanwhile", ["delete", "expire", "retry"])
def test_late_commit_fails_silently_when_the_cart_cannot_be_committed_any_more(tm: InProcess, meanwhile: str) -> None:
    with tm.client:
        cart = _paid_cart(tm.partner)
        tm.admin.set_faults({"commit": {"late_next": 1, "late_ms": 300}})
        assert tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-late").status_code == 500
        if meanwhile == "delete":
            # Not refused as a concurrent call: the late processing holds no place in the cart's calls.
            assert tm.partner.delete(TEST_EVENT, cart["cart_id"]).status_code == 204
        elif meanwhile == "expire":
            tm.clock.advance(3600)
        else:  # the worker's retry gets there first
            assert tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-retry").status_code == 200

        _eventually(lambda: tm.admin.counts()["late_commits_failed"] == 1)
        counts = tm.admin.counts()
        assert counts["commits_processed_late"] == 0 and counts["concurrent_calls"] == 0
        # The client made no commit on a deleted/expired/committed cart: those counters stay 0.
        assert (counts["commits_on_deleted_carts"], counts["commits_on_expired_carts"], counts["recommits"]) == (0, 0, 0)
        expected = {"delete": ([], "deleted"), "expire": ([], "expired"), "retry": (["p-retry"], "committed")}[meanwhile]
        assert ([o["source_account_id"] for o in tm.admin.orders()], tm.admin.carts()[0]["state"]) == expected


def test_late_commit_over_real_http(tmp_path_factory: pytest.TempPathFactory) -> None:
    log = tmp_path_factory.mktemp("tm-sandbox-late") / "sandbox.log"
    with TMSandboxProcess({"TM_SANDBOX_CLOCK_START": T0.isoformat()}, log_path=log) as sandbox:
        cart = _paid_cart(sandbox.partner)
        sandbox.admin.set_faults({"commit": {"late_next": 1, "late_ms": 500, "error_statuses": [504]}})
        answered = sandbox.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id="p-http")
        assert answered.status_code == 504
        assert sandbox.admin.orders() == []
        _eventually(lambda: sandbox.admin.counts()["commits_processed_late"] == 1)
        assert [o["source_account_id"] for o in sandbox.admin.orders()] == ["p-http"]
        assert _unredeemed(sandbox.partner) == ["p-http"]


# --- validation and reset -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "message"), [
    ({"reserve": {"late_next": 1}}, "only apply to commit"),
    ({"payment": {"late_ms": 100}}, "only apply to commit"),
    ({"commit": {"late_rate": 1.5}}, "commit.late_rate must be a number >= 0 and <= 1.0"),
    ({"commit": {"late_rate": -0.1}}, "commit.late_rate must be a number >= 0"),
    ({"commit": {"late_ms": -1}}, "commit.late_ms must be a number >= 0"),
    ({"commit": {"late_ms": "10"}}, "commit.late_ms must be a number >= 0"),
    ({"commit": {"late_next": 1.5}}, "commit.late_next must be a non-negative integer"),
    ({"commit": {"late_next": True}}, "commit.late_next must be a non-negative integer"),
    ({"commit": {"late_next": -1}}, "commit.late_next must be a non-negative integer"),
    ({"commit": {"late_next": 1}, "reserve": {"late_rate": 0.5}}, "only apply to commit"),  # all or nothing
])
def test_late_fields_are_validated(tm: InProcess, rules: dict[str, Any], message: str) -> None:
    before = tm.admin.set_faults({"*": {"latency_ms": 1}})["rules"]
    refused = tm.admin.client.put("/admin/faults", json=rules)
    assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    assert tm.admin.faults()["rules"] == before


def test_late_fields_are_accepted_on_commit_and_wildcard(tm: InProcess) -> None:
    rules = tm.admin.set_faults({"commit": {"late_next": 2, "late_ms": 250}, "*": {"late_rate": 0.25}})["rules"]
    assert {k: rules["commit"][k] for k in ("late_next", "late_rate", "late_ms")} == {
        "late_next": 2, "late_rate": 0.0, "late_ms": 250.0}
    assert rules["*"]["late_rate"] == 0.25 and rules["*"]["late_ms"] == 0.0


def test_reset_clears_late_rules_counters_and_pending_commits(tm: InProcess) -> None:
    with tm.client:
        tm.admin.set_faults({"commit": {"late_next": 3}})
        assert tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"]).status_code == 500
        tm.admin.set_faults({"commit": {"late_next": 1, "late_ms": 300}})
        assert tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"]).status_code == 500
        tm.admin.configure(unredeemed_lag_seconds=30)
        assert tm.app.state.sandbox.late_commits.pending() == 1

        tm.admin.reset()
        assert tm.admin.faults() == {"rules": {}, "counters": {}}
        assert tm.admin.client.get("/admin/config").json()["unredeemed_lag_seconds"] == 0
        _eventually(lambda: tm.app.state.sandbox.late_commits.pending() == 0)
        time.sleep(0.4)  # past the cancelled commit's late_ms
        assert tm.admin.orders() == []
        assert _late_counts(tm.admin.counts()) == (0, 0)
        assert tm.partner.commit(TEST_EVENT, _paid_cart(tm.partner)["cart_id"]).status_code == 200


# --- the unredeemed list lags ------------------------------------------------------------------------------


def test_unredeemed_list_lags_behind_commits(tm: InProcess) -> None:
    assert tm.admin.configure(unredeemed_lag_seconds=30)["unredeemed_lag_seconds"] == 30
    tm.partner.buy(source_account_id="p-lag")
    assert _unredeemed(tm.partner) == []
    assert [o["source_account_id"] for o in tm.admin.orders()] == ["p-lag"]  # the admin list never lags
    tm.clock.advance(29.999)
    assert _unredeemed(tm.partner) == []
    tm.clock.advance(0.001)
    assert _unredeemed(tm.partner) == ["p-lag"]
    tm.partner.buy(source_account_id="p-young")
    assert _unredeemed(tm.partner) == ["p-lag"]
    tm.admin.configure(unredeemed_lag_seconds=0)
    assert _unredeemed(tm.partner) == ["p-lag", "p-young"]


@pytest.mark.parametrize("value", [-1, "30", True, None])
def test_unredeemed_lag_is_validated(tm: InProcess, value: Any) -> None:
    refused = tm.admin.client.patch("/admin/config", json={"unredeemed_lag_seconds": value, "polling_rate": 0.5})
    assert refused.status_code == 400 and "unredeemed_lag_seconds" in refused.json()["error"]
    config = tm.admin.client.get("/admin/config").json()
    assert config["unredeemed_lag_seconds"] == 0 and config["polling_rate"] == 0  # all or nothing


def test_unredeemed_lag_from_the_environment() -> None:
    config = SandboxConfig.from_env({"TM_SANDBOX_UNREDEEMED_LAG_SECONDS": "12.5"})
    assert config.unredeemed_lag_seconds == 12.5
    with pytest.raises(ValueError, match="unredeemed_lag_seconds"):
        SandboxConfig.from_env({"TM_SANDBOX_UNREDEEMED_LAG_SECONDS": "-1"})
    tm = InProcess(config)
    try:
        assert tm.admin.client.get("/admin/config").json()["unredeemed_lag_seconds"] == 12.5
        tm.partner.buy(source_account_id="p-env")
        assert _unredeemed(tm.partner) == []
        tm.clock.advance(12.5)
        assert _unredeemed(tm.partner) == ["p-env"]
        tm.admin.configure(unredeemed_lag_seconds=0)
        tm.admin.reset()
        assert tm.admin.client.get("/admin/config").json()["unredeemed_lag_seconds"] == 12.5  # start-up value
    finally:
        tm.close()
