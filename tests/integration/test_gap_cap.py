"""AUDIT_MAX_GAPS_PER_SERIES against SecantusDB: the newest gaps are stored, the rest
counted, and gaps are written in bounded fenced batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from auditsvc.domain.records import GapRecord
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import MongoStateStore, connect
from auditsvc.storage.mongo.database import GAPS, Database, to_dt
from auditsvc.usecases import auditing
from tests.integration.standalone import standalone_auditor

TIMEOUT = 30.0
MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 200  # every odd minute missing: 100 gaps of one candle
CAP = 10
BATCH = 4


class RecordingState(MongoStateStore):
    """The real store, recording the size of each gap batch written."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.batches: list[int] = []

    async def save_gaps(
        self,
        gaps: Sequence[GapRecord],
        cycle_id: str,
        epoch: int,
        session: Any = None,
        *,
        historical: bool = False,
    ) -> None:
        self.batches.append(len(gaps))
        await super().save_gaps(gaps, cycle_id, epoch, session, historical=historical)


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


class TestGapCap:
    """A series with more gaps than the cap stores the newest CAP and counts every one."""

    async def test_cap_and_batches(
        self,
        make_settings: Callable[..., Settings],
        database: Database,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """100 gaps, cap 10: 10 newest stored in batches of at most 4; report counts 100."""
        monkeypatch.setattr(auditing, "GAP_BATCH", BATCH)
        settings = make_settings(
            AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m", AUDIT_MAX_GAPS_PER_SERIES=str(CAP)
        )
        docs = [{"symbol": "BTCUSDT", "timestamp": to_dt(T0 + i * MIN)} for i in range(0, SLOTS, 2)]
        await asyncio.wait_for(database.db["candles_BTCUSDT_1m"].insert_many(docs), TIMEOUT)
        state = RecordingState(database)
        audits = standalone_auditor(settings, database, state=state, incremental=False)
        selection = audits.select(["BTCUSDT"], ["1m"], T0, T0 + SLOTS * MIN)
        cycle = await asyncio.wait_for(audits.run_cycle(selection, trigger="rpc"), TIMEOUT)
        (report,) = cycle.series
        assert report.gap_count == SLOTS // 2
        assert report.gaps_not_stored == SLOTS // 2 - CAP
        assert report.missing_candles == SLOTS // 2
        assert report.health.score.gap_count == SLOTS // 2
        stored = await asyncio.wait_for(
            database.db[GAPS].find({}).sort("start_time", 1).to_list(None), TIMEOUT
        )
        newest = [to_dt(T0 + i * MIN) for i in range(SLOTS - 2 * CAP + 1, SLOTS, 2)]
        assert [d["start_time"] for d in stored] == newest
        assert sum(state.batches) == CAP
        assert max(state.batches) <= BATCH
