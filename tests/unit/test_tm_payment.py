"""One payment nonce per payment (partners/ticketmaster/payment.py): a Braintree nonce pays once."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from fulfilment import ticket_crypto
from fulfilment.partners.ticketmaster.payloads import Card, Payment, payment_body
from fulfilment.partners.ticketmaster.payment import (
    BraintreeNonces,
    PaymentSetupError,
    RequestNonces,
    StaticNonce,
    nonce_source,
    request_nonce,
)
from fulfilment.rabbitmq.publisher import intake_message
from fulfilment.requests import NONCE_USED, SEALED_NONCE, parse_request, redacted
from fulfilment.settings import PartnerSettings

KEY = SecretStr(ticket_crypto.new_key())


def tm_body(**extra: Any) -> dict[str, Any]:
    return {"partner": "ticketmaster", "request_id": "r-1", "event_id": "000051048D991EE7",
            "ticket_type_id": "000000000001", "quantity": 1, "max_unit_price": "60.00",
            "third_party_account_id": "buyer-1",
            "delivery_deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat(), **extra}


class FakeNonceGateway:
    """What BraintreeNonces uses of braintree.BraintreeGateway: `.payment_method_nonce.create(token)`."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.tokens: list[str] = []
        self.payment_method_nonce = self

    def create(self, token: str) -> Any:
        self.tokens.append(token)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def minted(nonce: str) -> Any:
    return SimpleNamespace(is_success=True, payment_method_nonce=SimpleNamespace(nonce=nonce))


def test_braintree_mints_a_fresh_nonce_for_each_payment() -> None:
    gateway = FakeNonceGateway([minted("nonce-1"), minted("nonce-2")])
    source = BraintreeNonces(gateway, SecretStr("vaulted-token"))
    assert [source.nonce_for({}).get_secret_value() for _ in range(2)] == ["nonce-1", "nonce-2"]
    assert gateway.tokens == ["vaulted-token", "vaulted-token"]


@pytest.mark.parametrize("answer", [
    SimpleNamespace(is_success=False, message="Payment method not found"),
    SimpleNamespace(is_success=True, payment_method_nonce=None),
    RuntimeError("network"),
])
def test_a_braintree_failure_is_a_payment_setup_error_that_names_no_secret(answer: Any) -> None:
    source = BraintreeNonces(FakeNonceGateway([answer]), SecretStr("vaulted-token"))
    with pytest.raises(PaymentSetupError) as raised:
        source.nonce_for({})
    assert raised.value.code == "BRAINTREE_NONCE_FAILED" and "vaulted-token" not in str(raised.value)


def test_the_requests_own_nonce_is_sealed_and_says_when_it_was_used() -> None:
    sealed = ticket_crypto.encrypt(KEY, SecretStr("fake-valid-nonce-abc"))
    assert request_nonce(KEY, {SEALED_NONCE: sealed}).get_secret_value() == "fake-valid-nonce-abc"  # type: ignore[union-attr]
    assert request_nonce(KEY, {}) is None
    with pytest.raises(PaymentSetupError) as used:
        RequestNonces().nonce_for({NONCE_USED: True})
    assert used.value.code == "PAYMENT_NONCE_USED"
    with pytest.raises(PaymentSetupError) as missing:
        RequestNonces().nonce_for({})
    assert missing.value.code == "PAYMENT_NONCE_MISSING"


def test_a_static_nonce_warns_that_a_real_processor_refuses_it_twice(caplog: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SimpleNamespace(tm_payment_source="static", tm_payment_nonce=SecretStr("fake-valid-visa-nonce"))
    with caplog.at_level(logging.WARNING):
        source = nonce_source(settings)  # type: ignore[arg-type]
    assert isinstance(source, StaticNonce) and "refuses a nonce used twice" in caplog.text
    assert "fake-valid-visa-nonce" not in caplog.text


def _partner_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in list(PartnerSettings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    base = {"TBB_ENABLED": "false", "TM_ENABLED": "true", "TM_BASE_URL": "http://127.0.0.1:1/partners/v1",
            "TM_APIKEY": "k", "TM_DEVICE_ID": "d", "TM_BILLING_FIRST_NAME": "a", "TM_BILLING_LAST_NAME": "b",
            "TM_BILLING_EMAIL": "c@example.com", "TM_BILLING_PHONE": "1", "TICKET_KEY": KEY.get_secret_value()}
    for name, value in {**base, **values}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("values", "named"), [
    ({"TM_PAYMENT_SOURCE": "static"}, "TM_PAYMENT_NONCE"),
    ({"TM_PAYMENT_SOURCE": "braintree", "TM_BRAINTREE_MERCHANT_ID": "m"}, "TM_BRAINTREE_PRIVATE_KEY"),
    ({"TM_PAYMENT_CIN": "  "}, "TM_PAYMENT_CIN"),
])
def test_payment_settings_that_cannot_pay_are_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                                values: dict[str, str], named: str) -> None:
    _partner_env(monkeypatch, **values)
    with pytest.raises(ValidationError) as raised:
        PartnerSettings()  # type: ignore[call-arg]
    assert named in str(raised.value)


def test_request_is_the_default_source_and_needs_no_server_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    _partner_env(monkeypatch)
    assert PartnerSettings().tm_payment_source == "request"  # type: ignore[call-arg]


def test_cin_is_never_sent_empty() -> None:
    def body(cin: SecretStr | None) -> dict[str, Any]:
        payment = Payment(first_name="a", last_name="b", home_phone="1", email_address="c@example.com",
                          amount=Decimal("1.00"), currency="USD", card=Card(number=SecretStr("n"), cin=cin),
                          third_party_account_id="t")
        return payment_body("cart", payment)["payment"]["card"]

    assert "cin" not in body(None) and "cin" not in body(SecretStr(""))
    assert body(SecretStr("123"))["cin"] == "123"


def test_the_nonce_travels_to_the_worker_but_never_into_a_stored_rejection() -> None:
    request = parse_request(tm_body(payment_nonce="fake-valid-nonce-xyz"))
    assert intake_message(request).args[0]["payment_nonce"] == "fake-valid-nonce-xyz"
    assert "fake-valid-nonce-xyz" not in repr(request)
    assert redacted({"payment_nonce": "fake-valid-nonce-xyz", "a": 1}) == {"payment_nonce": "***", "a": 1}
