"""The partners of this process, built from settings: one instance each, shared by all worker threads.

The one place that names every partner (like bootstrap.py for the scheduler): one line each in
PARTNER_MODULES, a module holding the partner's `PARTNER` (flowkit.flow.PartnerSpec).  A partner kept
outside this package (the toy partner of tests/e2e/test_adding_a_partner.py) is named by
FULFIL_EXTRA_PARTNERS instead: comma-separated module names, each importable by every process that
runs purchases (workers, the scheduler's tools) or submits them (its request shape).  The core looks a
purchase's partner up by the name it carries (flowkit/flow.py `Partners`).
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

from fulfilment import requests
from fulfilment.flowkit.flow import PartnerFlow, PartnerNotEnabled, Partners, PartnerSpec
from fulfilment.partners.base import Partner
from fulfilment.partners.tbb.flow import TbbFlow
from fulfilment.partners.tbb.partner import build_tbb
from fulfilment.partners.ticketmaster.partner import build_ticketmaster
from fulfilment.settings import Settings, get_settings

PARTNER_MODULES = (
    "fulfilment.partners.tbb.partner",
    "fulfilment.partners.ticketmaster.partner",
)
EXTRA_PARTNERS_ENV = "FULFIL_EXTRA_PARTNERS"

__all__ = ["EXTRA_PARTNERS_ENV", "PARTNER_MODULES", "build_partners", "build_tbb", "build_ticketmaster",
           "get_partner", "get_partners", "partner_specs"]


def partner_specs() -> list[PartnerSpec]:
    """Every partner this process knows (PARTNER_MODULES, then FULFIL_EXTRA_PARTNERS); the request shape
    of each that brings its own is registered with requests.parse_request."""
    extra = [name.strip() for name in os.environ.get(EXTRA_PARTNERS_ENV, "").split(",") if name.strip()]
    specs: list[PartnerSpec] = []
    for module in (*PARTNER_MODULES, *extra):
        try:
            spec = importlib.import_module(module).PARTNER
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{EXTRA_PARTNERS_ENV}: {module!r} is no partner module (a module with PARTNER, "
                             f"a flowkit PartnerSpec): {error}") from None
        if spec.request is not None:
            requests.register_request(spec.name, spec.request)
        specs.append(spec)
    return specs


def build_partners(settings: Settings) -> Partners:
    """Every enabled partner (settings `*_ENABLED`)."""
    flows: dict[str, PartnerFlow] = {spec.name: spec.build(settings) for spec in partner_specs()
                                     if spec.enabled(settings)}
    return Partners(flows=flows)


@lru_cache(maxsize=1)
def get_partners() -> Partners:
    return build_partners(get_settings())


@lru_cache(maxsize=1)
def get_partner() -> Partner:
    """The TBB client of this process's TBB flow: operator tools and tests."""
    flow = get_partners().flow("tbb")
    if not isinstance(flow, TbbFlow):
        raise PartnerNotEnabled("tbb")
    return flow.client
