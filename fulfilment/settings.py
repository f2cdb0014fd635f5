"""Configuration from environment variables, validated once at start-up.

Every process (workers, scheduler, CLI) reads the same variables; `.env.example`
lists them all.  A missing or malformed value stops start-up with a message that
names the variable, instead of failing later in the middle of a purchase.  A CLI
command reads only the parts it uses (DatabaseSettings, BrokerSettings, ...), so it
neither needs nor names the variables of the others.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal, TypeVar

from pydantic import AnyUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A step's partner calls end this long before its claim lease does, leaving time to record the answer.
# Each call's deadline is hard (fulfilment/partners/deadline.py: every socket operation and every
# chunk of an answer, every retry and wait included), so a step's partner calls, retries included,
# last at most STEP_DEADLINE_SECONDS; the margin covers the last socket operation's overrun
# (milliseconds) and the fenced write of the answer.
LEASE_MARGIN_SECONDS = 5.0


class SettingsError(RuntimeError):
    """Configuration is missing or malformed; the message names each variable."""


class _FromEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


# Each concern is a class of its own, so that a command validates only what it uses (`fulfil
# migrate` needs DATABASE_URL, `fulfil submit` BROKER_URL, neither the partner secret); Settings
# composes them all for the processes that need everything (workers, the scheduler, health).


class DatabaseSettings(_FromEnvironment):
    """Where state lives."""

    database_url: str = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host:5432/db; "
                              "several hosts (libpq): user:pw@h1:5432,h2:5432/db?target_session_attrs=read-write")
    # What the workers do when Postgres does not confirm commits on a synchronous standby
    # (fulfilment/replication.py; README "Operations"): an order intent on the primary alone is
    # lost by a failover to an asynchronous standby, and that purchase could be ordered twice.
    sync_standby_policy: Literal["ignore", "warn", "require"] = Field(
        default="warn", description="ignore | warn (one line at start, health says so) | require (refuse to start)")

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// or postgresql+psycopg:// URL")
        # psycopg 3 is the driver we ship; normalise the plain scheme to it.
        return multihost_to_query(value.replace("postgresql://", "postgresql+psycopg://", 1))


def multihost_to_query(url: str) -> str:
    """libpq's multi-host form (`user:pw@h1:5432,h2:5433/db`) in SQLAlchemy's (`user:pw@/db?host=h1:5432&host=h2:5433`).

    SQLAlchemy cannot parse commas in a URL's netloc; its psycopg dialect passes repeated
    `host` query parameters to libpq as the same host list.  A one-host URL is returned as it is.
    """
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return url
    path, question, query = tail.partition("?")
    host_params = "&".join(f"host={host}" for host in hosts.split(",") if host)
    query = f"{host_params}&{query}" if query else host_params
    return f"{scheme}{sep}{credentials}{at}/{path}?{query}"


class QueueSettings(_FromEnvironment):
    """How the pipeline's queues are declared (fulfilment/rabbitmq/broker.py); read by every process
    that declares them: workers, the scheduler, `fulfil submit`, `fulfil dlq replay`."""

    # classic by default: one development node gains nothing from quorum queues, and an existing
    # installation's classic queues keep working on upgrade (`fulfil queues migrate` moves them).
    broker_queue_type: Literal["classic", "quorum"] = Field(
        default="classic", description="classic | quorum (a RabbitMQ cluster: replicated, Raft)")
    broker_delivery_limit: int = Field(
        default=20, ge=1, le=1000,
        description="quorum queues: a message delivered this many times without an ack is dead-lettered")


class BrokerSettings(QueueSettings):
    """How work moves."""

    broker_url: str = Field(description="AMQP URL of RabbitMQ, e.g. amqp://user:pw@host:5672/%2F; "
                            "several nodes of a cluster separated by ';'")
    # Optional: RabbitMQ's management HTTP API (the management plugin) of the cluster's nodes, for
    # what AMQP cannot tell: which node leads each quorum queue, which nodes run
    # (fulfilment/rabbitmq/cluster.py; `fulfil health` and the scheduler's gauges).
    broker_management_url: str | None = Field(
        default=None, description="http(s)://user:pw@host:15672 of RabbitMQ's management API; "
        "several nodes separated by ';' (the first that answers is asked)")

    @field_validator("broker_url")
    @classmethod
    def _amqp_only(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(";")]
        if not all(url.startswith(("amqp://", "amqps://")) for url in urls):
            raise ValueError("must be an amqp:// or amqps:// URL (several separated by ';')")
        return ";".join(urls)

    @field_validator("broker_management_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        urls = [url.strip().rstrip("/") for url in value.split(";")]
        if not all(url.startswith(("http://", "https://")) for url in urls):
            raise ValueError("must be an http:// or https:// URL (several separated by ';')")
        return ";".join(urls)


class PartnerSettings(_FromEnvironment):
    """The partners: only workers, `fulfil health` and `fulfil resolve` call them.

    Each partner is switched on by its `*_ENABLED` variable; its other variables are required
    only when it is (TBB is on by default, Ticketmaster off).  Requests for a partner that is not
    enabled are rejected at intake with PARTNER_NOT_ENABLED.
    """

    tbb_enabled: bool = Field(default=True, description="buy through Ticket Buyback")
    tbb_base_url: AnyUrl | None = Field(default=None, description="TBB Partner API base URL (the sandbox locally)")
    tbb_client_id: str | None = Field(default=None, min_length=1)
    tbb_client_secret: SecretStr | None = Field(default=None, min_length=1)
    tbb_connect_timeout: float = Field(default=5.0, gt=0, description="seconds")
    tbb_read_timeout: float = Field(default=20.0, gt=0, description="seconds")
    tbb_max_attempts: int = Field(default=5, ge=1, le=20, description="attempts per idempotent call")
    tbb_max_retry_seconds: float = Field(default=30.0, gt=0, description="total time budget per call")

    tm_enabled: bool = Field(default=False, description="buy through the Ticketmaster Partner API")
    tm_base_url: AnyUrl | None = Field(default=None, description="e.g. https://app.ticketmaster.com/partners/v1")
    tm_secure_render_url: AnyUrl | None = Field(
        default=None, validate_default=True,
        description="SafeTix refresh endpoint; default: on TM_BASE_URL's host, /marketplace/v1/securerender, or "
        "/marketplace-staging/v1/securerender for a pre-production base URL (partners-sandbox/v1)")
    tm_apikey: SecretStr | None = Field(default=None, min_length=1)
    tm_connect_timeout: float = Field(default=5.0, gt=0, description="seconds")
    tm_read_timeout: float = Field(default=20.0, gt=0, description="seconds")
    tm_device_id: str | None = Field(default=None, min_length=1, max_length=50,
                                     description="stable id of this installation, sent as deviceId (at most 50)")
    tm_min_hold_seconds: float = Field(
        default=60.0, ge=0, description="a cart held for less than this is deleted and reserved again")
    tm_unredeemed_days: int = Field(default=3, ge=1, le=30,
                                    description="days_from_purchase when looking an order up among unredeemed ones")
    # The operator's billing identity and payment method (never the buyer's: requests carry none).
    tm_billing_first_name: str | None = None
    tm_billing_last_name: str | None = None
    tm_billing_email: str | None = None
    tm_billing_phone: str | None = None
    tm_billing_address_line1: str | None = None
    tm_billing_city: str | None = None
    tm_billing_region: str | None = None
    tm_billing_postal_code: str | None = None
    tm_billing_country_code: str = "US"
    tm_billing_country_id: str = "840"
    tm_payment_type: str = Field(default="BRAINTREE")
    # Where each payment's card `number` (a Braintree nonce: it pays ONCE) comes from
    # (partners/ticketmaster/payment.py): `request` (each request carries `payment_nonce`),
    # `braintree` (minted per payment from a vaulted payment method), `static` (TM_PAYMENT_NONCE for
    # every payment: only for a sandbox that accepts a nonce twice; a warning at start).
    tm_payment_source: Literal["request", "braintree", "static"] = Field(
        default="request", description="request | braintree | static (sandbox only)")
    tm_payment_nonce: SecretStr | None = Field(
        default=None, description="with TM_PAYMENT_SOURCE=static only: one nonce for every payment")
    tm_payment_cin: SecretStr | None = Field(default=None, description="the card security code, if the method needs one")
    tm_braintree_environment: Literal["sandbox", "production"] = Field(default="sandbox")
    tm_braintree_merchant_id: str | None = Field(default=None, min_length=1)
    tm_braintree_public_key: str | None = Field(default=None, min_length=1)
    tm_braintree_private_key: SecretStr | None = Field(default=None, min_length=1)
    tm_braintree_payment_method_token: SecretStr | None = Field(
        default=None, min_length=1, description="the vaulted payment method each nonce is minted from")
    tm_commit_poll_grace_seconds: float = Field(
        default=3600.0, gt=0, description="a commit's polling URL is polled this long past its cart's hold, "
        "then the purchase is held for a person (the URL kept)")
    tm_unavailable_retry_seconds: float = Field(
        default=300.0, gt=0, description="20001 outside the 00:00-02:00 event-local window (system unavailable): "
        "ask again after this")
    ticket_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting ticket tokens at rest (`fulfil tickets new-key`)")

    @field_validator("tm_secure_render_url")
    @classmethod
    def _secure_render_follows_the_base_url(cls, value: AnyUrl | None, info: ValidationInfo) -> AnyUrl | None:
        base = info.data.get("tm_base_url")
        if value is not None or base is None:
            return value
        from fulfilment.partners.ticketmaster.assumed import secure_render_url

        return AnyUrl(secure_render_url(str(base)))

    @model_validator(mode="after")
    def _enabled_partners_complete(self) -> PartnerSettings:
        missing = [name for name, switch in _REQUIRED_WHEN_ENABLED.items()
                   if getattr(self, switch) and getattr(self, name) is None]
        if missing:
            raise ValueError(_MISSING_FOR_PARTNER + ", ".join(name.upper() for name in missing))
        if self.tm_enabled and self.tm_payment_source == "static" and self.tm_payment_nonce is None:
            raise ValueError(_MISSING_FOR_PARTNER + "TM_PAYMENT_NONCE (TM_PAYMENT_SOURCE=static)")
        if self.tm_enabled and self.tm_payment_source == "braintree":
            lacking = [name.upper() for name in _BRAINTREE if getattr(self, name) is None]
            if lacking:
                raise ValueError(_MISSING_FOR_PARTNER + ", ".join(lacking) + " (TM_PAYMENT_SOURCE=braintree)")
        if self.tm_payment_cin is not None and not self.tm_payment_cin.get_secret_value().strip():
            raise ValueError("TM_PAYMENT_CIN is set but empty: unset it if the payment method needs none")
        if not (self.tbb_enabled or self.tm_enabled):
            raise ValueError("no partner is enabled: set TBB_ENABLED or TM_ENABLED")
        if self.ticket_key is not None:
            from fulfilment.ticket_crypto import check_key

            check_key(self.ticket_key)
        return self

    @property
    def enabled_partners(self) -> tuple[str, ...]:
        return tuple(name for name, switch in PARTNER_SWITCHES.items() if getattr(self, switch))


# Each partner's switch (its *_ENABLED variable).
PARTNER_SWITCHES: dict[str, str] = {"tbb": "tbb_enabled", "ticketmaster": "tm_enabled"}


_MISSING_FOR_PARTNER = "required by an enabled partner but not set: "
# Variable -> the switch that requires it.
_REQUIRED_WHEN_ENABLED: dict[str, str] = {
    **{name: "tbb_enabled" for name in ("tbb_base_url", "tbb_client_id", "tbb_client_secret")},
    **{name: "tm_enabled" for name in (
        "tm_base_url", "tm_apikey", "tm_device_id", "tm_billing_first_name", "tm_billing_last_name",
        "tm_billing_email", "tm_billing_phone", "ticket_key")},
}
_BRAINTREE = ("tm_braintree_merchant_id", "tm_braintree_public_key", "tm_braintree_private_key",
              "tm_braintree_payment_method_token")


def required_when_enabled() -> dict[str, tuple[str, ...]]:
    """{partner: the variables it requires once enabled}, e.g. {"tbb": ("TBB_BASE_URL", ...)}: the
    README's required-settings table is checked against it (tests/unit/test_settings_docs.py)."""
    return {partner: tuple(name.upper() for name, on in _REQUIRED_WHEN_ENABLED.items() if on == switch)
            for partner, switch in PARTNER_SWITCHES.items()}


