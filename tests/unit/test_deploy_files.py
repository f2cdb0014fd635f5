"""Packaging and the process-runner files agree with each other and with the code.

The runners themselves are exercised for real in tests/e2e/test_process_managers.py (honcho,
supervisord) and tests/e2e/test_wheel.py (the wheel); here: what a parser and systemd-analyze can
tell without starting anything.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from fulfilment.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"fulfilment", "workers", "models", "migrations"}
# Code that may import what only an extra provides: {directory: extra}.
EXTRA_OWNED = {ROOT / "fulfilment" / "sandbox": "sandbox"}
# Every process type: the long-running ones (the Procfile's) and the one-shot migrate.
PROCESSES = ("worker", "scheduler", "sandbox", "migrate")
_DEFAULTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _requirements(extra: str | None = None) -> list[str]:
    project = PYPROJECT["project"]
    return list(project["dependencies"] if extra is None else project["optional-dependencies"][extra])


# --- pyproject ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_lint_tools_are_pinned_exactly(tool: str) -> None:
    pins = [r for r in _requirements("test") if _name(r) == tool]
    assert len(pins) == 1, f"{tool} is not in the test extra"
    match = re.fullmatch(rf"{tool}==([0-9][0-9A-Za-z.]*)", pins[0].replace(" ", ""))
    assert match, f"{pins[0]!r}: pin it exactly (==) so that a new release cannot break `make lint`"
    assert importlib.metadata.version(tool) == match.group(1), "the venv is stale: run scripts/bootstrap.sh"


def test_the_test_extra_installs_the_sandbox_extra() -> None:
    assert "ticket-fulfilment[sandbox]" in [r.replace(" ", "") for r in _requirements("test")]


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                found.add(top)
    return found


def test_every_import_is_a_declared_dependency() -> None:
    """Workers, scheduler and CLI run on a core install (`pip install ticket-fulfilment`); only the
    code listed in EXTRA_OWNED may need an extra. Catches an import added without its dependency,
    and code of the core that starts to need what only the sandbox extra has."""
    distributions = importlib.metadata.packages_distributions()
    core = {_name(r) for r in _requirements()}
    problems = []
    for package in sorted(FIRST_PARTY):
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = next((name for folder, name in EXTRA_OWNED.items() if folder in path.parents), None)
            allowed = core | ({_name(r) for r in _requirements(extra)} if extra else set())
            for module in sorted(_third_party_imports(path)):
                provided_by = {_name(d) for d in distributions.get(module, [])}
                if not provided_by & allowed:
                    where = f"[{extra}] or the core" if extra else "the core dependencies"
                    problems.append(f"{path.relative_to(ROOT)} imports {module} ({sorted(provided_by) or 'not installed'}),"
                                    f" not in {where}")
    assert not problems, "\n".join(problems)


def test_the_sandbox_extra_is_what_only_the_sandbox_imports() -> None:
    """What the sandbox extra lists is imported by the sandbox only (it may become empty: once other
    code needs a package, it belongs to the core, and `pip install '.[sandbox]'` still works)."""
    sandbox_only = {_name(r) for r in _requirements("sandbox")}
    distributions = importlib.metadata.packages_distributions()
    imported_elsewhere = {
        _name(d)
        for package in FIRST_PARTY
        for path in (ROOT / package).rglob("*.py")
        if not any(folder in path.parents for folder in EXTRA_OWNED)
        for module in _third_party_imports(path)
        for d in distributions.get(module, [])
    }
    assert not sandbox_only & imported_elsewhere, "imported outside fulfilment/partners/tbb/sandbox: move it to the core"
    assert not sandbox_only & {_name(r) for r in _requirements()}


def test_migrations_ship_in_the_package() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert {"migrations", "migrations.versions"} <= set(setuptools["packages"]["find"]["include"])
    assert "script.py.mako" in setuptools["package-data"]["migrations"]
    assert not (ROOT / "migrations" / "versions" / "__init__.py").exists(), "alembic would take it for a revision"


# --- Procfile ----------------------------------------------------------------------------------


def _procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(_DEFAULTED.sub(r"\1", command))
    return entries


def _check_command(argv: list[str]) -> None:
    """argv names a real program and its options parse."""
    program = Path(argv[0]).name
    if program == "dramatiq":
        from dramatiq.cli import make_argument_parser

        args = make_argument_parser().parse_args(argv[1:])
        assert args.broker == "workers" and not args.modules, argv
    else:
        assert program == "fulfil", argv
        commands = typer.main.get_command(cli_app).commands  # type: ignore[attr-defined]
        assert argv[1] in commands, f"`fulfil {argv[1]}` is not a command"
        commands[argv[1]].make_context(argv[1], argv[2:])


def test_procfile_runs_long_running_processes_only() -> None:
    procfile = _procfile()
    # honcho and foreman start every entry, `release` included, and stop everything when one exits.
    assert "release" not in procfile
    assert set(procfile) == {"worker", "scheduler", "sandbox", "tm-sandbox"}
    for argv in procfile.values():
        _check_command(argv)
    assert procfile["scheduler"] == ["fulfil", "scheduler"]
    assert procfile["sandbox"][:2] == ["fulfil", "sandbox"]
    assert procfile["tm-sandbox"][:4] == ["fulfil", "sandbox", "--partner", "ticketmaster"]
    assert "fulfil migrate" in (ROOT / "Procfile").read_text(), "the Procfile should say how to migrate"


# --- supervisord -------------------------------------------------------------------------------


def _supervisord() -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=None, strict=True)
    parser.read_string((DEPLOY / "supervisord.conf").read_text())
    return {section.removeprefix("program:"): dict(parser[section]) for section in parser.sections()
            if section.startswith("program:")}


def _exec_argv(command: str) -> tuple[str, list[str]]:
    """`/bin/sh -c "set -a; . ENV; exec PROGRAM ARGS"` -> (ENV, [PROGRAM, ARGS...])."""
    shell = shlex.split(command)
    assert shell[:2] == ["/bin/sh", "-c"], command
    match = re.fullmatch(r"set -a; \. (\S+); exec (.+)", shell[2])
    assert match, f"{command!r}: source the env file, then exec (so signals reach the process)"
    return match.group(1), shlex.split(match.group(2))


def test_supervisord_example_has_every_process() -> None:
    programs = _supervisord()
    assert set(programs) == {f"fulfil-{name}" for name in PROCESSES}
    procfile = _procfile()
    env_files = set()
    for name in PROCESSES:
        program = programs[f"fulfil-{name}"]
        env_file, argv = _exec_argv(program["command"])
        env_files.add(env_file)
        _check_command(argv)
        argv = [Path(argv[0]).name, *argv[1:]]
        if name == "migrate":
            assert argv == ["fulfil", "migrate"]
        else:
            assert argv[:2] == procfile[name][:2] and (name == "sandbox" or argv == procfile[name]), argv
        assert program["redirect_stderr"] == "true" and program["stdout_logfile"].endswith(f"/{name}.log")
    assert len(env_files) == 1, "every program reads the same environment"


def test_supervisord_migrate_is_a_one_shot_that_starts_first() -> None:
    programs = _supervisord()
    migrate = programs["fulfil-migrate"]
    assert migrate["autostart"] == "true" and migrate["autorestart"] == "false"
    assert migrate["startsecs"] == "0" and migrate["exitcodes"] == "0"
    for name in ("fulfil-worker", "fulfil-scheduler"):
        program = programs[name]
        assert int(migrate["priority"]) < int(program["priority"]), f"{name} would start before migrate"
        assert program["autorestart"] == "true" and program["stopsignal"] == "TERM"
        assert program["killasgroup"] == "true"
    assert programs["fulfil-sandbox"]["autostart"] == "false", "the sandbox is for development only"


# --- systemd -----------------------------------------------------------------------------------


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (DEPLOY / f"fulfil-{name}.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units_for_every_process() -> None:
    procfile = _procfile()
    for name in PROCESSES:
        unit = _unit(name)
        service = unit["Service"]
        [exec_start] = service["ExecStart"]
        argv = shlex.split(exec_start)
        _check_command(argv)
        argv = [Path(argv[0]).name, *argv[1:]]
        if name == "migrate":
            assert argv == ["fulfil", "migrate"]
        else:
            assert argv[:2] == procfile[name][:2] and (name == "sandbox" or argv == procfile[name]), argv
        assert service["User"] == ["fulfil"]
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]

    migrate = _unit("migrate")["Service"]
    assert migrate["Type"] == ["oneshot"] and migrate["RemainAfterExit"] == ["yes"]
    for name in ("worker", "scheduler"):
        unit = _unit(name)
        assert "fulfil-migrate.service" in " ".join(unit["Unit"]["Requires"]), name
        assert "fulfil-migrate.service" in " ".join(unit["Unit"]["After"]), name
        assert unit["Service"]["Restart"] == ["always"]
        assert unit["Service"]["KillMode"] == ["mixed"], "SIGTERM to the main process, SIGKILL to all at the end"


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify`: every key known, every value parsed, ExecStart executable, every
    dependency found. Paths point at this checkout's venv (the units' own are a production host's)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd); the structural tests above ran")
    venv_bin = Path(sys.executable).parent
    env_file = tmp_path / "env"
    env_file.write_text("DATABASE_URL=postgresql+psycopg://fulfil@127.0.0.1/fulfil\n")
    units = []
    for unit in sorted(DEPLOY.glob("fulfil-*.service")):
        text = unit.read_text()
        text = text.replace("/opt/ticket-fulfilment/.venv/bin/", f"{venv_bin}/")
        text = text.replace("/opt/ticket-fulfilment", str(tmp_path))
        text = text.replace("/etc/ticket-fulfilment/env", str(env_file))
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    assert len(units) == len(PROCESSES)
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    # It exits 0 on some problems (unknown keys, unparsable values): any output is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


