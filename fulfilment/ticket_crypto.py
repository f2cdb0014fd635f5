"""Ticket tokens encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256, from `cryptography`).

A SafeTix token lets its holder into the venue: it is stored only encrypted (tickets.token_encrypted,
purchases.partner_data's order token) under TICKET_KEY, decrypted only to go into an event for the
requesting service or to a partner call, and never logged.  `fulfil tickets new-key` prints a key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr


class TicketKeyError(ValueError):
    """TICKET_KEY is not a Fernet key, or a stored token was not encrypted with it."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def check_key(key: SecretStr) -> None:
    _fernet(key)


def _fernet(key: SecretStr) -> Fernet:
    try:
        return Fernet(key.get_secret_value().encode())
    except (ValueError, TypeError):
        # Never echo the value: it is the key.
        raise TicketKeyError("TICKET_KEY must be a Fernet key: 32 url-safe base64-encoded bytes "
                             "(generate one with `fulfil tickets new-key`)") from None


def encrypt(key: SecretStr, token: str | SecretStr) -> str:
    plain = token.get_secret_value() if isinstance(token, SecretStr) else token
    return _fernet(key).encrypt(plain.encode()).decode()


def decrypt(key: SecretStr, stored: str) -> SecretStr:
    try:
        return SecretStr(_fernet(key).decrypt(stored.encode()).decode())
    except InvalidToken:
        raise TicketKeyError("a stored ticket token cannot be decrypted with TICKET_KEY (was the key changed?)") \
            from None


# ---- tokens in events ------------------------------------------------------------------------
# An event waits in the outbox table (Postgres) until the relay publishes it: its tickets' tokens
# are stored there sealed (encrypted under TICKET_KEY, in `sealed_token`), and opened by the relay
# just before publishing (rabbitmq/outbox.py), so the requester gets `token` and Postgres never
# holds one in clear.
SEALED = "sealed_token"


def seal_ticket(key: SecretStr, ticket: dict[str, object], token: str | SecretStr | None) -> dict[str, object]:
    """The event's view of a ticket, its token sealed (`token` null until the relay opens it)."""
    sealed = dict(ticket, token=None)
    if token is not None:
        sealed[SEALED] = encrypt(key, token)
    return sealed


def is_sealed(payload: dict[str, object]) -> bool:
    tickets = payload.get("tickets")
    return isinstance(tickets, list) and any(isinstance(t, dict) and SEALED in t for t in tickets)


def open_event(key: SecretStr | None, payload: dict[str, object]) -> dict[str, object]:
    """The event as published: every sealed token opened into `token`.  Raises TicketKeyError if a
    token is sealed and the key is missing or another one."""
    if not is_sealed(payload):
        return payload
    if key is None:
        raise TicketKeyError("an event carries sealed ticket tokens but TICKET_KEY is not set in this process")
    tickets = []
    sealed_tickets = payload["tickets"]
    assert isinstance(sealed_tickets, list)  # is_sealed checked it
    for ticket in sealed_tickets:
        opened = dict(ticket)
        sealed = opened.pop(SEALED, None)
        if sealed is not None:
            opened["token"] = decrypt(key, str(sealed)).get_secret_value()
        tickets.append(opened)
    return {**payload, "tickets": tickets}
