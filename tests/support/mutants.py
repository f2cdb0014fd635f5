"""The hand-made mutants of the money paths (issue 20), and a pytest plugin that applies one.

Each `Mutant` is one small, realistic bug: a text `old` found exactly once in the source of one
module, replaced by `new`, and the focused tests that must fail with it.  `tests/integration/
test_mutants.py` runs those tests in a fresh pytest process per mutant, with this plugin:

    FULFIL_MUTANT=M4 python -m pytest -p tests.support.mutants <the mutant's tests>

The plugin patches the module's source as Python imports it (an import hook: nothing is written
to the work tree, so engineers and runs in parallel never see a mutant), refuses to start if the
text is not found exactly once (the code moved on: update the table), and prints the mutant it
applied in the report header.  A mutant that one day survives its tests is seen in `make test`.

Only in-process tests are listed: the mutant lives in the pytest process, not in worker or
sandbox processes it starts.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any

ENV = "FULFIL_MUTANT"

PROPS = "tests/integration/test_purchase_properties.py"
TM_PROPS = "tests/integration/test_tm_properties.py"
UNKIND = "tests/integration/test_tm_unkind.py"
FENCING = "tests/integration/test_fencing.py"
STATES = "tests/unit/test_state_machine.py"


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str  # dotted name of the module patched
    old: str  # found exactly once in its source
    new: str
    bug: str  # what it does, in one line
    tests: Sequence[str]  # pytest node ids
    also: tuple[tuple[str, str], ...] = ()  # more (old, new) edits of the same module, for one bug
    elsewhere: tuple[tuple[str, str, str], ...] = ()  # (module, old, new) edits of other modules, same bug

    @property
    def edits(self) -> tuple[tuple[str, str], ...]:
        return ((self.old, self.new), *self.also)

    @property
    def modules(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Every module the bug patches, with its (old, new) edits."""
        found = {self.module: self.edits}
        for module, old, new in self.elsewhere:
            found[module] = (*found.get(module, ()), (old, new))
        return found


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        # Both guards: either alone is a defence in depth the other makes equivalent (resolve_order
        # waits on evidence "exists" before it asks the policy; the policy refuses it too).
        "M3", "fulfilment.flowkit.orders",
        "if grace is None or purchase.order_evidence == OrderEvidence.EXISTS or purchase.quote_expires_at is None:",
        "if grace is None or purchase.quote_expires_at is None:",
        "the absence policy re-quotes a purchase whose quote the partner said was consumed (evidence: exists)",
        (f"{PROPS}::test_absence_policy_never_requotes_once_the_quote_was_consumed",),
        elsewhere=(("fulfilment.partners.tbb.flow",
                    "    if purchase.order_evidence == OrderEvidence.EXISTS:\n        return wait_or_hold(",
                    "    if False:\n        return wait_or_hold("),),
    ),
    Mutant(
        "M4", "fulfilment.partners.tbb.flow",
        "    first_attempt = first_attempt and sent == 1\n",
        "    first_attempt = first_attempt\n",
        "a refused re-send within the order step counts as proof that no order exists",
        (f"{PROPS}::test_m4_a_refused_resend_within_the_order_step_proves_nothing",
         f"{PROPS}::test_m4_replayed_example"),
    ),
    Mutant(
        "M6", "fulfilment.scheduler.redrive",
        "           AND (claimed_until IS NULL OR claimed_until < now())\n",
        "",
        "the scheduler re-drives a purchase whose lease a worker still holds (near-equivalent: wasted messages)",
        (f"{PROPS}::test_the_scheduler_never_redrives_a_purchase_whose_claim_is_live",),
    ),
    Mutant(
        "M7", "fulfilment.partners.tbb.flow",
        "if not _quote_usable(purchase, margin_seconds=settings.quote_safety_margin_seconds):",
        "if not _quote_usable(purchase, margin_seconds=0):",
        "TBB orders on a quote that expires within the safety margin",
        (f"{PROPS}::test_no_order_inside_the_safety_margin",),
    ),
    Mutant(
        "M12", "fulfilment.partners.ticketmaster.flow.commit",
        "if isinstance(error, PartnerError) and is_commit_definite(error) and not isinstance(",
        "if isinstance(error, PartnerError) and (is_commit_definite(error) or isinstance(error, TmOutcomeUnknown)) "
        "and not isinstance(",
        "a commit's poll failing with 404/410 or 5xx is taken for the commit's refusal: the purchase reserves again",
        (f"{TM_PROPS}::test_m12_a_commit_answered_202_whose_poll_fails_never_reserves_again",
         f"{TM_PROPS}::test_m12_replayed_example"),
    ),
    Mutant(
        "M13", "fulfilment.partners.ticketmaster.flow.commit",
        "purchase.quote_expires_at - margin <= self._clock()",
        "purchase.quote_expires_at <= self._clock()",
        "Ticketmaster commits a cart whose hold ends within the safety margin",
        (f"{TM_PROPS}::test_a_cart_expiring_before_its_commit_is_reserved_again_never_committed",),
    ),
    # Issue 16: what Ticketmaster told us about an order is never dropped.
    Mutant(
        "K1", "fulfilment.partners.ticketmaster.flow.commit",
        "                if not polling_url_gone(error):\n",
        "                if False:\n",
        "a commit's poll that stalls or answers 5xx forgets the polling URL (the order token is lost)",
        (f"{UNKIND}::test_a_commit_poll_answering_5xx_keeps_its_url_and_issues_the_tickets",),
    ),
    Mutant(
        "K2", "fulfilment.flowkit.fencing",
        "    for attempt in Retrying(retry=retry_if_exception(_connection_failed), reraise=True,\n",
        "    return write()\n    for attempt in Retrying(retry=retry_if_exception(_connection_failed), reraise=True,\n",
        "an order answer whose database write loses its connection is not written again on a fresh one",
        (f"{UNKIND}::test_an_order_answer_whose_database_connection_broke_is_written_on_a_fresh_one",),
    ),
    Mutant(
        "K3", "fulfilment.steps.order",
        "    if ended:\n        if flow is not None:\n            flow.release(purchase, settings)\n        return None\n",
        "    if ended:\n        return None\n",
        "a Ticketmaster purchase failed for its delivery deadline leaves its paid cart to lapse",
        (f"{UNKIND}::test_a_purchase_failed_for_its_delivery_deadline_deletes_its_paid_cart",),
    ),
    Mutant(
        "F1", "fulfilment.statements",
        "       AND claim_token IS NOT DISTINCT FROM CAST(%(f_token)s AS uuid)\n",
        "",
        "no token fence: a worker whose claim passed on still moves the purchase",
        (f"{PROPS}::test_a_worker_whose_claim_was_taken_over_only_records_late_answers",),
    ),
    Mutant(
        "T1", "fulfilment.state_machine",
        "_S.ORDER_UNKNOWN: frozenset(\n        {_S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.RECEIVED,",
        "_S.ORDER_UNKNOWN: frozenset(\n        {_S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.RECEIVED, _S.PAUSED,",
        "the transition table lets an unknown order pause (and so re-quote) without proof",
        (f"{STATES}::test_the_code_allows_exactly_the_designed_transitions",),
    ),
    # The four breakages the project checked its property tests against (README, "Property-based
    # tests"), put back one at a time.
    Mutant(
        "P1", "fulfilment.partners.tbb.flow",
        "if isinstance(lookup, OrderAbsent) and absence_policy_applies(purchase, settings):",
        "if isinstance(lookup, OrderAbsent) and not _quote_usable(purchase, margin_seconds=0):",
        "the old rule: a complete, empty lookup once the quote expired (our clock) proves absence: re-quote",
        (f"{PROPS}::test_issue_7_b_a_retry_answered_quote_expired_never_requotes",),
    ),
    Mutant(
        "P2", "fulfilment.statements",
        "       AND claim_token IS NOT DISTINCT FROM CAST(%(f_token)s AS uuid)\n"
        "       AND quote_id IS NOT DISTINCT FROM CAST(%(f_quote)s AS varchar)",
        "",
        "state-only fencing: neither the claim token nor the quote guards a change",
        (f"{PROPS}::test_a_worker_whose_claim_was_taken_over_only_records_late_answers",
         f"{FENCING}::test_a_late_quote_expired_never_requotes_a_purchase_ordering_with_another_quote"),
    ),
    Mutant(
        "P3", "fulfilment.steps.stall",
        "            if state_machine.lease_held(session, purchase):",
        "            if False:",
        "the middleware stalls a purchase another worker holds a live claim on",
        (f"{PROPS}::test_a_stall_never_takes_a_purchase_from_a_live_claim",),
    ),
    Mutant(
        "P4", "fulfilment.partners.tbb.flow",
        "        except StaleTransition:\n            late_order(purchase, order, settings, message_id, how=how)\n",
        "        except StaleTransition:\n            pass\n",
        "an order confirmation that comes after its claim passed on is dropped",
        (f"{PROPS}::test_issue_7_c_a_late_order_confirmation_is_applied_or_kept_never_dropped",),
    ),
    # The bugs the property tests found while they were written (their docstrings tell them).
    Mutant(
        "H1", "fulfilment.partners.tbb.flow",
        "    except (AccountError, PermanentError) as error:\n        if not first_attempt:\n"
        "            return _unknown(purchase, error, settings, message_id)\n",
        "    except (AccountError, PermanentError) as error:\n",
        "a retry of an unknown order refused with PAYMENT_NOT_CONFIGURED pauses the purchase (it re-quotes)",
        (f"{PROPS}::test_a_refused_retry_of_an_unknown_order_stays_unknown_and_never_orders_twice",),
    ),
    Mutant(
        "H2", "fulfilment.partners.ticketmaster.flow.commit",
        "            except (RateLimited, Maintenance) as error:\n"
        "                # The poll itself was refused",
        "            except (NotImplementedError,) as error:\n"
        "                # The poll itself was refused",
        "a 429 or niterun refusing the poll of a commit is taken for a refused commit: two orders",
        (f"{TM_PROPS}::test_a_refused_poll_of_a_commit_waits_and_never_buys_again",),
    ),
    Mutant(
        "H3", "fulfilment.partners.ticketmaster.flow.base",
        "            failed = error\n            purchase = self._save(purchase, data.without(\"pending\"))\n",
        "            failed = error\n",
        "a polling URL TM forgot is kept and polled again at every step, for ever",
        (f"{TM_PROPS}::test_a_polling_url_tm_forgot_is_given_up",),
    ),
)
BY_ID = {mutant.id: mutant for mutant in MUTANTS}


