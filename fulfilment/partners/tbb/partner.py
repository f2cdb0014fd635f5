"""TBB's registration (partners/registry.py): when it is on, and how its flow is built from settings."""

from __future__ import annotations

from fulfilment.flowkit.flow import PartnerSpec
from fulfilment.partners.tbb.client import TbbClient
from fulfilment.partners.tbb.flow import TbbFlow
from fulfilment.settings import PartnerSettings


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


PARTNER = PartnerSpec(
    name="tbb",
    enabled=lambda settings: settings.tbb_enabled,
    build=lambda settings: TbbFlow(build_tbb(settings)),
)
