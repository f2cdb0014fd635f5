"""`mutmut run`, incremental within a scope of mutant-name globs (scripts/mutate.sh runs it).

mutmut 3.8.1 keeps each mutant's verdict in mutants/ and, run without names, checks only the
mutants without one (new, or of a function whose source changed).  But it re-runs every mutant
*named* on its command line, and a glob names them all: `make mutate`'s scope (the money
functions) would start again from the first mutant on every run, and a capped run would never get
past the first few hundred.

This wrapper changes one thing, in one function: of the mutants the names select, it keeps those
without a verdict and the survivors (or mutants no test covers) not judged equivalent (tests/mutation/equivalent.txt: their
tests may have been written since).  Killed mutants and judged equivalents keep their verdict.
MUTATE_RECHECK=1 re-runs every selected mutant, as mutmut itself does; MUTATE_ONLY_NEW=1 runs only
those without a verdict (a survivor's re-run runs all its tests: the slow part of a run).

And one more, in one method: a mutant's tests run fastest first (by the durations mutmut's stats
measured; pytest runs node ids in the order given, and stops at the first failure).  mutmut hands
them over in a set's order, so a mutant that a 0.05 s scripted test kills often waited first for a
40 s end-to-end one.  Which tests run is unchanged; only a killed mutant's verdict comes sooner.

    python scripts/mutmut_run.py [mutmut run options] [MUTANT_NAME_GLOB ...]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import EQUIVALENT, equivalents  # the one reader of equivalent.txt

SURVIVED = 0
NO_TESTS = 33  # no test covers the mutated function (yet): cheap to ask again


def judged_equivalent(path: Path = EQUIVALENT) -> set[str]:
    """The names in equivalent.txt (one per line, then `#` and why)."""
    return set(equivalents(path))


def still_to_check(mutants: list[tuple[Any, str, int | None]], equivalent: set[str], *,
                   only_new: bool = False) -> list[tuple[Any, str, int | None]]:
    """The mutants without a verdict, and (unless `only_new`) the survivors or uncovered ones not
    judged equivalent."""
    return [(data, name, result) for data, name, result in mutants
            if result is None or (not only_new and result in (SURVIVED, NO_TESTS) and name not in equivalent)]


def fastest_first(tests: Iterable[str], durations: Mapping[str, float]) -> list[str]:
    """`tests` by their measured duration (unmeasured ones last), then by name: a stable order."""
    return sorted(tests, key=lambda test: (durations.get(test, float("inf")), test))


def main(argv: list[str]) -> None:
    import mutmut.__main__ as mutmut_main  # the `mutate` extra (scripts/mutate.sh installs it)
    from mutmut.runners.harness import PytestRunner
    from mutmut.state import state

    regular_run = PytestRunner._pytest_args_regular_run

    def fastest_first_run(self: PytestRunner, tests: Iterable[str]) -> list[str]:
        return regular_run(self, fastest_first(tests, state().duration_by_test))

    PytestRunner._pytest_args_regular_run = fastest_first_run  # type: ignore[method-assign]

    original = mutmut_main.collect_source_file_mutation_data

    def collect(*, mutant_names: tuple[str, ...] | list[str]) -> Any:
        mutants, by_path = original(mutant_names=mutant_names)
        if mutant_names and os.environ.get("MUTATE_RECHECK") != "1":
            left = still_to_check(mutants, judged_equivalent(), only_new=os.environ.get("MUTATE_ONLY_NEW") == "1")
            print(f"    {len(mutants)} mutants in scope, {len(mutants) - len(left)} with a verdict kept, "
                  f"{len(left)} to run", flush=True)
            mutants = left
        return mutants, by_path

    mutmut_main.collect_source_file_mutation_data = collect
    mutmut_main.cli(["run", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
