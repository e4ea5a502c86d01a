"""The content fields of HealthScore on every read (issue 21), over the wire: a bad
candle near the live edge makes the series suspect in ListHealthScores, GetStatus
and StreamHealthScores, which pushes the score again when suspect clears."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.market_data import generate
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.storage.mongo.database import to_dt
from tests.integration.test_content_cycle import doc

TIMEOUT = 20.0
BTC = "BTCUSDT"
M1 = parse_timeframe("1m")


async def seeded(make_settings: Any, start_replica: Any) -> tuple[Any, Any, int]:
    """A replica auditing BTCUSDT 1m whose candle 5 slots before the edge has its high
    below its body; returns (replica, the clean candle, its open ms)."""
    settings = make_settings(
        AUDIT_SYMBOLS=BTC,
        AUDIT_TIMEFRAMES="1m",
        LIVE_MODE="off",
        AUDIT_LOOKBACK="14400",
        AUDIT_INGEST_GRACE="0",
    )
    replica = await start_replica(settings)
    edge = M1.floor(int(time.time() * 1000))
    clean = generate(21, M1, M1.shift(edge, -400), 400)
    bad_at = M1.shift(edge, -5)
    (good,) = [c for c in clean if c.open_time_ms == bad_at]
    assert good.open is not None and good.close is not None
    broken = dataclasses.replace(good, high=min(good.open, good.close) * 0.999)
    docs = [doc(BTC, broken if c is good else c) for c in clean]
    col = replica.app.database.db[f"candles_{BTC}_1m"]
    await asyncio.wait_for(col.insert_many(docs), TIMEOUT)
    return replica, good, bad_at


class TestScoreFields:
    """anomaly_count, suspect and validity reach every read of a score."""

    async def test_list_status_and_stream(self, make_settings: Any, start_replica: Any) -> None:
        """Suspect after the audit finds the candle; cleared, and pushed, once corrected."""
        replica, good, bad_at = await seeded(make_settings, start_replica)
        stub = replica.stub
        await stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        (listed,) = (
            await stub.ListHealthScores(pb.ListHealthScoresRequest(), timeout=TIMEOUT)
        ).scores
        assert (listed.suspect, listed.anomaly_count) == (True, 1)
        assert 99.0 < listed.validity < 100.0
        status = await stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        (worst,) = status.summary.worst_series
        assert (worst.suspect, worst.anomaly_count) == (True, 1)
        found = await stub.ListAnomalies(pb.ListAnomaliesRequest(), timeout=TIMEOUT)
        assert [(a.open_time.ToMilliseconds(), a.rule) for a in found.anomalies] == [
            (bad_at, pb.ANOMALY_RULE_HIGH_BELOW_BODY)
        ]

        stream = stub.StreamHealthScores(pb.StreamHealthScoresRequest(), timeout=3 * TIMEOUT)
        try:
            first = await asyncio.wait_for(stream.read(), TIMEOUT)
            assert first.score.suspect is True
            col = replica.app.database.db[f"candles_{BTC}_1m"]
            await col.replace_one({"timestamp": to_dt(bad_at)}, doc(BTC, good))
            await stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
            while True:
                pushed = await asyncio.wait_for(stream.read(), TIMEOUT)
                if not pushed.score.suspect:
                    break
            assert (pushed.score.anomaly_count, pushed.score.validity) == (0, 100.0)
        finally:
            stream.cancel()
        empty = await stub.ListAnomalies(pb.ListAnomaliesRequest(), timeout=TIMEOUT)
        assert list(empty.anomalies) == []
        registry = replica.app.metrics.registry
        found_total = registry.get_sample_value(
            "auditsvc_anomalies_found_total", {"rule": "HIGH_BELOW_BODY", "timeframe": "1m"}
        )
        assert found_total == 1  # new findings only
        assert registry.get_sample_value("auditsvc_suspect_series", {"timeframe": "1m"}) == 0
