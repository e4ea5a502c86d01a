"""Failed cycles the database could not take are stored later, none lost (issue 11 item 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from auditsvc.domain.records import Cycle
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import (
    MongoStateStore,
    connect,
)
from auditsvc.storage.mongo.database import CYCLES, Database
from tests.integration.standalone import standalone_auditor

TIMEOUT = 30.0


class FlakyState(MongoStateStore):
    """The real store, except that its writes fail while ``down`` is set."""

    down = False

    async def save_series(self, *args: Any, **kwargs: Any) -> None:
        if self.down:
            raise AutoReconnect("database down (test)")
        await super().save_series(*args, **kwargs)

    async def save_cycle(self, cycle: Cycle, session: Any = None) -> None:
        if self.down:
            raise AutoReconnect("database down (test)")
        await super().save_cycle(cycle, session)


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


class TestUnsavedFailures:
    """A failure while storing an earlier failed cycle keeps that record for later."""

    async def test_second_failure_keeps_the_first_record(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Two failed cycles while writes fail, then a good one: the first failure is stored."""
        settings = make_settings(AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m")
        state = FlakyState(database)
        audits = standalone_auditor(settings, database, state=state, incremental=False)
        selection = audits.select((), (), None, None)
        state.down = True
        with pytest.raises(AutoReconnect):
            await asyncio.wait_for(audits.run_cycle(selection, trigger="schedule"), TIMEOUT)
        first = audits.last_cycle
        assert first is not None and not first.succeeded
        with pytest.raises(AutoReconnect):  # storing the kept record fails again
            await asyncio.wait_for(audits.run_cycle(selection, trigger="schedule"), TIMEOUT)
        state.down = False
        good = await asyncio.wait_for(audits.run_cycle(selection, trigger="schedule"), TIMEOUT)

        stored = await asyncio.wait_for(database.db[CYCLES].find().to_list(None), TIMEOUT)
        by_id = {d["_id"]: d for d in stored}
        assert first.cycle_id in by_id, sorted(by_id)
        assert by_id[first.cycle_id]["succeeded"] is False
        assert by_id[good.cycle_id]["succeeded"] is True
