"""docker-compose.yml and the Dockerfile agree with the code, the settings and the Procfile.

There is no Docker engine in CI, so these checks are what keep the container files honest:
the file must be valid against the Compose Specification's JSON schema (vendored under
tests/vendor/compose-spec/, its source and commit in SOURCE.md), the compose environment must
satisfy `Settings`, every command must name something that exists, and nothing may be published
beyond 127.0.0.1. The `ha` profile (README "High availability") gets the same checks, and must
have the topology of scripts/ha.sh.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer
import yaml

from fulfilment.cli import app as cli_app
from fulfilment.partners.tbb.sandbox.config import SandboxConfig
from fulfilment.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROCFILE = ROOT / "Procfile"
COMPOSE_SCHEMA = ROOT / "tests" / "vendor" / "compose-spec" / "compose-spec.json"

APP_SERVICES = ("migrate", "worker", "scheduler")
EXPECTED_SERVICES = {"postgres", "rabbitmq", "sandbox", "tm-sandbox", *APP_SERVICES}
# The `ha` profile: scripts/ha.sh's topology, and the app services on it.
HA_APP_SERVICES = ("migrate-ha", "worker-ha", "scheduler-ha")
HA_RABBITS = ("rabbit-ha1", "rabbit-ha2", "rabbit-ha3")
HA_PGS = ("pg-ha1", "pg-ha2")
HA_SERVICES = {*HA_RABBITS, "etcd", *HA_PGS, *HA_APP_SERVICES, "cli-ha"}

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _app_services(services: dict[str, dict[str, Any]], profile: str | None = None) -> list[str]:
    """The named app services plus any other service that runs with the Settings environment,
    of the default services (profile None) or of one profile."""
    named = APP_SERVICES if profile is None else HA_APP_SERVICES
    extra = [name for name, svc in services.items() if name not in named and "DATABASE_URL" in _env(svc)
             and (profile in svc.get("profiles", []) if profile else not set(svc.get("profiles", [])) - {"cli"})]
    return [*named, *extra]


def _interpolate_all(value: Any) -> Any:
    """Every string of the file interpolated as compose does before it validates the model."""
    if isinstance(value, str):
        return _interpolate(value)
    if isinstance(value, dict):
        return {k: _interpolate_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_all(v) for v in value]
    return value


def _interpolate(value: str) -> str:
    """Compose-style `${VAR:-default}` / `${VAR-default}` -> the default (what a bare checkout gets)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("op") is None:
            raise AssertionError(f"{value!r}: ${{{match.group('name')}}} has no default; compose needs it set")
        return match.group("default")

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or []
    command = service.get("command") or []
    parts: list[str] = []
    for piece in (entrypoint, command):
        parts += shlex.split(piece) if isinstance(piece, str) else [str(p) for p in piece]
    return parts


def _fulfil_commands() -> dict[str, Any]:
    return typer.main.get_command(cli_app).commands  # type: ignore[attr-defined]


def _required_settings() -> set[str]:
    return {name.upper() for name, field in Settings.model_fields.items() if field.is_required()}


def _known_sandbox_vars() -> set[str]:
    names = set(re.findall(r"\bSANDBOX_[A-Z_]+\b", inspect.getsource(SandboxConfig.from_env)))
    assert names, "SandboxConfig.from_env reads no SANDBOX_* variable?"
    return names


def _procfile() -> dict[str, list[str]]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        entries[name.strip()] = shlex.split(command)
    return entries


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


# --- structure ----------------------------------------------------------------------------


