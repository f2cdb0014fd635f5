"""Scheduler leadership against the real Postgres: a leader that cannot prove its lock starts no job.

Schedulers run in threads of this process with their own jobs (recorders, no real work) and a
short lease; a second one is the standby.  A killed lock session and a lock session that goes
silent (a TCP proxy that stops forwarding, as a half-open connection does) must both end the
leadership before the next job, and a standby must take over within the lease.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from fulfilment.scheduler import Job, Scheduler, limit_idle_transactions, lock_connection_params
from fulfilment.settings import Settings, SettingsError, get_settings
from tests.support.servers import REPO

LEASE = 3.0


def fast_settings(**overrides: object) -> Settings:
    return get_settings().model_copy(
        update={"scheduler_leader_lease_seconds": LEASE, "scheduler_interval_seconds": 0.1, **overrides}
    )


@dataclass
class Recorder:
    """Job starts and scheduler log lines, in the order they happened, with the thread (scheduler) that did them."""

    events: list[tuple[float, str, str, str]] = field(default_factory=list)  # (clock, who, kind, text)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, text: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), threading.current_thread().name, kind, text))

    def job(self, name: str, then: Callable[[], None] | None = None) -> Job:
        def run() -> int:
            self.add("job", name)
            if then is not None:
                then()
            return 0

        return Job(name, run)

    def of(self, who: str) -> list[tuple[float, str, str, str]]:
        with self.lock:
            return [e for e in self.events if e[1] == who]

    def logged(self, who: str, text: str) -> list[float]:
        return [at for at, _, kind, message in self.of(who) if kind == "log" and text in message]


class _Handler(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.DEBUG)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.add("log", record.getMessage())


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorded = Recorder()
    handler = _Handler(recorded)
    logger = logging.getLogger("fulfilment.scheduler")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield recorded
    logger.removeHandler(handler)
    logger.setLevel(previous)


class Running:
    def __init__(self, name: str, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.thread = threading.Thread(target=scheduler.run, name=name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.scheduler.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "scheduler did not stop"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def admin(settings: Settings) -> psycopg.Connection:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def session_gone(conn: psycopg.Connection, pid: int) -> bool:
    return conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", (pid,)).fetchone() == (True,)


def test_leader_steps_down_before_the_next_job_when_its_lock_session_is_terminated(recorder: Recorder) -> None:
    settings = fast_settings()
    calls = {"first": 0}
    terminated: list[int] = []
    scheduler: Scheduler

    def terminate_on_third_call() -> None:
        calls["first"] += 1
        if calls["first"] != 3:
            return
        pid = scheduler.lease.backend_pid
        assert pid is not None
        with admin(settings) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            wait_for(lambda: session_gone(conn, pid), 5, "the lock session to end")
        terminated.append(pid)
        recorder.add("terminated", str(pid))

    scheduler = Scheduler(settings, [recorder.job("first", terminate_on_third_call), recorder.job("second")])
    running = Running("leader", scheduler)
    try:
        wait_for(lambda: len(recorder.logged("leader", "scheduler: leading")) >= 2, 20, "leadership taken again after the loss")
        wait_for(lambda: calls["first"] >= 5, 10, "jobs to run again")
    finally:
        running.stop()

    events = [(kind, text) for _, _, kind, text in recorder.of("leader") if kind != "log" or "scheduler" in text]
    cut = events.index(("terminated", str(terminated[0])))
    # The tick that terminated the session does not go on to "second": the leader checks first and steps down.
    assert events[cut - 1] == ("job", "first")
    assert events[cut + 1][0] == "log" and "lost leadership" in events[cut + 1][1], events[cut:cut + 4]
    assert "lock session failed" in events[cut + 1][1]
    # It stands by, takes the (free) lock again on a new session, and only then runs jobs again.
    after = events[cut + 1:]
    first_job = next(i for i, (kind, _) in enumerate(after) if kind == "job")
    assert any(kind == "log" and "scheduler: leading" in text for kind, text in after[:first_job]), after[:first_job + 1]
    assert scheduler.lease.backend_pid is None  # stopped: the lock session is closed


class BlackholeProxy:
    """A TCP proxy to Postgres that can stop forwarding while keeping every connection open.

    Once frozen, what the client sends is accepted (acknowledged) but never delivered and
    nothing comes back: the client's keepalives and tcp_user_timeout cannot tell, only the
    lease can.  The server sees an idle session.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                if self.frozen.is_set():
                    time.sleep(0.05)
                    continue
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


