"""RunAudit calls neither starve the schedule nor count toward the stalled-audit gauge
(issue 11 item 1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import CYCLES, Database, connect
from tests.support import eventually

TIMEOUT = 30.0
GAUGE = "data_manager_audit_last_success_timestamp_seconds"


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


async def scheduled_cycles(database: Database) -> int:
    query = {"succeeded": True, "trigger": "schedule"}
    return int(await asyncio.wait_for(database.db[CYCLES].count_documents(query), TIMEOUT))


class TestScheduleCadence:
    """Scheduled cycles keep their own cadence whatever RunAudit does."""

    async def test_runaudit_stream_does_not_starve_schedule(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
        database: Database,
    ) -> None:
        """With RunAudit for one series back to back, full scheduled cycles still come."""
        replica = await start_replica(
            make_settings(
                ENABLE_AUDITOR="true",
                AUDIT_INTERVAL="1",
                AUDIT_STARTUP_DELAY="0",
                AUDIT_TIMEFRAMES="1m",
            )
        )

        async def first() -> bool:
            return await scheduled_cycles(database) >= 1

        await eventually(first, within=TIMEOUT)

        async def hammer() -> None:
            request = pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1m"])
            while True:
                await replica.stub.RunAudit(request, timeout=TIMEOUT)

        load = asyncio.ensure_future(hammer())
        try:

            async def more() -> bool:
                assert not load.done(), load.exception()
                return await scheduled_cycles(database) >= 3

            await eventually(more, within=TIMEOUT)
        finally:
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        rpc = await database.db[CYCLES].count_documents({"trigger": "rpc"})
        assert rpc > 0  # the RunAudit calls did run in between

    async def test_runaudit_does_not_set_last_success(
        self, make_settings: Callable[..., Settings], start_replica: Callable[..., Any]
    ) -> None:
        """A successful RunAudit leaves the stalled-audit gauge where it was (unset)."""
        replica = await start_replica(make_settings(ENABLE_AUDITOR="false"))
        reply = await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        assert reply.cycle.cycle_id
        registry = replica.app.metrics.registry
        assert registry.get_sample_value(GAUGE) == 0
