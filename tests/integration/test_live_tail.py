"""The live tail against SecantusDB: LIVE -> LATE -> LIVE, NO_DATA, live gaps the next
cycle reconciles, in both change-stream and poll mode. Candles are fed by the test."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from auditpb.v1 import audit_pb2 as pb
from tests.support import eventually

TIMEOUT = 20.0
SEC = 1000


def candle(symbol: str, t_ms: int) -> dict[str, Any]:
    """A document shaped like auditsvc.devtools.demo's."""
    return {
        "symbol": symbol,
        "timestamp": dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC),
        "open": 100.0,
        "high": 100.5,
        "low": 99.5,
        "close": 100.1,
        "volume": 10.0,
    }


class Feeder:
    """Inserts the forming 1s candle of each fed symbol, as a live exchange feed would."""

    def __init__(self, coll: Any) -> None:
        self.coll = coll
        self.symbols: set[str] = set()
        self.newest: dict[str, int] = {}

    async def backfill(self, symbol: str, seconds: int) -> None:
        now = int(time.time()) * SEC
        docs = [candle(symbol, now - i * SEC) for i in range(seconds, -1, -1)]
        await self.coll.insert_many(docs)
        self.newest[symbol] = now

    async def run(self) -> None:
        while True:
            now = int(time.time()) * SEC
            for sym in list(self.symbols):
                last = self.newest.get(sym, now - SEC)
                docs = [candle(sym, t) for t in range(last + SEC, now + 1, SEC)]
                if docs:
                    await self.coll.insert_many(docs)
                    self.newest[sym] = now
            await asyncio.sleep(0.1)


@pytest.fixture
async def feeder(mongo: Any, db_name: str) -> AsyncIterator[Feeder]:
    client: Any = AsyncMongoClient(mongo.uri, tz_aware=True)
    f = Feeder(client[db_name]["klines_1s"])
    await f.coll.create_index([("symbol", 1), ("timestamp", 1)])
    task = asyncio.create_task(f.run())
    try:
        yield f
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def live_settings(make_settings: Any, mode: str) -> Any:
    return make_settings(
        AUDIT_SYMBOLS="BTCUSDT,ETHUSDT",
        AUDIT_TIMEFRAMES="1s",
        CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
        AUDIT_INGEST_GRACE="2",
        AUDIT_MIN_CANDLES="120",
        AUDIT_LOOKBACK="1",
        LIVE_MODE=mode,
        LIVE_POLL_INTERVAL="0.2",
    )


async def score_of(replica: Any, symbol: str) -> Any:
    reply = await replica.stub.ListHealthScores(
        pb.ListHealthScoresRequest(symbols=[symbol]), timeout=TIMEOUT
    )
    return reply.scores[0] if reply.scores else None


async def in_state(replica: Any, symbol: str, state: int) -> Any:
    s = await score_of(replica, symbol)
    return s if s is not None and s.state == state else None