def test_standby_takes_over_from_a_leader_whose_lock_session_went_silent(recorder: Recorder) -> None:
    direct = fast_settings()
    url = make_url(direct.database_url)
    proxy = BlackholeProxy((url.host or "127.0.0.1", url.port or 5432))
    via_proxy = fast_settings(database_url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    leader = Running("silent", Scheduler(via_proxy, [recorder.job("tick")]))
    standby: Running | None = None
    try:
        wait_for(lambda: leader.scheduler.is_leader, 15, "the first scheduler to lead")
        standby = Running("standby", Scheduler(direct, [recorder.job("tick")]))
        time.sleep(1.5)  # several polls: the lock is taken
        assert not standby.scheduler.is_leader and not recorder.of("standby")[1:]  # only "starting as standby"
        assert len([e for e in recorder.of("silent") if e[2] == "job"]) > 3

        proxy.frozen.set()
        frozen_at = time.monotonic()
        wait_for(lambda: standby is not None and standby.scheduler.is_leader, 4 * LEASE, "the standby to take over")
        took_over = time.monotonic() - frozen_at
        wait_for(lambda: any(e[2] == "job" for e in recorder.of("standby")), 5, "the new leader's first job")
        time.sleep(1.0)
    finally:
        proxy.close()  # the stuck lock session gets its EOF
        leader.stop()
        if standby is not None:
            standby.stop()

    silent, new = recorder.of("silent"), recorder.of("standby")
    stepped_down = recorder.logged("silent", "lost leadership")
    new_leads = recorder.logged("standby", "scheduler: leading")
    assert stepped_down and new_leads
    # The silent leader noticed on its own, within the lease, before anyone else led...
    assert stepped_down[0] - frozen_at <= LEASE + 1.0
    assert stepped_down[0] < new_leads[0]
    # ...ran no job from then on, and none at all once the standby led.
    assert not [e for e in silent if e[2] == "job" and e[0] > stepped_down[0]]
    assert max(e[0] for e in silent if e[2] == "job") < min(e[0] for e in new if e[2] == "job")
    # Postgres ended the silent session after its idle_session_timeout (the lease), releasing the lock.
    assert LEASE - 1.0 <= took_over <= LEASE + 3.0, took_over
    assert not leader.scheduler.is_leader


def test_lease_must_exceed_the_interval() -> None:
    with pytest.raises(SettingsError, match="SCHEDULER_LEADER_LEASE_SECONDS"):
        Scheduler(fast_settings(scheduler_interval_seconds=LEASE), [])


def test_lock_session_is_guarded_by_timeouts_and_keepalives() -> None:
    params = lock_connection_params(fast_settings(scheduler_leader_lease_seconds=20.0))
    assert params["connect_timeout"] == 10 and params["keepalives"] == 1 and params["tcp_user_timeout"] == 10_000
    for setting in ("idle_session_timeout=20000", "statement_timeout=10000", "tcp_keepalives_idle=5", "tcp_user_timeout=10000"):
        assert f"-c {setting}" in params["options"]
    with psycopg.connect(**params, autocommit=True) as conn:  # Postgres accepts them all
        assert conn.execute("SHOW idle_session_timeout").fetchone() == ("20s",)
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("fulfil scheduler lock",)


def test_the_scheduler_command_refuses_a_lease_not_longer_than_the_interval(configured: dict[str, str]) -> None:
    env = {**os.environ, **configured, "SCHEDULER_INTERVAL_SECONDS": "5", "SCHEDULER_LEADER_LEASE_SECONDS": "5",
           "METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "fulfilment.cli", "scheduler"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SCHEDULER_LEADER_LEASE_SECONDS" in result.stderr


def test_job_transactions_left_idle_by_a_frozen_leader_are_ended_after_the_lease() -> None:
    """The scheduler command limits its pool: a leader frozen mid-batch does not keep the rows locked."""
    engine = create_engine(get_settings().database_url)
    try:
        limit_idle_transactions(engine, 1.0)
        with engine.connect() as conn:
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1s"
            conn.execute(text("SELECT 1"))  # a transaction is open, and now idle
            time.sleep(1.5)
            with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):
                conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
