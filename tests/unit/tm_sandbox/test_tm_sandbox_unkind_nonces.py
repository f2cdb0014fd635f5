"""Issue 16, point 11, mode 3: one-time payment nonces (``one_time_nonces``, off by default).

A nonce that paid once (a successful add-payment) is refused afterwards with the 20122 envelope and
Braintree's text; refused payments consume nothing; a reset forgets the used nonces.
"""

from __future__ import annotations

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import TEST_EVENT, InProcess, fresh_nonce, payment_body

REUSED = {"error": {"message": "Payment Not Accepted: Cannot use a payment_method_nonce more than once.",
                    "code": 20122, "http_code": 400, "severity": "ERROR"}}


def test_by_default_one_nonce_pays_for_every_cart(tm: InProcess) -> None:
    for source in ("p-1", "p-2", "p-3"):
        tm.partner.buy(TEST_EVENT, source_account_id=source)  # the same fake-valid-visa-nonce each time
    assert len(tm.admin.orders()) == 3 and tm.admin.counts()["nonces_reused"] == 0


def test_a_nonce_that_paid_once_is_refused_on_another_cart(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    admin.one_time_nonces()
    nonce = fresh_nonce()
    first, second = partner.cart(TEST_EVENT), partner.cart(TEST_EVENT)
    assert partner.pay(TEST_EVENT, payment_body(first, nonce=nonce)).status_code == 200

    refused = partner.pay(TEST_EVENT, payment_body(second, nonce=nonce))
    assert refused.status_code == 400 and refused.json() == REUSED
    states = {c["cart_id"]: (c["state"], c["paid"]) for c in admin.carts()}
    assert states[second["cart_id"]] == ("held", False)
    assert admin.counts()["nonces_reused"] == 1
    assert partner.commit(TEST_EVENT, second["cart_id"]).status_code == 400  # still unpaid

    assert partner.pay(TEST_EVENT, payment_body(second, nonce=fresh_nonce())).status_code == 200
    assert partner.commit(TEST_EVENT, second["cart_id"], "p-2").status_code == 200


def test_a_retried_payment_with_its_own_nonce_is_refused_and_the_cart_stays_paid(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    admin.one_time_nonces()
    cart, nonce = partner.cart(TEST_EVENT), fresh_nonce()
    assert partner.pay(TEST_EVENT, payment_body(cart, nonce=nonce)).status_code == 200
    retry = partner.pay(TEST_EVENT, payment_body(cart, nonce=nonce))
    assert retry.status_code == 400 and retry.json() == REUSED
    assert [(c["state"], c["paid"]) for c in admin.carts()] == [("paid", True)]
    assert partner.commit(TEST_EVENT, cart["cart_id"], "p-1").status_code == 200


def test_a_refused_payment_consumes_no_nonce(tm: InProcess) -> None:
    partner = tm.partner
    tm.admin.one_time_nonces()
    cart, nonce = partner.cart(TEST_EVENT), fresh_nonce()
    wrong = partner.pay(TEST_EVENT, payment_body(cart, nonce=nonce, amount="1.00"))
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == 20121
    assert partner.pay(TEST_EVENT, payment_body(cart, nonce=nonce)).status_code == 200


def test_reset_forgets_the_used_nonces_and_env_turns_the_mode_on() -> None:
    config = SandboxConfig.from_env({"TM_SANDBOX_ONE_TIME_NONCES": "true"})
    assert config.one_time_nonces is True
    assert SandboxConfig.from_env({}).one_time_nonces is False
    tm = InProcess(config)
    try:
        tm.partner.buy(TEST_EVENT, source_account_id="p-1", nonce="fake-valid-nonce-a")
        again = tm.partner.pay(TEST_EVENT, payment_body(tm.partner.cart(TEST_EVENT), nonce="fake-valid-nonce-a"))
        assert again.status_code == 400
        tm.admin.reset()
        assert tm.admin.client.get("/admin/config").json()["one_time_nonces"] is True
        tm.partner.buy(TEST_EVENT, source_account_id="p-1", nonce="fake-valid-nonce-a")
    finally:
        tm.close()
