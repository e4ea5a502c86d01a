"""Fixtures: a fake AuditService on a real server, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from auditclient import AuditClient, ClientOptions

from .fakes import FakeAuditService, FakeServer


@pytest.fixture
def service() -> FakeAuditService:
    """A fresh fake servicer."""
    return FakeAuditService()


@pytest.fixture
async def server(service: FakeAuditService) -> AsyncIterator[FakeServer]:
    """The fake servicer served on 127.0.0.1, stopped after the test."""
    fake = await FakeServer(service).start()
    try:
        yield fake
    finally:
        await fake.stop()


def fast_options(target: str, **changes: object) -> ClientOptions:
    """Client options with short deadlines and backoffs, for tests."""
    values: dict[str, object] = {
        "target": target,
        "timeout": 5.0,
        "retry_initial_backoff": 0.01,
        "retry_max_backoff": 0.05,
        "reconnect_initial_backoff": 0.05,
        "reconnect_max_backoff": 0.2,
        "max_reconnect_backoff_ms": 300,
    }
    values.update(changes)
    return ClientOptions(**values)


@pytest.fixture
def options(server: FakeServer) -> ClientOptions:
    """Fast client options aimed at the fake server."""
    return fast_options(server.target)


@pytest.fixture
async def client(options: ClientOptions) -> AsyncIterator[AuditClient]:
    """A connected AuditClient, closed after the test."""
    async with AuditClient(options=options) as connected:
        yield connected
