#!/usr/bin/env bash
# Local Postgres 15 + RabbitMQ for development and tests.
#
#   scripts/services.sh start   [postgres|rabbitmq]   start (no-op if already running)
#   scripts/services.sh stop    [postgres|rabbitmq]   stop  (no-op if not running)
#   scripts/services.sh restart [postgres|rabbitmq]
#   scripts/services.sh status  [postgres|rabbitmq]   exit 0 if all running, 3 otherwise
#   scripts/services.sh env                           shell exports (eval "$(scripts/services.sh env)")
#   scripts/services.sh psql [ARGS...]                psql as role fulfil on database fulfil
#   scripts/services.sh rabbitmqctl ARGS...           rabbitmqctl against our node (same env + cookie)
#   scripts/services.sh rabbitmq-diagnostics ARGS...  likewise
#
# Both servers listen on 127.0.0.1 only, on non-default ports, and keep all their
# state under .local/ in the checkout, so they never touch (or clash with) system
# instances. When run as root they run as the unprivileged `postgres` / `rabbitmq`
# system users (initdb and postgres refuse to run as root); when run as a normal
# user they run as that user.
#
# Environment (all optional):
#   FULFIL_PG_PORT=23432            Postgres TCP port
#   FULFIL_PG_FAST=1                fsync/synchronous_commit/full_page_writes off:
#                                   fast, but a crash of the machine can corrupt the
#                                   cluster. Fine for dev/tests; set 0 to keep them on.
#   FULFIL_AMQP_PORT=23672          AMQP listener
#   FULFIL_RABBIT_DIST_PORT=23673   Erlang distribution port of the node
#   FULFIL_EPMD_PORT=23369          epmd port (not the system default 4369)
#   FULFIL_RABBIT_MGMT=0            1 enables the management plugin (HTTP API/UI);
#                                   off by default: it makes boot ~slower and tests
#                                   do not need it
#   FULFIL_RABBIT_MGMT_PORT=23674   management listener (only with FULFIL_RABBIT_MGMT=1)
#   FULFIL_START_TIMEOUT=60         seconds to wait for a server to come up
#   FULFIL_LOCAL_DIR=.local         where the servers keep their state; another directory
#                                   (with other ports) runs a second, independent pair,
#                                   e.g. for chaos runs that restart their servers
#   FULFIL_RABBIT_NODENAME=fulfil@localhost   the Erlang node name (scripts/ha.sh runs three)
#   FULFIL_RABBIT_CONF_EXTRA=       lines appended to rabbitmq.conf (ha.sh: cluster formation)
#   FULFIL_RABBIT_ERL_ARGS=         extra emulator flags (ha.sh: fewer schedulers)
#
# Two checkouts on one machine share the default ports: give one of them other
# FULFIL_*_PORT values. A port already taken by something else is reported.
# The defaults sit below Linux's ephemeral port range (32768-60999): a client socket
# (pip, a test) can then never hold one of them at the moment a server starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${FULFIL_LOCAL_DIR:-$ROOT/.local}"  # FULFIL_LOCAL_DIR: a second, independent pair of servers (chaos runs)

PG_PORT="${FULFIL_PG_PORT:-23432}"
PG_FAST="${FULFIL_PG_FAST:-1}"
AMQP_PORT="${FULFIL_AMQP_PORT:-23672}"
DIST_PORT="${FULFIL_RABBIT_DIST_PORT:-23673}"
EPMD_PORT="${FULFIL_EPMD_PORT:-23369}"
MGMT="${FULFIL_RABBIT_MGMT:-0}"
MGMT_PORT="${FULFIL_RABBIT_MGMT_PORT:-23674}"
START_TIMEOUT="${FULFIL_START_TIMEOUT:-60}"

APP_USER=fulfil
APP_PASS=fulfil
APP_DB=fulfil

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR="$LOCAL/pg"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/log"

