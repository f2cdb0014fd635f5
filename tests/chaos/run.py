"""Run purchases at volume while killing workers, taking the servers away and injecting faults.

Sequence:
1. a private Postgres + RabbitMQ pair (servers.py), a fresh database and vhost, the sandbox
   with a distinctive client secret and token prefix, `dramatiq workers`, two `fulfil scheduler`
   processes (a leader and a standby, SCHEDULER_LEADER_LEASE_SECONDS=5), and a consumer queue
   bound to `fulfilment.events`;
2. partner faults: >= 20 % 5xx (JSON and plain bodies), 429s with Retry-After, latency, short
   quote TTLs, "commit the order then drop the connection", QUOTE_EXPIRED checked before
   QUOTE_ALREADY_CONSUMED, order lookups that lag behind new orders (and sometimes miss one,
   say "on another page" or answer a malformed body), and now and then a token fetch that
   stalls for 3 s;
3. two thirds of the N purchases submitted; while they run, worker processes are SIGKILLed at
   random moments (a supervisor restarts them) and RabbitMQ is restarted once; then Postgres
   is stopped for `postgres_outage` seconds while the last third is submitted (submission
   needs only RabbitMQ); once it is back, the scheduler leader is frozen (SIGSTOP) for
   `freeze_leader` seconds: the standby must take over, and the woken leader step down;
4. faults cleared, the pipeline left to finish, then every check of checks.py.

A share of the purchases (`tm_share`) buys through the Ticketmaster sandbox (enabled beside TBB in
the same workers), under its own faults: 5xx on every call, forced polling (202s parked in Postgres
and continued by whoever claims next, across the kills), commits that take effect and then lose their
connection, commits answered 5xx and processed seconds later, an unredeemed-orders list lagging
behind commits, a quota exhausted for a few seconds now and then while TM traffic flows (429 until
Ratelimit-Expiry; sooner again until one request met it, so a short run sees it too); the
checks count its orders per purchase from the sandbox's records, and report both partners' rows.

The production default is kept: ORDER_ABSENCE_GRACE_SECONDS is unset, so an order outcome that
nothing can settle ends in needs_attention (with its evidence), never in a re-quote.  An order
request answered 5xx is re-sent with the same quote within the resolve step while the 8 s quote
lives, so such purchases are rare; `--absence-policy` runs with the operator's policy instead.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.chaos import servers as chaos_servers

if TYPE_CHECKING:
    from tests.support.processes import ManagedProcess

FINAL_OR_HELD = ("transfer_complete", "transfer_expired", "cancelled", "failed", "stalled", "needs_attention",
                 "tickets_issued")
LEADER_LEASE_SECONDS = 5
RESOLVE_INTERVAL = 5  # ORDER_RESOLVE_MAX_INTERVAL_SECONDS
TOKEN_STALL_MS = 3000


@dataclass
class ChaosConfig:
    purchases: int = 1000
    kill_every: tuple[float, float] = (8.0, 20.0)  # seconds between worker kills, drawn uniformly
    timeout: float = 1800.0  # for the chaos phase (at most), after submission
    settle: float = 420.0  # then, faults off: how long everything may take to finish (at most)
    port_block: int = 22  # private servers on ports 22432, 22672, ...
    seed: int = 1
    processes: int = 2
    threads: int = 4
    postgres_outage: float = 180.0  # seconds Postgres is down, while the last third is submitted
    outage_share: float = 1 / 3  # of the purchases, submitted while Postgres is down
    freeze_leader: float = 90.0  # seconds the scheduler leader is stopped (SIGSTOP)
    lookup_lag: float = 6.0  # order lookups miss orders younger than this (sandbox clock)
    token_stall_every: float = 30.0  # seconds between arming two stalled token fetches
    # ORDER_ABSENCE_GRACE_SECONDS (README, "What proves there is no order"): off, as in production
    # (an unprovable outcome ends in needs_attention).  On, such a purchase re-quotes once its quote
    # expired `absence_grace` ago and a complete lookup is empty.
    absence_policy: bool = False
    tm_share: float = 0.2  # of the purchases, through Ticketmaster
    tm_quota_every: float = 30.0  # seconds between two exhaustions of the TM quota (429s) ...
    tm_quota_seconds: float = 12.0  # ... each lasting this long: beyond a step's deadline, so purchases park

    @property
    def absence_grace(self) -> float | None:
        """Longer than the lookup lag and than the Postgres outage, with 30 s (several lookups) to spare:
        an order that exists is found before the grace ends, unless every one of those lookups fails."""
        return max(self.lookup_lag, self.postgres_outage) + 30 if self.absence_policy else None

    @property
    def resolve_attempts(self) -> int:
        """ORDER_RESOLVE_ATTEMPTS: lookups every 5 s at most, enough to outlast the grace (or the lag)."""
        return min(100, math.ceil((self.absence_grace or self.lookup_lag) / RESOLVE_INTERVAL) + 20)


@dataclass
class ChaosResult:
    config: dict[str, Any]
    seconds: float = 0.0
    kills: int = 0
    restarts: list[str] = field(default_factory=list)
    faults_injected: dict[str, int] = field(default_factory=dict)
    tm_faults_injected: dict[str, int] = field(default_factory=dict)
    tm_counts: dict[str, Any] = field(default_factory=dict)
    tm_quota_exhaustions: int = 0
    partner_requests: int = 0
    token_stalls_armed: int = 0
    # Postgres stopped while purchases were submitted
    postgres_down_seconds: float = 0.0
    submitted_while_down: int = 0
    # the scheduler leader frozen with SIGSTOP
    frozen_leader: str = ""
    frozen_seconds: float = 0.0
    standby_took_over_after: float | None = None  # seconds from SIGSTOP to the standby's "leading"
    woken_leader_stepped_down: bool = False
    verdict: dict[str, Any] = field(default_factory=dict)
    ok: bool = False

    @property
    def scenario_complete(self) -> bool:
        return (self.restarts == ["rabbitmq", "postgres"] and self.kills > 0 and self.submitted_while_down > 0
                and bool(self.frozen_leader) and self.standby_took_over_after is not None
                and self.woken_leader_stepped_down)


def fault_rules(config: ChaosConfig, *, stall_tokens: int = 0) -> dict[str, Any]:
    """The sandbox's fault rules. A rule for an endpoint replaces the `*` rule, so each repeats it."""
    common = {"error_rate": 0.25, "rate_limit_rate": 0.05, "retry_after_seconds": 0.3, "latency_ms": 5}
    rules: dict[str, Any] = {
        "*": common,
        "create_order": {**common, "latency_ms": 20, "drop_after_commit_rate": 0.1, "expiry_checked_first": True},
        "list_orders": {**common, "lookup_lag_seconds": config.lookup_lag,
                        # A miss can only hide an order that exists (few do: drops), hence the higher rate.
                        "lookup_miss_rate": 0.1, "lookup_has_more_rate": 0.03, "lookup_malformed_rate": 0.03,
                        # Lookups are few (only unknown outcomes need one): the first one surely announces
                        # another page, so every run meets an unreliable lookup, not only a lucky draw.
                        "lookup_has_more_next": 1},
        "auth_token": {**common, "stall_ms": TOKEN_STALL_MS},
    }
    if stall_tokens:
        rules["auth_token"]["stall_next"] = stall_tokens
    return rules


