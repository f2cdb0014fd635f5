"""The package as users install it: build the wheel, install it in a fresh venv (no source tree,
no editable finder, no [test] extra), and run it from a directory that is not the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from fulfilment.settings import Settings
from tests.support import servers
from tests.support.servers import REPO

# What a wheel is built from (pyproject.toml's packages and readme); the rest of the checkout
# (tests, docs, alembic.ini, .venv, .git) stays behind.
SOURCES = ("pyproject.toml", "README.md", "fulfilment", "workers", "models", "migrations")


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{' '.join(argv)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed; yields its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)], cwd=root)
    [wheel] = dist.glob("ticket_fulfilment-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("migrations/__init__.py", "migrations/env.py", "migrations/script.py.mako",
                   "migrations/versions/0001_initial_schema.py"):
        assert needed in names, f"the wheel lacks {needed}"
    # Every file of the packages, data included (templates, static files: add them to
    # [tool.setuptools.package-data] in pyproject.toml).
    files = {path.relative_to(source).as_posix() for package in SOURCES[2:]
             for path in (source / package).rglob("*") if path.is_file()}
    assert not files - names, f"files the wheel leaves out: {sorted(files - names)}"
    assert not any(name.startswith(("tests/", "docs/")) or name.endswith("alembic.ini") for name in names)

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    # This venv's pip installs into the new one (pip --python): no pip inside it, nothing else.
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", str(wheel)],
         cwd=root)
    yield venv / "bin"


def _env(extra: dict[str, str]) -> dict[str, str]:
    """Only what the processes need: no PYTHONPATH, and PATH without the project venv."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TZ")}
    # COLUMNS: an error message is not wrapped by the terminal-width formatting.
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "COLUMNS": "300", **extra}


def test_the_wheel_migrates_a_fresh_database_from_any_directory(installed: Path, app_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    python = str(installed / "python")
    # The packages come from the venv's site-packages, not from the checkout.
    where = _run([python, "-c", "import fulfilment, migrations, models, workers; "
                  "print('\\n'.join(m.__file__ for m in (fulfilment, migrations, models, workers)))"], cwd=elsewhere)
    for path in where.stdout.split():
        assert path.startswith(str(installed.parent)) and not path.startswith(str(REPO)), path

    database = servers.create_database("fulfil_wheel")
    try:
        settings = {name.upper() for name in Settings.model_fields}
        env = _env({**{k: v for k, v in app_env.items() if k in settings}, "DATABASE_URL": database.url})
        migrated = _run([str(installed / "fulfil"), "migrate"], cwd=elsewhere, env=env)
        head = ScriptDirectory.from_config(_repo_alembic_config()).get_current_head()
        assert f"database at head ({head})" in migrated.stdout, migrated.stdout

        engine = create_engine(database.url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"alembic_version", "purchases", "partner_quotes", "purchase_transitions", "outbox_events"} <= tables

        # Again: nothing to do. And `fulfil health` compares the schema with the packaged head.
        assert f"({head})" in _run([str(installed / "fulfil"), "migrate"], cwd=elsewhere, env=env).stdout
        health = _run([str(installed / "fulfil"), "health"], cwd=elsewhere, env=env, check=False)
        assert f"schema at {head}" in health.stdout, health.stdout + health.stderr
        assert health.returncode == 0, health.stdout + health.stderr

        # The workers' module resolves from the installed package (what `dramatiq workers` imports).
        _run([python, "-c", "import workers, dramatiq; assert dramatiq.get_broker() is workers.broker"],
             cwd=elsewhere, env=env)
    finally:
        servers.drop_database(database)


def test_the_console_serves_its_templates_and_static_files_from_a_core_install(
    installed: Path, app_env: dict[str, str], tmp_path: Path
) -> None:
    """No extra: uvicorn, Jinja2 and itsdangerous are core dependencies, and the templates and the
    stylesheet are package data. The sandbox needs nothing more than the core either."""
    fulfil = str(installed / "fulfil")
    entry = subprocess.run([fulfil, "console", "hash-password", "--stdin", "--user", "olga", "--role", "operator"],
                           input="olga-password\n", capture_output=True, text=True, cwd=tmp_path, env=_env({}),
                           timeout=60)
    assert entry.returncode == 0 and entry.stdout.startswith("olga:operator:scrypt$"), entry.stderr
    port = servers.free_port()
    settings = {name.upper() for name in Settings.model_fields}
    env = _env({**{k: v for k, v in app_env.items() if k in settings}, "CONSOLE_USERS": entry.stdout.strip(),
                "CONSOLE_SESSION_SECRET": "wheel-test-session-secret-0123456789abcdef"})
    process = subprocess.Popen([fulfil, "console", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                login = httpx.get(f"{base}/login", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)[0]
                time.sleep(0.2)
        assert login.status_code == 200 and 'name="csrf_token"' in login.text, login.text
        assert httpx.get(f"{base}/static/console.css", timeout=2).status_code == 200
    finally:
        process.terminate()
        process.wait(10)
    _run([str(installed / "python"), "-c", "import fulfilment.partners.tbb.sandbox.server"], cwd=tmp_path, env=_env({}))


def _repo_alembic_config() -> Config:
    return Config(str(REPO / "alembic.ini"))
