"""`python -m tests.chaos [--purchases N] [--seed S] [--timeout SECONDS]` (make chaos)."""

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
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, default=Path("bench-results/chaos.json"))
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="fulfil-chaos-"))
    result = run(ChaosConfig(purchases=args.purchases, seed=args.seed, timeout=args.timeout), log_dir)
    print(table(result))
    for leak in result.verdict["secret_leaks"][:20]:
        print("LEAK:", leak)
    print(f"logs: {log_dir}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(result), indent=2, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
