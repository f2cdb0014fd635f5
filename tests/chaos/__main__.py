"""`python -m tests.chaos [--purchases N] [--seed S] [--timeout SECONDS] [--postgres-outage SECONDS]
[--freeze-leader SECONDS] [--absence-policy]` (make chaos)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from tests.chaos.run import ChaosConfig, run, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purchases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--postgres-outage", type=float, default=180, help="seconds Postgres is down")
    parser.add_argument("--freeze-leader", type=float, default=90, help="seconds the scheduler leader is frozen")
    parser.add_argument("--absence-policy", action="store_true",
                        help="set ORDER_ABSENCE_GRACE_SECONDS (unprovable order outcomes re-quote instead of "
                        "needs_attention; off by default, as in production)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/chaos.json"))
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="fulfil-chaos-"))
    result = run(ChaosConfig(purchases=args.purchases, seed=args.seed, timeout=args.timeout,
                               postgres_outage=args.postgres_outage, freeze_leader=args.freeze_leader,
                               absence_policy=args.absence_policy), log_dir)
    print(table(result))
    for line in result.verdict["needs_attention_detail"][:50]:
        print("NEEDS ATTENTION:", line)
    for leak in result.verdict["secret_leaks"][:20]:
        print("LEAK:", leak)
    print(f"logs: {log_dir}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(result), indent=2, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
