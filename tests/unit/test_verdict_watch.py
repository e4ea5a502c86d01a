"""Unit tests for auditsvc.usecases.verdicts.VerdictWatch over a fake heartbeat source:
fresh while confirmed, UNKNOWN before any reading and once the source stops
answering (a hung read included), with a wake-up on each move."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.values import HealthScore
from auditsvc.ops.clock import SystemClock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import Settings
from auditsvc.storage.interfaces import Confirmation
from auditsvc.usecases.verdicts import VerdictWatch
from tests.support import replica_env

TIMEOUT = 5.0


class Heartbeat:
    """Confirms at the database's now until told to hang."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()

    async def confirmation(self) -> tuple[Confirmation | None, int]:
        if self.hang.is_set():
            await asyncio.Event().wait()  # a read that never returns
        now = time.time_ns() // 1_000_000
        return Confirmation(1, now, "poll"), now


def watch(source: Heartbeat, metrics: Metrics) -> VerdictWatch:
    env = replica_env("mongodb://127.0.0.1:9", "unit", LIVE_STALE_AFTER="0.6")
    settings = Settings.from_env({**env, "LIVE_POLL_INTERVAL": "0.2"})
    return VerdictWatch(settings.audit, settings.live, source, SystemClock(), metrics)


def live_record() -> ScoreRecord:
    now = time.time_ns() // 1_000_000
    health = HealthScore(100.0, 100.0, 100.0, 100.0, 0, 0)
    return ScoreRecord("BTCUSDT", "1m", health, now, "c", SeriesState.LIVE, now, 0, now - 60_000)


class TestVerdictWatch:
    """The watch dates verdicts by the heartbeat and fails closed."""

    async def test_unknown_before_any_reading(self) -> None:
        """A replica that has read no heartbeat yet vouches for nothing."""
        w = watch(Heartbeat(), Metrics())
        assert w.serve(live_record(), w.current()).state is SeriesState.UNKNOWN
        assert not w.vouching()

    async def test_hung_read_turns_unknown_and_wakes_waiters(self) -> None:
        """Confirmed: served LIVE; the source hangs: within LIVE_STALE_AFTER plus a
        reading the watch wakes its waiters and serves UNKNOWN; the age metric grows."""
        source, metrics = Heartbeat(), Metrics()
        async with watch(source, metrics) as w:
            deadline = time.monotonic() + TIMEOUT
            while not w.vouching():
                assert time.monotonic() < deadline, "never confirmed"
                await asyncio.sleep(0.05)
            assert w.serve(live_record(), w.current()).state is SeriesState.LIVE
            source.hang.set()

            async def until_stale() -> None:
                while w.vouching():  # a wake-up for the first confirmation may come first
                    await w.changes()

            await asyncio.wait_for(until_stale(), TIMEOUT)
            served = w.serve(live_record(), w.current())
            assert served.state is SeriesState.UNKNOWN and served.verdict_ms is not None
            age = metrics.registry.get_sample_value("auditsvc_verdict_age_seconds")
            assert age is not None and age > 0.6


class Scripted:
    """Returns the confirmations it is given, one per reading."""

    def __init__(self, written: list[int]) -> None:
        self.written = list(written)

    async def confirmation(self) -> tuple[Confirmation | None, int]:
        w = self.written.pop(0)
        return Confirmation(1, w, "poll", w), w + 5


class TestReadingFor:
    """A document that reached the process on its own is dated by a confirmation
    written no later than its own last change, never a newer one."""

    async def test_newest_confirmation_before_the_change(self) -> None:
        """Confirmations at 1000, 2000, 3000: a change at 2500 is dated 2000, one at
        500 by none (UNKNOWN until re-read)."""
        w = watch(Scripted([1000, 2000, 3000]), Metrics())
        for _ in range(3):
            await w.read_now()
        record = dataclasses.replace(live_record(), changed_ms=2500)
        found = w.reading_for(record)
        assert found is not None and found.confirmation is not None
        assert found.confirmation.confirmed_ms == 2000
        assert w.reading_for(dataclasses.replace(record, changed_ms=500)) is None
