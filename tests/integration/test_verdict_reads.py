"""What users read: configured series only, a summary of every configured series
whatever the last cycle selected, and a live gap that stays ``detected_live`` when
a cycle stored it first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo import AsyncMongoClient

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.records import LiveVerdict
from auditsvc.domain.series_state import LiveState, SeriesState
from auditsvc.storage.mongo.database import connect
from auditsvc.storage.mongo.live_store import MongoLiveStore, MongoVerdictSource
from tests.integration.live_feed import Feeder, live_settings
from tests.support import eventually

TIMEOUT = 20.0
SEC = 1000


class TestConfiguredOnly:
    """Rows a past configuration left behind are never served."""

    async def test_unconfigured_rows_are_not_served(
        self, make_settings: Any, start_replica: Any, mongo: Any, db_name: str
    ) -> None:
        """A LIVE row for a series no longer configured is absent from ListHealthScores,
        the stream's snapshot and GetStatus's summary."""
        client: Any = AsyncMongoClient(mongo.uri, tz_aware=True)
        try:
            await client[db_name]["audit_series"].insert_one(
                {"_id": "XRPUSDT|1m", "symbol": "XRPUSDT", "timeframe": "1m", "state": "live"}
            )
            replica = await start_replica(make_settings(LIVE_MODE="poll"))
            configured = {(s, t) for s in ("BTCUSDT", "ETHUSDT") for t in ("1m", "1h")}

            async def listed() -> set[tuple[str, str]]:
                reply = await replica.stub.ListHealthScores(
                    pb.ListHealthScoresRequest(), timeout=TIMEOUT
                )
                return {(s.symbol, s.timeframe) for s in reply.scores}

            assert await eventually(lambda: _equal(listed(), configured), TIMEOUT)
            stream = replica.stub.StreamHealthScores(pb.StreamHealthScoresRequest(), timeout=30)
            try:
                first = [await asyncio.wait_for(stream.read(), TIMEOUT) for _ in range(4)]
                assert {(m.score.symbol, m.score.timeframe) for m in first} == configured
            finally:
                stream.cancel()
            status = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            assert status.summary.series_count == 4
        finally:
            await client.close()

    async def test_summary_covers_every_configured_series(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """After a RunAudit of one series, GetStatus's summary still counts all four."""
        replica = await start_replica(make_settings(LIVE_MODE="poll"))
        await replica.stub.RunAudit(
            pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1m"]), timeout=TIMEOUT
        )

        async def summary() -> Any:
            status = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            counted = sum(c.count for c in status.summary.states)
            return status.summary if counted == 4 else None

        found = await eventually(summary, TIMEOUT)
        assert found.series_count == 4
        assert {c.state for c in found.states} == {pb.SERIES_STATE_NO_DATA}


class TestDetectedLive:
    """A gap the tail found is detected_live even when a cycle stored it first."""

    async def test_gap_stored_during_the_outage_keeps_the_live_flag(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """The feed pauses, a cycle stores the trailing gap, the feed resumes: the tail
        marks that same gap detected_live."""
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        replica = await start_replica(live_settings(make_settings, "poll"))
        stub = replica.stub

        async def live() -> bool:
            reply = await stub.ListHealthScores(
                pb.ListHealthScoresRequest(symbols=["BTCUSDT"]), timeout=TIMEOUT
            )
            return bool(reply.scores) and reply.scores[0].state == pb.SERIES_STATE_LIVE

        await eventually(live, TIMEOUT)
        feeder.symbols.discard("BTCUSDT")
        stopped = feeder.newest["BTCUSDT"]

        async def cycle_stored_gap() -> Any:
            await stub.RunAudit(
                pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1s"]), timeout=TIMEOUT
            )
            reply = await stub.ListGaps(pb.ListGapsRequest(symbol="BTCUSDT"), timeout=TIMEOUT)
            found = [g for g in reply.gaps if g.start_time.ToMilliseconds() == stopped + SEC]
            return found[0] if found else None

        gap = await eventually(cycle_stored_gap, TIMEOUT, interval=0.5)
        assert not gap.detected_live
        # Resume from now on, as a feed back from an outage does: the missed slots stay
        # missing and the tail sees them skipped.
        feeder.newest["BTCUSDT"] = int(time.time()) * SEC - SEC
        feeder.symbols.add("BTCUSDT")

        async def flagged() -> bool:
            reply = await stub.ListGaps(pb.ListGapsRequest(symbol="BTCUSDT"), timeout=TIMEOUT)
            starts = [g for g in reply.gaps if g.start_time.ToMilliseconds() == stopped + SEC]
            return bool(starts) and starts[0].detected_live

        await eventually(flagged, TIMEOUT)


async def _equal(found: Any, expected: set[tuple[str, str]]) -> bool:
    return await found == expected


class TestNewestObservationWins:
    """The verdict write is guarded inside the update: an older observation never
    replaces a newer one, and a newer one always does."""

    async def test_older_verdict_is_dropped(self, mongo: Any, db_name: str) -> None:
        """Stored at t=2000, a verdict observed at t=1000 changes nothing; t=3000 does,
        and neither touches the cycle's fields."""
        database = connect(mongo.uri, db_name, 2000)
        store = MongoLiveStore(database)
        series = database.db["audit_series"]
        try:
            live = LiveState(SeriesState.LIVE, 60_000, 0)
            late = LiveState(SeriesState.LATE, 60_000, 3)
            await store.save_verdicts([LiveVerdict("BTCUSDT", "1m", live, 2000)], epoch=1)
            await series.update_one({"_id": "BTCUSDT|1m"}, {"$set": {"quality": 91.5}})
            await store.save_verdicts([LiveVerdict("BTCUSDT", "1m", late, 1000)], epoch=1)
            doc = await series.find_one({"_id": "BTCUSDT|1m"})
            assert doc is not None
            assert (doc["state"], doc["late_candles"], doc["quality"]) == ("live", 0, 91.5)
            await store.save_verdicts([LiveVerdict("BTCUSDT", "1m", late, 3000)], epoch=2)
            doc = await series.find_one({"_id": "BTCUSDT|1m"})
            assert doc is not None
            assert (doc["state"], doc["late_candles"], doc["live_epoch"]) == ("late", 3, 2)
            assert doc["quality"] == 91.5 and doc["symbol"] == "BTCUSDT"
        finally:
            await database.close()


class TestConfirmationDate:
    """A confirmation is dated by the pass's judgement, capped at the database's
    now: never by when its batch committed (a late commit must not vouch for the
    seconds between its judgement and its write)."""

    async def test_a_late_write_keeps_the_judgement_time(self, mongo: Any, db_name: str) -> None:
        database = connect(mongo.uri, db_name, 2000)
        store = MongoLiveStore(database)
        source = MongoVerdictSource(database)
        try:
            async with asyncio.timeout(TIMEOUT):
                judged = int(time.time() * 1000) - 12_000  # a pass whose store took 12 s
                await store.confirm(1, judged, "change_stream")
                found, db_now = await source.confirmation()
                assert found is not None
                assert found.confirmed_ms == judged
                assert found.written_ms >= judged + 11_000  # written now, dated then
                ahead = db_now + 60_000  # a leader whose clock runs a minute ahead
                await store.confirm(1, ahead, "change_stream")
                found, db_now = await source.confirmation()
                assert found is not None
                assert found.confirmed_ms <= db_now < ahead
        finally:
            await database.close()
