#!/usr/bin/env bash
# Bring a checkout to a state where the tests can run:
#   1. the system packages the local servers need (postgresql-15, rabbitmq-server);
#   2. the project venv in .venv with the package installed editable, plus test extras.
#
# Idempotent and quick when everything is already there (no apt, no pip), so CI
# and developers can run it unconditionally before every test run.
#
# Env:
#   FULFIL_SKIP_APT=1   never touch system packages (only check / warn)
#   FULFIL_SKIP_VENV=1  do not create or update .venv
#   PYTHON=python3.x    interpreter used to create the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN=/usr/lib/postgresql/15/bin
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-stamp"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

# --- system packages -------------------------------------------------------

missing_packages() {
    local -a missing=()
    [[ -x "$PG_BIN/postgres" && -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || missing+=(postgresql-15)
    [[ -x "$PG_BIN/psql" ]] || missing+=(postgresql-client-15)
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server || -x /usr/sbin/rabbitmq-server ]] || missing+=(rabbitmq-server)
    # supervisord, for the test that runs docs/deploy/supervisord.conf for real.
    [[ -x /usr/bin/supervisord ]] || missing+=(supervisor)
    # promtool and prometheus: the alert rules' tests and the real scrape test (docs/monitoring).
    [[ -x /usr/bin/promtool && -x /usr/bin/prometheus ]] || missing+=(prometheus)
    # Headless Chromium for the console's browser test (Playwright drives it; it downloads no browser).
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    # Debian's own python3 ships venv/ensurepip separately (python3-venv).
    if [[ "${FULFIL_SKIP_VENV:-0}" != 1 && ! -x "$VENV/bin/python" ]] \
        && ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    printf '%s\n' "${missing[@]}"
}

# Debian's postinst scripts start (and enable) the packaged system services.
# We run our own instances under .local/ on other ports, so keep the system
# ones from starting: policy-rc.d exiting 101 tells invoke-rc.d "not allowed".
# A pre-existing policy-rc.d (e.g. Docker images ship one) is left untouched.
POLICY=/usr/sbin/policy-rc.d
POLICY_CREATED=0
cleanup_policy() {
    if [[ "$POLICY_CREATED" == 1 ]]; then
        rm -f "$POLICY"
    fi
}

stop_system_services() {
    # In case something started anyway (no policy-rc.d honoured, or an init
    # system that ignores it), stop the packaged instances so only ours run.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        local ver cluster port status _
        while read -r ver cluster port status _; do
            if [[ "$status" == online* ]]; then
                say "stopping system postgres cluster $ver/$cluster (port $port)"
                pg_ctlcluster "$ver" "$cluster" stop -m fast || true
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
    fi
    # The packaged node is "rabbit" registered with the system epmd (4369); ours
    # is "fulfil" on a private epmd port, so this never touches our node.
    if command -v epmd >/dev/null 2>&1 \
        && ERL_EPMD_PORT=4369 epmd -names 2>/dev/null | grep -q '^name rabbit '; then
        say "stopping system rabbitmq-server (node rabbit, port 5672)"
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
        fi
        if [[ -x /etc/init.d/rabbitmq-server ]]; then
            timeout 60 /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
        fi
        local pid
        pid="$(cat /var/run/rabbitmq/pid 2>/dev/null || true)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        for _ in $(seq 30); do
            ERL_EPMD_PORT=4369 epmd -names 2>/dev/null | grep -q '^name rabbit ' || break
            sleep 0.5
        done
    fi
    # The system epmd (started by the packaged node) is not needed by ours.
    if command -v epmd >/dev/null 2>&1 && ERL_EPMD_PORT=4369 epmd -names >/dev/null 2>&1 \
        && ! ERL_EPMD_PORT=4369 epmd -names 2>/dev/null | grep -q '^name '; then
        ERL_EPMD_PORT=4369 epmd -kill >/dev/null 2>&1 || true
    fi
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
}

install_packages() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages)
    [[ ${#pkgs[@]} -eq 0 || -z "${pkgs[0]}" ]] && return 0

    if [[ "${FULFIL_SKIP_APT:-0}" == 1 ]]; then
        die "missing system packages: ${pkgs[*]} (FULFIL_SKIP_APT=1 set; install them yourself)"
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "missing system packages: ${pkgs[*]}. Install them as root, e.g.:
    sudo apt-get update && sudo apt-get install -y ${pkgs[*]}
then re-run $0"
    fi

    say "installing system packages: ${pkgs[*]}"
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\n# temporary, created by %s\nexit 101\n' "$0" >"$POLICY"
        chmod 755 "$POLICY"
        POLICY_CREATED=1
        trap cleanup_policy EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Only what is missing: naming an installed package would upgrade it (and
    # its postinst would try to restart a cluster that may be in use).
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${pkgs[@]}" >/dev/null
    cleanup_policy
    POLICY_CREATED=0
    stop_system_services

    mapfile -t pkgs < <(missing_packages)
    [[ ${#pkgs[@]} -eq 0 || -z "${pkgs[0]}" ]] || die "still missing after apt-get install: ${pkgs[*]}"
    say "system packages installed"
}

# --- python venv -----------------------------------------------------------

setup_venv() {
    local python="${PYTHON:-python3}"
    local fresh=0
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "creating venv $VENV ($("$python" --version 2>&1))"
        "$python" -m venv --clear "$VENV"
        fresh=1
    fi
    if [[ "$fresh" == 1 || ! -e "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
        say "pip install -e '.[test]' (this can take a minute)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]')
        touch "$STAMP"
        say "venv ready"
    else
        say "venv up to date"
    fi
}

main() {
    install_packages
    say "system packages present (postgresql-15, rabbitmq-server)"
    if [[ "${FULFIL_SKIP_VENV:-0}" != 1 ]]; then
        setup_venv
    fi
    say "done; start the servers with: scripts/services.sh start"
}

main "$@"