# The TM sandbox's faults (fulfilment/partners/ticketmaster/sandbox/faults.py): a rule for an endpoint
# replaces the `*` rule, so each repeats it.  Commits fail less often than the rest: a 5xx on a commit
# proves nothing, so it ends in needs_attention (with its evidence) unless the order is found.
def tm_fault_rules() -> dict[str, Any]:
    common = {"error_rate": 0.1, "latency_ms": 5}
    # late: answered 5xx, processed 3 s later (an order appears after the answer said nothing).
    # The real API's unkindness too (issue 16): polls of a commit that fail (their URL stays alive),
    # commits answered 4 s after they were made, the deprecated event details refused.
    return {"*": common, "commit": {"error_rate": 0.02, "drop_rate": 0.05, "late_rate": 0.03, "late_ms": 3000,
                                    "answer_after_rate": 0.05, "answer_after_ms": 4000, "latency_ms": 20},
            "poll_commit": {"error_rate": 0.2, "error_statuses": [502, 503], "latency_ms": 5},
            "event_details": {"status_rate": 0.3, "status": 404, "latency_ms": 5}}


# What TM purchases buy (catalogue.py, rows of TM_SANDBOX_SEATS_PER_ROW seats): the FAQ's test event at
# two price levels, the barcode-only event at two; each purchase takes one or two seats.
TM_OFFERS = (("000051048D991EE7", "000000000001", "1", "60"), ("000051048D991EE7", "000000000001", "2", "45"),
             ("0B004D43F86C478F", "000042800007", "8", "200"), ("0B004D43F86C478F", "000042800007", "9", "140"))


