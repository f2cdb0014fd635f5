"""A third, toy partner, kept in tests only: README "Adding a partner", followed step by step.

1. This folder: its partner (`partner.py`, here a counter in memory instead of an HTTP client and its
   sandbox), its flow (`flow.py`, the `PartnerFlow` protocol over the flow kit), its request shape
   (`ToyRequest`) and its registration (`PARTNER` below).
2. One registration line: `FULFIL_EXTRA_PARTNERS=tests.support.toy_partner` (a partner inside the
   package gets its line in `fulfilment/partners/registry.py` PARTNER_MODULES instead).

tests/e2e/test_adding_a_partner.py runs a purchase of it through real worker processes.
"""

from __future__ import annotations

from fulfilment.flowkit.flow import PartnerSpec
from tests.support.toy_partner.flow import ToyFlow
from tests.support.toy_partner.partner import ToyPartner, ToyRequest

PARTNER = PartnerSpec(
    name="toy",
    enabled=lambda settings: True,  # on wherever it is registered; a real partner reads its *_ENABLED
    build=lambda settings: ToyFlow(ToyPartner()),
    request=ToyRequest,
)
