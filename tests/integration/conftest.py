"""Fixtures shared by the integration tests."""

from tests.integration.live_feed import feeder

__all__ = ["feeder"]
