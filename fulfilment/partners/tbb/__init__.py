"""The Ticket Buyback Partner API adapter (contract: shared/tbb-contract.md)."""

from fulfilment.partners.tbb.client import TbbClient

__all__ = ["TbbClient"]
