"""The example programs in clients/examples run against the fake server."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2
from auditsvc.devtools.devrun import free_port

from .fakes import FakeAuditService, FakeServer, live, score

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "examples"


def load(name: str) -> ModuleType:
    """Import an example script as a module."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_example(name: str, *args: str) -> tuple[int, str]:
    """Run an example script; return (exit code, stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / f"{name}.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUDITSVC_")},
    )
    try:
        async with asyncio.timeout(30):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            async with asyncio.timeout(10):
                await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode()


BTC = ("--symbol", "BTCUSDT", "--timeframe", "1m")
LIVE, LATE = audit_pb2.SERIES_STATE_LIVE, audit_pb2.SERIES_STATE_LATE
NO_DATA, UNKNOWN = audit_pb2.SERIES_STATE_NO_DATA, audit_pb2.SERIES_STATE_UNKNOWN
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def recent_gap(symbol: str, slots_ago: int, missing: int = 2) -> Any:
    """A 1m gap of ``missing`` slots whose last missing slot is ``slots_ago`` minutes ago."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=slots_ago - 1)
    return audit_pb2.Gap(
        symbol=symbol,
        timeframe="1m",
        start_time=end - timedelta(minutes=missing),
        end_time=end,
        missing_candles=missing,
        severity=audit_pb2.SEVERITY_MEDIUM,
    )


class TestTradeGateRule:
    """The gate's rule, in process: LIVE and a fresh verdict, then quality if asked."""

    @pytest.mark.parametrize(
        ("state", "age", "text"),
        [
            (LIVE, 0.4, None),
            (LIVE, 5.0, None),
            (LIVE, -4.0, None),  # the database clock slightly ahead
            (LIVE, 5.1, "LIVE verdict 5.1s old, more than 5s: stale"),
            (LIVE, -5.5, "LIVE verdict 5.5s in the future, more than 5s: stale"),
            (LIVE, None, "LIVE but never confirmed (no verdict_time)"),
            (UNKNOWN, 12.0, "series is UNKNOWN, not LIVE (nobody vouches for it now; verdict 12"),
            (UNKNOWN, None, "series is UNKNOWN, not LIVE (nobody vouches for it now; never"),
            (LATE, 0.2, "series is LATE, not LIVE (3 candle(s) missing after 2023-12-31T23:59"),
            (NO_DATA, 0.2, "series is NO_DATA, not LIVE (no candle stored; verdict 0.2s old)"),
            (audit_pb2.SERIES_STATE_UNSPECIFIED, 0.2, "state SERIES_STATE_UNSPECIFIED"),
            (99, 0.2, "series is 99, not LIVE (state 99; verdict 0.2s old)"),
        ],
    )
    def test_verdict(self, state: int, age: float | None, text: str | None) -> None:
        """Only LIVE confirmed within --max-verdict-age (either way) passes; the reason says
        the state and the verdict's age."""
        verdict = None if age is None else T0 - timedelta(seconds=age)
        scored = live("BTCUSDT", "1m", state, late=3 if state == LATE else 0, verdict=verdict)
        reason = load("trade_gate").refusal(scored, T0, 5.0)
        if text is None:
            assert reason is None
        else:
            assert reason is not None and text in reason and "\n" not in reason

    def test_suspect_refuses(self) -> None:
        """A LIVE, fresh but suspect series is refused with one line naming the findings."""
        scored = live("BTCUSDT", "1m", LIVE, verdict=T0)
        scored.suspect, scored.anomaly_count, scored.validity = True, 3, 99.0
        reason = load("trade_gate").refusal(scored, T0, 5.0)
        assert reason is not None and "\n" not in reason
        assert "suspect" in reason and "3 finding(s)" in reason and "99.00" in reason

    def test_quality_only_when_asked(self) -> None:
        """Low quality refuses only with min_quality; it is off by default."""
        scored = live("BTCUSDT", "1m", LIVE, verdict=T0)
        scored.quality = 60.0
        gate = load("trade_gate")
        assert gate.refusal(scored, T0, 5.0) is None
        assert gate.refusal(scored, T0, 5.0, 80.0) == "quality 60.00 below 80.00"
        assert gate.refusal(scored, T0, 5.0, 60.0) is None