class PolicySettings(_FromEnvironment):
    """Purchase policy, timing, retries, logging and metrics: every variable has a default."""

    # Purchase policy.
    quote_safety_margin_seconds: float = Field(default=30.0, ge=0)
    max_requotes: int = Field(default=3, ge=0, le=50)
    order_resolve_attempts: int = Field(
        default=10, ge=1, le=100, description="lookups of an unknown order outcome before it needs a person"
    )
    order_resolve_max_interval_seconds: float = Field(
        default=600.0, gt=0, description="longest wait between two lookups (exponential backoff from REDRIVE_AFTER)"
    )
    # Proof-of-absence policy (README, "What proves there is no order"): unset, an order
    # outcome that stays unknown ends in needs_attention.  Set, an operator accepts that
    # the partner's order lookup is complete this long after the quote expired.
    order_absence_grace_seconds: float | None = Field(
        default=None, gt=0,
        description="re-quote an unknown order once its quote expired this long ago and complete lookups "
        "stayed empty (never after QUOTE_ALREADY_CONSUMED); unset: needs_attention instead",
    )
    min_delivery_lead_seconds: float = Field(
        default=3600.0, ge=0, description="no quote or order once the delivery deadline is closer than this; "
        "at least STEP_DEADLINE_SECONDS (a step checks it once, then may send its order until its deadline)"
    )
    step_deadline_seconds: float = Field(
        default=60.0, gt=0,
        description="one overall deadline for a step's partner calls (connect, write, read, auth, retries); "
        "must end before the claim lease",
    )
    payment_pause_seconds: float = Field(default=300.0, gt=0)

    # Timing of next actions (all short: anything longer is scheduled from Postgres).
    claim_lease_seconds: float = Field(default=120.0, gt=0, description="a claimed step is re-driven after this")
    redrive_after_seconds: float = Field(default=60.0, gt=0, description="a lost nudge is re-sent after this")
    transfer_poll_seconds: float = Field(default=300.0, gt=0)
    transfer_poll_min_seconds: float = Field(default=30.0, gt=0)
    # Comma-separated, e.g. DEADLINE_WARNING_HOURS=24,2 (NoDecode: not JSON).
    deadline_warning_hours: Annotated[tuple[float, ...], NoDecode] = Field(default=(24.0, 2.0))
    scheduler_interval_seconds: float = Field(default=5.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1)
    # A frozen, cut-off or half-open scheduler leader loses its lock within about this long and a
    # standby takes over (fulfilment/scheduler/leadership.py).  Must exceed SCHEDULER_INTERVAL_SECONDS.
    scheduler_leader_lease_seconds: float = Field(default=20.0, ge=2, le=3600, description="seconds")

    # Actor retries (dramatiq): short backoff, bounded, see design invariant 7.
    actor_max_retries: int = Field(default=8, ge=0)
    actor_min_backoff_ms: int = Field(default=500, ge=10)
    actor_max_backoff_ms: int = Field(default=30_000, ge=10, le=300_000)
    # A worker that recorded a quote places the order at once, in the same thread, instead of
    # sending place_order through RabbitMQ (workers/runner.py).  Off: every step is a message
    # (e.g. to run separate worker pools per queue).
    order_after_quote_inline: bool = Field(default=True)
    # Likewise, the intake worker that stored a new purchase quotes it at once (and, with the
    # setting above, orders it) instead of sending quote_purchase.  Off: intake only stores.
    quote_after_intake_inline: bool = Field(default=True)

    log_level: str = Field(default="INFO")
    # The scheduler's Prometheus port (0: no metrics server).  Workers use dramatiq_prom_port.
    metrics_port: int = Field(default=9192, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", description="0.0.0.0 where a scraper must reach it")

    # fulfilment.events.unrouted (rabbitmq/outbox.py) keeps the events no consumer queue was bound for,
    # within these bounds (queue arguments); beyond them RabbitMQ discards the oldest.  0: no bound.
    events_unrouted_max_length: int = Field(
        default=100_000, ge=0, description="events kept in fulfilment.events.unrouted; the oldest are dropped beyond")
    events_unrouted_ttl_seconds: float = Field(
        default=604_800.0, ge=0, le=4_294_967, description="an unrouted event is dropped after this long (7 days)")

    @model_validator(mode="after")
    def _step_fits_in_lease(self) -> PolicySettings:
        # The longest a step's partner calls can run, every retry, wait and trickled answer included,
        # is the step's deadline: each call is cut there (fulfilment/partners/deadline.py).
        if self.step_deadline_seconds + LEASE_MARGIN_SECONDS > self.claim_lease_seconds:
            raise ValueError(
                f"STEP_DEADLINE_SECONDS ({self.step_deadline_seconds:g}) must end at least {LEASE_MARGIN_SECONDS:g} s "
                f"before CLAIM_LEASE_SECONDS ({self.claim_lease_seconds:g}): a partner call may not outlive its claim "
                "(the step's calls, retries included, may run until STEP_DEADLINE_SECONDS)"
            )
        return self

    @model_validator(mode="after")
    def _no_order_after_the_delivery_deadline(self) -> PolicySettings:
        # A step checks the delivery deadline once, before its partner calls (flowkit/fencing.py,
        # too_close_to_deadline), then may send its order until the step's deadline: with at least
        # that much lead, an order is never sent after the delivery deadline.
        if self.min_delivery_lead_seconds < self.step_deadline_seconds:
            raise ValueError(
                f"MIN_DELIVERY_LEAD_SECONDS ({self.min_delivery_lead_seconds:g}) must be at least STEP_DEADLINE_SECONDS "
                f"({self.step_deadline_seconds:g}): a step that found the delivery deadline far enough may still send "
                "its order that long after, so an order could reach the partner after the delivery deadline"
            )
        return self

    @field_validator("deadline_warning_hours", mode="before")
    @classmethod
    def _csv_hours(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("deadline_warning_hours")
    @classmethod
    def _hundredths(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # deadline_flags.window_hours is numeric(8,2): hundredths, rounded half up as the scheduler
        # (fulfilment.deadlines.window_hours) and Postgres round them, so 0.333 means 0.33.
        import math
        from decimal import ROUND_HALF_UP, Decimal

        if not all(math.isfinite(hours) and hours < 1_000_000 for hours in value):
            raise ValueError("each window must be a finite number of hours below 1000000")
        rounded = (float(Decimal(str(hours)).quantize(Decimal("0.01"), ROUND_HALF_UP)) for hours in value)
        return tuple(dict.fromkeys(rounded))

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level


class ConsoleSettings(_FromEnvironment):
    """The operators' web console (`fulfil console`, fulfilment/console/): only that process reads these.

    Users come from CONSOLE_USERS and/or the file CONSOLE_USERS_FILE: `name:role:hash` entries
    (role `viewer` or `operator`; hash from `fulfil console hash-password`), separated by commas
    or newlines.  The console refuses to start without at least one user.
    """

    console_host: str = Field(default="127.0.0.1", min_length=1,
                              description="address to listen on; anything but loopback needs TLS in front")
    console_port: int = Field(default=8090, ge=1, le=65535)
    console_users: str = Field(default="", description="name:role:hash entries, comma-separated")
    console_users_file: str | None = Field(default=None, description="a file of name:role:hash lines (# comments)")
    console_session_secret: SecretStr = Field(
        min_length=32, description="signs the session cookie: at least 32 random characters"
    )
    console_session_max_age_seconds: int = Field(
        default=28_800, ge=1, le=30 * 86_400, description="a session ends this long after its login"
    )
    console_secure_cookies: bool = Field(
        default=False, description="mark cookies Secure (set when the console is served over HTTPS)"
    )
    console_login_concurrency: int = Field(
        default=2, ge=1, le=16,
        description="password checks run at once (each scrypt check takes about 32 MiB); more wait, up to "
                    "CONSOLE_LOGIN_QUEUE, and one per client address at a time",
    )
    console_login_queue: int = Field(
        default=16, ge=0, le=1000, description="logins that may wait for a password check; more are answered 503"
    )
    console_login_failures_per_address: int = Field(
        default=30, ge=1, le=10_000,
        description="failed logins from one client address in 5 minutes before it must wait (whatever the names)",
    )


class Settings(DatabaseSettings, BrokerSettings, PartnerSettings, PolicySettings):
    """Everything: what workers, the scheduler and `fulfil health` read (`get_settings()`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


def describe_errors(error: ValidationError) -> str:
    """Turn pydantic's report into one line per variable, never echoing values (they may be secrets)."""
    lines = []
    for item in error.errors():
        message = str(item.get("ctx", {}).get("error", ""))
        if message.startswith(_MISSING_FOR_PARTNER):
            lines += [f"  {name}: is required but not set (its partner is enabled)"
                      for name in message.removeprefix(_MISSING_FOR_PARTNER).split(", ")]
            continue
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        reason = "is required but not set" if item["type"] == "missing" else item["msg"]
        lines.append(f"  {name}: {reason}")
    return "invalid configuration:\n" + "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        report = describe_errors(error)
    # The partners' cross-field check runs only once every field is valid: name its variables too,
    # so that one run lists everything to fix.
    try:
        PartnerSettings()
    except ValidationError as partner_error:
        extra = [line for line in describe_errors(partner_error).splitlines()[1:] if line not in report]
        report = "\n".join([report, *extra])
    raise SettingsError(report)


_Part = TypeVar("_Part", DatabaseSettings, QueueSettings, BrokerSettings, PartnerSettings, PolicySettings)


def _part(part: type[_Part]) -> _Part:
    """One concern's settings, validating (and naming in errors) only its own variables.

    Where the whole configuration is valid the cached Settings serves (it is every part):
    workers and the scheduler pay nothing.  Otherwise only this part is read, so `fulfil
    migrate` works without the partner's variables, and names DATABASE_URL alone if it is bad.
    """
    try:
        return get_settings()
    except SettingsError:
        pass
    try:
        return part()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None


def get_database_settings() -> DatabaseSettings:
    return _part(DatabaseSettings)


def get_broker_settings() -> BrokerSettings:
    return _part(BrokerSettings)


def get_queue_settings() -> QueueSettings:
    return _part(QueueSettings)


def get_partner_settings() -> PartnerSettings:
    return _part(PartnerSettings)


def get_policy_settings() -> PolicySettings:
    return _part(PolicySettings)


def get_console_settings() -> ConsoleSettings:
    """Not part of Settings: only `fulfil console` needs (and validates) these."""
    try:
        return ConsoleSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