RMQ_BIN=/usr/lib/rabbitmq/bin   # the real scripts; /usr/sbin/* are Debian wrappers that
                                # `su` to rabbitmq and reset HOME (losing our cookie dir)
RMQ_DIR="$LOCAL/rabbitmq"
RMQ_NODENAME="${FULFIL_RABBIT_NODENAME:-fulfil@localhost}"
RMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid"
RMQ_HOME="$RMQ_DIR/home"        # HOME of the node and of the CLI: holds .erlang.cookie
RMQ_LOG_DIR="$RMQ_DIR/log"

IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1

say()  { printf 'services: %s\n' "$*"; }
warn() { printf 'services: WARNING: %s\n' "$*" >&2; }
die()  { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# --- users and permissions --------------------------------------------------

# Service account for a service: the system user when we are root, else ourselves.
pg_user()  { if [[ $IS_ROOT == 1 ]]; then echo postgres; else id -un; fi; }
rmq_user() { if [[ $IS_ROOT == 1 ]]; then echo rabbitmq; else id -un; fi; }

ensure_system_user() {
    local user="$1" home="$2"
    [[ $IS_ROOT == 1 ]] || return 0
    if ! getent passwd "$user" >/dev/null; then
        say "creating system user $user"
        useradd --system --user-group --home-dir "$home" --no-create-home \
            --shell /usr/sbin/nologin "$user"
    fi
}

# Command prefix that runs the rest of a command line as USER: setpriv execs in
# place (no extra process, unlike su/runuser, so pids stay meaningful) and leaves
# the environment to us. Empty when we are not root (we then run as ourselves).
user_prefix() {
    local user="$1"
    if [[ $IS_ROOT == 1 && "$user" != root ]]; then
        printf '%s\0' setpriv --reuid="$user" --regid="$(id -gn "$user")" --init-groups --
    fi
}

# Run a command as USER from DIR (tools complain about an unreadable cwd, e.g. /root).
as_user() {
    local user="$1" dir="$2"; shift 2
    local -a prefix
    mapfile -d '' -t prefix < <(user_prefix "$user")
    (cd "$dir" && exec ${prefix[@]+"${prefix[@]}"} "$@")
}

# The service users must be able to traverse every directory from / down to .local
# (a checkout under /root or a 0700 home would break them). Add o+x where missing:
# that only allows traversal, not listing.
ensure_traversable() {
    local user="$1" path="$2"
    [[ $IS_ROOT == 1 ]] || return 0
    local p="" comp
    local -a comps
    IFS=/ read -r -a comps <<<"${path#/}"
    for comp in "${comps[@]}"; do
        [[ -n "$comp" ]] || continue
        p="$p/$comp"
        [[ -d "$p" ]] || break
        if ! setpriv --reuid="$user" --regid="$(id -gn "$user")" --init-groups -- test -x "$p" 2>/dev/null; then
            say "chmod o+x $p (so that $user can reach $path)"
            chmod o+x "$p"
        fi
    done
}

ensure_local_dir() {
    mkdir -p "$LOCAL"
    chmod 755 "$LOCAL"
}

# --- ports ------------------------------------------------------------------

port_open() {  # is something accepting connections on 127.0.0.1:PORT ?
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port_owner() {  # best-effort description of who listens on PORT
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "( sport = :$1 )" 2>/dev/null | sed -n 's/.*users:(\(.*\))$/\1/p' | head -n1
    fi
}

require_free_port() {
    local port="$1" what="$2"
    if port_open "$port"; then
        local owner; owner="$(port_owner "$port")"
        die "$what port $port on 127.0.0.1 is already in use by something else${owner:+ ($owner)}.
    Another checkout running its own services? Pick other ports, e.g. FULFIL_PG_PORT / FULFIL_AMQP_PORT / FULFIL_RABBIT_DIST_PORT / FULFIL_EPMD_PORT."
    fi
}

wait_for_port() {  # PORT SECONDS PID-CHECK-FUNCTION
    local port="$1" timeout="$2" alive_fn="$3"
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        port_open "$port" && return 0
        "$alive_fn" || return 2
        sleep 0.2
    done
    return 1
}

# --- postgres ---------------------------------------------------------------

# Unix sockets have a ~107 byte path limit; a deep checkout would not fit, in
# which case the socket (only) goes to a per-checkout directory under /tmp.
pg_socket_dir() {
    local dir="$PG_DIR/run"
    if (( ${#dir} + 20 > 100 )); then
        dir="/tmp/fulfil-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-10)"
    fi
    echo "$dir"
}
PG_SOCK="$(pg_socket_dir)"

pg() {  # run a postgres binary as the postgres service user
    local bin="$1"; shift
    as_user "$(pg_user)" "$PG_DIR" "$PG_BIN/$bin" "$@"
}

pg_running() {
    [[ -f "$PG_DATA/PG_VERSION" ]] || return 1
    pg pg_ctl -D "$PG_DATA" status >/dev/null 2>&1
}

pg_pid()  { sed -n 1p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }
pg_live_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

pg_prepare() {
    [[ -x "$PG_BIN/postgres" ]] || die "Postgres 15 not found in $PG_BIN; run scripts/bootstrap.sh (as root) or apt-get install postgresql-15"
    local user; user="$(pg_user)"
    ensure_system_user postgres /var/lib/postgresql
    ensure_local_dir
    ensure_traversable "$user" "$LOCAL"
    mkdir -p "$PG_DIR" "$PG_SOCK"
    if [[ $IS_ROOT == 1 ]]; then
        chown "$user:" "$PG_DIR" "$PG_SOCK"
        [[ -d "$PG_DATA" ]] && chown -R "$user:" "$PG_DATA"
    fi
    chmod 700 "$PG_DIR" "$PG_SOCK"

    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        say "postgres: initdb $PG_DATA"
        rm -rf "$PG_DATA"   # half-initialised leftovers make initdb refuse
        pg initdb -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
            || { tail -n 20 "$PG_DIR/initdb.log" >&2; die "postgres: initdb failed (log: $PG_DIR/initdb.log)"; }
        # Our settings live in a separate file we rewrite at every start.
        echo "include_if_exists = 'fulfil.conf'" >>"$PG_DATA/postgresql.conf"
    fi

    # Rewritten each start so FULFIL_PG_FAST changes apply on restart. Port, socket
    # and listen address are passed on the command line (pg_ctl -o) as well.
    local fast="# FULFIL_PG_FAST=0: durable settings"
    if [[ "$PG_FAST" == 1 ]]; then
        fast="fsync = off
synchronous_commit = off
full_page_writes = off"
    fi
    cat >"$PG_DATA/fulfil.conf" <<EOF
# Written by scripts/services.sh at every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
# What make bench reads (bench/costs.py): statements per purchase.  Part of postgresql-15.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
pg_stat_statements.max = 10000
$fast
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    [[ $IS_ROOT == 1 ]] && chown "$user:" "$PG_DATA/fulfil.conf"
    return 0
}

pg_ensure_app_role() {
    # Superuser via the unix socket (trust) to create/refresh the app role and db.
    pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') THEN
    CREATE ROLE $APP_USER LOGIN CREATEDB PASSWORD '$APP_PASS';
  ELSE
    ALTER ROLE $APP_USER LOGIN CREATEDB PASSWORD '$APP_PASS';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $APP_DB OWNER $APP_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$APP_DB')
\gexec
SQL
    # The view make bench reads; only in the admin database, so test databases get no extra objects.
    pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d "$APP_DB" >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
}

pg_start() {
    if pg_running; then
        say "postgres: already running (pid $(pg_pid), port $(pg_live_port))"
        return 0
    fi
    require_free_port "$PG_PORT" postgres
    pg_prepare
    say "postgres: starting on 127.0.0.1:$PG_PORT (fast=$PG_FAST)"
    if ! pg pg_ctl -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" \
            -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1" start >/dev/null; then
        tail -n 30 "$PG_LOG" >&2 || true
        die "postgres: failed to start (log: $PG_LOG)"
    fi
    pg_ensure_app_role
    say "postgres: running (pid $(pg_pid)), role/db '$APP_USER' ready"
}

pg_stop() {
    if ! pg_running; then
        say "postgres: not running"
        return 0
    fi
    say "postgres: stopping (pid $(pg_pid))"
    pg pg_ctl -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    say "postgres: stopped"
}

pg_status() {
    if pg_running; then
        printf 'postgres: running  port=%s pid=%s data=%s\n' "$(pg_live_port)" "$(pg_pid)" "$PG_DATA"
        return 0
    fi
    printf 'postgres: stopped  port=%s\n' "$PG_PORT"
    return 3
}

# --- rabbitmq ---------------------------------------------------------------

# Environment for the node and for every CLI call against it. `env -i` so nothing
# from the caller (e.g. a system RABBITMQ_* or another checkout's HOME) leaks in.
rmq_env() {  # rmq_env CMD ARGS...: run CMD as the rabbitmq service user with our env
    local dist_if="-kernel inet_dist_use_interface {127,0,0,1} ${FULFIL_RABBIT_ERL_ARGS:-}"
    as_user "$(rmq_user)" "$RMQ_DIR" env -i \
        PATH="$RMQ_BIN:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        HOME="$RMQ_HOME" \
        LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        RABBITMQ_NODENAME="$RMQ_NODENAME" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$AMQP_PORT" \
        RABBITMQ_DIST_PORT="$DIST_PORT" \
        ERL_EPMD_PORT="$EPMD_PORT" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        ERL_CRASH_DUMP="$RMQ_LOG_DIR/erl_crash.dump" \
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$RMQ_LOG_DIR" \
        RABBITMQ_PID_FILE="$RMQ_PID_FILE" \
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$dist_if" \
        RABBITMQ_CTL_ERL_ARGS="$dist_if" \
        "$@"
}

# Note: CLI calls run as the rabbitmq user from .local/rabbitmq, so file arguments
# (e.g. import_definitions) must be absolute paths that user can read.
rmq_cli() {  # rmq_cli rabbitmqctl|rabbitmq-diagnostics|... ARGS...
    local tool="$1"; shift
    [[ -x "$RMQ_BIN/$tool" ]] || die "$RMQ_BIN/$tool not found; run scripts/bootstrap.sh"
    [[ -f "$RMQ_HOME/.erlang.cookie" ]] || die "rabbitmq: no cookie in $RMQ_HOME; run scripts/services.sh start first"
    # Same user and HOME as the node, so the CLI presents the node's cookie.
    rmq_env "$RMQ_BIN/$tool" "$@"
}

rmq_pid() {
    local pid
    pid="$(cat "$RMQ_PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && echo "$pid"
    return 0
}

rmq_running() {
    local pid; pid="$(rmq_pid)"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse after a crash/reboot: it must be a beam started
    # with our data dir (the node name is passed via env, not on the cmdline).
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -q beam || return 1
    if [[ -r "/proc/$pid/environ" ]]; then
        tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF "RABBITMQ_MNESIA_BASE=$RMQ_DIR/mnesia"
    fi
}

rmq_prepare() {
    [[ -x "$RMQ_BIN/rabbitmq-server" ]] || die "rabbitmq-server not installed; run scripts/bootstrap.sh (as root) or apt-get install rabbitmq-server"
    command -v setpriv >/dev/null || [[ $IS_ROOT == 0 ]] || die "setpriv (util-linux) is required"
    local user; user="$(rmq_user)"
    ensure_system_user rabbitmq /var/lib/rabbitmq
    ensure_local_dir
    ensure_traversable "$user" "$LOCAL"
    mkdir -p "$RMQ_DIR" "$RMQ_DIR/mnesia" "$RMQ_LOG_DIR" "$RMQ_HOME"

    # Erlang refuses a cookie readable by others; the CLI must see the same one.
    if [[ ! -s "$RMQ_HOME/.erlang.cookie" ]]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RMQ_HOME/.erlang.cookie"
    fi
    chmod 600 "$RMQ_HOME/.erlang.cookie"

    : >"$RMQ_DIR/rabbitmq-env.conf"   # empty: keeps /etc/rabbitmq/rabbitmq-env.conf out
    if [[ "$MGMT" == 1 ]]; then
        echo '[rabbitmq_management].' >"$RMQ_DIR/enabled_plugins"
    else
        echo '[].' >"$RMQ_DIR/enabled_plugins"
    fi

    # default_user is created (with full rights on /) only when the node's database
    # is new; rmq_ensure_app_user repairs it on later starts if it went missing.
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Written by scripts/services.sh at every start; edits are lost.
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
default_vhost = /
default_user = $APP_USER
default_pass = $APP_PASS
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.file.level = ${FULFIL_RABBIT_LOG_LEVEL:-info}
log.console = false
EOF
    if [[ -n "${FULFIL_RABBIT_CONF_EXTRA:-}" ]]; then printf '%s\n' "$FULFIL_RABBIT_CONF_EXTRA" >>"$RMQ_DIR/rabbitmq.conf"; fi
    if [[ "$MGMT" == 1 ]]; then
        cat >>"$RMQ_DIR/rabbitmq.conf" <<EOF
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
EOF
    fi

    # Remember the ports this node runs with (see adopt_running_ports).
    printf 'AMQP_PORT=%s\nDIST_PORT=%s\nEPMD_PORT=%s\nMGMT_PORT=%s\n' \
        "$AMQP_PORT" "$DIST_PORT" "$EPMD_PORT" "$MGMT_PORT" >"$RMQ_DIR/ports.env"

    if [[ $IS_ROOT == 1 ]]; then
        chown -R "$user:" "$RMQ_DIR"
    fi
    chmod 750 "$RMQ_DIR"
    chmod 700 "$RMQ_HOME"
}

rmq_check_epmd() {
    # Our epmd port may legitimately be in use by an epmd (ours from an earlier
    # run); anything else on it is a clash. A node already registered there under
    # our name belongs to another checkout sharing the ports.
    port_open "$EPMD_PORT" || return 0
    local names
    names="$(ERL_EPMD_PORT="$EPMD_PORT" epmd -names 2>/dev/null)" \
        || die "epmd port $EPMD_PORT is in use by something that is not epmd ($(port_owner "$EPMD_PORT")); set FULFIL_EPMD_PORT"
    if grep -q "^name ${RMQ_NODENAME%@*} " <<<"$names"; then
        die "an Erlang node named ${RMQ_NODENAME%@*} is already registered with epmd on port $EPMD_PORT
    ($(grep "^name ${RMQ_NODENAME%@*} " <<<"$names")) but it is not this checkout's node.
    Another checkout running its own services? Set other FULFIL_EPMD_PORT / FULFIL_*_PORT values."
    fi
}

rmq_start() {
    if rmq_running; then
        say "rabbitmq: already running (pid $(rmq_pid), port $AMQP_PORT)"
        return 0
    fi
    rm -f "$RMQ_PID_FILE"
    require_free_port "$AMQP_PORT" "rabbitmq AMQP"
    require_free_port "$DIST_PORT" "rabbitmq distribution"
    [[ "$MGMT" == 1 ]] && require_free_port "$MGMT_PORT" "rabbitmq management"
    rmq_check_epmd
    rmq_prepare

    say "rabbitmq: starting $RMQ_NODENAME on 127.0.0.1:$AMQP_PORT (dist $DIST_PORT, epmd $EPMD_PORT)"
    local out="$RMQ_LOG_DIR/startup.log"
    # Not `rabbitmq-server -detached` (which double-forks and hides failures):
    # run the foreground script in the background, in its own session (setsid:
    # survives our exit, no controlling terminal) with stdin closed, so we can
    # tell when it dies during boot. Rabbit writes the beam pid to RABBITMQ_PID_FILE.
    rmq_env setsid -w "$RMQ_BIN/rabbitmq-server" >>"$out" 2>&1 </dev/null &
    local launcher=$!

    local t0=$SECONDS rc=0
    # shellcheck disable=SC2329  # called by name from wait_for_port
    launcher_alive() { kill -0 "$launcher" 2>/dev/null; }
    wait_for_port "$AMQP_PORT" "$START_TIMEOUT" launcher_alive || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)); then warn "rabbitmq: server process exited during startup"; else warn "rabbitmq: not accepting AMQP on $AMQP_PORT after ${START_TIMEOUT}s"; fi
        echo "--- tail of $out" >&2; tail -n 20 "$out" >&2 || true
        local f="$RMQ_LOG_DIR/$RMQ_NODENAME.log"
        [[ -f "$f" ]] && { echo "--- tail of $f" >&2; tail -n 30 "$f" >&2; }
        ((rc == 1)) && kill -TERM "$launcher" 2>/dev/null || true
        die "rabbitmq: failed to start"
    fi
    # The pid file is written early in boot; by the time AMQP listens it exists.
    for _ in $(seq 50); do [[ -s "$RMQ_PID_FILE" ]] && break; sleep 0.1; done
    rmq_ensure_app_user
    say "rabbitmq: running (pid $(rmq_pid)) after $((SECONDS - t0))s, user '$APP_USER' ready"
}

rmq_ensure_app_user() {
    # One CLI call in the common case (default_user already created it).
    local perms
    perms="$(rmq_cli rabbitmqctl -q list_user_permissions "$APP_USER" 2>/dev/null || true)"
    if grep -qE '^/[[:space:]]+\.\*[[:space:]]+\.\*[[:space:]]+\.\*$' <<<"$perms"; then
        return 0
    fi
    say "rabbitmq: (re)creating user '$APP_USER'"
    rmq_cli rabbitmqctl -q add_user "$APP_USER" "$APP_PASS" >/dev/null 2>&1 \
        || rmq_cli rabbitmqctl -q change_password "$APP_USER" "$APP_PASS" >/dev/null
    rmq_cli rabbitmqctl -q set_user_tags "$APP_USER" administrator >/dev/null
    rmq_cli rabbitmqctl -q set_permissions -p / "$APP_USER" '.*' '.*' '.*' >/dev/null
}

rmq_stop() {
    if ! rmq_running; then
        say "rabbitmq: not running"
        rm -f "$RMQ_PID_FILE"
        rmq_stop_epmd
        return 0
    fi
    local pid; pid="$(rmq_pid)"
    say "rabbitmq: stopping (pid $pid)"
    # `stop PIDFILE` returns once the OS process is gone.
    rmq_cli rabbitmqctl -q stop "$RMQ_PID_FILE" >/dev/null 2>&1 || warn "rabbitmqctl stop failed; signalling pid $pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        sleep 3
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RMQ_PID_FILE"
    rmq_stop_epmd
    say "rabbitmq: stopped"
}

rmq_stop_epmd() {
    # epmd is started as a daemon by the first Erlang node and outlives it. Stop
    # ours (on our private port) when no node is registered any more.
    port_open "$EPMD_PORT" || return 0
    local names
    names="$(ERL_EPMD_PORT="$EPMD_PORT" epmd -names 2>/dev/null || true)"
    if [[ -n "$names" ]] && ! grep -q '^name ' <<<"$names"; then
        ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
    fi
}

rmq_status() {
    if rmq_running; then
        local state=running
        port_open "$AMQP_PORT" || state="running (AMQP port not open: starting or unhealthy)"
        printf 'rabbitmq: %s  port=%s pid=%s node=%s\n' "$state" "$AMQP_PORT" "$(rmq_pid)" "$RMQ_NODENAME"
        [[ "$state" == running ]] && return 0
        return 3
    fi
    printf 'rabbitmq: stopped  port=%s\n' "$AMQP_PORT"
    return 3
}

# --- commands ---------------------------------------------------------------

# A server that is already running keeps the ports it was started with: they win
# over FULFIL_*_PORT, so `env`, `psql`, `rabbitmqctl`, `status`, `stop` and
# `restart` talk to what actually runs even when called without the variables.
adopt_running_ports() {
    local pid port
    pid="$(pg_pid)"; port="$(pg_live_port)"
    if [[ "$pid" =~ ^[0-9]+$ && "$port" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        [[ -n "${FULFIL_PG_PORT:-}" && "$port" != "$PG_PORT" ]] \
            && warn "postgres already runs on port $port (not FULFIL_PG_PORT=$PG_PORT); using $port"
        PG_PORT="$port"
    fi
    if rmq_running && [[ -r "$RMQ_DIR/ports.env" ]]; then
        local key val
        while IFS='=' read -r key val; do
            [[ "$val" =~ ^[0-9]+$ ]] || continue
            case "$key" in
                AMQP_PORT)
                    [[ -n "${FULFIL_AMQP_PORT:-}" && "$val" != "$AMQP_PORT" ]] \
                        && warn "rabbitmq already runs on port $val (not FULFIL_AMQP_PORT=$AMQP_PORT); using $val"
                    AMQP_PORT="$val" ;;
                DIST_PORT) DIST_PORT="$val" ;;
                EPMD_PORT) EPMD_PORT="$val" ;;
                MGMT_PORT) MGMT_PORT="$val" ;;
            esac
        done <"$RMQ_DIR/ports.env"
    fi
}

services_for() {
    case "${1:-all}" in
        all|"") echo postgres rabbitmq ;;
        postgres|pg) echo postgres ;;
        rabbitmq|rabbit|rmq) echo rabbitmq ;;
        *) die "unknown service '$1' (expected postgres or rabbitmq)" ;;
    esac
}

