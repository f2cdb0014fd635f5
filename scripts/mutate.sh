#!/usr/bin/env bash
# `make mutate`: mutation testing of the money modules with mutmut (README "Mutation testing").
#
#   1. the hand-made mutants (tests/support/mutants.py) against their focused tests
#      (tests/integration/test_mutants.py, also part of `make test`);
#   2. mutmut's mutants of the money modules ([tool.mutmut] in pyproject.toml), each run against the
#      focused tests that cover the function it changes, niced and capped in time; mutmut keeps each
#      verdict in mutants/ (git-ignored), and scripts/mutmut_run.py makes the next run check only
#      what is new or changed, and the survivors not judged equivalent (MUTATE_RECHECK=1: all again);
#   3. the report: kill rate per module, each survivor not judged equivalent
#      (tests/mutation/equivalent.txt), exit 1 if one is left.
#
# Env: MUTATE_SCOPE    mutant name globs (default: the money functions below; "all": every mutant of
#                      [tool.mutmut] only_mutate)
#      MUTATE_MAX_SECONDS  cap of mutmut's run (default 3600); what is left is checked by the next run
#      MUTATE_CHILDREN     parallel mutants (default 1: the machine is shared)
#      MUTATE_RECHECK=1    re-run every mutant in scope; MUTATE_ONLY_NEW=1: only those without a verdict
#      MUTATE_SKIP_HANDMADE=1  skip step 1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=.venv/bin/python

# The functions that guard "never two orders, never a lost order" (mutmut's names: module.x_function,
# module.xǁClassǁmethod).  The log and history texts around them are left to the focused tests.
DEFAULT_SCOPE=(
  'fulfilment.statements.*'
  'fulfilment.state_machine.x_check_transition*' 'fulfilment.state_machine.x_is_live*'
  'fulfilment.state_machine.x_claim*' 'fulfilment.state_machine.x_lease_held*'
  'fulfilment.state_machine.x_transition*' 'fulfilment.state_machine.x__execute*'
  'fulfilment.state_machine.x_release*' 'fulfilment.state_machine.x__release*' 'fulfilment.state_machine.x_reschedule*'
  'fulfilment.state_machine.x_save*' 'fulfilment.state_machine.x_late_answer*' 'fulfilment.state_machine.x_orphan_order*'
  'fulfilment.state_machine.x_ordered_state*'
  'fulfilment.steps.quote.*' 'fulfilment.steps.order.*' 'fulfilment.steps.transfer.*'
  'fulfilment.steps.runner.x_deliver*' 'fulfilment.steps.runner.x_hands_over*' 'fulfilment.steps.runner.x__give_back*'
  'fulfilment.flowkit.orders.*' 'fulfilment.flowkit.fencing.x_keep_answer*'
  'fulfilment.flowkit.fencing.x_claim_for_step*' 'fulfilment.flowkit.fencing.x_record*' 'fulfilment.flowkit.fencing.x_park*'
  'fulfilment.flowkit.fencing.x_release_and_retry*' 'fulfilment.flowkit.fencing.x_note_late*'
  'fulfilment.flowkit.fencing.x_fail_if_deadline_too_close*' 'fulfilment.flowkit.fencing.x_too_close_to_deadline*'
  'fulfilment.partners.tbb.flow.*'
  'fulfilment.steps.stall.*'
  'fulfilment.partners.tbb.errors.*'
  'fulfilment.partners.ticketmaster.errors.x_is_commit_definite*' 'fulfilment.partners.ticketmaster.errors.x_for_cart_call*'
  'fulfilment.partners.ticketmaster.flow.commit.xǁCommitǁorder*'
  'fulfilment.partners.ticketmaster.flow.commit.xǁCommitǁresolve*'
  'fulfilment.partners.ticketmaster.flow.commit.xǁCommitǁ_commit_failed*'
  'fulfilment.partners.ticketmaster.flow.commit.xǁCommitǁ_commit_answer*'
  'fulfilment.partners.ticketmaster.flow.commit.xǁCommitǁ_look_up*'
  'fulfilment.partners.ticketmaster.flow.reserve.xǁReserveǁ_nonce*' 'fulfilment.partners.ticketmaster.flow.reserve.xǁReserveǁ_pay*'
)
if [[ "${MUTATE_SCOPE:-}" == all ]]; then
  SCOPE=('*')
elif [[ -n "${MUTATE_SCOPE:-}" ]]; then
  read -r -a SCOPE <<< "$MUTATE_SCOPE"
else
  SCOPE=("${DEFAULT_SCOPE[@]}")
fi

"$PY" -c 'import mutmut' 2>/dev/null || .venv/bin/pip install -q -e '.[mutate]'

if [[ "${MUTATE_SKIP_HANDMADE:-0}" != 1 ]]; then
  echo "mutate: the hand-made mutants (tests/integration/test_mutants.py)"
  nice -n 10 "$PY" -m pytest tests/integration/test_mutants.py -q -p no:cacheprovider
fi

# mutmut runs the tests in its copy, mutants/: they find the local servers' state through it.
mkdir -p mutants .local && ln -sfn ../.local mutants/.local
echo "mutate: mutmut on ${SCOPE[*]} (at most ${MUTATE_MAX_SECONDS:-3600} s, ${MUTATE_CHILDREN:-1} at a time)"
status=0
nice -n 10 timeout --signal=INT --kill-after=60 "${MUTATE_MAX_SECONDS:-3600}" \
  "$PY" scripts/mutmut_run.py --max-children "${MUTATE_CHILDREN:-1}" "${SCOPE[@]}" > .local/mutmut-run.log 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
  echo "mutate: mutmut stopped (exit $status: 124/130 is the time cap; the next run goes on; log: .local/mutmut-run.log)"
fi
exec "$PY" scripts/mutation_report.py --brief --only "${SCOPE[@]}"
