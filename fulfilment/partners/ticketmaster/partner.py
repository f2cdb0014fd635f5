"""Ticketmaster's registration (partners/registry.py): when it is on, and how its flow is built."""

from __future__ import annotations

from fulfilment.flowkit.flow import PartnerFlow, PartnerSpec
from fulfilment.settings import Settings


def build_ticketmaster(settings: Settings) -> PartnerFlow:
    from fulfilment import metrics
    from fulfilment.partners.ticketmaster import flow

    return flow.build(settings, observe=metrics.partner_observer("ticketmaster"))


PARTNER = PartnerSpec(
    name="ticketmaster",
    enabled=lambda settings: settings.tm_enabled,
    build=build_ticketmaster,
)