def test_compose_file_parses_and_has_the_services(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "version" not in compose, "Compose spec: no top-level version key"
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(_interpolate_all(compose)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_rejects_what_compose_rejects(compose: dict[str, Any]) -> None:
    """The vendored schema is the real one: it refuses a misspelt key and a wrong type."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema.get("title") == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    broken = json.loads(json.dumps(_interpolate_all(compose)))
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service key (deploy.restart_policy is)
    assert any("restart_policy" in e.message for e in validator.iter_errors(broken))
    broken = json.loads(json.dumps(_interpolate_all(compose)))
    broken["services"]["worker-ha"]["profiles"] = "ha"  # a list, not a string
    assert not validator.is_valid(broken)


def test_backing_services(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:15")
    assert "pg_isready" in json.dumps(pg["healthcheck"]["test"])
    assert pg.get("volumes"), "postgres needs a volume for its data"
    rabbit = services["rabbitmq"]
    assert str(rabbit["image"]).startswith("rabbitmq:3.13-management")
    assert "rabbitmq-diagnostics" in json.dumps(rabbit["healthcheck"]["test"])
    published = {str(p).rsplit(":", 1)[-1] for p in rabbit.get("ports", [])}
    assert {"5672", "15672"} <= published


# --- environment --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*APP_SERVICES, *HA_APP_SERVICES])
def test_app_services_set_every_required_setting(services: dict[str, dict[str, Any]], name: str) -> None:
    env = _env(services[name])
    missing = _required_settings() - set(env)
    assert not missing, f"{name}: required settings not set: {sorted(missing)}"


@pytest.mark.parametrize("profile", [None, "ha"])
def test_app_services_share_one_environment(services: dict[str, dict[str, Any]], profile: str | None) -> None:
    names = _app_services(services, profile)
    envs = {name: _env(services[name]) for name in names}
    first = envs[names[0]]
    for name, env in envs.items():
        assert env == first, f"{name} environment differs from {names[0]}'s"


def test_every_variable_is_known(services: dict[str, dict[str, Any]]) -> None:
    settings_vars = {name.upper() for name in Settings.model_fields}
    # Read by dramatiq's Prometheus middleware (see workers/__init__.py).
    dramatiq_vars = {"dramatiq_prom_host", "dramatiq_prom_port", "dramatiq_prom_db"}
    known = settings_vars | _known_sandbox_vars() | dramatiq_vars
    for name in [*_app_services(services), *_app_services(services, "ha"), "sandbox"]:
        unknown = set(_env(services[name])) - known
        assert not unknown, f"{name}: variables no code reads: {sorted(unknown)}"
    # The sandbox reads only SANDBOX_*; anything else there is a typo or misplaced.
    assert set(_env(services["sandbox"])) <= _known_sandbox_vars()


@pytest.mark.parametrize("name", [*APP_SERVICES, *HA_APP_SERVICES])
def test_app_environment_validates(services: dict[str, dict[str, Any]], name: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields:  # only the compose values count, not the test runner's
        monkeypatch.delenv(field.upper(), raising=False)
    env = _env(services[name])
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[call-arg]
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_sandbox_environment_is_valid(services: dict[str, dict[str, Any]]) -> None:
    config = SandboxConfig.from_env(_env(services["sandbox"]))
    assert config.transfer_after_seconds == 30


def test_urls_point_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["worker"])
    pg_env = _env(services["postgres"])
    db = urlsplit(env["DATABASE_URL"])
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])
    rabbit_env = _env(services["rabbitmq"])
    amqp = urlsplit(env["BROKER_URL"])
    assert (amqp.hostname, amqp.port) == ("rabbitmq", 5672)
    assert (amqp.username, amqp.password) == (rabbit_env["RABBITMQ_DEFAULT_USER"], rabbit_env["RABBITMQ_DEFAULT_PASS"])
    assert urlsplit(env["TBB_BASE_URL"]).hostname == "sandbox"


def test_default_client_credentials_are_a_sandbox_partner(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["worker"])
    partners = {(p.client_id, p.client_secret) for p in SandboxConfig.from_env(_env(services["sandbox"])).partners}
    assert (env["TBB_CLIENT_ID"], env["TBB_CLIENT_SECRET"]) in partners


# --- commands -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "worker-ha"])
def test_worker_command_is_dramatiq_workers(services: dict[str, dict[str, Any]], name: str) -> None:
    command = _command(services[name])
    assert command[:2] == ["dramatiq", "workers"]
    from dramatiq.cli import make_argument_parser

    args = make_argument_parser().parse_args(command[1:])  # the flags dramatiq would accept
    assert args.broker == "workers"  # the module that builds the broker and declares the actors
    assert args.path == "."  # imported from the working directory: WORKDIR /app in the image


@pytest.mark.parametrize("name", ["worker", "worker-ha"])
def test_workers_module_builds_its_broker_from_the_compose_environment(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    # Importing `workers` validates the settings, replaces the root log handlers and sets
    # dramatiq's global broker: do it in a child process (as `dramatiq workers` does, from
    # the project directory) so none of that leaks into other tests. No RabbitMQ is needed:
    # a worker that cannot reach it to declare its queues at start says so and goes on.
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in _env(services[name]).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    probe = (
        "import json, dramatiq, workers\n"
        "from workers.middleware import PURCHASE_ACTORS\n"
        "broker = dramatiq.get_broker()\n"
        "assert broker is workers.broker\n"
        "print(json.dumps({'broker': type(broker).__name__, 'actors': sorted(broker.get_declared_actors()),\n"
        "                  'purchase_actors': sorted(PURCHASE_ACTORS), 'queue_type': broker.queue_type}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["broker"] == "FulfilmentBroker"  # dramatiq's RabbitmqBroker, extended (fulfilment/rabbitmq/broker.py)
    assert set(report["purchase_actors"]) <= set(report["actors"])
    assert report["queue_type"] == ("quorum" if name.endswith("-ha") else "classic")


def test_fulfil_commands_exist_and_parse(services: dict[str, dict[str, Any]]) -> None:
    commands = _fulfil_commands()
    seen = 0
    for name, service in services.items():
        command = _command(service)
        if not command or command[0] != "fulfil" or len(command) < 2 or command[1].startswith("-"):
            continue
        seen += 1
        sub = command[1]
        assert sub in commands, f"{name}: `fulfil {sub}` is not a command of fulfilment.cli.app"
        commands[sub].make_context(sub, command[2:])  # raises on an unknown option
    assert seen >= 5  # migrate, scheduler, sandbox, and the ha profile's migrate and scheduler


def test_service_commands(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["migrate"])[:2] == ["fulfil", "migrate"]
    assert _command(services["scheduler"])[:2] == ["fulfil", "scheduler"]
    assert _command(services["sandbox"])[:2] == ["fulfil", "sandbox"]
    assert _command(services["migrate-ha"]) == _command(services["migrate"])
    assert _command(services["scheduler-ha"]) == _command(services["scheduler"])
    assert _command(services["worker-ha"]) == _command(services["worker"])


def test_sandbox_port_matches_base_url_and_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    sandbox = services["sandbox"]
    command = _command(sandbox)
    params = _fulfil_commands()["sandbox"].make_context("sandbox", command[2:]).params
    assert params["host"] == "0.0.0.0", "the sandbox must listen beyond its container's loopback"
    assert urlsplit(_env(services["worker"])["TBB_BASE_URL"]).port == params["port"]

    check = sandbox["healthcheck"]["test"]
    check_text = check if isinstance(check, str) else " ".join(map(str, check))
    urls = re.findall(r"https?://[^\s'\"]+", check_text)
    assert urls, "sandbox healthcheck fetches no URL"
    health = urlsplit(urls[0])
    assert (health.hostname, health.port, health.path) == ("127.0.0.1", params["port"], "/healthz")
    assert "curl" not in check_text and "wget" not in check_text  # not in python:3.11-slim

    from fulfilment.partners.tbb.sandbox.app import create_app

    assert "/healthz" in {getattr(route, "path", None) for route in create_app(SandboxConfig()).routes}


def test_the_ticketmaster_sandbox_is_the_one_the_workers_call(services: dict[str, dict[str, Any]]) -> None:
    from fulfilment.partners.ticketmaster.sandbox import SandboxConfig as TmSandboxConfig
    from fulfilment.partners.ticketmaster.sandbox.app import create_app as create_tm_app

    sandbox = services["tm-sandbox"]
    command = _command(sandbox)
    params = _fulfil_commands()["sandbox"].make_context("sandbox", command[2:]).params
    assert (str(params["partner"]), params["host"]) == ("ticketmaster", "0.0.0.0")
    env = _env(services["worker"])
    base = urlsplit(env["TM_BASE_URL"])
    assert (base.hostname, base.port, base.path) == ("tm-sandbox", params["port"], "/partners/v1")
    config = TmSandboxConfig.from_env(_env(sandbox))  # only TM_SANDBOX_* variables, all valid
    assert set(_env(sandbox)) <= set(re.findall(r"\bTM_SANDBOX_[A-Z_]+\b", inspect.getsource(TmSandboxConfig)))
    assert env["TM_APIKEY"] in config.apikeys
    check = " ".join(map(str, sandbox["healthcheck"]["test"]))
    health = urlsplit(re.findall(r"https?://[^\s'\"]+", check)[0])
    assert (health.hostname, health.port, health.path) == ("127.0.0.1", params["port"], "/healthz")
    assert "/healthz" in {getattr(route, "path", None) for route in create_tm_app(TmSandboxConfig()).routes}


def test_procfile_process_types_have_services(services: dict[str, dict[str, Any]]) -> None:
    procfile = _procfile()
    assert procfile, "Procfile is empty?"
    commands = [_command(svc) for svc in services.values()]
    for kind, command in procfile.items():
        if kind == "release":
            assert command == ["fulfil", "migrate"], f"release is {command}; compose's migrate service runs fulfil migrate"
            assert _command(services["migrate"]) == command
            continue
        program = command[:2]
        assert any(c[:2] == program for c in commands), f"Procfile {kind}: no compose service runs {' '.join(program)}"
    # The worker runs with the Procfile's concurrency too.
    assert _command(services["worker"]) == procfile["worker"]


# --- ordering -----------------------------------------------------------------------------


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


@pytest.mark.parametrize("name", ["worker", "scheduler"])
def test_processes_wait_for_migrations_and_their_servers(services: dict[str, dict[str, Any]], name: str) -> None:
    deps = _depends_on(services[name])
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("rabbitmq") == "service_healthy"
    assert deps.get("sandbox") == "service_healthy"
    assert deps.get("tm-sandbox") == "service_healthy"


@pytest.mark.parametrize("name", ["worker-ha", "scheduler-ha"])
def test_ha_processes_wait_for_migrations_and_every_broker_node(services: dict[str, dict[str, Any]],
                                                                name: str) -> None:
    deps = _depends_on(services[name])
    assert deps.get("migrate-ha") == "service_completed_successfully"
    for node in HA_RABBITS:
        assert deps.get(node) == "service_healthy"
    assert deps.get("sandbox") == "service_healthy" and deps.get("tm-sandbox") == "service_healthy"
    assert not {"migrate", "postgres", "rabbitmq"} & set(deps), "the ha services must not start the single-node ones"


@pytest.mark.parametrize(("name", "database"), [("migrate", ("postgres",)), ("migrate-ha", HA_PGS)])
def test_migrate_waits_for_postgres_and_runs_once(services: dict[str, dict[str, Any]], name: str,
                                                  database: tuple[str, ...]) -> None:
    migrate = services[name]
    for server in database:
        assert _depends_on(migrate).get(server) == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no"


def test_healthchecked_dependencies_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, condition in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits for {dep} healthy: no healthcheck"


# --- the ha profile: scripts/ha.sh's topology ---------------------------------------------


def _config_content(compose: dict[str, Any], service: dict[str, Any], target: str) -> str:
    sources = [c["source"] for c in service.get("configs", []) if c.get("target") == target]
    assert sources, f"no config mounted at {target}"
    return str(compose["configs"][sources[0]]["content"])


def test_ha_profile_holds_its_services_and_only_them(services: dict[str, dict[str, Any]]) -> None:
    missing = HA_SERVICES - set(services)
    assert not missing, f"ha profile services missing: {sorted(missing)}"
    for name, service in services.items():
        in_ha = "ha" in service.get("profiles", [])
        assert in_ha == (name in HA_SERVICES), f"{name}: {'in' if in_ha else 'not in'} the ha profile"


def test_ha_rabbitmq_nodes_form_one_cluster(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    nodes = {f"rabbit@{services[name]['hostname']}" for name in HA_RABBITS}
    assert {services[name]["hostname"] for name in HA_RABBITS} == set(HA_RABBITS)
    cookies = {_env(services[name])["RABBITMQ_ERLANG_COOKIE"] for name in HA_RABBITS}
    assert len(cookies) == 1, "every node of the cluster needs the same Erlang cookie"
    volumes = [tuple(services[name]["volumes"]) for name in HA_RABBITS]
    assert len(set(volumes)) == len(HA_RABBITS), "each node keeps its own data"
    for name in HA_RABBITS:
        conf = dict(line.split(" = ", 1) for line in
                    _config_content(compose, services[name], "/etc/rabbitmq/conf.d/20-ha.conf").splitlines() if line)
        assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
        assert {v for k, v in conf.items() if k.startswith("cluster_formation.classic_config.nodes.")} == nodes
        assert conf["cluster_partition_handling"] == "pause_minority"
        assert str(services[name]["image"]).startswith("rabbitmq:3.13")


def test_ha_app_services_name_every_node_and_ask_for_quorum_and_a_sync_standby(
        services: dict[str, dict[str, Any]]) -> None:
    from fulfilment.settings import Settings

    env = _env(services["worker-ha"])
    rabbit_env = _env(services["rabbit-ha1"])
    urls = [urlsplit(url) for url in env["BROKER_URL"].split(";")]
    assert [(u.hostname, u.port) for u in urls] == [(name, 5672) for name in HA_RABBITS]
    assert {(u.username, u.password) for u in urls} == {(rabbit_env["RABBITMQ_DEFAULT_USER"],
                                                         rabbit_env["RABBITMQ_DEFAULT_PASS"])}
    assert env["BROKER_QUEUE_TYPE"] == "quorum"
    assert env["SYNC_STANDBY_POLICY"] == "require"
    management = [urlsplit(url) for url in env["BROKER_MANAGEMENT_URL"].split(";")]
    assert [(u.hostname, u.port) for u in management] == [(name, 15672) for name in HA_RABBITS]
    assert all(str(services[name]["image"]).endswith("-management") for name in HA_RABBITS)
    db = urlsplit(env["DATABASE_URL"])
    assert db.netloc.split("@", 1)[1] == ",".join(f"{name}:5432" for name in HA_PGS)
    assert "target_session_attrs=read-write" in db.query
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[call-arg]
    assert settings.broker_queue_type == "quorum"


def test_ha_patroni_pair_replicates_synchronously_through_etcd(compose: dict[str, Any],
                                                               services: dict[str, dict[str, Any]]) -> None:
    patroni = yaml.safe_load(_config_content(compose, services["pg-ha1"], "/etc/patroni/patroni.yml"))
    dcs = patroni["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert patroni["etcd3"]["hosts"] == "etcd:2379"
    assert "--listen-client-urls=http://0.0.0.0:2379" in _command(services["etcd"])
    assert patroni["postgresql"]["listen"].endswith(":5432")
    # The application role and database the app URLs name, with pg_monitor for the replication check.
    script = _config_content(compose, services["pg-ha1"], "/etc/patroni/post-bootstrap.sh")
    db = urlsplit(_env(services["worker-ha"])["DATABASE_URL"])
    assert f"CREATE ROLE {db.username} LOGIN PASSWORD '{db.password}'" in script
    assert f"GRANT pg_monitor TO {db.username}" in script
    assert f"CREATE DATABASE {db.path.lstrip('/')} OWNER {db.username}" in script
    assert patroni["bootstrap"]["post_bootstrap"].endswith("/etc/patroni/post-bootstrap.sh")
    for name in HA_PGS:
        env = _env(services[name])
        assert env["PATRONI_NAME"] == name == services[name]["hostname"]
        assert env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{name}:5432"
        assert env["PATRONI_RESTAPI_CONNECT_ADDRESS"] == f"{name}:8008"
        assert "8008/health" in json.dumps(services[name]["healthcheck"]["test"])
        assert _depends_on(services[name]).get("etcd") == "service_healthy"
    assert services["pg-ha1"]["volumes"] != services["pg-ha2"]["volumes"]
    # The same Patroni settings as scripts/ha.sh's local stack.
    script_text = (ROOT / "scripts" / "ha.sh").read_text()
    for key, value in (("ttl", dcs["ttl"]), ("loop_wait", dcs["loop_wait"]), ("synchronous_mode", "true"),
                       ("failsafe_mode", "true"), ("use_pg_rewind", "true")):
        assert re.search(rf"\b{key}: {value}\b", script_text), f"scripts/ha.sh and compose differ on {key}"


# --- exposure -----------------------------------------------------------------------------


def _host_ip(port: Any) -> str | None:
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip") if port.get("published") is not None else "127.0.0.1"
    spec = str(port).split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8080:80
        return spec[1:spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None  # "8080:80" / "80" publish on every interface


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for port in service.get("ports", []) or []:
            assert _host_ip(port) == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_copies_migrations_and_runs_the_worker() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    copied = [arg for keyword, arg in instructions if keyword in ("COPY", "ADD")]
    sources = {src.rstrip("/") for arg in copied for src in shlex.split(arg)[:-1] if not src.startswith("--")}
    # What the wheel is built from (pyproject.toml's packages and readme).
    for needed in ("migrations", "fulfilment", "workers", "models", "pyproject.toml", "README.md"):
        assert needed in sources, f"Dockerfile does not copy {needed}"
    cmds = [arg for keyword, arg in instructions if keyword == "CMD"]
    assert cmds, "Dockerfile has no CMD"
    cmd = cmds[-1]
    argv = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert argv == ["dramatiq", "workers"]
    users = [arg for keyword, arg in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    env_text = " ".join(arg for keyword, arg in instructions if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env_text)
    installs = " ".join(arg for keyword, arg in instructions if keyword == "RUN")
    assert "[test]" not in installs
    # The image the processes run is the last stage: the package installed from a wheel, as users
    # install it (not editable), and no source tree beside it: `fulfil migrate` must not need one.
    last = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last:]
    final_runs = " ".join(arg for keyword, arg in final if keyword == "RUN")
    assert re.search(r"pip install [^&]*\.whl", final_runs), "the last stage must install the built wheel"
    assert not re.search(r"pip install [^&]*(-e|--editable)\b", final_runs), "no editable install"
    final_sources = {src.rstrip("/") for keyword, arg in final if keyword in ("COPY", "ADD")
                     for src in shlex.split(arg)[:-1] if not src.startswith("--")}
    assert not final_sources & {"fulfilment", "workers", "models", "migrations", "alembic.ini", "."}, final_sources


def test_dockerignore_keeps_secrets_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for name in (".env", ".venv", ".git", ".local"):
        assert name in ignored, f".dockerignore does not exclude {name}"
