"""The ingest grace over the wire: windows end at the newest slot that is due,
a window reaching past it is cut back, and one starting after it is refused."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb

TIMEOUT = 20.0
MIN_MS = 60_000


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def settled_end_now(grace_s: float, slot_ms: int) -> int:
    now = int(time.time() * 1000)
    return (now - int(grace_s * 1000)) // slot_ms * slot_ms


class TestIngestGrace:
    """RunAudit never audits a slot whose close + AUDIT_INGEST_GRACE has not passed."""

    async def test_end_in_future_is_cut_back(self, make_settings: Any, start_replica: Any) -> None:
        """An end_time an hour ahead comes back as the settled edge in window_end."""
        # A grace of a whole minute makes the edge differ from the forming slot's open.
        settings = make_settings(AUDIT_INGEST_GRACE="60", AUDIT_SYMBOLS="BTCUSDT")
        replica = await start_replica(settings)
        before = settled_end_now(60, MIN_MS)
        reply = await replica.stub.RunAudit(
            pb.RunAuditRequest(
                symbols=["BTCUSDT"],
                timeframes=["1m"],
                start_time=ts(before - 30 * MIN_MS),
                end_time=ts(before + 3_600_000),
            ),
            timeout=TIMEOUT,
        )
        after = settled_end_now(60, MIN_MS)
        (report,) = reply.cycle.series
        end_ms = report.window_end.ToMilliseconds()
        assert before <= end_ms <= after
        assert report.expected_candles == (end_ms - (before - 30 * MIN_MS)) // MIN_MS

    async def test_start_after_edge_is_invalid(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """A window starting in the not-yet-due part is INVALID_ARGUMENT naming start_time."""
        settings = make_settings(AUDIT_INGEST_GRACE="10", AUDIT_SYMBOLS="BTCUSDT")
        replica = await start_replica(settings)
        start = settled_end_now(0, 1_000) + 120_000
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.RunAudit(
                pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1m"], start_time=ts(start)),
                timeout=TIMEOUT,
            )
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "start_time" in (exc.value.details() or "")

    async def test_one_second_timeframe(self, make_settings: Any, start_replica: Any) -> None:
        """'1s' is accepted in AUDIT_TIMEFRAMES and RunAudit scores 1,000 ms slots."""
        settings = make_settings(
            AUDIT_TIMEFRAMES="1s", AUDIT_SYMBOLS="BTCUSDT", AUDIT_LOOKBACK="60"
        )
        replica = await start_replica(settings)
        reply = await replica.stub.RunAudit(
            pb.RunAuditRequest(symbols=["BTCUSDT"], timeframes=["1s"]), timeout=TIMEOUT
        )
        (report,) = reply.cycle.series
        assert report.timeframe == "1s"
        assert report.expected_candles == 60
        assert report.missing_candles == 60
        span = report.window_end.ToMilliseconds() - report.window_start.ToMilliseconds()
        assert span == 60_000
