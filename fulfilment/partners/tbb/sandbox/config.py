"""Sandbox configuration.

``SandboxConfig`` is the immutable start-up configuration. The knobs that tests change while the
server runs (TTLs, lifecycle policy, payment error code) are copied into a mutable
``RuntimeSettings`` that ``PATCH /admin/config`` edits and ``POST /admin/reset`` restores.

Environment variables read by ``SandboxConfig.from_env()`` (all optional):

=================================  ==========================================================
SANDBOX_QUOTE_TTL_SECONDS          float, default 3600 (fractional allowed, e.g. 1.5)
SANDBOX_TOKEN_TTL_SECONDS          float, default 3600
SANDBOX_TRANSFER_AFTER_SECONDS     float, default 30; ``none`` disables simulated transfers
SANDBOX_TRANSFER_OUTCOME           ``complete``/``expire``/``cancel`` or JSON weights object
SANDBOX_SEATS_PER_ROW              int, default 20
SANDBOX_SEED                       int, default 0 (fault and outcome randomness)
SANDBOX_TOKEN_PREFIX               prefix of access tokens, default ``tbb_``
SANDBOX_PAYMENT_ERROR_CODE         PAYMENT_NOT_CONFIGURED (default) or PAYOUT_METHOD_NOT_CONFIGURED
SANDBOX_PARTNERS                   JSON list of {client_id, client_secret, name?,
                                   payment_configured?, suspended?}; replaces the defaults
SANDBOX_FAULTS                     JSON object {endpoint: rule} installed at start-up
=================================  ==========================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fulfilment.partners.sandbox_kit.config import Overridable, check_patch

from .accounts import DEFAULT_PARTNERS, PartnerAccount, partners_from_json
from .lifecycle import OutcomePolicy, normalise_policy

PAYMENT_ERROR_CODES = ("PAYMENT_NOT_CONFIGURED", "PAYOUT_METHOD_NOT_CONFIGURED")


@dataclass(frozen=True)
class SandboxConfig(Overridable):
    partners: tuple[PartnerAccount, ...] = DEFAULT_PARTNERS
    token_ttl_seconds: float = 3600.0
    quote_ttl_seconds: float = 3600.0
    # None: orders stay awaiting_transfer until their deadline or an admin override.
    transfer_after_seconds: float | None = 30.0
    transfer_outcome: OutcomePolicy = "complete"
    seats_per_row: int = 20
    seed: int = 0
    # Prefix of issued access tokens: tests choose a distinctive one to scan logs for leaks.
    token_prefix: str = "tbb_"
    # The docs' newer revision renamed the code; a client must treat both the same.
    payment_error_code: str = "PAYMENT_NOT_CONFIGURED"
    # Admin API answers only loopback peers (and Starlette's TestClient) unless disabled.
    admin_loopback_only: bool = True
    # Fault rules installed at start-up, same shape as PUT /admin/faults.
    faults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token_ttl_seconds <= 0 or self.quote_ttl_seconds <= 0:
            raise ValueError("TTLs must be positive")
        if self.transfer_after_seconds is not None and self.transfer_after_seconds < 0:
            raise ValueError("transfer_after_seconds must be >= 0 or None")
        if self.seats_per_row < 1:
            raise ValueError("seats_per_row must be >= 1")
        if self.payment_error_code not in PAYMENT_ERROR_CODES:
            raise ValueError(f"payment_error_code must be one of {PAYMENT_ERROR_CODES}")
        normalise_policy(self.transfer_outcome)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "SANDBOX_QUOTE_TTL_SECONDS" in env:
            values["quote_ttl_seconds"] = float(env["SANDBOX_QUOTE_TTL_SECONDS"])
        if "SANDBOX_TOKEN_TTL_SECONDS" in env:
            values["token_ttl_seconds"] = float(env["SANDBOX_TOKEN_TTL_SECONDS"])
        if "SANDBOX_TRANSFER_AFTER_SECONDS" in env:
            raw = env["SANDBOX_TRANSFER_AFTER_SECONDS"].strip().lower()
            values["transfer_after_seconds"] = None if raw in ("", "none", "never") else float(raw)
        if "SANDBOX_TRANSFER_OUTCOME" in env:
            raw = env["SANDBOX_TRANSFER_OUTCOME"].strip()
            values["transfer_outcome"] = json.loads(raw) if raw.startswith("{") else raw
        if "SANDBOX_SEATS_PER_ROW" in env:
            values["seats_per_row"] = int(env["SANDBOX_SEATS_PER_ROW"])
        if "SANDBOX_SEED" in env:
            values["seed"] = int(env["SANDBOX_SEED"])
        if env.get("SANDBOX_TOKEN_PREFIX"):
            values["token_prefix"] = env["SANDBOX_TOKEN_PREFIX"]
        if "SANDBOX_PAYMENT_ERROR_CODE" in env:
            values["payment_error_code"] = env["SANDBOX_PAYMENT_ERROR_CODE"].strip()
        if env.get("SANDBOX_PARTNERS"):
            values["partners"] = partners_from_json(env["SANDBOX_PARTNERS"])
        if env.get("SANDBOX_FAULTS"):
            values["faults"] = json.loads(env["SANDBOX_FAULTS"])
        values.update(overrides)
        return cls(**values)


@dataclass
class RuntimeSettings:
    """The subset of the configuration that may change while the sandbox runs."""

    quote_ttl_seconds: float
    token_ttl_seconds: float
    transfer_after_seconds: float | None
    transfer_outcome: OutcomePolicy
    payment_error_code: str

    @classmethod
    def from_config(cls, config: SandboxConfig) -> RuntimeSettings:
        outcome = config.transfer_outcome
        return cls(
            quote_ttl_seconds=float(config.quote_ttl_seconds),
            token_ttl_seconds=float(config.token_ttl_seconds),
            transfer_after_seconds=None if config.transfer_after_seconds is None else float(config.transfer_after_seconds),
            transfer_outcome=dict(outcome) if isinstance(outcome, Mapping) else outcome,
            payment_error_code=config.payment_error_code,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "quote_ttl_seconds": self.quote_ttl_seconds,
            "token_ttl_seconds": self.token_ttl_seconds,
            "transfer_after_seconds": self.transfer_after_seconds,
            "transfer_outcome": self.transfer_outcome,
            "payment_error_code": self.payment_error_code,
        }

    def patched(self, patch: Mapping[str, Any]) -> RuntimeSettings:
        """Return a validated copy with ``patch`` applied; ValueError names the offending key."""
        check_patch(patch, self.to_json())
        updated = RuntimeSettings(**self.to_json())
        for key in ("quote_ttl_seconds", "token_ttl_seconds"):
            if key in patch:
                setattr(updated, key, _positive_number(key, patch[key]))
        if "transfer_after_seconds" in patch:
            value = patch["transfer_after_seconds"]
            if value is None:
                updated.transfer_after_seconds = None
            else:
                number = _number("transfer_after_seconds", value)
                if number < 0:
                    raise ValueError("transfer_after_seconds must be >= 0 or null")
                updated.transfer_after_seconds = number
        if "transfer_outcome" in patch:
            normalise_policy(patch["transfer_outcome"])
            outcome = patch["transfer_outcome"]
            updated.transfer_outcome = dict(outcome) if isinstance(outcome, Mapping) else outcome
        if "payment_error_code" in patch:
            if patch["payment_error_code"] not in PAYMENT_ERROR_CODES:
                raise ValueError(f"payment_error_code must be one of {PAYMENT_ERROR_CODES}")
            updated.payment_error_code = patch["payment_error_code"]
        return updated


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _positive_number(key: str, value: Any) -> float:
    number = _number(key, value)
    if number <= 0:
        raise ValueError(f"{key} must be > 0")
    return number