fn_for() {  # fn_for ACTION SERVICE
    case "$2" in postgres) echo "pg_$1" ;; rabbitmq) echo "rmq_$1" ;; esac
}

cmd_start()   { local s; for s in $(services_for "${1:-}"); do "$(fn_for start "$s")"; done; }
cmd_stop()    { local s; for s in $(services_for "${1:-}"); do "$(fn_for stop "$s")"; done; }
cmd_restart() { local s; for s in $(services_for "${1:-}"); do "$(fn_for stop "$s")"; "$(fn_for start "$s")"; done; }
cmd_status() {
    local s rc=0
    for s in $(services_for "${1:-}"); do "$(fn_for status "$s")" || rc=3; done
    return "$rc"
}

cmd_env() {
    cat <<EOF
export DATABASE_URL='postgresql+psycopg://$APP_USER:$APP_PASS@127.0.0.1:$PG_PORT/$APP_DB'
export BROKER_URL='amqp://$APP_USER:$APP_PASS@127.0.0.1:$AMQP_PORT/%2F'
EOF
}

cmd_psql() {
    # As role fulfil over TCP with its password, as the invoking user: works for
    # root and non-root alike, and relative paths in args stay relative to the cwd.
    PGPASSWORD="$APP_PASS" exec "$PG_BIN/psql" -X -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" -d "$APP_DB" "$@"
}

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    adopt_running_ports
    case "$cmd" in
        start|stop|restart|status)
            [[ $# -le 1 ]] || die "usage: $0 $cmd [postgres|rabbitmq]"
            "cmd_$cmd" "$@" ;;
        env) cmd_env ;;
        psql) cmd_psql "$@" ;;
        rabbitmqctl|rabbitmq-diagnostics|rabbitmq-plugins|rabbitmq-queues)
            rmq_cli "$cmd" "$@" ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
