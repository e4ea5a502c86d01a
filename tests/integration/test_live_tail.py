"""The live tail against SecantusDB: LIVE -> LATE -> LIVE, NO_DATA, live gaps the next
cycle reconciles, in both change-stream and poll mode. Candles are fed by the test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from auditpb.v1 import audit_pb2 as pb
from tests.integration.live_feed import Feeder, candle, live_settings
from tests.support import eventually

TIMEOUT = 20.0
SEC = 1000


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