def mutated_source(mutant: Mutant, source: str, module: str | None = None) -> str:
    module = module or mutant.module
    for old, new in mutant.modules[module]:
        found = source.count(old)
        if found != 1:
            raise RuntimeError(f"mutant {mutant.id}: {old!r} is found {found} times in {module}, not once; "
                               "update tests/support/mutants.py")
        source = source.replace(old, new)
    return source


class _MutatingLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles the mutated source (never a cached .pyc, and writes none)."""

    mutant: Mutant

    def get_code(self, fullname: str) -> CodeType:
        source = importlib.util.decode_source(self.get_data(self.path))
        code: CodeType = compile(mutated_source(self.mutant, source, fullname), self.path, "exec", dont_inherit=True)
        return code


class _MutatingFinder(importlib.abc.MetaPathFinder):
    def __init__(self, mutant: Mutant) -> None:
        self.mutant = mutant

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname not in self.mutant.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _MutatingLoader(fullname, spec.origin)
        loader.mutant = self.mutant
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def apply(mutant: Mutant) -> None:
    """Install the import hook and import the mutated module now (before anything else does)."""
    for module in mutant.modules:
        if module in sys.modules:
            raise RuntimeError(f"mutant {mutant.id}: {module} was imported before the mutant could be applied")
    sys.meta_path.insert(0, _MutatingFinder(mutant))
    for module in mutant.modules:
        importlib.import_module(module)


_ACTIVE: Mutant | None = None
if os.environ.get(ENV):
    _ACTIVE = BY_ID[os.environ[ENV]]
    apply(_ACTIVE)


def pytest_report_header(config: Any) -> str | None:
    if _ACTIVE is None:
        return None
    return f"mutant {_ACTIVE.id} applied to {_ACTIVE.module}: {_ACTIVE.bug}"