@pytest.mark.parametrize("mode", ["poll", "change_stream"])
class TestTransitions:
    """Each state transition reaches stored scores and stream subscribers."""

    async def test_live_late_live_and_no_data(
        self, make_settings: Any, start_replica: Any, feeder: Feeder, mode: str
    ) -> None:
        """A fed series is LIVE, turns LATE when its feed stops, and LIVE when it resumes."""
        await feeder.backfill("BTCUSDT", 30)
        feeder.symbols.add("BTCUSDT")
        replica = await start_replica(live_settings(make_settings, mode))
        assert replica.app.livetail is not None
        await eventually(lambda: in_state(replica, "BTCUSDT", pb.SERIES_STATE_LIVE), TIMEOUT)
        eth = await eventually(
            lambda: in_state(replica, "ETHUSDT", pb.SERIES_STATE_NO_DATA), TIMEOUT
        )
        assert not eth.HasField("last_candle_open")
        assert replica.app.livetail.mode == mode

        stream = replica.stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(symbols=["BTCUSDT"]), timeout=60
        )
        try:
            feeder.symbols.discard("BTCUSDT")
            stopped_at = feeder.newest["BTCUSDT"]

            async def late_on_stream() -> Any:
                async for msg in stream:
                    if msg.score.state == pb.SERIES_STATE_LATE:
                        return msg.score
                raise AssertionError("stream ended")

            late = await asyncio.wait_for(late_on_stream(), TIMEOUT)
            assert late.last_candle_open.ToMilliseconds() == stopped_at
            assert late.late_candles >= 1
            assert late.freshness < 100.0
            # While LATE, one more score per further missed slot: lateness grows.
            later = await asyncio.wait_for(late_on_stream(), TIMEOUT)
            assert later.late_candles > late.late_candles
        finally:
            stream.cancel()

        feeder.symbols.add("BTCUSDT")
        back = await eventually(lambda: in_state(replica, "BTCUSDT", pb.SERIES_STATE_LIVE), TIMEOUT)
        assert back.late_candles == 0
        assert back.last_candle_open.ToMilliseconds() > stopped_at
        metrics = replica.app.metrics.registry
        assert metrics.get_sample_value("auditsvc_live_mode", {"mode": mode}) == 1
        assert metrics.get_sample_value("auditsvc_series_state", {"state": "no_data"}) == 1
        assert metrics.get_sample_value("auditsvc_live_detection_seconds_count") >= 1


class TestLiveGaps:
    """A hole revealed by an insert is a gap at once; the next cycle keeps that one record."""

    async def test_gap_detected_live_then_reconciled(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """Skipping 3 slots stores a detected_live gap; RunAudit leaves exactly one copy.

        Two symbols share the collection and it has the ``{timestamp: 1}`` index
        setup-db makes, so the poll reads both with one time-range query.
        """
        await feeder.coll.create_index([("timestamp", 1)])
        await feeder.backfill("BTCUSDT", 150)
        await feeder.backfill("ETHUSDT", 150)
        feeder.symbols.add("ETHUSDT")
        replica = await start_replica(live_settings(make_settings, "poll"))
        await eventually(lambda: in_state(replica, "BTCUSDT", pb.SERIES_STATE_LIVE), TIMEOUT)
        await eventually(lambda: in_state(replica, "ETHUSDT", pb.SERIES_STATE_LIVE), TIMEOUT)
        last = feeder.newest["BTCUSDT"]
        await feeder.coll.insert_one(candle("BTCUSDT", last + 4 * SEC))
        feeder.newest["BTCUSDT"] = last + 4 * SEC
        feeder.symbols.add("BTCUSDT")

        async def live_gap() -> Any:
            reply = await replica.stub.ListGaps(
                pb.ListGapsRequest(symbol="BTCUSDT", timeframe="1s"), timeout=TIMEOUT
            )
            found = [g for g in reply.gaps if g.start_time.ToMilliseconds() == last + SEC]
            return found[0] if found else None

        gap = await eventually(live_gap, TIMEOUT)
        assert gap.detected_live
        assert gap.missing_candles == 3
        assert gap.end_time.ToMilliseconds() == last + 4 * SEC

        # A cycle now does not reach the gap's slots (not yet due): the gap must survive.
        await replica.stub.RunAudit(
            pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1s"]), timeout=TIMEOUT
        )
        assert (await live_gap()) is not None

        async def audited_once_due() -> Any:
            cyc = await replica.stub.RunAudit(
                pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1s"]), timeout=TIMEOUT
            )
            return cyc.cycle.series[0].window_end.ToMilliseconds() >= last + 4 * SEC

        await eventually(audited_once_due, TIMEOUT, interval=0.5)
        reply = await replica.stub.ListGaps(
            pb.ListGapsRequest(symbol="BTCUSDT", timeframe="1s"), timeout=TIMEOUT
        )
        same = [g for g in reply.gaps if g.start_time.ToMilliseconds() == last + SEC]
        assert len(same) == 1
        assert same[0].detected_live
        assert same[0].missing_candles == 3
        feeder.symbols.clear()
