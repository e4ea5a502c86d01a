"""request_id records: keyed on the request as sent, and expiring with their results
(issue 11 items 3 and 4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.app import App
from auditsvc.ops.clock import SystemClock
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import CYCLE_TTL_S, CYCLES, REQUESTS, Database, connect
from tests.support import eventually

TIMEOUT = 30.0


class MovableClock(SystemClock):
    """The system clock plus an offset the test moves forward."""

    def advance(self, ms: int) -> None:
        self._offset_ms += ms


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


@pytest.fixture
async def served(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[App, MovableClock, Any]]:
    """An in-process replica on a movable clock, and a stub to it."""
    clock = MovableClock()
    app = App(make_settings(ENABLE_DUPLICATE_REMOVAL="true"), clock=clock)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:

            async def ready() -> bool:
                return app.ready

            await eventually(ready, within=15)
            yield app, clock, pb_grpc.AuditServiceStub(channel)
    finally:
        await app.stop()


class TestResolveDuplicatesKey:
    """A retry with the same request and request_id is a repeat, whenever it comes."""

    async def test_retry_after_default_window_moved(
        self, served: tuple[App, MovableClock, Any]
    ) -> None:
        """A request without times, retried after the default window moved, replays OK."""
        _, clock, stub = served
        request = pb.ResolveDuplicatesRequest(
            symbol="BTCUSDT", timeframe="1m", dry_run=True, request_id="no-times"
        )
        first = await stub.ResolveDuplicates(request, timeout=TIMEOUT)
        clock.advance(5 * 60_000)  # the default window now ends five candles later
        again = await stub.ResolveDuplicates(request, timeout=TIMEOUT)
        assert again == first


class TestRequestExpiry:
    """Request records expire with the cycles they point at, and say so when replayed."""

    async def test_requests_have_the_cycle_ttl(
        self, served: tuple[App, MovableClock, Any], database: Database
    ) -> None:
        """audit_requests carries a TTL index with the cycles' lifetime."""
        indexes = await asyncio.wait_for(database.db[REQUESTS].index_information(), TIMEOUT)
        ttl = [i.get("expireAfterSeconds") for i in indexes.values() if i["key"] == [("at", 1)]]
        assert ttl == [CYCLE_TTL_S], indexes

    async def test_replay_of_expired_result_is_not_found(
        self, served: tuple[App, MovableClock, Any], database: Database
    ) -> None:
        """A repeat whose cycle has expired answers NOT_FOUND naming request_id, not UNAVAILABLE."""
        _, _, stub = served
        request = pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1m"], request_id="old")
        reply = await stub.RunAudit(request, timeout=TIMEOUT)
        # What the TTL monitor does to a cycle older than its lifetime.
        await asyncio.wait_for(
            database.db[CYCLES].delete_one({"_id": reply.cycle.cycle_id}), TIMEOUT
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RunAudit(request, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
        assert "expired" in (caught.value.details() or "")
        assert "request_id" in (caught.value.details() or "")
