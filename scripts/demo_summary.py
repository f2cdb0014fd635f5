"""Summarise one demo run from `fulfil list --json` on stdin (used by scripts/demo.sh).

    demo_summary.py RUN_ID EXPECTED pending   -> how many of the run's purchases are not final
    demo_summary.py RUN_ID EXPECTED table     -> one line per purchase
    demo_summary.py RUN_ID EXPECTED events    -> the events of one purchase (`fulfil status --json`)
"""

import json
import sys

FINAL = {"transfer_complete", "transfer_expired", "cancelled", "failed", "needs_attention", "stalled",
         "tickets_issued"}

run_id, expected, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "events":
    for event in json.load(sys.stdin)["events"]:
        print(f"  {event['event_id']}  {event['type']:<28} published {event['published_at'] or '(not yet)'}")
    sys.exit(0)
mine = [p for p in json.load(sys.stdin)["purchases"] if p["request_id"].startswith(run_id + "-")]
if mode == "pending":
    print(sum(p["state"] not in FINAL for p in mine) + max(0, expected - len(mine)))
else:
    for p in sorted(mine, key=lambda p: p["request_id"]):
        print(f"  {p['request_id']:<24} {p['state']:<18} {p['order_id'] or p['failure_code'] or ''}")
