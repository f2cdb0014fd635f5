"""Where each payment's card `number` comes from: a Braintree payment-method nonce, which pays ONCE.

TM's add-payment takes `card.number` = a Braintree nonce (seed 003: "fake-valid-visa-nonce").  A
processor refuses a nonce used twice, so one nonce in a setting pays for one purchase, not for all
of them (shared/ticketmaster-contract.md, "What the real API does that a kind sandbox hides").
A `NonceSource` gives one nonce per payment call; TM_PAYMENT_SOURCE chooses it:

    request    each TM request carries `payment_nonce` (the requesting service minted it for this
               purchase); a request without one is rejected at intake.
    braintree  minted per payment from the operator's vaulted payment method
               (TM_BRAINTREE_PAYMENT_METHOD_TOKEN) with Braintree's Python SDK:
               `gateway.payment_method_nonce.create(token)`.
    static     TM_PAYMENT_NONCE for every payment.  Only for a sandbox that accepts a nonce twice
               (a real processor refuses it from the second purchase on): the worker warns at start.

Whatever the source, a request MAY carry its own `payment_nonce`: that one pays first.  Intake seals
it at rest (partner_data.payment_nonce, ticket_crypto with the TICKET_KEY); it is never logged, never
in an event, a history line or a rejection (`requests.redacted`), and it is discarded as soon as a
payment with it was accepted (`payment_nonce_used` is kept instead).

A source that cannot give a nonce raises `PaymentSetupError` (an AccountError): the purchase
pauses with the reason, like every other TM purchase with the same setup, and is never failed.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import SecretStr

from fulfilment import ticket_crypto
from fulfilment.partners.base import AccountError
from fulfilment.requests import NONCE_USED, SEALED_NONCE
from fulfilment.settings import Settings

log = logging.getLogger(__name__)



class PaymentSetupError(AccountError):
    """The operator's (or the request's) payment setup cannot pay: pause, tell operators."""


class NonceSource(Protocol):
    name: str

    def nonce_for(self, partner_data: dict[str, Any]) -> SecretStr:
        """A nonce for one payment of the purchase whose partner_data this is."""


def request_nonce(key: SecretStr, partner_data: dict[str, Any]) -> SecretStr | None:
    """The nonce the request carried (sealed at rest with the ticket key), None if it carried none
    or it was used already."""
    sealed = partner_data.get(SEALED_NONCE)
    if not sealed:
        return None
    try:
        return ticket_crypto.decrypt(key, sealed)
    except Exception:  # noqa: BLE001  a wrong TICKET_KEY: say so, never show the sealed value
        raise PaymentSetupError("PAYMENT_NONCE_UNREADABLE", "the request's sealed payment_nonce cannot be "
                                "opened with this TICKET_KEY") from None


class RequestNonces:
    """TM_PAYMENT_SOURCE=request: only the request's own nonce pays; none is minted here."""

    name = "request"

    def nonce_for(self, partner_data: dict[str, Any]) -> SecretStr:
        if partner_data.get(NONCE_USED):
            raise PaymentSetupError(
                "PAYMENT_NONCE_USED",
                "this purchase's payment_nonce paid a cart that was not bought in the end, and a nonce pays once: "
                "cancel the purchase and submit a new request with a new nonce")
        raise PaymentSetupError("PAYMENT_NONCE_MISSING", "the request carries no payment_nonce and "
                                "TM_PAYMENT_SOURCE=request mints none")


class StaticNonce:
    """One nonce for every payment (TM_PAYMENT_SOURCE=static): sandboxes only."""

    name = "static"

    def __init__(self, nonce: SecretStr) -> None:
        self._nonce = nonce

    def nonce_for(self, partner_data: dict[str, Any]) -> SecretStr:
        return self._nonce


class BraintreeNonces:
    """A fresh nonce for each payment, from the operator's vaulted payment method.  `gateway` is a
    `braintree.BraintreeGateway` (or anything with `.payment_method_nonce.create(token)`)."""

    name = "braintree"

    def __init__(self, gateway: Any, payment_method_token: SecretStr) -> None:
        self._gateway = gateway
        self._token = payment_method_token

    @classmethod
    def from_settings(cls, settings: Settings) -> BraintreeNonces:
        import braintree  # an optional dependency: only this source needs it

        assert settings.tm_braintree_private_key is not None and settings.tm_braintree_payment_method_token is not None
        environment = (braintree.Environment.Production if settings.tm_braintree_environment == "production"
                       else braintree.Environment.Sandbox)
        gateway = braintree.BraintreeGateway(braintree.Configuration(
            environment, merchant_id=settings.tm_braintree_merchant_id, public_key=settings.tm_braintree_public_key,
            private_key=settings.tm_braintree_private_key.get_secret_value()))
        return cls(gateway, settings.tm_braintree_payment_method_token)

    def nonce_for(self, partner_data: dict[str, Any]) -> SecretStr:
        try:
            result = self._gateway.payment_method_nonce.create(self._token.get_secret_value())
        except Exception as error:  # noqa: BLE001  the SDK raises its own kinds (NotFoundError, auth, network)
            raise PaymentSetupError("BRAINTREE_NONCE_FAILED", f"Braintree could not mint a nonce from the vaulted "
                                    f"payment method: {type(error).__name__}") from None
        nonce = getattr(getattr(result, "payment_method_nonce", None), "nonce", None)
        if not getattr(result, "is_success", False) or not nonce:
            message = getattr(result, "message", None) or "no nonce in the answer"
            raise PaymentSetupError("BRAINTREE_NONCE_FAILED", f"Braintree refused to mint a nonce: {message}")
        return SecretStr(nonce)


def nonce_source(settings: Settings) -> NonceSource:
    """The source TM_PAYMENT_SOURCE names (settings validated that what it needs is set)."""
    if settings.tm_payment_source == "braintree":
        return BraintreeNonces.from_settings(settings)
    if settings.tm_payment_source == "static":
        assert settings.tm_payment_nonce is not None
        log.warning("TM_PAYMENT_SOURCE=static: one payment nonce for every purchase; a real processor refuses "
                    "a nonce used twice (use 'request' or 'braintree' in production)")
        return StaticNonce(settings.tm_payment_nonce)
    return RequestNonces()