class Workers:
    """`dramatiq workers`, restarted as a supervisor would when the group goes down."""

    def __init__(self, env: dict[str, str], log_dir: Path, config: ChaosConfig) -> None:
        self.env, self.log_dir, self.config = env, log_dir, config
        self.generation = 0
        self.started = 0.0
        self.process = self._start("chaos-workers")

    def _start(self, name: str) -> ManagedProcess:
        from tests.support.processes import start_workers

        self.started = time.monotonic()
        return start_workers(self.env, self.log_dir, processes=self.config.processes, threads=self.config.threads,
                             name=name)

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL one worker process (or the main process when it has none)."""
        victims = _worker_pids(self.process.pid) or [self.process.pid]
        os.kill(rng.choice(victims), signal.SIGKILL)

    def keep_running(self) -> None:
        # dramatiq shuts the group down when a worker process dies; the supervisor restarts it.
        forking = time.monotonic() - self.started < 10  # its worker processes may not exist yet
        if not self.process.alive() or (not forking and not _worker_pids(self.process.pid)):
            self.process.kill()
            self.generation += 1
            self.process = self._start(f"chaos-workers-{self.generation}")

    def stop(self) -> None:
        self.process.stop()


def _worker_pids(main_pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == main_pid:
            children.append(int(stat.parent.name))
    return children


def run(config: ChaosConfig, log_dir: Path) -> ChaosResult:
    """Run it; this process's environment and settings are restored afterwards."""
    from fulfilment.settings import get_settings

    saved = dict(os.environ)
    try:
        return _run(config, log_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def _run(config: ChaosConfig, log_dir: Path) -> ChaosResult:
    chaos_servers.use_private_servers(config.port_block)
    chaos_servers.services(config.port_block, "start")
    # Imported after the environment points at the private servers.
    from fulfilment.publish import Publisher
    from fulfilment.settings import get_settings
    from tests.chaos import checks
    from tests.conftest import FAST_SETTINGS, TM_TEST_SETTINGS
    from tests.support import servers
    from tests.support.events import EventListener
    from tests.support.factories import request, tm_request
    from tests.support.processes import start_scheduler, wait_for_consumers
    from tests.support.sandbox import Sandbox
    from tests.support.tm_sandbox import TMSandboxProcess

    rng = random.Random(config.seed)
    result = ChaosResult(config={**asdict(config), "absence_grace": config.absence_grace,
                                 "resolve_attempts": config.resolve_attempts})
    secret = "chaos-secret-" + secrets.token_hex(12)
    token_prefix = "chaostok-" + secrets.token_hex(4) + "-"
    database = servers.create_database("fulfil_chaos")
    servers.migrate(database)
    vhost = servers.create_vhost("fulfil_chaos")
    sandbox = Sandbox(env={
        "SANDBOX_PARTNERS": json.dumps([{"client_id": "chaos-partner", "client_secret": secret}]),
        "SANDBOX_TOKEN_PREFIX": token_prefix,
        "SANDBOX_TOKEN_TTL_SECONDS": "20",  # tokens expire during the run: re-authentication under load
        "SANDBOX_SEATS_PER_ROW": "1000000",
        "SANDBOX_TRANSFER_AFTER_SECONDS": "3",
        "SANDBOX_SEED": str(config.seed),
    }, log_path=log_dir / "sandbox.log").start()
    tm_apikey = "chaos-tm-apikey-" + secrets.token_hex(12)
    tm_sandbox = TMSandboxProcess(env={
        "TM_SANDBOX_APIKEYS": tm_apikey, "TM_SANDBOX_SEED": str(config.seed), "TM_SANDBOX_NITERUN": "off",
        "TM_SANDBOX_HOLD_TIME_SECONDS": "30", "TM_SANDBOX_PAYMENT_EXTENSION_SECONDS": "15",
        "TM_SANDBOX_SEATS_PER_ROW": "1000",  # enough seats for every TM purchase of a full run
    }, log_path=log_dir / "tm-sandbox.log").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))},
        **FAST_SETTINGS,
        **TM_TEST_SETTINGS,
        "TM_APIKEY": tm_apikey, "TM_BASE_URL": f"{tm_sandbox.url}/partners/v1",
        "DATABASE_URL": database.url, "BROKER_URL": vhost.url, "TBB_BASE_URL": sandbox.url,
        "TBB_CLIENT_ID": "chaos-partner", "TBB_CLIENT_SECRET": secret,
        "MAX_REQUOTES": "10", "QUOTE_SAFETY_MARGIN_SECONDS": "0.5",
        # A killed worker's claim is re-driven after 15 s; a step's calls end 5 s before that.
        "CLAIM_LEASE_SECONDS": "15", "STEP_DEADLINE_SECONDS": "10",
        # An unknown order outcome is looked up again after 3 s, then every 5 s at most, until the
        # absence grace (or the 6 s lookup lag) has long passed and the random misses cleared up.
        "ORDER_RESOLVE_ATTEMPTS": str(config.resolve_attempts),
        "ORDER_RESOLVE_MAX_INTERVAL_SECONDS": str(RESOLVE_INTERVAL),
        "SCHEDULER_LEADER_LEASE_SECONDS": str(LEADER_LEASE_SECONDS),
        "ACTOR_MAX_RETRIES": "20", "METRICS_PORT": "0",
        "dramatiq_prom_host": "127.0.0.1", "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": tempfile.mkdtemp(prefix="chaos-prom-"),
    }
    env.pop("ORDER_ABSENCE_GRACE_SECONDS", None)
    if config.absence_grace is not None:
        env["ORDER_ABSENCE_GRACE_SECONDS"] = f"{config.absence_grace:g}"
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))
                       or k == "TICKET_KEY"})
    get_settings.cache_clear()
    listener = EventListener(vhost.url, durable=True)
    workers = Workers(env, log_dir, config)
    # Two schedulers, each with its own metrics port (the leader gauge says which one leads).
    schedulers = [start_scheduler({**env, "METRICS_PORT": str(servers.free_port())}, log_dir,
                                  name=f"chaos-scheduler-{suffix}") for suffix in ("a", "b")]
    frozen: ManagedProcess | None = None  # the scheduler stopped with SIGSTOP, until SIGCONT
    down_since: float | None = None  # monotonic time Postgres was stopped, until it is started again
    purchase_ids: list[uuid.UUID] = []
    started = time.monotonic()

    tm_every = round(1 / config.tm_share) if config.tm_share else 0

    def purchase(i: int) -> dict[str, Any]:
        if tm_every and i % tm_every == tm_every - 1:
            event_id, ticket_type, price_level, limit = TM_OFFERS[(i // tm_every) % len(TM_OFFERS)]
            return tm_request(request_id=f"chaos-{config.seed}-{i}", event_id=event_id, ticket_type_id=ticket_type,
                              price_level_id=price_level, quantity=1 + (i // tm_every) % 2, max_unit_price=limit)
        sections = ["101", "102", "103", "201", "202", "301"]
        return request(request_id=f"chaos-{config.seed}-{i}", section_name=sections[i % len(sections)],
                       quantity=1 + i % 4, row_name=None if i % 3 else "ABCDE"[i % 5])

    try:
        wait_for_consumers(vhost.url, workers.process, expected=config.processes)
        sandbox.configure(quote_ttl_seconds=8)
        sandbox.set_faults(fault_rules(config, stall_tokens=2))
        result.token_stalls_armed += 2
        next_stall = time.monotonic() + config.token_stall_every
        # 202s (parked, continued by the next claim) and an unredeemed list lagging 6 s behind commits.
        # One-time nonces (each request carries its own), holds that count down from each answer.
        tm_sandbox.admin.configure(polling_rate=0.2, polling_wait_seconds=1, unredeemed_lag_seconds=6,
                                   one_time_nonces=True, hold_time_variance_seconds=5)
        tm_sandbox.admin.set_faults(tm_fault_rules())
        next_quota = time.monotonic() + config.tm_quota_every / 2
        tm_requests_seen = 0

        while_down = min(config.purchases - 1, max(1, round(config.purchases * config.outage_share)))
        before = config.purchases - while_down
        with Publisher(vhost.url) as publisher:
            for i in range(before):
                purchase_ids.append(publisher.submit(purchase(i)))

        rabbit_restart_at = 0.3  # of the purchases submitted so far, done
        postgres_stop_at = 0.6
        outage_publisher: Publisher | None = None
        freeze_since = up_since = frozen_at = 0.0
        standby: ManagedProcess | None = None
        woken: ManagedProcess | None = None  # the frozen leader, once woken up
        standby_log_at = woken_log_at = 0
        freeze_done = False
        next_kill = time.monotonic() + rng.uniform(*config.kill_every)
        deadline = time.monotonic() + config.timeout
        while time.monotonic() < deadline:
            progress = _count_done(purchase_ids) / len(purchase_ids)
            if progress >= 0.97 and len(purchase_ids) == config.purchases and freeze_done:
                break
            now = time.monotonic()
            if "rabbitmq" not in result.restarts and progress >= rabbit_restart_at:
                chaos_servers.services(config.port_block, "restart", "rabbitmq")
                result.restarts.append("rabbitmq")
            elif (down_since is None and "postgres" not in result.restarts and "rabbitmq" in result.restarts
                  and progress >= postgres_stop_at):
                chaos_servers.services(config.port_block, "stop", "postgres")
                down_since = time.monotonic()
                outage_publisher = Publisher(vhost.url)
            elif down_since is not None:
                # Submit the last third during the first half of the outage, a share per round.
                due = min(while_down, round(while_down * (now - down_since) / (config.postgres_outage / 2)) + 1)
                assert outage_publisher is not None
                while result.submitted_while_down < due:
                    purchase_ids.append(outage_publisher.submit(purchase(before + result.submitted_while_down)))
                    result.submitted_while_down += 1
                if now - down_since >= config.postgres_outage and result.submitted_while_down == while_down:
                    outage_publisher.close()
                    outage_publisher = None
                    chaos_servers.services(config.port_block, "start", "postgres")
                    result.postgres_down_seconds = time.monotonic() - down_since
                    up_since = time.monotonic()
                    result.restarts.append("postgres")
                    down_since = None
            elif "postgres" in result.restarts and frozen is None and not freeze_done:
                leader = _leader(schedulers)
                if leader is None and now - up_since > 120:
                    freeze_done = True  # no single leader two minutes after the outage: the run fails
                elif leader is not None:
                    standby = next(s for s in schedulers if s is not leader)
                    standby_log_at = _log_size(standby)
                    os.kill(leader.pid, signal.SIGSTOP)
                    frozen, freeze_since, frozen_at = leader, time.monotonic(), time.time()
                    result.frozen_leader = leader.name
            elif frozen is not None:
                assert standby is not None
                if result.standby_took_over_after is None:
                    led_at = _logged_at(standby, "scheduler: leading", standby_log_at)
                    if led_at is not None:
                        result.standby_took_over_after = max(0.0, led_at - frozen_at)
                if now - freeze_since >= config.freeze_leader:
                    woken_log_at = _log_size(frozen)
                    os.kill(frozen.pid, signal.SIGCONT)
                    result.frozen_seconds = time.monotonic() - freeze_since
                    woken, frozen, freeze_done = frozen, None, True
            if woken is not None and not result.woken_leader_stepped_down:
                result.woken_leader_stepped_down = _logged_at(woken, "lost leadership", woken_log_at) is not None
            if tm_every and now >= next_quota:
                # The hourly quota used up; the next interval starts tm_quota_seconds later.  Only while TM
                # traffic flows (Postgres up, a TM request since the last look): a window no request meets
                # shows nothing, and a short run may have few.  Until one request has been refused, the
                # next window comes sooner.
                counts = tm_sandbox.admin.counts()
                tm_requests = sum(counts.get("requests", {}).values())
                if down_since is None and tm_requests > tm_requests_seen:
                    tm_sandbox.admin.force_quota(seconds=config.tm_quota_seconds)
                    result.tm_quota_exhaustions += 1
                    met = counts.get("rate_limited", 0) > 0
                    next_quota = now + (config.tm_quota_every if met else config.tm_quota_seconds + 1)
                tm_requests_seen = tm_requests
            if now >= next_stall:
                sandbox.set_faults(fault_rules(config, stall_tokens=2))
                result.token_stalls_armed += 2
                next_stall = now + config.token_stall_every
            if time.monotonic() >= next_kill:
                workers.kill_one(rng)
                result.kills += 1
                next_kill = time.monotonic() + rng.uniform(*config.kill_every)
            workers.keep_running()
            listener.drain(timeout=0.5)
            time.sleep(0.5)

        counters = sandbox.faults()
        result.faults_injected = {k: v for k, v in counters.get("totals", {}).items()}
        result.partner_requests = sum(sandbox.stats()["requests"].values())
        tm_totals: Counter[str] = Counter()
        for counter in tm_sandbox.admin.faults().get("counters", {}).values():
            tm_totals.update(counter)
        result.tm_faults_injected = dict(tm_totals)
        sandbox.clear_faults()
        sandbox.configure(quote_ttl_seconds=3600)
        tm_sandbox.admin.clear_faults()
        tm_sandbox.admin.configure(polling_rate=0.0, unredeemed_lag_seconds=0)
        tm_sandbox.admin.lift_quota()
        if down_since is not None:  # timed out during the outage: bring Postgres back for the checks
            chaos_servers.services(config.port_block, "start", "postgres")
            down_since = None
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)
            frozen = None
        # Faults off: let everything finish (the checks say what did not), the workers still supervised:
        # the last kill may have brought the group down after it was last looked at.
        settle_by = time.monotonic() + config.settle
        while time.monotonic() < settle_by and _count_done(purchase_ids) < len(purchase_ids):
            workers.keep_running()
            listener.drain(timeout=0.5)
            time.sleep(0.5)
        if woken is not None and not result.woken_leader_stepped_down:
            result.woken_leader_stepped_down = _logged_at(woken, "lost leadership", woken_log_at) is not None
    finally:
        result.seconds = time.monotonic() - started
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        if down_since is not None:
            chaos_servers.services(config.port_block, "start", "postgres")
        # Let the relay publish the last events and the listener collect them, then stop.
        _wait_all_published(timeout=60)
        listener.drain(timeout=5)
        for scheduler in schedulers:
            scheduler.stop()
        workers.stop()

    try:
        verdict = checks.Verdict()
        checks.check_purchases(purchase_ids, sandbox, verdict)
        result.tm_counts = tm_sandbox.admin.counts()
        checks.check_tm_purchases(purchase_ids, tm_sandbox, result.tm_counts, verdict)
        checks.check_events(listener.received, verdict)
        outputs = _cli_outputs(env, purchase_ids[:5])
        files = sorted(log_dir.glob("*.log"))
        checks.scan_for_secrets([secret, tm_apikey, env["TICKET_KEY"]], re.compile(re.escape(token_prefix)), files,
                                outputs, verdict)
        checks.scan_for_ticket_tokens(tm_sandbox, files, outputs, verdict)
        result.verdict = {**asdict(verdict), "states": dict(verdict.states), "tm_states": dict(verdict.tm_states)}
        # With the absence policy, an order outcome that stays unknown is re-quoted: a purchase may only be
        # held for a person when the partner has its order (a lookup never saw it, or an orphan order).
        no_order_held = verdict.needs_attention - verdict.needs_attention_with_order
        result.ok = verdict.ok and result.scenario_complete and not (config.absence_policy and no_order_held)
    finally:
        listener.close()
        sandbox.stop()
        tm_sandbox.stop()
        servers.delete_vhost(vhost)
        servers.drop_database(database)
        chaos_servers.services(config.port_block, "stop")
    return result


def _leader(schedulers: list[ManagedProcess]) -> ManagedProcess | None:
    """The one scheduler whose leader gauge is 1 (None while there is no single leader)."""
    leading = [s for s in schedulers if _leader_gauge(int(s.env["METRICS_PORT"])) == 1.0]
    return leading[0] if len(leading) == 1 else None


def _leader_gauge(port: int) -> float | None:
    import httpx

    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in body.splitlines():
        if line.startswith("fulfil_scheduler_leader "):
            return float(line.split()[1])
    return None


def _log_size(process: ManagedProcess) -> int:
    try:
        return process.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def _logged_at(process: ManagedProcess, text: str, since: int) -> float | None:
    """When (epoch seconds) a log message written after byte `since` first contained `text`, if one did."""
    try:
        with open(process.log_path, "rb") as file:
            file.seek(since)
            lines = file.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
            message, stamp = str(record.get("message", "")), str(record.get("ts", ""))
        except (ValueError, AttributeError):
            continue  # not one of our JSON lines (dramatiq's own start-up lines)
        if text in message:
            try:
                return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return time.time()
    return None


def _count_done(ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select

    from fulfilment.db import session_scope
    from models import Purchase

    try:
        with session_scope() as session:
            return session.scalar(select(func.count()).where(Purchase.id.in_(ids),
                                                             Purchase.state.in_(FINAL_OR_HELD))) or 0
    except Exception:  # noqa: BLE001  Postgres is being restarted
        return 0


def _wait_all_published(timeout: float) -> None:
    from sqlalchemy import func, select

    from fulfilment.db import session_scope
    from models import OutboxEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            if not session.scalar(select(func.count()).select_from(OutboxEvent)
                                  .where(OutboxEvent.published_at.is_(None))):
                return
        time.sleep(0.5)


def _cli_outputs(env: dict[str, str], sample: list[uuid.UUID]) -> dict[str, str]:
    commands = [["list", "--limit", "200"], ["dlq", "list"], ["health"],
                *[["status", str(i), "--json"] for i in sample]]
    outputs = {}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "fulfilment.cli", *command], env=env, capture_output=True,
                              text=True, timeout=120)
        outputs[" ".join(command)] = done.stdout + done.stderr
    return outputs


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "?"


def table(result: ChaosResult) -> str:
    v = result.verdict
    faults = result.faults_injected
    took_over = result.standby_took_over_after
    grace = result.config.get("absence_grace")
    rows = [
        ("purchases", f"{v['purchases']} ({v['purchases'] - v['tm_purchases']} TBB, {v['tm_purchases']} Ticketmaster)"),
        ("  final states", ", ".join(f"{k}={n}" for k, n in sorted(v["states"].items()))),
        ("worker kills (SIGKILL)", result.kills),
        ("RabbitMQ restart", "yes" if "rabbitmq" in result.restarts else "NO"),
        ("Postgres outage", f"{result.postgres_down_seconds:.0f} s, {result.submitted_while_down} purchases "
                            "submitted while down" if "postgres" in result.restarts else "NO"),
        ("scheduler leader frozen", f"{result.frozen_leader} for {result.frozen_seconds:.0f} s (SIGSTOP), lease "
                                    f"{LEADER_LEASE_SECONDS} s" if result.frozen_leader else "NO"),
        ("  standby took over after", f"{took_over:.1f} s" if took_over is not None else "NO"),
        ("  woken leader stepped down", "yes" if result.woken_leader_stepped_down else "NO"),
        ("partner requests", result.partner_requests),
        ("faults injected", ", ".join(f"{k}={n}" for k, n in sorted(faults.items())) or "?"),
        ("  5xx share of requests", f"{_share(faults.get('error', 0), result.partner_requests)}"),
        ("  order lookups hidden", f"lag={faults.get('lookup_lag', 0)}, miss={faults.get('lookup_miss', 0)}; "
                                   f"has_more={faults.get('lookup_has_more', 0)}, "
                                   f"malformed={faults.get('lookup_malformed', 0)}"),
        ("  token fetches stalled", f"{faults.get('stall', 0)} x {TOKEN_STALL_MS / 1000:g} s"),
        ("partner orders", v["orders"]),
        ("purchases with >1 order", v["duplicates"]),
        ("Ticketmaster purchases", f"{v['tm_purchases']}: "
                                   + ", ".join(f"{k}={n}" for k, n in sorted(v["tm_states"].items()))),
        ("  TM faults injected", ", ".join(f"{k}={n}" for k, n in sorted(result.tm_faults_injected.items())) or "-"),
        ("  TM 202s, quota exhaustions", f"{result.tm_counts.get('polling_answers', 0)} polling answers "
                                         f"({result.tm_counts.get('polls_before_wait', 0)} polls before wait), "
                                         f"{result.tm_quota_exhaustions} x "
                                         f"{result.config['tm_quota_seconds']:g} s of 429s "
                                         f"({result.tm_counts.get('rate_limited', 0)} refused)"),
        ("  TM late commits", f"{result.tm_counts.get('commits_processed_late', 0)} processed after their 5xx, "
                              f"{result.tm_counts.get('late_commits_failed', 0)} failed"),
        ("  TM orders", f"{v['tm_orders']} ({v['tm_duplicates']} purchases with >1, {v['tm_orders_unaccounted']} "
                        "not accounted for)"),
        ("  TM ORDER_TOKEN_UNKNOWN", f"{v['tm_token_unknown']} (token never sent: "
                                     f"{result.tm_faults_injected.get('drop_after_commit', 0)} answers dropped + "
                                     f"{result.tm_faults_injected.get('late_commit', 0)} answered 5xx then processed; "
                                     f"answered 4 s late: {sum((result.tm_counts.get('late_answers') or {}).values())}, "
                                     "lost only if its worker was SIGKILLed while waiting)"),
        ("  TM commits on expired carts", v["tm_commits_on_expired_carts"]),
        ("  TM concurrent cart calls", v["tm_concurrent_calls"]),
        ("  TM carts left to lapse", f"{v['tm_leaked_carts']} (never deleted: a worker killed between reserve "
                                      "and saving the cart, or a delete refused until the hold ended)"),
        ("orders for unknown quotes", v["orphan_orders"]),
        ("orders not accounted for", v["orders_unaccounted"]),
        ("recorded orphan orders", v["recorded_orphan_orders"]),
        ("late answers recorded", v["late_answers"]),
        ("orders on expired quotes", v["orders_on_expired_quote"]),
        ("lost (not final, not held)", v["lost"]),
        ("stalled / needs attention", v["stalled"]),
        ("  needs attention", f"{v['needs_attention']} ({v['needs_attention_with_order']} with a partner order, "
                              f"{v['needs_attention_without_evidence']} without evidence)"),
        ("absence policy re-quotes", f"{v['absence_requotes']} (ORDER_ABSENCE_GRACE_SECONDS={grace:g})"
                                     if grace is not None else "off (ORDER_ABSENCE_GRACE_SECONDS unset)"),
        ("held without a reason", v["held_without_reason"]),
        ("history entries", v["transitions"]),
        ("  without exactly one event", v["transitions_without_one_event"]),
        ("  events unpublished", v["unpublished_events"]),
        ("  events never received", v["events_never_received"]),
        ("  events received twice", v["events_received_twice"]),
        ("secret or token leaks", len(v["secret_leaks"])),
        ("time", f"{result.seconds:.0f} s"),
        ("verdict", "PASS" if result.ok else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
