"""`make mutate`'s report: the kill rate of mutmut's mutants per money module, and each survivor.

Reads mutmut's own results (mutants/**/*.py.meta: mutant name -> the exit code of its tests) and
`tests/mutation/equivalent.txt`, the survivors judged equivalent (one per line: the mutant's name,
then `#` and why).  Prints, per module, the mutants checked, killed (or timed out), survived, and
the kill rate with equivalents left out; then each survivor not judged equivalent, with its diff
(`mutmut show`) unless --brief.  Exit 1 if such a survivor is left, 0 otherwise.

    python scripts/mutation_report.py [--brief] [--only GLOB ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.txt"
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # mutmut: killed, pytest internal error, timeouts, type check
SURVIVED = {0}


def equivalents(path: Path = EQUIVALENT) -> dict[str, str]:
    """The survivors judged equivalent, by name, with why (none if the file is absent)."""
    judged: dict[str, str] = {}
    if not path.exists():
        return judged
    for line in path.read_text().splitlines():
        name, _, why = line.partition("#")
        if name.strip():
            judged[name.strip()] = why.strip()
    return judged


def results() -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        found.update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def module_of(mutant: str) -> str:
    return mutant.split(".x")[0] if ".x" in mutant else mutant.rsplit(".", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brief", action="store_true", help="survivors by name only, no diffs")
    parser.add_argument("--only", nargs="*", default=[], help="mutant name globs (the scope of this run)")
    args = parser.parse_args()
    judged = equivalents()
    codes = {name: code for name, code in results().items()
             if not args.only or any(fnmatch.fnmatchcase(name, glob) for glob in args.only)}
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: list[str] = []
    for name, code in sorted(codes.items()):
        row = rows[module_of(name)]
        if code is None:
            row["not checked"] += 1
            continue
        row["checked"] += 1
        if code in KILLED:
            row["killed"] += 1
        elif code in SURVIVED and name in judged:
            row["equivalent"] += 1
        elif code in SURVIVED:
            row["survived"] += 1
            survivors.append(name)
        else:  # no tests (33, 5), skipped, suspicious, segfault
            row["other"] += 1
            survivors.append(name)
    print(f"{'module':48} {'checked':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'other':>6} {'unchecked':>10} "
          f"{'kill rate':>9}")
    total: dict[str, int] = defaultdict(int)
    for module, row in sorted(rows.items()):
        for key, value in row.items():
            total[key] += value
        print(_line(module, row))
    print(_line("all", total))
    stale = sorted(set(judged) - set(results()))
    if stale:
        print(f"\n{len(stale)} mutant(s) in {EQUIVALENT.relative_to(ROOT)} no longer exist (the code changed): "
              + ", ".join(stale[:10]))
    if survivors:
        print(f"\n{len(survivors)} survivor(s) not judged equivalent (a missing test, or add it with its reason "
              f"to {EQUIVALENT.relative_to(ROOT)}):")
        for name in survivors:
            print(f"  {name} (exit {codes[name]})")
            if not args.brief:
                shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, capture_output=True,
                                       text=True, check=False)
                print("    " + "\n    ".join(shown.stdout.strip().splitlines()[-12:]))
    return 1 if survivors else 0


def _line(module: str, row: dict[str, int]) -> str:
    checked, killed, equivalent = row["checked"], row["killed"], row["equivalent"]
    relevant = checked - equivalent
    rate = f"{100 * killed / relevant:.1f} %" if relevant else "-"
    return (f"{module:48} {checked:>8} {killed:>7} {equivalent:>7} {row['survived']:>9} {row['other']:>6} "
            f"{row['not checked']:>10} {rate:>9}")


if __name__ == "__main__":
    sys.exit(main())
