#!/usr/bin/env bash
# `make demo`: the whole product on this machine, end to end.
#
# Starts (in the background, logs under .local/demo/) the TBB sandbox, the dramatiq
# workers and the scheduler against the local Postgres and RabbitMQ, submits sample
# purchases — most succeed, some fail on purpose — and shows them reach their final
# states. Everything it started is stopped at the end, unless DEMO_KEEP=1.
#
#   scripts/demo.sh          run the demo
#   scripts/demo.sh stop     stop processes left running by DEMO_KEEP=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.local/demo"
VENV="$ROOT/.venv"
SANDBOX_PORT="${DEMO_SANDBOX_PORT:-18080}"
mkdir -p "$RUN"
cd "$ROOT"

stop_all() {
    for name in scheduler workers sandbox; do
        local pidfile="$RUN/$name.pid"
        [[ -f "$pidfile" ]] || continue
        local pid; pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

if [[ "${1:-}" == "stop" ]]; then stop_all; echo "demo: stopped"; exit 0; fi
stop_all  # a previous demo's leftovers

eval "$(bash scripts/services.sh env)"
export DATABASE_URL BROKER_URL
export TBB_BASE_URL="http://127.0.0.1:$SANDBOX_PORT" TBB_CLIENT_ID=partner-a TBB_CLIENT_SECRET=sandbox-secret-a
# Demo timings: a purchase's whole life in seconds rather than hours.
export SANDBOX_TRANSFER_AFTER_SECONDS=4 SANDBOX_TRANSFER_OUTCOME='{"transfer_complete": 0.8, "transfer_expired": 0.1, "cancelled": 0.1}'
export TRANSFER_POLL_MIN_SECONDS=1 TRANSFER_POLL_SECONDS=2 SCHEDULER_INTERVAL_SECONDS=1 REDRIVE_AFTER_SECONDS=5
export QUOTE_SAFETY_MARGIN_SECONDS=5 ACTOR_MIN_BACKOFF_MS=200 ACTOR_MAX_BACKOFF_MS=2000 LOG_LEVEL=INFO

start() {  # name, command...
    local name="$1"; shift
    setsid "$@" >>"$RUN/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

echo "demo: migrating the database"
"$VENV/bin/fulfil" migrate >/dev/null
echo "demo: starting sandbox (port $SANDBOX_PORT), workers and scheduler; logs in .local/demo/"
start sandbox "$VENV/bin/fulfil" sandbox --port "$SANDBOX_PORT"
start workers "$VENV/bin/dramatiq" workers --processes 2 --threads 4
start scheduler "$VENV/bin/fulfil" scheduler
[[ "${DEMO_KEEP:-0}" == "1" ]] || trap stop_all EXIT

for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$SANDBOX_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2
done

run_id="demo-$(date +%s)"
deadline="$(date -u -d '+3 days' +%Y-%m-%dT%H:%M:%SZ)"
late="$(date -u -d '+60 days' +%Y-%m-%dT%H:%M:%SZ)"
soon="$(date -u -d '+90 minutes' +%Y-%m-%dT%H:%M:%SZ)"
submit() { "$VENV/bin/fulfil" submit --delivery-deadline "$deadline" "$@"; }

echo "demo: submitting sample purchases"
ids=()
ids+=("$(submit --request-id "$run_id-1" --event-id 5496123 --section-name 101 --row-name A --quantity 2)")
ids+=("$(submit --request-id "$run_id-2" --event-id 5496124 --section-name 201 --quantity 4 --max-unit-price 200)")
ids+=("$(submit --request-id "$run_id-3" --event-id 5496125 --section-name 301 --quantity 1 --delivery-type pdf)")
ids+=("$(submit --request-id "$run_id-4" --event-id 5496126 --section-name 102 --quantity 3)")
ids+=("$(submit --request-id "$run_id-5" --event-id 5496123 --section-name 103 --quantity 2 --delivery-type mobile_qr)")
ids+=("$(submit --request-id "$run_id-6" --event-id 5490001 --section-name 102 --quantity 1)")   # sold out
ids+=("$(submit --request-id "$run_id-7" --event-id 5496123 --section-name 101 --quantity 2 --max-unit-price 50)")  # too dear
ids+=("$(submit --request-id "$run_id-8" --event-id 5496124 --section-name 101 --quantity 2 --delivery-deadline "$late")")  # after the event
ids+=("$(submit --request-id "$run_id-9" --event-id 5496125 --section-name 202 --quantity 2 --delivery-deadline "$soon")")  # deadline near
ids+=("$(submit --request-id "$run_id-1" --event-id 5496123 --section-name 101 --row-name A --quantity 2)")  # duplicate of #1
printf '  %s\n' "${ids[@]}"

echo "demo: waiting for final states (up to 90 s)"
# One query per second: how many of this run's purchases are not final yet.
summary() {
    "$VENV/bin/fulfil" list --json --limit 500 | "$VENV/bin/python" scripts/demo_summary.py "$run_id" 9 "$1"
}
pending=9
for _ in $(seq 1 90); do
    pending="$(summary pending)"
    [[ "$pending" == "0" ]] && break
    sleep 1
done

echo
echo "demo: purchases of this run (the duplicate submission of #1 made no second purchase)"
summary table
echo
echo "demo: the purchase whose delivery deadline was near, in full: the scheduler flagged it (!!) and"
echo "      every entry of its history was published as an event to the exchange fulfilment.events"
"$VENV/bin/fulfil" status "${ids[8]}"
"$VENV/bin/fulfil" status "${ids[8]}" --json | "$VENV/bin/python" scripts/demo_summary.py "$run_id" 9 events
if [[ $pending -ne 0 ]]; then echo "demo: $pending purchase(s) not final; see .local/demo/*.log" >&2; exit 1; fi
