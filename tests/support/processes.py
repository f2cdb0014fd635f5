"""Real worker and scheduler processes, started the way the Procfile starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pika

from tests.support.servers import REPO

WORKER_QUEUES = ("purchases.intake", "purchases.quote", "purchases.order", "purchases.transfer")


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab")
        # A session of its own: signals reach the whole process group (dramatiq forks workers).
        self.process = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, the way a supervisor stops it; SIGKILL if it does not finish in time."""
        if not self.alive():
            return self.process.returncode if self.process else None
        assert self.process is not None
        # To the main process only, as a supervisor does: dramatiq forwards it to its children.
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def start_workers(env: dict[str, str], log_dir: Path, *, processes: int = 2, threads: int = 4,
                  name: str = "workers") -> ManagedProcess:
    argv = [sys.executable, "-m", "dramatiq", "workers", "--processes", str(processes), "--threads", str(threads)]
    return ManagedProcess(name, argv, env, log_dir).start()


def start_scheduler(env: dict[str, str], log_dir: Path, name: str = "scheduler") -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-m", "fulfilment.cli", "scheduler"], env, log_dir).start()


def consumers(broker_url: str, queue: str) -> int:
    from fulfilment.rabbitmq.broker import node_parameters

    connection = pika.BlockingConnection(node_parameters(broker_url))  # any node of a cluster
    try:
        channel = connection.channel()
        try:
            return channel.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # not declared yet
    finally:
        if connection.is_open:
            connection.close()


def wait_for_consumers(broker_url: str, process: ManagedProcess, expected: int, timeout: float = 60) -> None:
    """Workers are ready when every queue has `expected` consumers (one per worker process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        if all(consumers(broker_url, q) >= expected for q in WORKER_QUEUES):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{process.name} not consuming after {timeout}s:\n{process.log_tail()}")
