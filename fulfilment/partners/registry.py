"""The partner client of this process: one instance, shared by all worker threads."""

from __future__ import annotations

from functools import lru_cache

from fulfilment.partners.base import Partner
from fulfilment.partners.tbb import TbbClient
from fulfilment.settings import PartnerSettings, get_settings


def build_tbb(settings: PartnerSettings) -> TbbClient:
    from fulfilment import metrics

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


@lru_cache(maxsize=1)
def get_partner() -> Partner:
    return build_tbb(get_settings())
