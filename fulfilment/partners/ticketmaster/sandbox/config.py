"""Sandbox configuration.

``SandboxConfig`` is the immutable start-up configuration; the knobs tests change while the server
runs are copied into a mutable ``RuntimeSettings`` that ``PATCH /admin/config`` edits and
``POST /admin/reset`` restores. Defaults come from ``assumed.py``.

Environment variables read by ``SandboxConfig.from_env()`` (all optional):

====================================  =============================================================
TM_SANDBOX_APIKEYS                    comma-separated accepted apikeys (default ``tm-sandbox-apikey``)
TM_SANDBOX_HOLD_TIME_SECONDS          cart hold after a reserve (default 300; fractions allowed)
TM_SANDBOX_PAYMENT_EXTENSION_SECONDS  seconds a payment adds to the hold (default 150)
TM_SANDBOX_HOLD_TIME_VARIANCE_SECONDS seconds >= 0 (default 0): a new cart's hold is shortened by a
                                      seeded 0..N s, so a reserve answers less than the configured hold
TM_SANDBOX_QUOTA_PER_HOUR             requests per apikey per hour (default 3600)
TM_SANDBOX_POLLING_RATE               0..1 share of polling-enabled calls answered 202 (default 0)
TM_SANDBOX_POLLING_WAIT_SECONDS       ``wait`` of a polling answer, integer (default 4)
TM_SANDBOX_POLLING_REPEATS            extra 202s a polling URL answers after ``wait`` (default 0)
TM_SANDBOX_CONCURRENCY_POLICY         ``reject`` (default) or ``count``
TM_SANDBOX_MONEY_FORMAT               ``number`` (default, seed 003) or ``string``
TM_SANDBOX_CAPTCHA_REQUIRED           ``true``/``false`` (default false)
TM_SANDBOX_NITERUN                    ``auto`` (default: by the event's local time), ``on``, ``off``
TM_SANDBOX_UNREDEEMED_LAG_SECONDS     seconds >= 0 (default 0): ``GET /partners/v1/orders/unredeemed``
                                      leaves out orders created less than that long ago (sandbox
                                      clock), like a list that lags behind commits
TM_SANDBOX_POLLING_TTL_SECONDS        seconds >= 0 (default 0: never): a polling URL answers 410 once its
                                      job is that old (sandbox clock)
TM_SANDBOX_ONE_TIME_NONCES            ``true``/``false`` (default false): a payment nonce pays once only
TM_SANDBOX_UNREDEEMED_HIDE_RATE       0..1 (default 0): share of orders (chosen at commit, seeded) that
                                      never appear in the unredeemed list; 1: none ever does
TM_SANDBOX_SAFETIX_DELAYS             JSON object {event_id or "*": {"signal": "service_level"|"date",
                                      "date": "YYYY-MM-DD" and/or "until": ISO instant}}: SafeTix
                                      delivery delays signalled the quiet ways (``safetix.py``)
TM_SANDBOX_EMPTY_BARCODE_EVENTS       comma-separated event ids or ``*``: order management answers their
                                      SafeTix tickets with ``barcode_id: ""`` (seed 003's example)
TM_SANDBOX_BEST_AVAILABLE_SWAP_RATE   0..1 (default 0): share of reserves naming a place with
                                      ``accept_best_available`` true that get another section/row
TM_SANDBOX_SEED                       int, default 0 (polling and fault randomness)
TM_SANDBOX_SEATS_PER_ROW              int >= 1: seats per row of the test and barcode-only events
                                      (default: as catalogued, 10 and 12), for load and chaos runs
TM_SANDBOX_CLOCK_START                ISO-8601 instant with offset: the sandbox clock starts there
TM_SANDBOX_FAULTS                     JSON object {endpoint: rule}, as ``PUT /admin/faults``
====================================  =============================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc
from fulfilment.partners.sandbox_kit.config import Overridable, check_patch

from . import assumed
from .niterun import MODES as NITERUN_MODES
from .safetix import DELAY_SIGNALS


@dataclass(frozen=True)
class SandboxConfig(Overridable):
    apikeys: tuple[str, ...] = (assumed.DEFAULT_APIKEY,)
    hold_time_seconds: float = assumed.HOLD_TIME_SECONDS
    payment_extension_seconds: float = assumed.PAYMENT_EXTENSION_SECONDS
    hold_time_variance_seconds: float = assumed.HOLD_TIME_VARIANCE_SECONDS
    quota_per_hour: int = assumed.QUOTA_PER_HOUR
    polling_rate: float = assumed.POLLING_RATE
    polling_wait_seconds: int = assumed.POLLING_WAIT_SECONDS
    polling_repeats: int = assumed.POLLING_REPEATS
    concurrency_policy: str = assumed.CONCURRENCY_POLICY
    money_format: str = assumed.MONEY_FORMAT
    captcha_required: bool = assumed.CAPTCHA_REQUIRED_DEFAULT
    unredeemed_lag_seconds: float = assumed.UNREDEEMED_LAG_SECONDS
    polling_ttl_seconds: float = assumed.POLLING_TTL_SECONDS
    one_time_nonces: bool = assumed.ONE_TIME_NONCES
    unredeemed_hide_rate: float = assumed.UNREDEEMED_HIDE_RATE
    safetix_delays: Mapping[str, Any] = field(default_factory=dict)
    empty_barcode_events: tuple[str, ...] = ()
    best_available_swap_rate: float = assumed.BEST_AVAILABLE_SWAP_RATE
    niterun_mode: str = "auto"
    seed: int = 0
    seats_per_row: int | None = None  # the test and barcode-only events' rows (catalogue.py); None: as catalogued
    # None: the sandbox clock is the system clock (plus whatever the admin API moves it by).
    clock_start: datetime | None = None
    # Admin API answers only loopback peers (and Starlette's TestClient) unless disabled.
    admin_loopback_only: bool = True
    faults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        RuntimeSettings.from_config(self)  # validates the shared knobs
        if self.seats_per_row is not None and self.seats_per_row < 1:
            raise ValueError("seats_per_row must be at least 1")
        if self.niterun_mode not in NITERUN_MODES:
            raise ValueError(f"niterun_mode must be one of {NITERUN_MODES}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        readers: dict[str, tuple[str, Any]] = {
            "TM_SANDBOX_HOLD_TIME_SECONDS": ("hold_time_seconds", float),
            "TM_SANDBOX_PAYMENT_EXTENSION_SECONDS": ("payment_extension_seconds", float),
            "TM_SANDBOX_HOLD_TIME_VARIANCE_SECONDS": ("hold_time_variance_seconds", float),
            "TM_SANDBOX_QUOTA_PER_HOUR": ("quota_per_hour", int),
            "TM_SANDBOX_POLLING_RATE": ("polling_rate", float),
            "TM_SANDBOX_POLLING_WAIT_SECONDS": ("polling_wait_seconds", int),
            "TM_SANDBOX_POLLING_REPEATS": ("polling_repeats", int),
            "TM_SANDBOX_CONCURRENCY_POLICY": ("concurrency_policy", str.strip),
            "TM_SANDBOX_MONEY_FORMAT": ("money_format", str.strip),
            "TM_SANDBOX_NITERUN": ("niterun_mode", str.strip),
            "TM_SANDBOX_SEED": ("seed", int),
            "TM_SANDBOX_SEATS_PER_ROW": ("seats_per_row", int),
            "TM_SANDBOX_UNREDEEMED_LAG_SECONDS": ("unredeemed_lag_seconds", float),
            "TM_SANDBOX_POLLING_TTL_SECONDS": ("polling_ttl_seconds", float),
            "TM_SANDBOX_UNREDEEMED_HIDE_RATE": ("unredeemed_hide_rate", float),
            "TM_SANDBOX_BEST_AVAILABLE_SWAP_RATE": ("best_available_swap_rate", float),
        }
        for name, (key, convert) in readers.items():
            if env.get(name, "").strip():
                values[key] = convert(env[name])
        for name, key in (("TM_SANDBOX_APIKEYS", "apikeys"), ("TM_SANDBOX_EMPTY_BARCODE_EVENTS", "empty_barcode_events")):
            if env.get(name, "").strip():
                values[key] = tuple(k.strip() for k in env[name].split(",") if k.strip())
        for name, key in (("TM_SANDBOX_CAPTCHA_REQUIRED", "captcha_required"),
                          ("TM_SANDBOX_ONE_TIME_NONCES", "one_time_nonces")):
            if env.get(name, "").strip():
                values[key] = env[name].strip().lower() in ("1", "true", "yes")
        if env.get("TM_SANDBOX_CLOCK_START", "").strip():
            start = parse_iso_utc(env["TM_SANDBOX_CLOCK_START"].strip())
            if start is None:
                raise ValueError("TM_SANDBOX_CLOCK_START must be an ISO-8601 instant with an offset")
            values["clock_start"] = start
        for name, key in (("TM_SANDBOX_FAULTS", "faults"), ("TM_SANDBOX_SAFETIX_DELAYS", "safetix_delays")):
            if env.get(name, "").strip():
                values[key] = json.loads(env[name])
        values.update(overrides)
        return cls(**values)


@dataclass
class RuntimeSettings:
    """The part of the configuration that ``PATCH /admin/config`` may change while running."""

    apikeys: list[str]
    hold_time_seconds: float
    payment_extension_seconds: float
    quota_per_hour: int
    polling_rate: float
    polling_wait_seconds: int
    polling_repeats: int
    concurrency_policy: str
    money_format: str
    captcha_required: bool
    unredeemed_lag_seconds: float
    polling_ttl_seconds: float
    one_time_nonces: bool
    unredeemed_hide_rate: float
    safetix_delays: dict[str, dict[str, str]]
    empty_barcode_events: list[str]
    hold_time_variance_seconds: float
    best_available_swap_rate: float

    @classmethod
    def from_config(cls, config: SandboxConfig) -> RuntimeSettings:
        settings = cls(
            apikeys=list(config.apikeys), hold_time_seconds=float(config.hold_time_seconds),
            payment_extension_seconds=float(config.payment_extension_seconds), quota_per_hour=config.quota_per_hour,
            polling_rate=float(config.polling_rate), polling_wait_seconds=config.polling_wait_seconds,
            polling_repeats=config.polling_repeats, concurrency_policy=config.concurrency_policy,
            money_format=config.money_format, captcha_required=config.captcha_required,
            unredeemed_lag_seconds=config.unredeemed_lag_seconds, polling_ttl_seconds=config.polling_ttl_seconds,
            one_time_nonces=config.one_time_nonces, unredeemed_hide_rate=config.unredeemed_hide_rate,
            safetix_delays=dict(config.safetix_delays), empty_barcode_events=list(config.empty_barcode_events),
            hold_time_variance_seconds=float(config.hold_time_variance_seconds),
            best_available_swap_rate=float(config.best_available_swap_rate),
        )
        return settings.patched(settings.to_json())  # one validation path

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def patched(self, patch: Mapping[str, Any]) -> RuntimeSettings:
        """A validated copy with ``patch`` applied; ValueError names the offending key."""
        check_patch(patch, self.to_json())
        values = {**self.to_json(), **patch}
        keys = values["apikeys"]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError("apikeys must be a non-empty list of non-empty strings")
        return RuntimeSettings(
            apikeys=[k.strip() for k in keys],
            hold_time_seconds=_number(values, "hold_time_seconds", low=0.001),
            payment_extension_seconds=_number(values, "payment_extension_seconds", low=0.0),
            quota_per_hour=_integer(values, "quota_per_hour", low=1),
            polling_rate=_number(values, "polling_rate", low=0.0, high=1.0),
            polling_wait_seconds=_integer(values, "polling_wait_seconds", low=0),
            polling_repeats=_integer(values, "polling_repeats", low=0),
            concurrency_policy=_choice(values, "concurrency_policy", assumed.CONCURRENCY_POLICIES),
            money_format=_choice(values, "money_format", assumed.MONEY_FORMATS),
            captcha_required=_boolean(values, "captcha_required"),
            unredeemed_lag_seconds=_number(values, "unredeemed_lag_seconds", low=0.0),
            polling_ttl_seconds=_number(values, "polling_ttl_seconds", low=0.0),
            one_time_nonces=_boolean(values, "one_time_nonces"),
            unredeemed_hide_rate=_number(values, "unredeemed_hide_rate", low=0.0, high=1.0),
            safetix_delays=_safetix_delays(values["safetix_delays"]),
            empty_barcode_events=_strings(values, "empty_barcode_events"),
            hold_time_variance_seconds=_number(values, "hold_time_variance_seconds", low=0.0),
            best_available_swap_rate=_number(values, "best_available_swap_rate", low=0.0, high=1.0),
        )


def _number(values: Mapping[str, Any], key: str, low: float, high: float | None = None) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{key} must be >= {low}" + (f" and <= {high}" if high is not None else ""))
    return float(value)


def _integer(values: Mapping[str, Any], key: str, low: int) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}")
    return value


def _choice(values: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = values[key]
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}")
    return str(value)


def _safetix_delays(raw: Any) -> dict[str, dict[str, str]]:
    """``{event_id or "*": {"signal", "date" and/or "until"}}``, checked (event ids: ``SandboxState``)."""
    shape = 'safetix_delays must be an object {event_id or "*": {"signal", "date" and/or "until"}}'
    if not isinstance(raw, Mapping):
        raise ValueError(shape)
    delays: dict[str, dict[str, str]] = {}
    for key, entry in raw.items():
        if not isinstance(entry, Mapping) or set(entry) - {"signal", "date", "until"}:
            raise ValueError(f"{shape}; {key!r} has other fields")
        if entry.get("signal") not in DELAY_SIGNALS:
            raise ValueError(f"safetix_delays[{key!r}].signal must be one of {list(DELAY_SIGNALS)}")
        if "date" not in entry and "until" not in entry:
            raise ValueError(f"safetix_delays[{key!r}] needs a date (YYYY-MM-DD) or an until (ISO instant)")
        if "date" in entry and not _is_date(entry["date"]):
            raise ValueError(f"safetix_delays[{key!r}].date must be a date YYYY-MM-DD")
        if "until" in entry and (not isinstance(entry["until"], str) or parse_iso_utc(entry["until"]) is None):
            raise ValueError(f"safetix_delays[{key!r}].until must be an ISO-8601 instant with an offset")
        delays[str(key)] = {name: str(value) for name, value in entry.items()}
    return delays


def _strings(values: Mapping[str, Any], key: str) -> list[str]:
    value = values[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError(f"{key} must be a list of non-empty strings")
    return [item.strip() for item in value]


def _is_date(value: Any) -> bool:
    try:
        return isinstance(value, str) and date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def _boolean(values: Mapping[str, Any], key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value
