"""The example programs in clients/examples run against the fake server."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

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


class TestTradeGate:
    """trade_gate.py allows LIVE, good series and refuses the rest (fails closed)."""

    @pytest.mark.parametrize(
        ("state", "quality", "expected", "text"),
        [
            (audit_pb2.SERIES_STATE_LIVE, 92.0, 0, "ALLOW BTCUSDT 1m"),
            (audit_pb2.SERIES_STATE_LIVE, 60.0, 1, "quality 60.00 below 80.00"),
            (audit_pb2.SERIES_STATE_LATE, 92.0, 1, "series is LATE (3 candle(s) missing"),
            (audit_pb2.SERIES_STATE_NO_DATA, 92.0, 1, "not LIVE (state SERIES_STATE_NO_DATA)"),
            (audit_pb2.SERIES_STATE_UNSPECIFIED, 92.0, 1, "not LIVE"),
        ],
    )
    async def test_gate(
        self,
        server: FakeServer,
        service: FakeAuditService,
        state: int,
        quality: float,
        expected: int,
        text: str,
    ) -> None:
        """The exit code and message follow the series' state, then its quality."""
        stored = live("BTCUSDT", "1m", state, late=3 if state == audit_pb2.SERIES_STATE_LATE else 0)
        stored.quality = quality
        service.stream_batches = [[stored]]
        code, out = await run_example(
            "trade_gate",
            "--target",
            server.target,
            "--symbol",
            "BTCUSDT",
            "--timeframe",
            "1m",
            "--min-quality",
            "80",
        )
        assert code == expected
        assert text in out

    async def test_no_score_refuses(self, server: FakeServer) -> None:
        """Without a score within --wait the gate fails closed."""
        code, out = await run_example(
            "trade_gate",
            "--target",
            server.target,
            "--symbol",
            "X",
            "--timeframe",
            "1m",
            "--wait",
            "0.5",
        )
        assert code == 1 and "REFUSE" in out

    async def test_unknown_series(self, server: FakeServer, service: FakeAuditService) -> None:
        """NOT_FOUND from the stream is "unknown series", exit 2, without waiting out --wait."""
        service.always["StreamHealthScores"] = (
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

    async def test_server_unreachable(self) -> None:
        """Nothing listening on the target is "server unreachable", exit 3."""
        target = f"127.0.0.1:{free_port()}"
        code, out = await run_example(
            "trade_gate", "--target", target, "--symbol", "BTCUSDT", "--timeframe", "1m",
            "--wait", "1",
        )  # fmt: skip
        assert code == 3, out
        assert "server unreachable" in out


class TestStrategyPause:
    """strategy_pause.py's rule pauses on drops and floors, and resumes on recovery."""

    def test_pause_and_resume(self) -> None:
        """A drop of more than max_drop pauses; recovery resumes; steady scores do nothing."""
        rule = load("strategy_pause").PauseRule(max_drop=10.0, floor=70.0)
        qualities = [95.0, 94.0, 80.0, 82.0, 90.0, 65.0, 75.0, 85.0, 84.0]
        actions = [rule.update(score("A", "1m", i, q)) for i, q in enumerate(qualities)]
        assert actions == [None, None, "PAUSE", None, "RESUME", "PAUSE", None, "RESUME", None]
        assert rule.update(score("B", "1m", 0, 60.0)) == "PAUSE"
