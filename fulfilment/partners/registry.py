"""The partners of this process, built from settings: one instance each, shared by all worker threads.

The one place that names every partner (like bootstrap.py for the scheduler): the core looks
a purchase's partner up by the name it carries (flowkit/flow.py `Partners`); every partner is a
flow (`PartnerFlow`).
"""

from __future__ import annotations

from functools import lru_cache

from fulfilment.flowkit.flow import PartnerFlow, PartnerNotEnabled, Partners
from fulfilment.partners.base import Partner
from fulfilment.partners.tbb import TbbClient
from fulfilment.partners.tbb.flow import TbbFlow
from fulfilment.settings import PartnerSettings, Settings, get_settings


def build_tbb(settings: PartnerSettings) -> TbbClient:
    from fulfilment import metrics

    if settings.tbb_base_url is None or settings.tbb_client_id is None or settings.tbb_client_secret is None:
        raise ValueError("TBB is not configured: set TBB_BASE_URL, TBB_CLIENT_ID and TBB_CLIENT_SECRET")
    return TbbClient(
        str(settings.tbb_base_url),
        settings.tbb_client_id,
        settings.tbb_client_secret.get_secret_value(),
        connect_timeout=settings.tbb_connect_timeout,
        read_timeout=settings.tbb_read_timeout,
        max_attempts=settings.tbb_max_attempts,
        max_retry_seconds=settings.tbb_max_retry_seconds,
        observe=metrics.observe_partner_call,
    )


def build_ticketmaster(settings: Settings) -> PartnerFlow:
    from fulfilment import metrics
    from fulfilment.partners.ticketmaster import flow

    return flow.build(settings, observe=metrics.partner_observer("ticketmaster"))


def build_partners(settings: Settings) -> Partners:
    """Every enabled partner (settings `*_ENABLED`)."""
    flows: dict[str, PartnerFlow] = {}
    if settings.tbb_enabled:
        flows["tbb"] = TbbFlow(build_tbb(settings))
    if settings.tm_enabled:
        flows["ticketmaster"] = build_ticketmaster(settings)
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
