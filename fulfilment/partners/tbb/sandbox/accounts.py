"""Partner accounts known to the sandbox and the credential check for ``POST /v1/auth/token``.

Default accounts (override with ``SandboxConfig(partners=...)`` or env ``SANDBOX_PARTNERS``):

============================  ===========================  =========  =========
client_id                     client_secret                payment    suspended
============================  ===========================  =========  =========
partner-a                     sandbox-secret-a             yes        no
partner-b                     sandbox-secret-b             yes        no
partner-nopay                 sandbox-secret-nopay         no         no
partner-suspended             sandbox-secret-suspended     yes        yes
============================  ===========================  =========  =========

``partner-nopay`` can authenticate and browse but gets 403 PAYMENT_NOT_CONFIGURED on quotes and
orders; ``partner-suspended`` gets 403 ACCOUNT_SUSPENDED when asking for a token.

Secrets are kept out of ``repr`` so an accidental ``log.info(account)`` cannot leak them.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

SCOPE = "events:read quotes:write orders:write"


@dataclass(frozen=True)
class PartnerAccount:
    client_id: str
    client_secret: str = field(repr=False)
    name: str = ""
    payment_configured: bool = True
    suspended: bool = False

    def public(self) -> dict[str, Any]:
        """What the admin API may show: everything but the secret."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "payment_configured": self.payment_configured,
            "suspended": self.suspended,
        }


DEFAULT_PARTNERS: tuple[PartnerAccount, ...] = (
    PartnerAccount("partner-a", "sandbox-secret-a", "Sandbox Partner A"),
    PartnerAccount("partner-b", "sandbox-secret-b", "Sandbox Partner B"),
    PartnerAccount("partner-nopay", "sandbox-secret-nopay", "Sandbox Partner (no payment method)", payment_configured=False),
    PartnerAccount("partner-suspended", "sandbox-secret-suspended", "Sandbox Partner (suspended)", suspended=True),
)


def partners_from_json(text: str) -> tuple[PartnerAccount, ...]:
    """Parse ``SANDBOX_PARTNERS``: a JSON list of objects.

    Each object: ``client_id`` and ``client_secret`` (required), ``name``, ``payment_configured``
    (default true), ``suspended`` (default false). Raises ValueError on anything else.
    """
    raw = json.loads(text)
    if not isinstance(raw, list) or not raw:
        raise ValueError("SANDBOX_PARTNERS must be a non-empty JSON list of partner objects")
    partners: list[PartnerAccount] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("each SANDBOX_PARTNERS entry must be an object")
        client_id = item.get("client_id")
        secret = item.get("client_secret")
        if not isinstance(client_id, str) or not client_id or not isinstance(secret, str) or not secret:
            raise ValueError("each SANDBOX_PARTNERS entry needs non-empty client_id and client_secret strings")
        partners.append(
            PartnerAccount(
                client_id=client_id,
                client_secret=secret,
                name=str(item.get("name", client_id)),
                payment_configured=bool(item.get("payment_configured", True)),
                suspended=bool(item.get("suspended", False)),
            )
        )
    ids = [p.client_id for p in partners]
    if len(set(ids)) != len(ids):
        raise ValueError("SANDBOX_PARTNERS has duplicate client_id values")
    return tuple(partners)


class AccountDirectory:
    """Read-only lookup of partner accounts."""

    def __init__(self, partners: tuple[PartnerAccount, ...]) -> None:
        self._by_id = {p.client_id: p for p in partners}

    def get(self, client_id: str) -> PartnerAccount | None:
        return self._by_id.get(client_id)

    def all(self) -> list[PartnerAccount]:
        return list(self._by_id.values())

    def authenticate(self, client_id: str, client_secret: str) -> PartnerAccount:
        """Check credentials; suspension is reported only to callers who know the secret."""
        account = self._by_id.get(client_id)
        # compare_digest even for unknown ids, so timing does not reveal which ids exist.
        expected = account.client_secret if account else "\x00unknown-partner"
        if not hmac.compare_digest(expected.encode(), client_secret.encode()) or account is None:
            raise ApiError("INVALID_CREDENTIALS")
        if account.suspended:
            raise ApiError("ACCOUNT_SUSPENDED")
        return account
