#!/usr/bin/env bash
# `make demo`: the whole product on this machine, end to end.
#
# Starts (in the background, logs under .local/demo/) the TBB and Ticketmaster sandboxes,
# the dramatiq workers and the scheduler against the local Postgres and RabbitMQ, submits
# sample purchases through both partners — most succeed, some fail on purpose — and shows
# them reach their final states. Everything it started is stopped at the end, unless DEMO_KEEP=1.
#
#   scripts/demo.sh          run the demo
#   scripts/demo.sh stop     stop processes left running by DEMO_KEEP=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.local/demo"
VENV="$ROOT/.venv"
SANDBOX_PORT="${DEMO_SANDBOX_PORT:-18080}"
TM_SANDBOX_PORT="${DEMO_TM_SANDBOX_PORT:-18090}"
mkdir -p "$RUN"
cd "$ROOT"

stop_all() {
    for name in scheduler workers sandbox tm-sandbox; do
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

# DEMO_SERVERS=scripts/ha.sh (make ha-demo): the HA stack's URLs, every node named, quorum queues.
eval "$(bash "${DEMO_SERVERS:-scripts/services.sh}" env)"
export DATABASE_URL BROKER_URL
export TBB_BASE_URL="http://127.0.0.1:$SANDBOX_PORT" TBB_CLIENT_ID=partner-a TBB_CLIENT_SECRET=sandbox-secret-a
# Demo timings: a purchase's whole life in seconds rather than hours.
export SANDBOX_TRANSFER_AFTER_SECONDS=4 SANDBOX_TRANSFER_OUTCOME='{"transfer_complete": 0.8, "transfer_expired": 0.1, "cancelled": 0.1}'
export TRANSFER_POLL_MIN_SECONDS=1 TRANSFER_POLL_SECONDS=2 SCHEDULER_INTERVAL_SECONDS=1 REDRIVE_AFTER_SECONDS=5
export QUOTE_SAFETY_MARGIN_SECONDS=5 ACTOR_MIN_BACKOFF_MS=200 ACTOR_MAX_BACKOFF_MS=2000 LOG_LEVEL=INFO
# Ticketmaster through its sandbox: the sandbox's apikey, the operator's (made-up) billing identity
# and payment nonce, a ticket key for the demo only.  No niterun: the demo must not depend on the hour.
export TM_ENABLED=true TM_BASE_URL="http://127.0.0.1:$TM_SANDBOX_PORT/partners/v1" TM_APIKEY=tm-sandbox-apikey
export TM_DEVICE_ID=ticket-fulfilment-demo TM_BILLING_FIRST_NAME=Tom TM_BILLING_LAST_NAME=Brown
export TM_BILLING_EMAIL=tickets@example.com TM_BILLING_PHONE=4110001234 TM_PAYMENT_SOURCE=request
export TM_PAYMENT_CIN=123 TICKET_KEY=ZGVtby1vbmx5LXRpY2tldC1rZXktMzItYnl0ZXMhISE= TM_SANDBOX_NITERUN=off

start() {  # name, command...
    local name="$1"; shift
    setsid "$@" >>"$RUN/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

echo "demo: migrating the database"
"$VENV/bin/fulfil" migrate >/dev/null
echo "demo: starting the sandboxes (TBB port $SANDBOX_PORT, Ticketmaster $TM_SANDBOX_PORT), workers and scheduler;"
echo "      logs in .local/demo/"
start sandbox "$VENV/bin/fulfil" sandbox --port "$SANDBOX_PORT"
start tm-sandbox "$VENV/bin/fulfil" sandbox --partner ticketmaster --port "$TM_SANDBOX_PORT"
start workers "$VENV/bin/dramatiq" workers --processes 2 --threads 4
start scheduler "$VENV/bin/fulfil" scheduler
[[ "${DEMO_KEEP:-0}" == "1" ]] || trap stop_all EXIT

for port in "$SANDBOX_PORT" "$TM_SANDBOX_PORT"; do
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2
    done
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
# Through Ticketmaster (`fulfil submit-json`: a request of any partner): SafeTix tickets, barcode-only
# tickets, and one above its all-in price limit (the cart is deleted).
tm() {  # request-id suffix, event, ticket type, price level, quantity, max unit price
    printf '{"partner": "ticketmaster", "request_id": "%s-%s", "event_id": "%s", "ticket_type_id": "%s",
             "price_level_id": "%s", "quantity": %s, "max_unit_price": "%s", "third_party_account_id": "buyer-%s",
             "delivery_deadline": "%s", "payment_nonce": "fake-valid-nonce-%s-%s"}' \
             "$run_id" "$1" "$2" "$3" "$4" "$5" "$6" "$1" "$deadline" "$run_id" "$1" \
        | "$VENV/bin/fulfil" submit-json -
}
ids+=("$(tm tm-1 000051048D991EE7 000000000001 1 2 60)")
ids+=("$(tm tm-2 0B004D43F86C478F 000042800007 8 1 200)")
ids+=("$(tm tm-3 3F005237E5CB39EA 000002040006 1 2 150)")
ids+=("$(tm tm-4 000051048D991EE7 000000000001 1 1 40)")   # too dear: 54.41 all in
printf '  %s\n' "${ids[@]}"

echo "demo: waiting for final states (up to 90 s)"
# One query per second: how many of this run's purchases are not final yet.
summary() {
    "$VENV/bin/fulfil" list --json --limit 500 | "$VENV/bin/python" scripts/demo_summary.py "$run_id" 13 "$1"
}
pending=13
for _ in $(seq 1 90); do
    pending="$(summary pending)"
    [[ "$pending" == "0" ]] && break
    sleep 1
done

echo
echo "demo: purchases of this run (the duplicate submission of #1 made no second purchase)"
summary table
echo
echo "demo: a Ticketmaster purchase in full: its tickets are stored with their tokens encrypted, and sent"
echo "      to the requester in the purchase.tickets_issued event (never logged, never shown here)"
"$VENV/bin/fulfil" status "${ids[10]}"
echo
echo "demo: the purchase whose delivery deadline was near, in full: the scheduler flagged it (!!) and"
echo "      every entry of its history was published as an event to the exchange fulfilment.events"
"$VENV/bin/fulfil" status "${ids[8]}"
"$VENV/bin/fulfil" status "${ids[8]}" --json | "$VENV/bin/python" scripts/demo_summary.py "$run_id" 13 events
if [[ $pending -ne 0 ]]; then echo "demo: $pending purchase(s) not final; see .local/demo/*.log" >&2; exit 1; fi
