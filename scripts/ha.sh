#!/usr/bin/env bash
# The local HA stack (README "Operations"): a 3-node RabbitMQ cluster and a Postgres primary with
# a synchronous standby managed by Patroni (etcd as its store), all on 127.0.0.1, state in .local/ha.
#
#   scripts/ha.sh up                 install what is missing (as root), start everything (no-op if running)
#   scripts/ha.sh down               stop everything
#   scripts/ha.sh status             nodes, cluster members, Patroni roles (exit 3 if something is down)
#   scripts/ha.sh env                DATABASE_URL / BROKER_URL / BROKER_MANAGEMENT_URL naming every node,
#                                    BROKER_QUEUE_TYPE=quorum, SYNC_STANDBY_POLICY=require
#   scripts/ha.sh kill-rabbit N      kill -9 RabbitMQ node N (1-3);  start-rabbit N  brings it back
#   scripts/ha.sh leader-rabbit Q    the node number leading quorum queue Q (default purchases.intake)
#   scripts/ha.sh failover           kill -9 the Postgres primary (Patroni and postgres): the standby is promoted
#   scripts/ha.sh start-pg N         bring Patroni node N (1-2) back: it rejoins as a standby (pg_rewind)
#   scripts/ha.sh rabbitmqctl N ...  rabbitmqctl against node N;  patronictl ...  against the pair
#
# Ports (31000-31999, so that it never meets the dev servers, the chaos runs or other checkouts):
#   RabbitMQ AMQP 31671-31673, distribution 31771-31773, management HTTP API 31871-31873, epmd 31369
#   Postgres 31431-31432, Patroni REST 31801-31802, etcd client 31379 / peer 31380
# Lean on purpose (this machine may have 2 cores): one Erlang scheduler per node, one etcd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HA="${FULFIL_HA_DIR:-$ROOT/.local/ha}"
SERVICES="$ROOT/scripts/services.sh"
PG_BIN=/usr/lib/postgresql/15/bin
EPMD_PORT=31369
ETCD_CLIENT=31379
ETCD_PEER=31380
RABBITS=(1 2 3)
PGS=(1 2)
APP_USER=fulfil
APP_PASS=fulfil
SUPER_PASS=ha-super
REPL_PASS=ha-repl
IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1

say()  { printf 'ha: %s\n' "$*"; }
die()  { printf 'ha: ERROR: %s\n' "$*" >&2; exit 1; }

