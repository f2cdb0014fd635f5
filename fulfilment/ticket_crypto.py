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
