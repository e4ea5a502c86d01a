"""Unit tests for auditsvc.usecases.series_summary.SeriesSummary: its background
refresh is cancelled by close(), so a hung read never outlives shutdown."""

from __future__ import annotations

import asyncio

from auditsvc.domain.records import ScoreRecord
from auditsvc.ops.clock import SystemClock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import Settings
from auditsvc.usecases.series_summary import SeriesSummary
from auditsvc.usecases.verdicts import VerdictWatch
from tests.support import replica_env
from tests.unit.test_verdict_watch import Heartbeat

TIMEOUT = 5.0


class HungScores:
    """A state store whose score read never returns until cancelled."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def scores(self) -> list[ScoreRecord]:
        self.reading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return []


async def test_close_cancels_a_hung_refresh() -> None:
    async with asyncio.timeout(TIMEOUT):
        settings = Settings.from_env(replica_env("mongodb://127.0.0.1:9", "unit"))
        verdicts = VerdictWatch(
            settings.audit, settings.live, Heartbeat(), SystemClock(), Metrics()
        )
        store = HungScores()
        summary = SeriesSummary(settings.audit, store, verdicts, timeout_s=3600)  # type: ignore[arg-type]
        first = asyncio.create_task(summary.get())  # the very first call waits
        await store.reading.wait()
        await summary.close()
        assert store.cancelled.is_set()
        assert await first is None  # the caller is answered, with no summary