amqp_port() { echo $((31670 + $1)); }
dist_port() { echo $((31770 + $1)); }
mgmt_port() { echo $((31870 + $1)); }
pg_port()   { echo $((31430 + $1)); }
rest_port() { echo $((31800 + $1)); }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_postgres() {  # run as the postgres user when root (initdb and postgres refuse root)
    if [[ $IS_ROOT == 1 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# For servers started in the background: a command, not a function, so that bash keeps no copy of
# the caller's stdout in the server (a caller piping `ha.sh up` would otherwise wait for ever).
AS_POSTGRES=()
[[ $IS_ROOT == 1 ]] && AS_POSTGRES=(runuser -u postgres --)

install_missing() {
    local missing=()
    command -v patroni >/dev/null || missing+=(patroni)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    [[ -x "$PG_BIN/postgres" ]] || missing+=(postgresql-15)
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
    ((${#missing[@]} == 0)) && return 0
    [[ $IS_ROOT == 1 ]] || die "missing ${missing[*]}: run as root, or apt-get install ${missing[*]}"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- RabbitMQ: three nodes of scripts/services.sh, one cookie, classic peer discovery ---------

rabbit() {  # rabbit N services.sh-args...
    local n="$1"; shift
    local peers="" m
    for m in "${RABBITS[@]}"; do peers+="cluster_formation.classic_config.nodes.$m = ha$m@localhost"$'\n'; done
    FULFIL_LOCAL_DIR="$HA/rabbit$n" FULFIL_AMQP_PORT="$(amqp_port "$n")" FULFIL_RABBIT_DIST_PORT="$(dist_port "$n")" \
    FULFIL_EPMD_PORT="$EPMD_PORT" FULFIL_RABBIT_NODENAME="ha$n@localhost" FULFIL_RABBIT_ERL_ARGS="+S 1:1 +A 2" \
    FULFIL_RABBIT_MGMT=1 FULFIL_RABBIT_MGMT_PORT="$(mgmt_port "$n")" \
    FULFIL_RABBIT_CONF_EXTRA="cluster_formation.peer_discovery_backend = classic_config
${peers}cluster_partition_handling = pause_minority
consumer_timeout = 1800000" \
        bash "$SERVICES" "$@"
}

rabbit_cookie() {  # every node (and its CLI) presents the same cookie
    mkdir -p "$HA"
    [[ -s "$HA/erlang.cookie" ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HA/erlang.cookie"
    local n
    for n in "${RABBITS[@]}"; do
        mkdir -p "$HA/rabbit$n/rabbitmq/home"
        cp "$HA/erlang.cookie" "$HA/rabbit$n/rabbitmq/home/.erlang.cookie"
        chmod 600 "$HA/rabbit$n/rabbitmq/home/.erlang.cookie"
        [[ $IS_ROOT == 1 ]] && id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq: "$HA/rabbit$n/rabbitmq/home"
    done
    return 0
}

rabbit_up() {  # one node after the other: a new cluster forms around node 1 (classic peer discovery);
    # an existing one restarts from node 1, the last one `down` stopped (a clustered node waits at
    # boot for the peers that stopped after it; starting them together races on feature flags).
    rabbit_cookie
    local n
    for n in "${RABBITS[@]}"; do rabbit "$n" start rabbitmq | sed "s/^/[rabbit$n] /"; done
}

rabbit_pid() { cat "$HA/rabbit$1/rabbitmq/rabbitmq.pid" 2>/dev/null || true; }

kill_rabbit() {
    local n="$1" pid
    [[ " ${RABBITS[*]} " == *" $n "* ]] || die "no RabbitMQ node $n (1-3)"
    pid="$(rabbit_pid "$n")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || die "RabbitMQ node $n is not running"
    kill -KILL "$pid"
    say "RabbitMQ node $n (ha$n@localhost, AMQP $(amqp_port "$n")) killed (pid $pid)"
}

leader_rabbit() {  # the node number that leads quorum queue $1
    local queue="${1:-purchases.intake}" n out
    for n in "${RABBITS[@]}"; do
        port_open "$(amqp_port "$n")" || continue
        out="$(rabbit "$n" rabbitmqctl -q list_queues name leader --no-table-headers 2>/dev/null)" || continue
        awk -v q="$queue" '$1 == q { sub(/^ha/, "", $2); sub(/@.*/, "", $2); print $2; found=1 } END { exit !found }' <<<"$out" \
            && return 0
    done
    die "no running node knows quorum queue $queue"
}

# --- etcd and Patroni ------------------------------------------------------------------------

etcd_up() {
    if port_open "$ETCD_CLIENT"; then say "etcd: running on $ETCD_CLIENT"; return 0; fi
    mkdir -p "$HA/etcd"
    [[ $IS_ROOT == 1 ]] && chown postgres: "$HA/etcd"
    "${AS_POSTGRES[@]}" setsid etcd --name ha-etcd --data-dir "$HA/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-cluster "ha-etcd=http://127.0.0.1:$ETCD_PEER" --log-level warn \
        >>"$HA/etcd/etcd.log" 2>&1 </dev/null &
    for _ in $(seq 100); do port_open "$ETCD_CLIENT" && break; sleep 0.2; done
    port_open "$ETCD_CLIENT" || die "etcd did not start (see $HA/etcd/etcd.log)"
    say "etcd: running on $ETCD_CLIENT"
}

patroni_config() {  # patroni_config N: the YAML of Patroni node N
    local n="$1"
    cat <<EOF
scope: fulfil-ha
name: pg$n
restapi:
  listen: 127.0.0.1:$(rest_port "$n")
  connect_address: 127.0.0.1:$(rest_port "$n")
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    failsafe_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_log_hints: "on"
        max_connections: 200
        shared_buffers: 64MB
        max_wal_senders: 5
        max_replication_slots: 5
        wal_keep_size: 128MB
  initdb:
    - encoding: UTF8
    - auth-local: trust
postgresql:
  listen: 127.0.0.1:$(pg_port "$n")
  connect_address: 127.0.0.1:$(pg_port "$n")
  data_dir: $HA/pg$n/data
  bin_dir: $PG_BIN
  pgpass: $HA/pg$n/pgpass
  authentication:
    superuser: {username: postgres, password: $SUPER_PASS}
    replication: {username: replicator, password: $REPL_PASS}
    rewind: {username: postgres, password: $SUPER_PASS}
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 md5
    - host replication replicator 127.0.0.1/32 md5
  parameters:
    unix_socket_directories: $HA/pg$n
EOF
}

patroni_pid() { pgrep -u postgres -f -- "patroni $HA/pg$1/patroni.yml\$" | head -1 || true; }
patroni_running() { local pid; pid="$(patroni_pid "$1")"; [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; }

start_pg() {
    local n="$1"
    [[ " ${PGS[*]} " == *" $n "* ]] || die "no Patroni node $n (1-2)"
    if patroni_running "$n"; then say "pg$n: Patroni running (pid $(patroni_pid "$n"))"; return 0; fi
    mkdir -p "$HA/pg$n"
    patroni_config "$n" >"$HA/pg$n/patroni.yml"
    [[ $IS_ROOT == 1 ]] && chown -R postgres: "$HA/pg$n"
    chmod 700 "$HA/pg$n"
    cd "$HA/pg$n"
    "${AS_POSTGRES[@]}" setsid patroni "$HA/pg$n/patroni.yml" >>"$HA/pg$n/patroni.log" 2>&1 </dev/null &
    cd "$ROOT"
    say "pg$n: Patroni started (Postgres $(pg_port "$n"), REST $(rest_port "$n"))"
}

role_of() {  # role_of N: primary | replica | down (Patroni's REST API)
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(rest_port "$1")/primary" 2>/dev/null || true)"
    case "$code" in 200) echo primary ;; 503) echo replica ;; *) echo down ;; esac
}

primary_node() {
    local n
    for n in "${PGS[@]}"; do [[ "$(role_of "$n")" == primary ]] && { echo "$n"; return 0; }; done
    return 1
}

wait_for() {  # wait_for SECONDS WHAT CMD...
    local seconds="$1" what="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what"
        sleep 1
    done
}

sync_standby_ready() {
    local p; p="$(primary_node)" || return 1
    PGPASSWORD="$SUPER_PASS" "$PG_BIN/psql" -XtA -h 127.0.0.1 -p "$(pg_port "$p")" -U postgres -d postgres \
        -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'" | grep -qx 1
}

app_database() {  # the application's role and database on the primary, and pg_monitor for the health check
    local p; p="$(primary_node)"
    PGPASSWORD="$SUPER_PASS" PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -XqtA -h 127.0.0.1 -p "$(pg_port "$p")" -U postgres -d postgres <<EOF >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') THEN
    CREATE ROLE $APP_USER LOGIN PASSWORD '$APP_PASS' CREATEDB;
  END IF;
END \$\$;
GRANT pg_monitor TO $APP_USER;
SELECT 'CREATE DATABASE $APP_USER OWNER $APP_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$APP_USER')
\gexec
EOF
}

failover() {
    local p pid postmaster
    p="$(primary_node)" || die "no primary to fail over from"
    pid="$(patroni_pid "$p")"
    postmaster="$(head -1 "$HA/pg$p/data/postmaster.pid" 2>/dev/null || true)"
    kill -KILL "$pid" 2>/dev/null || true
    [[ "$postmaster" =~ ^[0-9]+$ ]] && kill -KILL "$postmaster" 2>/dev/null || true
    say "primary pg$p killed (Patroni pid $pid, postmaster ${postmaster:-?}); Patroni promotes the synchronous standby once the leader key expires (ttl 20 s)"
}

stop_pg() {
    local n="$1" pid
    pid="$(patroni_pid "$n")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"  # Patroni stops its postgres
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    local postmaster; postmaster="$(head -1 "$HA/pg$n/data/postmaster.pid" 2>/dev/null || true)"
    if [[ "$postmaster" =~ ^[0-9]+$ ]] && kill -0 "$postmaster" 2>/dev/null; then
        as_postgres "$PG_BIN/pg_ctl" -D "$HA/pg$n/data" -m fast -w stop >/dev/null 2>&1 || kill -KILL "$postmaster" 2>/dev/null || true
    fi
}

# --- commands --------------------------------------------------------------------------------

cmd_up() {
    install_missing
    mkdir -p "$HA"
    [[ $IS_ROOT == 1 ]] && chmod o+x "$ROOT" "$ROOT/.local" "$HA" 2>/dev/null
    rabbit_up
    etcd_up
    # Both at once: a new pair bootstraps one and clones the other; an existing one elects the
    # node with the latest WAL, which may be either.
    start_pg 1
    start_pg 2
    wait_for 120 "a Postgres primary" primary_node
    wait_for 120 "a synchronous standby" sync_standby_ready
    app_database
    say "up: $(cmd_env | tr '\n' ' ')"
}

cmd_down() {
    local n p
    p="$(primary_node 2>/dev/null || true)"
    for n in "${PGS[@]}"; do [[ "$n" == "$p" ]] || stop_pg "$n"; done  # the standby first: no failover on the way
    [[ -n "$p" ]] && stop_pg "$p"
    local pid; pid="$(pgrep -f -- "etcd --name ha-etcd --data-dir $HA/etcd/data" | head -1 || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -TERM "$pid"; fi
    for n in 3 2 1; do rabbit "$n" stop rabbitmq | sed "s/^/[rabbit$n] /"; done  # node 1 last: it starts first
    say "down"
}

cmd_status() {
    local n rc=0
    for n in "${RABBITS[@]}"; do
        if port_open "$(amqp_port "$n")"; then say "rabbit$n: up (AMQP $(amqp_port "$n"))"; else say "rabbit$n: DOWN"; rc=3; fi
    done
    for n in "${RABBITS[@]}"; do
        if port_open "$(amqp_port "$n")"; then
            rabbit "$n" rabbitmqctl -q cluster_status --formatter json 2>/dev/null \
                | python3 -c 'import json,sys; s=json.load(sys.stdin); print("ha: cluster: running", " ".join(sorted(s["running_nodes"])), "of", " ".join(sorted(s["disk_nodes"])))' || true
            break
        fi
    done
    if port_open "$ETCD_CLIENT"; then say "etcd: up ($ETCD_CLIENT)"; else say "etcd: DOWN"; rc=3; fi
    for n in "${PGS[@]}"; do
        local role; role="$(role_of "$n")"
        say "pg$n: $role (Postgres $(pg_port "$n"))"
        [[ "$role" == down ]] && rc=3
    done
    return "$rc"
}

cmd_env() {
    local n urls=() mgmt=() hosts=()
    for n in "${RABBITS[@]}"; do urls+=("amqp://$APP_USER:$APP_PASS@127.0.0.1:$(amqp_port "$n")/%2F"); done
    for n in "${RABBITS[@]}"; do mgmt+=("http://$APP_USER:$APP_PASS@127.0.0.1:$(mgmt_port "$n")"); done
    for n in "${PGS[@]}"; do hosts+=("127.0.0.1:$(pg_port "$n")"); done
    local IFS=';'
    echo "export BROKER_URL='${urls[*]}'"
    echo "export BROKER_MANAGEMENT_URL='${mgmt[*]}'"
    IFS=','
    echo "export DATABASE_URL='postgresql+psycopg://$APP_USER:$APP_PASS@${hosts[*]}/$APP_USER?target_session_attrs=read-write'"
    echo "export BROKER_QUEUE_TYPE=quorum"
    echo "export SYNC_STANDBY_POLICY=require"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) cmd_env ;;
        kill-rabbit) kill_rabbit "${1:?usage: ha.sh kill-rabbit N}" ;;
        start-rabbit) rabbit_cookie; rabbit "${1:?usage: ha.sh start-rabbit N}" start rabbitmq ;;
        leader-rabbit) leader_rabbit "${1:-purchases.intake}" ;;
        failover) failover ;;
        start-pg) start_pg "${1:?usage: ha.sh start-pg N}" ;;
        primary) primary_node ;;
        rabbitmqctl) local n="${1:?usage: ha.sh rabbitmqctl N ARGS}"; shift; rabbit "$n" rabbitmqctl "$@" ;;
        patronictl) as_postgres patronictl -c "$HA/pg1/patroni.yml" "$@" ;;
        -h|--help|help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
        *) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
