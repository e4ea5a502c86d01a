"""GetStatus views over the wire: BASIC stays small with many series, FULL has every report.

The live tail is off: its scores would race the cycle compared."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.storage.mongo.database import CYCLE_REPORTS
from auditsvc.usecases import auditing

TIMEOUT = 60.0
# Enough series for the reports to be stored in several parts (REPORT_PART is patched).
MANY = 120


class TestStatusViews:
    """BASIC is a header and a summary; FULL adds every series report."""

    async def test_basic_and_full(self, make_settings: Any, start_replica: Any) -> None:
        """Unspecified and BASIC carry no series but a summary; FULL carries all four reports."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        ran = await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        for view in (pb.STATUS_VIEW_UNSPECIFIED, pb.STATUS_VIEW_BASIC):
            basic = await replica.stub.GetStatus(pb.GetStatusRequest(view=view), timeout=TIMEOUT)
            assert basic.last_cycle.cycle_id == ran.cycle.cycle_id
            assert len(basic.last_cycle.series) == 0
            assert basic.summary.series_count == 4
            assert sum(c.count for c in basic.summary.states) == 4
            assert basic.summary.open_gaps == sum(s.gap_count for s in ran.cycle.series)
            assert basic.summary.min_quality == min(s.health.quality for s in ran.cycle.series)
            assert len(basic.summary.worst_series) == 4
        full = await replica.stub.GetStatus(
            pb.GetStatusRequest(view=pb.STATUS_VIEW_FULL), timeout=TIMEOUT
        )
        assert full.last_cycle.series == ran.cycle.series
        assert full.summary == basic.summary

    async def test_bad_view(self, make_settings: Any, start_replica: Any) -> None:
        """A view outside StatusView is INVALID_ARGUMENT naming the field."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.GetStatus(pb.GetStatusRequest(view=42), timeout=TIMEOUT)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "view" in (exc.value.details() or "")

    async def test_basic_stays_small(
        self, make_settings: Any, start_replica: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With many series BASIC stays under 4 KB while FULL grows; reports are stored in parts."""
        monkeypatch.setattr(auditing, "REPORT_PART", 50)
        symbols = ",".join(f"S{i:04d}USDT" for i in range(MANY))
        replica = await start_replica(
            make_settings(LIVE_MODE="off", AUDIT_SYMBOLS=symbols, AUDIT_TIMEFRAMES="1h")
        )
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        basic = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        full = await replica.stub.GetStatus(
            pb.GetStatusRequest(view=pb.STATUS_VIEW_FULL), timeout=TIMEOUT
        )
        assert basic.summary.series_count == MANY
        assert len(basic.summary.worst_series) == 10
        assert basic.ByteSize() < 4096
        assert [s.symbol for s in full.last_cycle.series] == symbols.split(",")
        assert full.ByteSize() > 10 * basic.ByteSize()
        db = replica.app.database.db  # type: ignore[attr-defined]
        parts = await db[CYCLE_REPORTS].count_documents({"cycle_id": basic.last_cycle.cycle_id})
        assert parts == 3


async def auditctl(*args: str) -> tuple[int, str]:
    """Runs ``auditctl`` (python -m auditclient.cli) and returns (exit code, stdout)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITSVC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditclient.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode()


class TestAuditctlStatus:
    """auditctl status shows the summary; --full adds the series table."""

    async def test_summary_and_full(self, make_settings: Any, start_replica: Any) -> None:
        """Default: summary and worst series, no series table; --full: every series row."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        code, out = await auditctl("--target", replica.target, "status")
        assert code == 0
        assert "summary:" in out and "WORST" in out and "median_quality" in out
        assert "EXPECTED" not in out
        code, out = await auditctl("--target", replica.target, "status", "--full")
        assert code == 0
        assert "EXPECTED" in out and "summary:" in out
        assert sum(line.startswith(("BTCUSDT", "ETHUSDT")) for line in out.splitlines()) >= 8