def gate_args(server: FakeServer, *args: str) -> tuple[str, ...]:
    """trade_gate.py's arguments for BTCUSDT 1m against the fake server."""
    return ("--target", server.target, *BTC, *args)


class TestTradeGate:
    """trade_gate.py allows LIVE, freshly confirmed, gap-free series; it refuses the rest
    with one line, and fails closed."""

    @pytest.mark.parametrize(
        ("state", "age", "expected", "text"),
        [
            (LIVE, 0.0, 0, "ALLOW BTCUSDT 1m: LIVE, verdict 0."),
            (LIVE, 30.0, 1, "REFUSE BTCUSDT 1m: LIVE verdict 30."),
            (LIVE, None, 1, "REFUSE BTCUSDT 1m: LIVE but never confirmed"),
            (UNKNOWN, 0.0, 1, "REFUSE BTCUSDT 1m: series is UNKNOWN, not LIVE"),
            (LATE, 0.0, 1, "REFUSE BTCUSDT 1m: series is LATE, not LIVE (3 candle(s) missing"),
            (NO_DATA, 0.0, 1, "REFUSE BTCUSDT 1m: series is NO_DATA, not LIVE"),
            (audit_pb2.SERIES_STATE_UNSPECIFIED, 0.0, 1, "not LIVE"),
        ],
    )
    async def test_gate(
        self,
        server: FakeServer,
        service: FakeAuditService,
        state: int,
        age: float | None,
        expected: int,
        text: str,
    ) -> None:
        """The exit code and the one-line message follow the state and the verdict's age."""
        stored = live("BTCUSDT", "1m", state, late=3 if state == LATE else 0)
        stored.quality = 20.0  # ignored without --min-quality
        service.health_scores = [stored]
        service.verdict_age = age
        code, out = await run_example("trade_gate", *gate_args(server))
        assert (code, out.count("\n")) == (expected, 1), out
        assert text in out
        assert service.calls["ListGaps"] == (1 if expected == 0 else 0)

    async def test_suspect_series_refused(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A suspect series exits 1 with a REFUSE line, before any gap is asked for."""
        stored = live("BTCUSDT", "1m", LIVE)
        stored.suspect, stored.anomaly_count = True, 1
        service.health_scores = [stored]
        service.verdict_age = 0.0
        code, out = await run_example("trade_gate", *gate_args(server))
        assert (code, out.count("\n")) == (1, 1), out
        assert out.startswith("REFUSE BTCUSDT 1m: series is suspect")
        assert service.calls["ListGaps"] == 0

    async def test_min_quality(self, server: FakeServer, service: FakeAuditService) -> None:
        """--min-quality refuses a LIVE series whose quality is below it."""
        stored = live("BTCUSDT", "1m", LIVE)
        stored.quality = 60.0
        service.health_scores = [stored]
        service.verdict_age = 0.0
        code, out = await run_example("trade_gate", *gate_args(server, "--min-quality", "80"))
        assert code == 1 and "quality 60.00 below 80.00" in out
        code, out = await run_example("trade_gate", *gate_args(server, "--min-quality", "50"))
        assert code == 0 and "quality 60.00" in out

    async def test_open_gap_in_the_lookback_refuses(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A gap still open among the newest --lookback slots refuses; an older one does not.
        ListGaps is asked from now - lookback x 1m for this series."""
        service.health_scores = [live("BTCUSDT", "1m", LIVE)]
        service.verdict_age = 0.0
        service.filter_gaps = True
        service.gap_pages = [[recent_gap("BTCUSDT", 150), recent_gap("ETHUSDT", 3)]]
        before = datetime.now(UTC)
        code, out = await run_example("trade_gate", *gate_args(server))
        assert code == 0 and "no open gap in the newest 100 slots" in out, out
        request = service.requests["ListGaps"][0]
        assert (request.symbol, request.timeframe) == ("BTCUSDT", "1m")
        since = request.start_time.ToDatetime(tzinfo=UTC) + timedelta(minutes=100)
        assert before <= since <= datetime.now(UTC)

        service.gap_pages = [[recent_gap("BTCUSDT", 150), recent_gap("BTCUSDT", 40, missing=3)]]
        code, out = await run_example("trade_gate", *gate_args(server))
        assert code == 1, out
        assert "REFUSE BTCUSDT 1m: 1 open gap(s) in the newest 100 slots, the first 3" in out
        code, out = await run_example("trade_gate", *gate_args(server, "--lookback", "30"))
        assert code == 0, out
        code, out = await run_example("trade_gate", *gate_args(server, "--lookback", "0"))
        assert code == 0 and "open gap" not in out, out
        assert service.calls["ListGaps"] == 3

    async def test_lookback_follows_the_timeframe(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """For 1h, --lookback 10 asks ListGaps from ten hours ago."""
        service.health_scores = [live("BTCUSDT", "1h", LIVE)]
        service.verdict_age = 0.0
        before = datetime.now(UTC)
        args = ("--target", server.target, "--symbol", "BTCUSDT", "--timeframe", "1h")
        code, out = await run_example("trade_gate", *args, "--lookback", "10")
        assert code == 0, out
        since = service.requests["ListGaps"][0].start_time.ToDatetime(tzinfo=UTC)
        assert before <= since + timedelta(hours=10) <= datetime.now(UTC)

    async def test_no_score_refuses(self, server: FakeServer) -> None:
        """Without a score within --wait the gate fails closed."""
        code, out = await run_example(
            "trade_gate", "--target", server.target, "--symbol", "X", "--timeframe", "1m",
            "--wait", "0.5",
        )  # fmt: skip
        assert code == 1 and "REFUSE X 1m: no health score within 0.5s" in out

    async def test_unknown_series(self, server: FakeServer, service: FakeAuditService) -> None:
        """NOT_FOUND is "unknown series", exit 2, without waiting out --wait."""
        service.always["ListHealthScores"] = (
            grpc.StatusCode.NOT_FOUND,
            "symbols: symbol 'NOPE' is not configured (AUDIT_SYMBOLS)",
            (),
        )
        code, out = await run_example(
            "trade_gate", "--target", server.target, "--symbol", "NOPE", "--timeframe", "1m",
            "--wait", "60",
        )  # fmt: skip
        assert code == 2, out
        assert "unknown series" in out and "NOPE" in out
        assert service.calls["ListHealthScores"] == 1

    async def test_unknown_timeframe(self, server: FakeServer) -> None:
        """A timeframe the gate has no interval for is a usage error, exit 2."""
        code, _ = await run_example(
            "trade_gate", "--target", server.target, "--symbol", "BTCUSDT", "--timeframe", "7m"
        )
        assert code == 2

    async def test_server_unreachable(self) -> None:
        """Nothing listening on the target is "server unreachable", exit 3."""
        target = f"127.0.0.1:{free_port()}"
        code, out = await run_example(
            "trade_gate", "--target", target, *BTC, "--wait", "1",
        )  # fmt: skip
        assert code == 3, out
        assert "server unreachable" in out

    async def test_gaps_unavailable_is_unreachable(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A LIVE verdict without an answer from ListGaps within --wait refuses, exit 3."""
        service.health_scores = [live("BTCUSDT", "1m", LIVE)]
        service.verdict_age = 0.0
        service.always["ListGaps"] = (grpc.StatusCode.UNAVAILABLE, "database unavailable", ())
        code, out = await run_example("trade_gate", *gate_args(server, "--wait", "1"))
        assert (code, out.count("\n")) == (3, 1), out
        assert "REFUSE BTCUSDT 1m: server unreachable" in out
        assert service.calls["ListGaps"] >= 1


class TestStrategyPause:
    """strategy_pause.py's rule pauses on drops and floors, and resumes on recovery."""

    def test_pause_and_resume(self) -> None:
        """A drop of more than max_drop pauses; recovery resumes; steady scores do nothing."""
        rule = load("strategy_pause").PauseRule(max_drop=10.0, floor=70.0)
        qualities = [95.0, 94.0, 80.0, 82.0, 90.0, 65.0, 75.0, 85.0, 84.0]
        actions = [rule.update(score("A", "1m", i, q)) for i, q in enumerate(qualities)]
        assert actions == [None, None, "PAUSE", None, "RESUME", "PAUSE", None, "RESUME", None]
        assert rule.update(score("B", "1m", 0, 60.0)) == "PAUSE"
