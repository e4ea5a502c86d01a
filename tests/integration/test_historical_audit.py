"""A RunAudit over a window that ends before the live edge is a report: stored and
returned with its gaps, but it never replaces the live score nor reaches the health
stream (issue 11, item 2)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect

TIMEOUT = 20.0
MIN_MS = 60_000
SERIES = {"symbols": ["BTCUSDT"], "timeframes": ["1m"]}
HIST_SLOTS = 240


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


async def seed(settings: Any, docs: list[dict[str, Any]]) -> None:
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        await database.db[settings.audit.collection_for("BTCUSDT", "1m")].insert_many(docs)
    finally:
        await database.close()


async def stored_cycle_id(stub: Any) -> str:
    reply = await stub.ListHealthScores(pb.ListHealthScoresRequest(**SERIES), timeout=TIMEOUT)
    (score,) = reply.scores
    return str(score.cycle_id)


async def gaps_between(stub: Any, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    reply = await stub.ListGaps(
        pb.ListGapsRequest(
            symbol="BTCUSDT", timeframe="1m", start_time=ts(start_ms), end_time=ts(end_ms)
        ),
        timeout=TIMEOUT,
    )
    return [(g.start_time.ToMilliseconds(), g.missing_candles) for g in reply.gaps]


class TestHistoricalRunAudit:
    """Only a window reaching the live edge moves the live score."""

    async def test_report_keeps_live_score_and_stream(self, make_settings, start_replica) -> None:
        """A historical RunAudit keeps the stored score and stream; a live one moves them."""
        # No live tail: its scores would reach the stream too.
        settings = make_settings(
            LIVE_MODE="off", AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m", AUDIT_LOOKBACK="3600"
        )
        now = int(time.time() * 1000)
        hist_end = (now - 3 * 86_400_000) // MIN_MS * MIN_MS
        hist_start = hist_end - HIST_SLOTS * MIN_MS
        recent, _ = demo_series("BTCUSDT", "1m", now, 120)
        old, expected = demo_series("BTCUSDT", "1m", hist_end, HIST_SLOTS)
        await seed(settings, recent + old)
        replica = await start_replica(settings)
        stub = replica.stub

        live = await stub.RunAudit(pb.RunAuditRequest(**SERIES), timeout=TIMEOUT)
        assert not live.cycle.historical and not live.cycle.series[0].historical
        stream = stub.StreamHealthScores(pb.StreamHealthScoresRequest(**SERIES), timeout=120)
        try:
            first = await asyncio.wait_for(stream.read(), TIMEOUT)
            assert first.score.cycle_id == live.cycle.cycle_id

            hist = await stub.RunAudit(
                pb.RunAuditRequest(**SERIES, start_time=ts(hist_start), end_time=ts(hist_end)),
                timeout=TIMEOUT,
            )
            (report,) = hist.cycle.series
            assert hist.cycle.historical and report.historical
            assert report.window_end.ToMilliseconds() == hist_end
            assert report.gap_count == len(expected.gaps) and report.health.quality < 100
            # The report is stored and is what GetStatus shows as the last cycle ...
            status = await stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            assert status.last_cycle.cycle_id == hist.cycle.cycle_id
            assert status.last_cycle.historical
            # ... its gaps are listed by time, apart from the live window's ...
            assert await gaps_between(stub, hist_start, hist_end) == list(expected.gaps)
            recent_gaps = await gaps_between(stub, hist_end, now)
            assert recent_gaps and not set(recent_gaps) & set(expected.gaps)
            # ... but the live score is still the live cycle's.
            assert await stored_cycle_id(stub) == live.cycle.cycle_id

            again = await stub.RunAudit(pb.RunAuditRequest(**SERIES), timeout=TIMEOUT)
            # The stream is ordered: had the report been pushed, it would come first.
            pushed = await asyncio.wait_for(stream.read(), TIMEOUT)
            assert pushed.score.cycle_id == again.cycle.cycle_id
            assert await stored_cycle_id(stub) == again.cycle.cycle_id
            # A live cycle does not drop the gaps a report found outside its window.
            assert await gaps_between(stub, hist_start, hist_end) == list(expected.gaps)
        finally:
            stream.cancel()

    @pytest.mark.parametrize("end_offset_ms", [3_600_000, None], ids=["future-end", "no-end"])
    async def test_end_at_or_past_the_edge_is_live(
        self, make_settings, start_replica, end_offset_ms
    ) -> None:
        """A future end_time (cut to the live edge) or a start_time alone is a live audit."""
        settings = make_settings(LIVE_MODE="off", AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m")
        replica = await start_replica(settings)
        now = int(time.time() * 1000)
        request = pb.RunAuditRequest(**SERIES, start_time=ts(now - 7_200_000))
        if end_offset_ms is not None:
            request.end_time.CopyFrom(ts(now + end_offset_ms))
        reply = await replica.stub.RunAudit(request, timeout=TIMEOUT)
        assert not reply.cycle.historical and not reply.cycle.series[0].historical
        assert await stored_cycle_id(replica.stub) == reply.cycle.cycle_id
