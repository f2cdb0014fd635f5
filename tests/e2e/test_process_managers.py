"""The Procfile under honcho and docs/deploy/supervisord.conf under Debian's supervisord, for real.

Each test gets its own fresh database and vhost (tests/support/stack.py) and its processes get
their configuration the documented way only: honcho from a .env file, supervisord's programs by
sourcing the env file the example names. Every process, the sandbox included, is the runner's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import REPO, free_port
from tests.support.stack import (
    VENV_BIN,
    Stack,
    base_process_env,
    complete_a_purchase,
    consuming,
    fresh_stack,
    sandbox_up,
    schema_at_head,
    tail,
    wait_for,
)

SUPERVISORD_EXAMPLE = REPO / "docs" / "deploy" / "supervisord.conf"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with fresh_stack(tmp_path) as created:
        yield created


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """Child pids of `pid`, oldest first (start time from /proc/<pid>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:  # fields[0] is the state, [1] the ppid, [19] the start time
            found.append((int(fields[19]), int(entry.name)))
    return [child for _, child in sorted(found)]


# --- honcho -------------------------------------------------------------------------------------


def test_honcho_starts_the_procfile_and_completes_a_purchase(stack: Stack, tmp_path: Path) -> None:
    honcho = shutil.which("honcho", path=str(VENV_BIN))
    assert honcho, "honcho is not installed (the [test] extra has it)"
    app_dir = tmp_path / "app"  # not the checkout: nothing may depend on the working directory
    app_dir.mkdir()
    # honcho reads .env from its app root, the way a developer configures it (.env.example).
    tm_port = free_port()
    (app_dir / ".env").write_text(stack.env_file_text() + f"FULFIL_SANDBOX_PORT={stack.sandbox_port}\n"
                                  f"FULFIL_TM_SANDBOX_PORT={tm_port}\n")
    log_path = tmp_path / "honcho.log"

    # The release step the Procfile documents, before `honcho start`.
    migrate = subprocess.run([str(VENV_BIN / "fulfil"), "migrate"], cwd=app_dir, capture_output=True, text=True,
                             env={**base_process_env(), **stack.app_env}, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    assert schema_at_head(stack)

    with log_path.open("wb") as log:
        runner = subprocess.Popen([honcho, "start", "--no-colour", "-f", str(REPO / "Procfile")], cwd=app_dir,
                                  env=base_process_env(), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def detail() -> str:
        return tail(log_path, 60)

    try:
        wait_for("the Procfile's sandbox answering", lambda: sandbox_up(stack) or runner.poll() is not None, 60, detail)
        wait_for("the Procfile's Ticketmaster sandbox answering",
                 lambda: _answers(f"http://127.0.0.1:{tm_port}/healthz") or runner.poll() is not None, 60, detail)
        wait_for("dramatiq consuming (2 processes)", lambda: consuming(stack, 2) or runner.poll() is not None, 60,
                 detail)
        assert runner.poll() is None, f"honcho stopped early (a process exited):\n{detail()}"
        complete_a_purchase(stack, detail=detail)
        assert runner.poll() is None, f"honcho stopped:\n{detail()}"
        started = {name: int(pid) for name, pid in re.findall(r"([\w-]+)\.1 started \(pid=(\d+)\)",
                                                               log_path.read_text())}
        assert set(started) == {"worker", "scheduler", "sandbox", "tm-sandbox"}, detail()

        # Ctrl-C / SIGTERM: honcho sends SIGTERM to every process group and waits for them.
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)
        # Each entry runs in a process group of its own (honcho: a session per entry): none is left.
        wait_for("every process of the Procfile gone", lambda: not any(_group_alive(pid) for pid in started.values()),
                 15, detail)
    finally:
        _stop_honcho(runner, log_path)
    text = log_path.read_text()
    for name in ("worker", "scheduler", "sandbox", "tm-sandbox"):
        assert re.search(rf"{name}\.1 stopped \(rc=", text), f"{name} not stopped by honcho:\n{detail()}"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_honcho(runner: subprocess.Popen[bytes], log_path: Path) -> None:
    """On a failure too: honcho's processes run in sessions of their own, so killing honcho alone
    would leave them running."""
    if runner.poll() is None:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(30)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait(10)
    for pid in re.findall(r"started \(pid=(\d+)\)", log_path.read_text()):
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- supervisord --------------------------------------------------------------------------------


def _supervisord_config(tmp_path: Path, stack: Stack) -> Path:
    """The example with only its paths (and the sandbox port) substituted, included by a main config
    the way Debian's /etc/supervisor/supervisord.conf includes conf.d/*.conf."""
    app_dir, log_dir = tmp_path / "app", tmp_path / "log"
    app_dir.mkdir()
    log_dir.mkdir()
    env_file = tmp_path / "env"
    env_file.write_text(stack.env_file_text())
    env_file.chmod(0o600)
    text = SUPERVISORD_EXAMPLE.read_text()
    text = text.replace("/opt/ticket-fulfilment/.venv/bin/", f"{VENV_BIN}/")
    text = text.replace("directory=/opt/ticket-fulfilment\n", f"directory={app_dir}\n")
    text = text.replace("/etc/ticket-fulfilment/env", str(env_file))
    text = text.replace("/var/log/ticket-fulfilment/", f"{log_dir}/")
    text = text.replace("--port 18080", f"--port {stack.sandbox_port}")
    # There is no `fulfil` user here; as root, supervisord would switch to it.
    text = re.sub(r"(?m)^user=fulfil\n", "", text)
    program_lines = [line for line in text.splitlines() if not line.startswith(";")]
    leftovers = [line for line in program_lines if re.search(r"/opt/|/etc/ticket|/var/log|user=", line)]
    assert not leftovers, f"paths the test does not substitute: {leftovers}"
    included = tmp_path / "ticket-fulfilment.conf"
    included.write_text(text)
    main = tmp_path / "supervisord.conf"
    main.write_text(f"""\
[unix_http_server]
file={tmp_path}/supervisor.sock
chmod=0700

[supervisord]
logfile={log_dir}/supervisord.log
pidfile={tmp_path}/supervisord.pid
childlogdir={log_dir}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp_path}/supervisor.sock

[include]
files = {included}
""")
    return main


def _status(ctl: list[str]) -> dict[str, tuple[str, str]]:
    out = subprocess.run([*ctl, "status"], capture_output=True, text=True, timeout=30).stdout
    states = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            states[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return states


def _pid(status: tuple[str, str]) -> int | None:
    found = re.search(r"pid (\d+)", status[1])
    return int(found.group(1)) if status[0] == "RUNNING" and found else None


def test_supervisord_example_runs_every_program_and_restarts_a_killed_worker(stack: Stack, tmp_path: Path) -> None:
    supervisord = shutil.which("supervisord")
    if supervisord is None:
        pytest.fail("supervisord is not installed: scripts/bootstrap.sh installs Debian's `supervisor`", pytrace=False)
    config = _supervisord_config(tmp_path, stack)
    log_dir = tmp_path / "log"
    ctl = [shutil.which("supervisorctl") or "supervisorctl", "-c", str(config)]
    daemon = subprocess.Popen([supervisord, "-n", "-c", str(config)], cwd=tmp_path, env=base_process_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def detail() -> str:
        names = ("supervisord", "migrate", "worker", "scheduler", "sandbox")
        return "\n".join([str(_status(ctl)), *(tail(log_dir / f"{name}.log", 25) for name in names)])

    programs = ("fulfil-migrate", "fulfil-worker", "fulfil-scheduler", "fulfil-sandbox")
    try:
        wait_for("supervisord answering", lambda: set(programs) <= set(_status(ctl)), 30, detail)
        # migrate: a one-shot that ran (on a database with no table at all) and exited 0.
        wait_for("fulfil-migrate EXITED", lambda: _status(ctl)["fulfil-migrate"][0] == "EXITED", 60, detail)
        assert "exited: fulfil-migrate (exit status 0; expected)" in (log_dir / "supervisord.log").read_text(), detail()
        assert schema_at_head(stack), detail()
        # The sandbox is for development: not started with the others, but by hand.
        assert _status(ctl)["fulfil-sandbox"][0] == "STOPPED", detail()
        subprocess.run([*ctl, "start", "fulfil-sandbox"], capture_output=True, timeout=60)
        wait_for("the sandbox answering", lambda: sandbox_up(stack), 30, detail)
        wait_for("dramatiq consuming (2 processes)", lambda: consuming(stack, 2), 60, detail)
        statuses = _status(ctl)
        assert statuses["fulfil-worker"][0] == statuses["fulfil-scheduler"][0] == "RUNNING", detail()

        complete_a_purchase(stack, detail=detail)

        # Kill one dramatiq worker process (as the OOM killer would): dramatiq shuts down and exits,
        # supervisord starts it again, and the new workers consume.
        main_pid = _pid(_status(ctl)["fulfil-worker"])
        assert main_pid is not None
        victim = _children(main_pid)[0]  # dramatiq starts its worker processes before anything else
        os.kill(victim, signal.SIGKILL)
        wait_for("fulfil-worker restarted", lambda: _pid(_status(ctl)["fulfil-worker"]) not in (None, main_pid), 60,
                 detail)
        assert f"Worker with PID {victim} exited unexpectedly" in (log_dir / "worker.log").read_text(), detail()
        assert not _alive(main_pid)
        wait_for("the new workers consuming", lambda: consuming(stack, 2), 60, detail)
        complete_a_purchase(stack, detail=detail)

        running = {name: _pid(_status(ctl)[name]) for name in ("fulfil-worker", "fulfil-scheduler", "fulfil-sandbox")}
        worker_children = _children(running["fulfil-worker"] or 0)
        shutdown = subprocess.run([*ctl, "shutdown"], capture_output=True, text=True, timeout=60)
        assert shutdown.returncode == 0, shutdown.stdout + shutdown.stderr
        daemon.wait(90)
        left = [pid for pid in [*running.values(), *worker_children] if pid and _alive(pid)]
        assert not left, f"still running after supervisord shut down: {left}\n{detail()}"
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(10)
