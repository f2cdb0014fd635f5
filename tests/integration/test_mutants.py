"""The hand-made mutants of the money paths are caught (issue 20).

Each mutant of `tests/support/mutants.py` (a small, realistic bug in the code that guards "never
two orders, never a lost order") is applied in turn, in a pytest process of its own, to the
focused tests it names: they must fail.  A mutant that starts passing one day shows here, in
`make test`.  (`make mutate` runs the tool-made mutants, README "Mutation testing".)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mutants import ENV, MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
# One mutant's focused tests: a fresh database and a few scripted examples, seconds.
TIMEOUT = 300


def _run(mutant: Mutant) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV: mutant.id, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.mutants", "-p", "no:cacheprovider", "-x", "-q",
         "--no-header", "-rN", *mutant.tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )


def test_every_mutant_names_tests_that_exist() -> None:
    for mutant in MUTANTS:
        for test in mutant.tests:
            path, _, name = test.partition("::")
            assert f"def {name}(" in (ROOT / path).read_text(), f"{mutant.id}: no test {test}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_the_mutant_is_caught_by_its_focused_tests(mutant: Mutant) -> None:
    result = _run(mutant)
    output = result.stdout + result.stderr
    # Exit code 1: tests ran and some failed (not an import error, a usage error or no test).
    assert result.returncode == 1 and re.search(r"\b\d+ failed\b", output), \
        f"mutant {mutant.id} ({mutant.bug}) survived its tests (exit {result.returncode}):\n{output[-3000:]}"
    assert "Traceback" not in result.stderr or "RuntimeError: mutant" not in result.stderr, output[-3000:]
